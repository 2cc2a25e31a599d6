//! The `turbovsr` element through gst_check's Harness and whole pipelines with appsink, on the
//! bicubic baseline (the same window path a diffusion model runs).

use std::time::Duration;

mod common;

use gst::prelude::*;
use gst_check::Harness;

const FRAME: gst::ClockTime = gst::ClockTime::from_mseconds(40);

fn element(props: &[(&str, &dyn ToValue)]) -> gst::Element {
    let element = gst::ElementFactory::make("turbovsr")
        .property("model", "bicubic")
        .build()
        .unwrap();
    for (name, value) in props {
        element.set_property_from_value(name, &value.to_value());
    }
    element
}

fn harness(props: &[(&str, &dyn ToValue)]) -> Harness {
    let mut h = Harness::with_element(&element(props), Some("sink"), Some("src"));
    h.play();
    h
}

fn caps(format: &str, width: i32, height: i32) -> gst::Caps {
    gst_video::VideoInfo::builder(
        gst_video::VideoFormat::from_string(format),
        width as u32,
        height as u32,
    )
    .fps(gst::Fraction::new(25, 1))
    .build()
    .unwrap()
    .to_caps()
    .unwrap()
}

/// A frame of `caps` filled with `value`, at frame index `i`.
fn frame(caps: &gst::Caps, i: u64, value: u8) -> gst::Buffer {
    let info = gst_video::VideoInfo::from_caps(caps).unwrap();
    let mut buffer = gst::Buffer::from_mut_slice(vec![value; info.size()]);
    {
        let b = buffer.get_mut().unwrap();
        b.set_pts(FRAME * i);
        b.set_duration(FRAME);
        b.set_offset(i);
    }
    buffer
}

/// Pulls everything the harness has, without waiting.
fn drain(h: &mut Harness) -> Vec<gst::Buffer> {
    let mut out = Vec::new();
    while let Some(b) = h.try_pull() {
        out.push(b);
    }
    out
}

/// Pulls exactly `n` buffers (waiting for the worker), then checks nothing more comes.
fn pull_n(h: &mut Harness, n: usize) -> Vec<gst::Buffer> {
    let out: Vec<gst::Buffer> = (0..n)
        .map(|i| {
            h.pull()
                .unwrap_or_else(|_| panic!("timed out waiting for output frame {i} of {n}"))
        })
        .collect();
    assert!(h.try_pull().is_none(), "more than {n} output frames");
    out
}

fn assert_timestamps(out: &[gst::Buffer], first: u64) {
    for (i, b) in out.iter().enumerate() {
        let idx = first + i as u64;
        assert_eq!(b.pts(), Some(FRAME * idx), "pts of output {i}");
        assert_eq!(b.duration(), Some(FRAME), "duration of output {i}");
        assert_eq!(b.offset(), idx, "offset of output {i}");
    }
}

fn has_event(h: &mut Harness, ty: gst::EventType) -> bool {
    while let Some(e) = h.try_pull_event() {
        if e.type_() == ty {
            return true;
        }
    }
    false
}

#[test]
fn frame_count_and_timestamps_are_preserved() {
    common::init();
    for n in [0u64, 1, 8, 9, 48, 49, 50, 89, 100, 1000] {
        let mut h = harness(&[]);
        let caps = caps("RGB", 8, 6);
        h.set_src_caps(caps.clone());
        for i in 0..n {
            assert_eq!(
                h.push(frame(&caps, i, (i % 256) as u8)),
                Ok(gst::FlowSuccess::Ok)
            );
        }
        assert!(h.push_event(gst::event::Eos::new()));
        let out = pull_n(&mut h, n as usize);
        assert_timestamps(&out, 0);
        for b in &out {
            assert_eq!(b.size(), 32 * 24 * 3, "stream of {n}");
        }
        // Each output frame is its own input frame upscaled (a flat frame stays flat).
        for (i, b) in out.iter().enumerate() {
            let map = b.map_readable().unwrap();
            assert!(
                map.iter().all(|v| *v == (i % 256) as u8),
                "frame {i} of {n}"
            );
        }
        assert!(
            has_event(&mut h, gst::EventType::Eos),
            "EOS after {n} frames"
        );
    }
}

