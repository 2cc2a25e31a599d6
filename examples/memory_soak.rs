//! Streams many small frames through `turbovsr model=bicubic` and prints the process's peak RSS
//! after 1,000 and after all frames: memory must stay flat however long the stream
//! (issue: peak after 10,000 within 10 % of the peak after 1,000).
//!
//! cargo run --release --example memory_soak -- [frames] [model]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use gst::prelude::*;

#[path = "common/rss.rs"]
mod rss;
use rss::peak_rss_kib;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let frames: u64 = args
        .get(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(10_000);
    let model = args.get(2).cloned().unwrap_or_else(|| "bicubic".into());
    let checkpoint = (frames / 10).max(1);
    gst::init()?;
    gstturbovsr::plugin_register_static()?;
    let pipeline = gst::parse::launch(&format!(
        "videotestsrc num-buffers={frames} pattern=ball ! \
         video/x-raw,format=RGB,width=64,height=64,framerate=30/1 ! \
         turbovsr name=up model={model} ! fakesink name=sink sync=false"
    ))?
    .downcast::<gst::Pipeline>()
    .map_err(|_| anyhow::anyhow!("not a pipeline"))?;
    let count = Arc::new(AtomicU64::new(0));
    let at_checkpoint = Arc::new(Mutex::new(0u64));
    let sinkpad = pipeline
        .by_name("sink")
        .and_then(|s| s.static_pad("sink"))
        .ok_or_else(|| anyhow::anyhow!("no fakesink pad"))?;
    {
        let count = count.clone();
        let at_checkpoint = at_checkpoint.clone();
        sinkpad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            let n = count.fetch_add(1, Ordering::SeqCst) + 1;
            if n == checkpoint {
                *at_checkpoint.lock().unwrap() = peak_rss_kib();
            }
            gst::PadProbeReturn::Ok
        });
    }
    let start = std::time::Instant::now();
    pipeline.set_state(gst::State::Playing)?;
    let bus = pipeline.bus().unwrap();
    for msg in bus.iter_timed(gst::ClockTime::NONE) {
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => {
                pipeline.set_state(gst::State::Null)?;
                anyhow::bail!("pipeline error: {} ({:?})", e.error(), e.debug());
            }
            _ => {}
        }
    }
    let peak_end = peak_rss_kib();
    pipeline.set_state(gst::State::Null)?;
    let out = count.load(Ordering::SeqCst);
    let peak_checkpoint = *at_checkpoint.lock().unwrap();
    let ratio = peak_end as f64 / peak_checkpoint.max(1) as f64;
    println!("model={model} frames_in={frames} frames_out={out} 64x64->256x256");
    println!("peak_rss_kib_after_{checkpoint}={peak_checkpoint}");
    println!("peak_rss_kib_after_{out}={peak_end}");
    println!("peak_rss_ratio={ratio:.4}");
    println!("wall_s={:.2}", start.elapsed().as_secs_f64());
    anyhow::ensure!(
        out == frames,
        "{out} output frames for {frames} input frames"
    );
    anyhow::ensure!(ratio <= 1.10, "peak RSS grew by more than 10 %: {ratio:.4}");
    Ok(())
}
