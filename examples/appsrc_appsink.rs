//! Embedding the `turbovsr` element in a Rust pipeline: frames from the application through
//! `appsrc ! turbovsr ! appsink` and back, with the progress messages read from the bus.
//!
//! ```sh
//! cargo run --example appsrc_appsink -- [MODEL] [FRAMES]
//! ```
//! MODEL is a TurboVSR checkpoint folder or `bicubic` (default); FRAMES defaults to 30. The
//! element is registered from this crate (`plugin_register_static`), so no `GST_PLUGIN_PATH`
//! is needed; an application that loads the built plugin instead finds it as `turbovsr` too.

use anyhow::{bail, Context};
use gst::prelude::*;

const WIDTH: usize = 64;
const HEIGHT: usize = 48;
const SCALE: u32 = 2;

/// An RGB test frame: a gradient that moves with `i`.
fn frame(i: usize) -> Vec<u8> {
    let mut data = Vec::with_capacity(WIDTH * HEIGHT * 3);
    for y in 0..HEIGHT {
        for x in 0..WIDTH {
            data.extend_from_slice(&[((x + 2 * i) * 4) as u8, (y * 5) as u8, (i * 8) as u8]);
        }
    }
    data
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let model = args.first().map_or("bicubic", String::as_str);
    let frames: usize = match args.get(1) {
        Some(n) => n.parse().with_context(|| format!("frame count '{n}'"))?,
        None => 30,
    };
    gst::init()?;
    gstturbovsr::plugin_register_static()?;

    let caps =
        gst_video::VideoInfo::builder(gst_video::VideoFormat::Rgb, WIDTH as u32, HEIGHT as u32)
            .fps(gst::Fraction::new(25, 1))
            .build()?
            .to_caps()?;
    let appsrc = gst_app::AppSrc::builder()
        .caps(&caps)
        .format(gst::Format::Time)
        // back-pressure: push_buffer blocks while a few frames wait (turbovsr itself blocks
        // while a window is queued)
        .max_buffers(8)
        .block(true)
        .build();
    let upscaler = gst::ElementFactory::make("turbovsr")
        .property("model", model)
        .property("scale", SCALE)
        .property("window", 17u32)
        .build()?;
    // turbovsr outputs the input's format; ask for RGB explicitly anyway.
    let appsink = gst_app::AppSink::builder()
        .caps(
            &gst::Caps::builder("video/x-raw")
                .field("format", "RGB")
                .build(),
        )
        .sync(false)
        .build();
    let pipeline = gst::Pipeline::new();
    pipeline.add_many([appsrc.upcast_ref(), &upscaler, appsink.upcast_ref()])?;
    gst::Element::link_many([appsrc.upcast_ref(), &upscaler, appsink.upcast_ref()])?;
    pipeline.set_state(gst::State::Playing)?;

    // Feed from a thread while the main thread reads the output: the element holds a window
    // of frames before the first comes out.
    let feeder = std::thread::spawn(move || -> anyhow::Result<()> {
        let frame_time = gst::ClockTime::from_mseconds(40);
        for i in 0..frames {
            let mut buffer = gst::Buffer::from_mut_slice(frame(i));
            let b = buffer.get_mut().expect("new buffer");
            b.set_pts(frame_time * i as u64);
            b.set_duration(frame_time);
            appsrc.push_buffer(buffer)?;
        }
        appsrc.end_of_stream()?;
        Ok(())
    });

    let mut received = 0;
    while let Some(sample) = appsink.try_pull_sample(gst::ClockTime::from_seconds(600)) {
        let caps = sample.caps().context("sample without caps")?;
        let info = gst_video::VideoInfo::from_caps(caps)?;
        let buffer = sample.buffer().context("sample without buffer")?;
        if received == 0 {
            println!(
                "first output frame: {}x{} {:?}, pts {}",
                info.width(),
                info.height(),
                info.format(),
                buffer.pts().display()
            );
        }
        received += 1;
    }
    feeder.join().expect("feeder thread")?;

    // Errors (a bad model folder, say) and the element's per-window progress are on the bus.
    let bus = pipeline.bus().expect("pipeline bus");
    while let Some(msg) = bus.pop() {
        match msg.view() {
            gst::MessageView::Error(e) => {
                pipeline.set_state(gst::State::Null)?;
                bail!(
                    "{}: {}",
                    e.src().map(|s| s.name()).unwrap_or_default(),
                    e.error()
                );
            }
            gst::MessageView::Element(e) => {
                if let Some(s) = e.structure().filter(|s| s.name() == "turbovsr-progress") {
                    println!(
                        "window {}: {} frames, {:.1} fps",
                        s.get::<u64>("window").unwrap_or_default(),
                        s.get::<u64>("frames").unwrap_or_default(),
                        s.get::<f64>("fps").unwrap_or_default()
                    );
                }
            }
            _ => {}
        }
    }
    pipeline.set_state(gst::State::Null)?;
    println!("{received} frames in, {received} frames out at {SCALE}x");
    if received != frames {
        bail!("pushed {frames} frames, received {received}");
    }
    Ok(())
}