#[test]
fn windows_and_overlaps_keep_every_frame() {
    common::init();
    for (window, overlap) in [(9u32, 1u32), (17, 9), (25, 1)] {
        for n in [1u64, 2, 10, 17, 33, 70] {
            let mut h = harness(&[("window", &window), ("overlap", &overlap)]);
            let caps = caps("BGRx", 5, 3);
            h.set_src_caps(caps.clone());
            for i in 0..n {
                h.push(frame(&caps, i, 7)).unwrap();
            }
            h.push_event(gst::event::Eos::new());
            assert_timestamps(&pull_n(&mut h, n as usize), 0);
        }
    }
}

#[test]
fn output_is_input_times_scale_for_every_format() {
    common::init();
    let formats = [
        "RGB", "BGR", "RGBA", "BGRA", "ARGB", "ABGR", "RGBx", "BGRx", "xRGB", "xBGR", "I420",
        "YV12", "Y42B", "Y444", "NV12", "NV21",
    ];
    for format in formats {
        for scale in [1u32, 2, 4] {
            // Odd sizes: chroma planes round up.
            let (w, h_) = (13, 7);
            let mut h = harness(&[("scale", &scale)]);
            let in_caps = caps(format, w, h_);
            h.set_src_caps(in_caps.clone());
            // Mid-grey in every byte is a valid, flat frame in every format.
            h.push(frame(&in_caps, 0, 128)).unwrap();
            h.push_event(gst::event::Eos::new());
            let out = pull_n(&mut h, 1);
            let out_caps = h.sinkpad().unwrap().current_caps().unwrap();
            let info = gst_video::VideoInfo::from_caps(&out_caps).unwrap();
            assert_eq!(info.format().to_str(), format);
            assert_eq!(
                (info.width(), info.height()),
                (w as u32 * scale, h_ as u32 * scale),
                "{format} x{scale}"
            );
            assert_eq!(out[0].size(), info.size(), "{format} x{scale}");
            // Flat grey stays grey (within rounding of the colour conversion).
            let vframe =
                gst_video::VideoFrameRef::from_buffer_ref_readable(out[0].as_ref(), &info).unwrap();
            let y = vframe.plane_data(0).unwrap();
            let row = info.width() as usize * info.comp_pstride(0).max(1) as usize;
            assert!(
                y[..row].iter().all(|v| v.abs_diff(128) <= 1 || *v == 255),
                "{format} x{scale}: {:?}",
                &y[..row.min(16)]
            );
        }
    }
}

#[test]
fn downstream_can_fix_the_output_size() {
    common::init();
    let pipeline = common::launch(
        "videotestsrc num-buffers=12 ! video/x-raw,format=I420,width=32,height=24,framerate=25/1 ! \
         turbovsr model=bicubic window=9 overlap=1 ! video/x-raw,width=100,height=50 ! \
         appsink name=sink sync=false",
    );
    let (samples, _) = run_to_eos(&pipeline);
    assert_eq!(samples.len(), 12);
    let info = gst_video::VideoInfo::from_caps(samples[0].caps().unwrap()).unwrap();
    assert_eq!((info.width(), info.height()), (100, 50));
}

#[test]
fn eos_mid_window_drains_the_tail_first() {
    common::init();
    // A full-length first window: 20 frames do not fill it.
    let mut h = harness(&[("first-window", &49u32)]);
    let caps = caps("RGBA", 4, 4);
    h.set_src_caps(caps.clone());
    for i in 0..20 {
        h.push(frame(&caps, i, 1)).unwrap();
    }
    // Nothing is out before the window is full or the stream ends.
    assert!(drain(&mut h).is_empty());
    h.push_event(gst::event::Eos::new());
    // The element pushes the tail before EOS, from the streaming thread: all 20 are queued now.
    assert_eq!(h.buffers_in_queue(), 20);
    assert_timestamps(&drain(&mut h), 0);
    assert!(has_event(&mut h, gst::EventType::Eos));
}

