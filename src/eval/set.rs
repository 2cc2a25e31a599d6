//! The evaluation set folder (written by the trainer's `python -m turbovsr_train.data.evalset`):
//!
//! ```text
//! DIR/manifest.json   {"scale": 4, "frames": F, "clips": [{"name": "clip_000", "source": "...",
//!                      "seed": N}, ...], "degradation": {...}}
//! DIR/clip_000/hr_000.png ... hr_{F-1}.png   ground truth, RGB8
//! DIR/clip_000/lr_000.png ... lr_{F-1}.png   degraded input, (hr size) / scale
//! ```
//!
//! and PNG reading and writing shared with the side-by-side image of `turbovsr upscale`.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context};
use serde::Deserialize;

use super::metrics::Image;
use crate::pipeline::{frame_to_rgb, rgb_to_frame, FrameLayout, PixelFormat, RgbFrame};

/// `manifest.json`. Fields other than these (the degradation parameters, ...) are kept as JSON
/// for the report.
#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    pub scale: usize,
    pub frames: usize,
    pub clips: Vec<ClipEntry>,
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ClipEntry {
    pub name: String,
}

/// An evaluation set folder with a checked manifest.
#[derive(Debug, Clone)]
pub struct EvalSet {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

/// One clip: ground truth and input frames, in order.
#[derive(Debug, Clone)]
pub struct Clip {
    pub name: String,
    pub hr: Vec<Image>,
    /// Input frames as the pipeline takes them (RGB in [-1, 1]).
    pub lr: Vec<RgbFrame>,
}

impl EvalSet {
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join("manifest.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read the eval set manifest '{}'", path.display()))?;
        let manifest: Manifest = serde_json::from_str(&text)
            .with_context(|| format!("'{}' is not a valid eval set manifest (expected {{\"scale\": 4, \"frames\": F, \"clips\": [{{\"name\": ...}}]}})", path.display()))?;
        ensure!(
            (1..=8).contains(&manifest.scale),
            "'{}': scale {} is not 1..8",
            path.display(),
            manifest.scale
        );
        ensure!(
            manifest.frames >= 1,
            "'{}': frames must be at least 1",
            path.display()
        );
        ensure!(
            !manifest.clips.is_empty(),
            "'{}' lists no clips",
            path.display()
        );
        for clip in &manifest.clips {
            ensure!(
                !clip.name.is_empty() && !clip.name.contains(['/', '\\']) && clip.name != "..",
                "'{}': clip name '{}' is not a folder name",
                path.display(),
                clip.name
            );
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            manifest,
        })
    }

    /// One line about the set for reports.
    pub fn summary(&self) -> String {
        let m = &self.manifest;
        let mut s = format!(
            "{} clips x {} frames, scale {}",
            m.clips.len(),
            m.frames,
            m.scale
        );
        if let (Some(w), Some(h)) = (m.other.get("width"), m.other.get("height")) {
            s += &format!(", ground truth {w}x{h}");
        }
        for key in ["split", "seed"] {
            match m.other.get(key) {
                Some(serde_json::Value::String(v)) => s += &format!(", {key} {v}"),
                Some(v) => s += &format!(", {key} {v}"),
                None => {}
            }
        }
        s
    }

    /// Reads clip `i`; every error names the file and what is wrong with it.
    pub fn load_clip(&self, i: usize) -> anyhow::Result<Clip> {
        let entry = &self.manifest.clips[i];
        let dir = self.dir.join(&entry.name);
        let scale = self.manifest.scale;
        let mut hr = Vec::with_capacity(self.manifest.frames);
        let mut lr = Vec::with_capacity(self.manifest.frames);
        let mut size: Option<(usize, usize)> = None;
        for f in 0..self.manifest.frames {
            let hr_path = dir.join(format!("hr_{f:03}.png"));
            let lr_path = dir.join(format!("lr_{f:03}.png"));
            let (hw, hh, hr_px) = read_png_rgb8(&hr_path)?;
            let (lw, lh, lr_px) = read_png_rgb8(&lr_path)?;
            if (hw, hh) != (lw * scale, lh * scale) {
                bail!(
                    "'{}' is {hw}x{hh}, but '{}' is {lw}x{lh}: with scale {scale} the ground \
                     truth must be {}x{}",
                    hr_path.display(),
                    lr_path.display(),
                    lw * scale,
                    lh * scale
                );
            }
            match size {
                None => size = Some((lw, lh)),
                Some(s) if s != (lw, lh) => bail!(
                    "'{}' is {lw}x{lh}, the clip's first frame is {}x{}",
                    lr_path.display(),
                    s.0,
                    s.1
                ),
                Some(_) => {}
            }
            hr.push(rgb8_to_image(hw, hh, &hr_px));
            lr.push(rgb8_to_frame(lw, lh, &lr_px)?);
        }
        Ok(Clip {
            name: entry.name.clone(),
            hr,
            lr,
        })
    }
}

