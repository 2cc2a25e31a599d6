//! The `Upscaler` API without GStreamer: upscales a folder of PNG frames (read in file-name
//! order, one video) into another folder.
//!
//! ```sh
//! cargo run --example upscale_pngs -- IN_DIR OUT_DIR [MODEL] [SCALE] [COLOR_FIX]
//! ```
//! MODEL is a TurboVSR checkpoint folder or `bicubic` (default); SCALE defaults to 4;
//! COLOR_FIX is none (default), wavelet or adain. All frames must have the same size; 8-bit
//! RGB, RGBA, grey and grey+alpha PNGs are read (alpha is resized beside the model), output is
//! 8-bit RGB or RGBA.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use gstturbovsr::pipeline::{
    frame_to_rgb, rgb_to_frame, ColorFix, FrameLayout, OutputSize, PixelFormat, ProcessorSettings,
    RgbFrame, Upscaler, WindowConfig,
};

fn read_png(path: &Path) -> anyhow::Result<RgbFrame> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut decoder = png::Decoder::new(file);
    // 16-bit to 8-bit, palette to RGB: the model works on 8-bit frames like the element.
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder
        .read_info()
        .with_context(|| format!("reading {}", path.display()))?;
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader
        .next_frame(&mut buf)
        .with_context(|| format!("decoding {}", path.display()))?;
    let (w, h) = (info.width as usize, info.height as usize);
    let pixels = &buf[..info.buffer_size()];
    // Grey PNGs become RGB here; colour ones go straight through frame_to_rgb.
    let (format, data): (PixelFormat, Vec<u8>) = match info.color_type {
        png::ColorType::Rgb => (PixelFormat::Rgb, pixels.to_vec()),
        png::ColorType::Rgba => (PixelFormat::Rgba, pixels.to_vec()),
        png::ColorType::Grayscale => (
            PixelFormat::Rgb,
            pixels.iter().flat_map(|&g| [g, g, g]).collect(),
        ),
        png::ColorType::GrayscaleAlpha => (
            PixelFormat::Rgba,
            pixels
                .chunks_exact(2)
                .flat_map(|ga| [ga[0], ga[0], ga[0], ga[1]])
                .collect(),
        ),
        other => bail!("{}: unsupported PNG colour type {other:?}", path.display()),
    };
    let layout = FrameLayout::new(format, w, h);
    frame_to_rgb(&layout, &[&data], &layout.packed_strides())
        .with_context(|| format!("converting {}", path.display()))
}

fn write_png(path: &Path, frame: &RgbFrame) -> anyhow::Result<()> {
    let (format, color) = match frame.alpha {
        Some(_) => (PixelFormat::Rgba, png::ColorType::Rgba),
        None => (PixelFormat::Rgb, png::ColorType::Rgb),
    };
    let layout = FrameLayout::new(format, frame.width, frame.height);
    let strides = layout.packed_strides();
    let mut data = vec![0u8; strides[0] * frame.height];
    rgb_to_frame(frame, &layout, &mut [&mut data], &strides)?;
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut encoder = png::Encoder::new(
        BufWriter::new(file),
        frame.width as u32,
        frame.height as u32,
    );
    encoder.set_color(color);
    encoder.set_depth(png::BitDepth::Eight);
    encoder
        .write_header()
        .and_then(|mut w| w.write_image_data(&data))
        .with_context(|| format!("writing {}", path.display()))
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output, rest @ ..] = args.as_slice() else {
        bail!("usage: upscale_pngs IN_DIR OUT_DIR [MODEL|bicubic] [SCALE] [none|wavelet|adain]");
    };
    let model = rest.first().map_or("bicubic", String::as_str);
    let scale: usize = match rest.get(1) {
        Some(s) => s
            .parse()
            .with_context(|| format!("scale '{s}' is not a number"))?,
        None => 4,
    };
    let color_fix: ColorFix = match rest.get(2) {
        Some(s) => s.parse().map_err(anyhow::Error::msg)?,
        None => ColorFix::None,
    };

    let mut inputs: Vec<PathBuf> = std::fs::read_dir(input)
        .with_context(|| format!("reading folder {input}"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("png")))
        .collect();
    inputs.sort();
    if inputs.is_empty() {
        bail!("no .png files in {input}");
    }
    std::fs::create_dir_all(output).with_context(|| format!("creating folder {output}"))?;

    let settings = ProcessorSettings {
        color_fix,
        ..ProcessorSettings::default()
    };
    let mut upscaler = Upscaler::load(
        model,
        &settings,
        WindowConfig::default(),
        OutputSize::Scale(scale),
    )?;
    // Output frames come back in input order, a window at a time; name them after the inputs.
    let mut names = inputs.iter();
    let mut write = |frames: Vec<RgbFrame>| -> anyhow::Result<()> {
        for frame in frames {
            let name = names
                .next()
                .expect("one output per input")
                .file_name()
                .unwrap();
            write_png(&Path::new(output).join(name), &frame)?;
        }
        Ok(())
    };
    for path in &inputs {
        write(upscaler.push(read_png(path)?)?)?;
    }
    write(upscaler.finish()?)?;
    println!(
        "upscaled {} frames from {input} into {output} ({model}, x{scale})",
        inputs.len()
    );
    Ok(())
}