/// A harness whose element holds 30 RGB frames of a full-length first window (nothing pushed).
fn holding_thirty_frames() -> (Harness, gst::Caps) {
    let mut h = harness(&[("first-window", &49u32)]);
    let caps = caps("RGB", 4, 4);
    h.set_src_caps(caps.clone());
    for i in 0..30 {
        h.push(frame(&caps, i, 1)).unwrap();
    }
    (h, caps)
}

#[test]
fn flush_drops_buffered_frames_and_restarts() {
    common::init();
    // A full-length first window: nothing is pushed before the flush.
    let (mut h, caps) = holding_thirty_frames();
    assert!(h.push_event(gst::event::FlushStart::new()));
    assert_eq!(h.push(frame(&caps, 30, 1)), Err(gst::FlowError::Flushing));
    assert!(h.push_event(gst::event::FlushStop::new(true)));
    let mut segment = gst::FormattedSegment::<gst::ClockTime>::new();
    segment.set_start(FRAME * 100);
    assert!(h.push_event(gst::event::Segment::new(&segment)));
    for i in 100..109 {
        h.push(frame(&caps, i, 2)).unwrap();
    }
    h.push_event(gst::event::Eos::new());
    let out = drain(&mut h);
    assert_eq!(out.len(), 9, "only the frames after the flush come out");
    assert_timestamps(&out, 100);
    assert!(out[0].flags().contains(gst::BufferFlags::DISCONT));
}

/// A flush lets go of the frames the element gathered for its next window at once (the worker
/// drops them when the flush ends), not when the next stream's first frame comes.
#[test]
fn a_flush_releases_the_frames_held() {
    common::init();
    let (mut h, _) = holding_thirty_frames();
    let sr = h.element().unwrap();
    assert_eq!(sr.property::<u64>("frames-held"), 30);
    assert!(h.push_event(gst::event::FlushStart::new()));
    assert!(h.push_event(gst::event::FlushStop::new(true)));
    let start = std::time::Instant::now();
    while sr.property::<u64>("frames-held") > 0 && start.elapsed().as_secs() < 5 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(sr.property::<u64>("frames-held"), 0, "after FLUSH_STOP");
}

#[test]
fn caps_change_mid_stream_drains_first() {
    common::init();
    // A full-length first window, so that nothing is pushed before the caps change drains.
    let mut h = harness(&[("scale", &2u32), ("first-window", &49u32)]);
    let small = caps("RGB", 8, 8);
    h.set_src_caps(small.clone());
    for i in 0..10 {
        h.push(frame(&small, i, 1)).unwrap();
    }
    // The same caps again change nothing: the window keeps filling. So does the same caps
    // with the same segment, as gst_harness_set_src_caps sends them.
    assert!(h.push_event(gst::event::Caps::new(&small)));
    h.set_src_caps(small.clone());
    assert_eq!(h.buffers_in_queue(), 0);
    let large = caps("NV12", 12, 10);
    h.set_src_caps(large.clone());
    // The 10 frames of the old caps were drained before the new caps went downstream.
    assert_eq!(h.buffers_in_queue(), 10);
    for i in 10..15 {
        h.push(frame(&large, i, 128)).unwrap();
    }
    h.push_event(gst::event::Eos::new());
    let out = drain(&mut h);
    assert_eq!(out.len(), 15);
    assert_timestamps(&out, 0);
    assert!(out[..10].iter().all(|b| b.size() == 16 * 16 * 3));
    let nv12 = gst_video::VideoInfo::from_caps(&caps("NV12", 24, 20))
        .unwrap()
        .size();
    assert!(out[10..].iter().all(|b| b.size() == nv12));
}