/// Reads a PNG as 8-bit RGB (grey, palette, 16-bit and alpha are converted; alpha dropped).
pub fn read_png_rgb8(path: &Path) -> anyhow::Result<(usize, usize, Vec<u8>)> {
    let file = File::open(path).with_context(|| format!("cannot open '{}'", path.display()))?;
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder
        .read_info()
        .with_context(|| format!("'{}' is not a readable PNG", path.display()))?;
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader
        .next_frame(&mut buf)
        .with_context(|| format!("cannot decode '{}'", path.display()))?;
    let (w, h) = (info.width as usize, info.height as usize);
    let px = &buf[..info.buffer_size()];
    let rgb = match info.color_type {
        png::ColorType::Rgb => px.to_vec(),
        png::ColorType::Rgba => px
            .chunks_exact(4)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect(),
        png::ColorType::Grayscale => px.iter().flat_map(|&g| [g, g, g]).collect(),
        png::ColorType::GrayscaleAlpha => px.chunks_exact(2).flat_map(|p| [p[0]; 3]).collect(),
        other => bail!(
            "'{}': unsupported PNG colour type {other:?}",
            path.display()
        ),
    };
    Ok((w, h, rgb))
}

/// Writes interleaved 8-bit RGB as a PNG.
pub fn write_png_rgb8(path: &Path, width: usize, height: usize, rgb: &[u8]) -> anyhow::Result<()> {
    ensure!(
        rgb.len() == 3 * width * height,
        "{width}x{height} RGB needs {} bytes, got {}",
        3 * width * height,
        rgb.len()
    );
    let file = File::create(path).with_context(|| format!("cannot create '{}'", path.display()))?;
    let mut encoder = png::Encoder::new(BufWriter::new(file), width as u32, height as u32);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder
        .write_header()
        .and_then(|mut w| w.write_image_data(rgb))
        .with_context(|| format!("cannot write '{}'", path.display()))
}

/// Interleaved RGB8 to a metrics image in [0, 1].
pub fn rgb8_to_image(width: usize, height: usize, rgb: &[u8]) -> Image {
    let n = width * height;
    let mut data = vec![0f32; 3 * n];
    for (i, px) in rgb.chunks_exact(3).enumerate() {
        for c in 0..3 {
            data[c * n + i] = px[c] as f32 / 255.0;
        }
    }
    Image {
        width,
        height,
        data,
    }
}

/// Interleaved RGB8 to a pipeline frame, converted exactly as the element converts RGB input.
pub fn rgb8_to_frame(width: usize, height: usize, rgb: &[u8]) -> anyhow::Result<RgbFrame> {
    let layout = FrameLayout::new(PixelFormat::Rgb, width, height);
    Ok(frame_to_rgb(&layout, &[rgb], &layout.packed_strides())?)
}

/// A pipeline frame to interleaved RGB8, quantised exactly as the element writes RGB output.
pub fn frame_to_rgb8(frame: &RgbFrame) -> anyhow::Result<Vec<u8>> {
    let frame = RgbFrame::new(frame.width, frame.height, frame.rgb.clone(), None);
    let layout = FrameLayout::new(PixelFormat::Rgb, frame.width, frame.height);
    let strides = layout.packed_strides();
    let mut data = vec![0u8; strides[0] * frame.height];
    rgb_to_frame(&frame, &layout, &mut [&mut data], &strides)?;
    Ok(data)
}

/// A pipeline output frame as the metrics see it: quantised to 8 bits as a user gets it from
/// the element, then in [0, 1].
pub fn frame_to_image(frame: &RgbFrame) -> anyhow::Result<Image> {
    Ok(rgb8_to_image(
        frame.width,
        frame.height,
        &frame_to_rgb8(frame)?,
    ))
}
