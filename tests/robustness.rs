//! Faults real pipelines produce, run one after another in one test (this binary's only test),
//! so that the count of the element's worker threads is not disturbed by other tests: pausing
//! and resuming mid-window, stopping mid-window, an upstream error, interlaced caps. After each,
//! no worker thread is left behind and no frame is lost that was not flushed.

use std::time::Duration;

mod common;

use gst::prelude::*;

/// Live threads of this process named `turbovsr-worker`.
fn worker_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|tasks| {
            tasks
                .flatten()
                .filter(|t| {
                    std::fs::read_to_string(t.path().join("comm"))
                        .is_ok_and(|c| c.trim() == "turbovsr-worker")
                })
                .count()
        })
        .unwrap_or(0)
}

/// The live `turbovsr-worker` threads once they have had up to 2 s to go: a joined thread's
/// entry stays in /proc until the kernel has finished its exit, which on a loaded machine can
/// be after `join` returns.
fn workers_left() -> usize {
    for _ in 0..200 {
        if worker_threads() == 0 {
            return 0;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    worker_threads()
}

fn to_null(pipeline: &gst::Pipeline) {
    pipeline.set_state(gst::State::Null).unwrap();
    assert_eq!(pipeline.current_state(), gst::State::Null);
}

#[test]
fn pipeline_faults_leave_no_thread_behind_and_lose_no_frame() {
    common::init();
    assert_eq!(worker_threads(), 0);

    // PLAYING -> PAUSED -> PLAYING mid-window: every frame comes out once, in order.
    let pipeline = common::launch(
        "videotestsrc is-live=true num-buffers=60 ! \
         video/x-raw,format=RGB,width=32,height=32,framerate=100/1 ! \
         turbovsr name=sr model=bicubic window=17 overlap=9 ! appsink name=out sync=false",
    );
    let inputs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = inputs.clone();
    pipeline
        .by_name("sr")
        .unwrap()
        .static_pad("sink")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(b) = info.buffer() {
                seen.lock().unwrap().push(b.pts().unwrap());
            }
            gst::PadProbeReturn::Ok
        });
    let sink = common::appsink(&pipeline, "out");
    pipeline.set_state(gst::State::Playing).unwrap();
    std::thread::sleep(Duration::from_millis(230));
    pipeline.set_state(gst::State::Paused).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(worker_threads(), 1, "one worker while paused");
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut pts = Vec::new();
    while let Ok(sample) = sink.pull_sample() {
        pts.push(sample.buffer().unwrap().pts().unwrap());
    }
    // A live source drops the buffer it was producing when paused (basesrc), so count what
    // reached the element: each of those comes out once, in order, with its timestamp.
    let inputs = inputs.lock().unwrap().clone();
    assert!(inputs.len() >= 58, "the source delivered {}", inputs.len());
    assert_eq!(
        pts, inputs,
        "every frame that reached the element, after pause and resume"
    );
    assert_eq!(common::finish(&pipeline), None);
    to_null(&pipeline);
    assert_eq!(workers_left(), 0, "the worker stops at NULL");

    // To NULL mid-window, repeatedly: no hang, no thread left.
    for _ in 0..3 {
        let pipeline = common::launch(
            "videotestsrc is-live=true ! video/x-raw,format=I420,width=32,height=32,framerate=100/1 ! \
             turbovsr model=bicubic window=17 ! fakesink",
        );
        pipeline.set_state(gst::State::Playing).unwrap();
        std::thread::sleep(Duration::from_millis(120));
        to_null(&pipeline);
    }
    assert_eq!(workers_left(), 0);

    // An upstream error mid-window: the pipeline reports it and shuts down cleanly.
    let pipeline = common::launch(
        "videotestsrc num-buffers=40 ! video/x-raw,format=RGB,width=32,height=32 ! \
         identity error-after=20 ! turbovsr model=bicubic window=17 ! fakesink",
    );
    pipeline.set_state(gst::State::Playing).unwrap();
    let err = common::finish(&pipeline).expect("identity's error");
    assert!(
        err.contains("error-after") || err.contains("identity"),
        "{err}"
    );
    to_null(&pipeline);
    assert_eq!(workers_left(), 0);

    // Interlaced video is refused with a message that says what to do.
    let pipeline = common::launch(
        "videotestsrc num-buffers=5 ! video/x-raw,format=I420,width=32,height=32,interlace-mode=interleaved ! \
         turbovsr model=bicubic ! fakesink",
    );
    pipeline.set_state(gst::State::Playing).unwrap();
    let err = common::finish(&pipeline).expect("interlaced caps are refused");
    assert!(
        err.contains("interlace-mode") && err.contains("deinterlace"),
        "{err}"
    );
    to_null(&pipeline);
    assert_eq!(workers_left(), 0);
}