#[test]
fn discontinuities_gaps_and_missing_timestamps_lose_no_frame() {
    common::init();
    let mut h = harness(&[("window", &9u32), ("overlap", &1u32)]);
    let caps = caps("RGB", 4, 4);
    h.set_src_caps(caps.clone());
    for i in 0..5 {
        h.push(frame(&caps, i, 1)).unwrap();
    }
    assert!(h.push_event(gst::event::Gap::new(FRAME * 5, FRAME)));
    // Frames after the gap, the first flagged DISCONT.
    for i in 6..12 {
        let mut b = frame(&caps, i, 1);
        if i == 6 {
            b.make_mut().set_flags(gst::BufferFlags::DISCONT);
        }
        h.push(b).unwrap();
    }
    // Frames without timestamps.
    for _ in 0..4 {
        let mut b = frame(&caps, 0, 1);
        b.make_mut().set_pts(gst::ClockTime::NONE);
        b.make_mut().set_duration(gst::ClockTime::NONE);
        h.push(b).unwrap();
    }
    h.push_event(gst::event::Eos::new());
    let out = drain(&mut h);
    assert_eq!(out.len(), 15);
    let pts: Vec<Option<gst::ClockTime>> = out.iter().map(|b| b.pts()).collect();
    let expected: Vec<Option<gst::ClockTime>> = (0..5)
        .chain(6..12)
        .map(|i| Some(FRAME * i))
        .chain(std::iter::repeat_n(None, 4))
        .collect();
    assert_eq!(pts, expected);
    assert!(has_event(&mut h, gst::EventType::Gap), "GAP forwarded");
}

#[test]
fn latency_adds_the_window_duration() {
    common::init();
    let mut h = harness(&[("window", &17u32), ("overlap", &9u32)]);
    h.set_upstream_latency(gst::ClockTime::from_mseconds(10));
    h.set_src_caps(caps("RGB", 4, 4));
    let latency = h.query_latency().expect("latency answered");
    // 17 frames at 25 fps, before any window has been timed.
    assert_eq!(latency, gst::ClockTime::from_mseconds(10 + 17 * 40));
    let caps = caps("RGB", 4, 4);
    for i in 0..17 {
        h.push(frame(&caps, i, 1)).unwrap();
    }
    h.push_event(gst::event::Eos::new());
    drain(&mut h);
    // Once a window has been processed its time is part of the latency.
    let element = h.element().unwrap();
    let window_ms: f64 = element.property("window-ms");
    assert!(window_ms > 0.0);
    let latency = h.query_latency().unwrap();
    assert!(latency >= gst::ClockTime::from_mseconds(10 + 17 * 40));
    assert_eq!(element.property::<u64>("frames-processed"), 17);
}

