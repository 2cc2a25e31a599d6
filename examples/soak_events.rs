//! Soak with events (issue 10): many small frames through `turbovsr` with periodic flushes and
//! caps changes (size and format), checking that every frame comes out except the ones a flush
//! dropped, in order, and that memory stays flat. Prints frames in, frames out, frames
//! dropped by flushes, frames lost (must be 0), and RSS at the start, the end, and the peak.
//!
//! cargo run --release --example soak_events -- [frames] [model]
//! (defaults: 100000 frames, `bicubic`; a model folder such as `turbovsr make-test-model`'s
//! tiny preset works too)

#[path = "common/rss.rs"]
mod rss;

use gst_check::Harness;
use rss::{peak_rss_kib, rss_kib};

const FRAME: gst::ClockTime = gst::ClockTime::from_mseconds(40);
const FLUSH_EVERY: u64 = 7_777;
const CAPS_EVERY: u64 = 5_000;

fn caps(i: u64) -> gst::Caps {
    // Alternate between two formats and sizes (odd sizes included).
    let (format, w, h) = match (i / CAPS_EVERY) % 3 {
        0 => (gst_video::VideoFormat::Rgb, 16, 16),
        1 => (gst_video::VideoFormat::I420, 17, 13),
        _ => (gst_video::VideoFormat::Nv12, 24, 20),
    };
    gst_video::VideoInfo::builder(format, w, h)
        .fps(gst::Fraction::new(25, 1))
        .build()
        .expect("valid video info")
        .to_caps()
        .expect("caps")
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let frames: u64 = args
        .get(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(100_000);
    let model = args.get(2).cloned().unwrap_or_else(|| "bicubic".into());
    gst::init()?;
    gstturbovsr::plugin_register_static()?;
    let element = gst::ElementFactory::make("turbovsr")
        .property("model", &model)
        .property("scale", 2u32)
        .property("steps", 1u32)
        .property("window", 17u32)
        .property("overlap", 9u32)
        .build()?;
    let mut h = Harness::with_element(&element, Some("sink"), Some("src"));
    h.play();
    let rss_start = rss_kib();
    let start = std::time::Instant::now();
    let mut current = caps(0);
    h.set_src_caps(current.clone());
    let (mut out, mut dropped, mut lost, mut disorder) = (0u64, 0u64, 0u64, 0u64);
    // Frames of the current run (since the last flush) not output yet, in push order.
    let mut waiting: std::collections::VecDeque<u64> = Default::default();
    let mut last_pts: Option<u64> = None;
    let mut collect = |h: &mut Harness, waiting: &mut std::collections::VecDeque<u64>| {
        while let Some(b) = h.try_pull() {
            let pts = b.pts().map(|p| p.nseconds() / FRAME.nseconds());
            out += 1;
            // Outputs come in push order: each must be the oldest waiting frame.
            match (pts, waiting.pop_front()) {
                (Some(p), Some(w)) if p == w => {}
                _ => disorder += 1,
            }
            if let (Some(p), Some(l)) = (pts, last_pts) {
                if p <= l {
                    disorder += 1;
                }
            }
            last_pts = pts;
        }
    };
    for i in 0..frames {
        if i > 0 && i % CAPS_EVERY == 0 {
            current = caps(i);
            h.set_src_caps(current.clone());
        }
        if i > 0 && i % FLUSH_EVERY == 0 {
            collect(&mut h, &mut waiting);
            h.push_event(gst::event::FlushStart::new());
            h.push_event(gst::event::FlushStop::new(true));
            h.push_event(gst::event::Segment::new(&gst::FormattedSegment::<
                gst::ClockTime,
            >::new()));
            // The flushed window and the frames gathered for the next one are dropped.
            dropped += waiting.len() as u64;
            waiting.clear();
        }
        let info = gst_video::VideoInfo::from_caps(&current)?;
        let mut buffer = gst::Buffer::from_mut_slice(vec![(i % 251) as u8; info.size()]);
        {
            let b = buffer.get_mut().expect("new buffer");
            b.set_pts(FRAME * i);
            b.set_duration(FRAME);
        }
        h.push(buffer)?;
        waiting.push_back(i);
        collect(&mut h, &mut waiting);
    }
    h.push_event(gst::event::Eos::new());
    collect(&mut h, &mut waiting);
    lost += waiting.len() as u64;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "model {model}: frames in {frames}, out {out}, dropped by {} flushes {dropped}, lost {lost}, \
         out of order {disorder}; {:.0} frames/s",
        (frames.saturating_sub(1)) / FLUSH_EVERY,
        frames as f64 / secs
    );
    println!(
        "RSS start {rss_start} KiB, end {} KiB, peak {} KiB",
        rss_kib(),
        peak_rss_kib()
    );
    if lost > 0 || disorder > 0 || out + dropped != frames {
        anyhow::bail!("frames were lost or reordered");
    }
    Ok(())
}