/// Runs a pipeline with an appsink named `sink` to EOS; returns the samples and the
/// `turbovsr-progress` messages.
fn run_to_eos(pipeline: &gst::Pipeline) -> (Vec<gst::Sample>, Vec<gst::Structure>) {
    let sink = common::appsink(pipeline, "sink");
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut samples = Vec::new();
    while let Some(s) = sink.try_pull_sample(gst::ClockTime::from_seconds(60)) {
        samples.push(s);
    }
    assert!(sink.is_eos(), "pipeline stopped before EOS");
    let bus = pipeline.bus().unwrap();
    let mut progress = Vec::new();
    while let Some(msg) = bus.pop_filtered(&[gst::MessageType::Element]) {
        let s = msg.structure().unwrap();
        if s.name() == "turbovsr-progress" {
            progress.push(s.to_owned());
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
    (samples, progress)
}

#[test]
fn pipeline_posts_progress_per_window() {
    common::init();
    let pipeline = common::launch(
        "videotestsrc num-buffers=100 ! video/x-raw,format=RGB,width=16,height=16,framerate=25/1 ! \
         turbovsr model=bicubic ! appsink name=sink sync=false",
    );
    let (samples, progress) = run_to_eos(&pipeline);
    assert_eq!(samples.len(), 100);
    for (i, s) in samples.iter().enumerate() {
        assert_eq!(s.buffer().unwrap().pts(), Some(FRAME * i as u64));
    }
    let windows: Vec<(u64, u64)> = progress
        .iter()
        .map(|s| {
            (
                s.get::<u64>("window").unwrap(),
                s.get::<u64>("frames").unwrap(),
            )
        })
        .collect();
    assert_eq!(
        progress
            .last()
            .unwrap()
            .get::<u64>("frames-processed")
            .unwrap(),
        100
    );
    // 100 frames: the 9-frame first window, windows of 49 stepping 40 from frame 8 (40 + 40
    // frames), then a tail of 11.
    assert_eq!(windows, vec![(0, 9), (1, 40), (2, 40), (3, 11)]);
}

#[test]
fn flushing_seek_mid_window() {
    common::init();
    let pipeline = common::launch(
        "videotestsrc ! video/x-raw,format=RGB,width=16,height=16,framerate=25/1 ! \
         turbovsr model=bicubic window=17 overlap=1 ! appsink name=sink sync=false max-buffers=4",
    );
    let sink = common::appsink(&pipeline, "sink");
    pipeline.set_state(gst::State::Playing).unwrap();
    for _ in 0..5 {
        sink.try_pull_sample(gst::ClockTime::from_seconds(30))
            .expect("a frame before the seek");
    }
    pipeline
        .seek(
            1.0,
            gst::SeekFlags::FLUSH | gst::SeekFlags::ACCURATE,
            gst::SeekType::Set,
            gst::ClockTime::from_seconds(2),
            gst::SeekType::Set,
            gst::ClockTime::from_seconds(4),
        )
        .unwrap();
    let mut pts = Vec::new();
    while let Some(s) = sink.try_pull_sample(gst::ClockTime::from_seconds(30)) {
        pts.push(s.buffer().unwrap().pts().unwrap());
    }
    assert!(sink.is_eos());
    pipeline.set_state(gst::State::Null).unwrap();
    // Frames 50..100 exactly: nothing from before the seek, nothing lost.
    let expected: Vec<gst::ClockTime> = (50..100).map(|i| FRAME * i).collect();
    assert_eq!(pts, expected);
}

#[test]
fn stopping_mid_window_does_not_hang() {
    common::init();
    for _ in 0..5 {
        let pipeline = gst::parse::launch(
            "videotestsrc is-live=true ! video/x-raw,format=RGB,width=32,height=32,framerate=100/1 ! \
             turbovsr model=bicubic window=17 ! fakesink",
        )
        .unwrap();
        pipeline.set_state(gst::State::Playing).unwrap();
        std::thread::sleep(Duration::from_millis(150));
        pipeline.set_state(gst::State::Null).unwrap();
        assert_eq!(pipeline.current_state(), gst::State::Null);
    }
}

/// Sets the pipeline to PAUSED and returns the element error it posts.
fn start_error(description: &str) -> String {
    let pipeline = gst::parse::launch(description).unwrap();
    assert!(pipeline.set_state(gst::State::Paused).is_err());
    let bus = pipeline.bus().unwrap();
    let msg = bus
        .timed_pop_filtered(gst::ClockTime::from_seconds(5), &[gst::MessageType::Error])
        .expect("an error message");
    pipeline.set_state(gst::State::Null).unwrap();
    match msg.view() {
        gst::MessageView::Error(e) => format!("{} {:?}", e.error(), e.debug()),
        _ => unreachable!(),
    }
}

#[test]
fn missing_or_bad_model_is_an_error_naming_the_path() {
    common::init();
    let err = start_error("videotestsrc ! turbovsr model=/nonexistent/turbovsr-model ! fakesink");
    assert!(err.contains("/nonexistent/turbovsr-model"), "{err}");
    assert!(err.contains("No such file"), "{err}");
    let err = start_error("videotestsrc ! turbovsr model=bicubic window=50 ! fakesink");
    assert!(err.contains("window=50"), "{err}");
    let err = start_error("videotestsrc ! turbovsr model=bicubic window=17 overlap=17 ! fakesink");
    assert!(err.contains("overlap=17"), "{err}");
    let err = start_error("videotestsrc ! turbovsr model=bicubic steps=3 ! fakesink");
    assert!(err.contains("steps=3"), "{err}");
}

/// `model` unset is the default model shipped inside the plugin (models/default/, embedded):
/// it loads and upscales every frame 4x.
#[test]
fn unset_model_is_the_shipped_default_model() {
    common::init();
    let element = gst::ElementFactory::make("turbovsr").build().unwrap();
    assert_eq!(element.property::<Option<String>>("model"), None);
    let pipeline = common::launch(
        "videotestsrc num-buffers=9 ! video/x-raw,format=RGB,width=32,height=32,framerate=25/1 ! \
         turbovsr steps=1 window=9 overlap=1 ! appsink name=sink sync=false",
    );
    let sink = common::appsink(&pipeline, "sink");
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut frames = 0;
    while let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_seconds(60)) {
        let s = sample.caps().unwrap().structure(0).unwrap().to_owned();
        assert_eq!(
            (
                s.get::<i32>("width").unwrap(),
                s.get::<i32>("height").unwrap()
            ),
            (128, 128)
        );
        frames += 1;
    }
    // every message up to EOS (popping by type would discard the others)
    let bus = pipeline.bus().unwrap();
    loop {
        let msg = bus
            .timed_pop(gst::ClockTime::from_seconds(120))
            .expect("EOS within 120 s");
        match msg.view() {
            gst::MessageView::Warning(w) => panic!("unexpected warning: {}", w.error()),
            gst::MessageView::Error(e) => panic!("{} {:?}", e.error(), e.debug()),
            gst::MessageView::Eos(_) => break,
            _ => {}
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
    assert_eq!(frames, 9);
}

#[test]
fn unsupported_caps_are_refused() {
    common::init();
    let err = gst::parse::launch(
        "videotestsrc num-buffers=2 ! video/x-raw,format=GRAY8 ! turbovsr model=bicubic ! fakesink",
    )
    .expect_err("GRAY8 must not link");
    assert!(err.to_string().contains("can't handle caps"), "{err}");
}

#[test]
fn a_new_segment_mid_stream_drains_without_losing_frames() {
    common::init();
    let mut h = harness(&[]);
    let caps = caps("RGB", 4, 4);
    h.set_src_caps(caps.clone());
    for i in 0..5 {
        h.push(frame(&caps, i, 1)).unwrap();
    }
    let mut segment = gst::FormattedSegment::<gst::ClockTime>::new();
    segment.set_start(FRAME * 5);
    segment.set_base(FRAME * 5);
    assert!(h.push_event(gst::event::Segment::new(&segment)));
    // The 5 frames of the old segment were pushed before the new segment.
    assert_eq!(h.buffers_in_queue(), 5);
    for i in 5..8 {
        h.push(frame(&caps, i, 1)).unwrap();
    }
    h.push_event(gst::event::Eos::new());
    assert_timestamps(&drain(&mut h), 0);
}

/// A seeded xorshift generator: the property test below is reproducible from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Output frame size in bytes for input `caps` at `scale`.
fn out_size(caps: &gst::Caps, scale: u32) -> usize {
    let info = gst_video::VideoInfo::from_caps(caps).unwrap();
    gst_video::VideoInfo::builder(info.format(), info.width() * scale, info.height() * scale)
        .build()
        .unwrap()
        .size()
}

#[test]
fn random_sizes_formats_and_event_orders_lose_only_flushed_frames() {
    common::init();
    const FORMATS: [&str; 8] = [
        "RGB", "BGRx", "RGBA", "I420", "NV12", "Y444", "YV12", "NV21",
    ];
    for seed in 1..=12u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let (window, overlap) = [(9, 1), (17, 9), (25, 9), (17, 1)][rng.below(4) as usize];
        let scale = 1 + rng.below(3) as u32;
        let mut h = harness(&[
            ("window", &(window as u32)),
            ("overlap", &(overlap as u32)),
            ("scale", &scale),
        ]);
        let random_caps = |rng: &mut Rng| {
            let format = FORMATS[rng.below(FORMATS.len() as u64) as usize];
            caps(format, 1 + rng.below(33) as i32, 1 + rng.below(33) as i32)
        };
        let mut current = random_caps(&mut rng);
        h.set_src_caps(current.clone());
        // Every pushed frame has its own PTS; `runs` groups them by flush, and `expected`
        // maps a PTS to the size of its output frame.
        let mut runs: Vec<Vec<u64>> = vec![Vec::new()];
        let mut expected = std::collections::HashMap::new();
        let mut out: Vec<gst::Buffer> = Vec::new();
        let mut next = 0u64;
        let ops = 40 + rng.below(120);
        for _ in 0..ops {
            match rng.below(100) {
                0..=79 => {
                    let mut b = frame(&current, next, (next % 251) as u8);
                    if rng.below(20) == 0 {
                        b.get_mut().unwrap().set_flags(gst::BufferFlags::DISCONT);
                    }
                    h.push(b).unwrap();
                    expected.insert(next, out_size(&current, scale));
                    runs.last_mut().unwrap().push(next);
                    next += 1;
                }
                80..=87 => {
                    current = random_caps(&mut rng);
                    h.set_src_caps(current.clone());
                }
                88..=92 => {
                    out.extend(drain(&mut h));
                    assert!(h.push_event(gst::event::FlushStart::new()));
                    assert!(h.push_event(gst::event::FlushStop::new(true)));
                    let segment = gst::FormattedSegment::<gst::ClockTime>::new();
                    assert!(h.push_event(gst::event::Segment::new(&segment)));
                    runs.push(Vec::new());
                }
                93..=96 => {
                    // A new segment (not a flush) drains: no frame is lost.
                    let mut segment = gst::FormattedSegment::<gst::ClockTime>::new();
                    segment.set_base(FRAME * next);
                    assert!(h.push_event(gst::event::Segment::new(&segment)));
                }
                _ => {
                    assert!(h.push_event(gst::event::Gap::builder(FRAME * next).build()));
                }
            }
        }
        h.push_event(gst::event::Eos::new());
        out.extend(drain(&mut h));
        let pts: Vec<u64> = out
            .iter()
            .map(|b| b.pts().unwrap().nseconds() / FRAME.nseconds())
            .collect();
        assert!(
            pts.windows(2).all(|w| w[0] < w[1]),
            "seed {seed}: outputs in order, none twice: {pts:?}"
        );
        for b in &out {
            let i = b.pts().unwrap().nseconds() / FRAME.nseconds();
            assert_eq!(b.size(), expected[&i], "seed {seed}: size of output {i}");
        }
        // Each flushed run comes out as a prefix of its frames (the flushed window and the
        // frames gathered for the next one are the only ones missing); the last run is whole.
        let last = runs.len() - 1;
        for (r, run) in runs.iter().enumerate() {
            let got: Vec<u64> = pts.iter().copied().filter(|p| run.contains(p)).collect();
            if r == last {
                assert_eq!(&got, run, "seed {seed}: the run ended by EOS is complete");
            } else {
                assert_eq!(
                    &got[..],
                    &run[..got.len()],
                    "seed {seed}: run {r} is a prefix"
                );
            }
        }
    }
}

#[test]
fn live_source_with_a_syncing_sink_gets_no_late_buffers() {
    common::init();
    // 25 fps live, window 9: the element reports upstream + 9 frames + its window time, the
    // sink waits that long before rendering, so every buffer arrives in time.
    let pipeline = common::launch(
        "videotestsrc is-live=true num-buffers=60 ! video/x-raw,format=I420,width=32,height=32,framerate=25/1 ! \
         turbovsr name=sr model=bicubic window=9 overlap=1 scale=2 ! fakesink name=out sync=true qos=true",
    );
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    let mut late = Vec::new();
    loop {
        let msg = bus
            .timed_pop(gst::ClockTime::from_seconds(30))
            .expect("the live pipeline finishes");
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => panic!("{} {:?}", e.error(), e.debug()),
            gst::MessageView::Qos(q) => late.push(q.get().1),
            gst::MessageView::Latency(_) => pipeline.recalculate_latency().unwrap(),
            _ => {}
        }
    }
    let mut query = gst::query::Latency::new();
    assert!(pipeline.query(&mut query));
    let (live, min, _) = query.result();
    assert!(live);
    assert!(min >= FRAME * 9, "latency {min} covers the window");
    assert!(late.is_empty(), "late buffers at {late:?}");
    pipeline.set_state(gst::State::Null).unwrap();
}
