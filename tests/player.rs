//! Players (DESIGN §6): `playbin` with `turbovsr` as its video filter, playing a 10 s Matroska
//! file with H.264 video and Vorbis audio into clock-synchronised sinks, and seeking as players
//! do: flushing forward and back, accurate, key-unit, a segment seek, quick repeated seeks,
//! frame stepping and reverse playback. After each seek the frames of the new segment must
//! come, in order, at or after its start, within a bound, with no error on the bus.
//!
//! These seeks stalled forever before the push thread and the short first window: a window's
//! frames were pushed only when the next input buffer came, which the demuxer, blocked on the
//! prerolled audio branch's full queue, never sent.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use gst::prelude::*;

mod common;

const SECOND: gst::ClockTime = gst::ClockTime::SECOND;
/// 25 fps: frame n is at n * 40 ms.
const FRAME: gst::ClockTime = gst::ClockTime::from_mseconds(40);

/// A 10 s clip (250 frames of `width` x `height` at 25 fps, H.264 with a keyframe every 60
/// frames, and 44.1 kHz stereo Vorbis), written once per size.
fn clip(width: u32, height: u32) -> PathBuf {
    static CLIPS: OnceLock<std::sync::Mutex<Vec<(u32, u32, PathBuf)>>> = OnceLock::new();
    let clips = CLIPS.get_or_init(Default::default);
    let mut clips = clips.lock().unwrap();
    if let Some((_, _, p)) = clips.iter().find(|c| (c.0, c.1) == (width, height)) {
        return p.clone();
    }
    common::init();
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "player-{width}x{height}-{}.mkv",
        std::process::id()
    ));
    let pipeline = common::launch(&format!(
        "videotestsrc num-buffers=250 pattern=ball ! \
         video/x-raw,width={width},height={height},framerate=25/1 ! videoconvert ! \
         x264enc key-int-max=60 speed-preset=ultrafast ! queue ! mux. \
         audiotestsrc num-buffers=431 samplesperbuffer=1024 ! audio/x-raw,rate=44100,channels=2 ! \
         audioconvert ! vorbisenc ! queue ! mux. \
         matroskamux name=mux ! filesink location={}",
        path.display()
    ));
    pipeline.set_state(gst::State::Playing).unwrap();
    assert_eq!(common::finish(&pipeline), None, "writing the test clip");
    pipeline.set_state(gst::State::Null).unwrap();
    clips.push((width, height, path.clone()));
    path
}

struct Player {
    playbin: gst::Element,
    sink: gst_app::AppSink,
    bus: gst::Bus,
    /// Longest time a seek may take to its first frame.
    bound: Duration,
    label: String,
    /// Messages other than errors, since the last `take_messages`.
    seen: std::cell::RefCell<Vec<gst::Message>>,
}

/// What came after a seek: the new segment, its first frames, and the time to the first one.
struct Arrival {
    segment: gst::FormattedSegment<gst::ClockTime>,
    pts: Vec<gst::ClockTime>,
    first_after: Duration,
}

impl Player {
    fn new(label: &str, clip: &Path, filter: &str, bound: Duration) -> Self {
        common::init();
        let uri = gst::glib::filename_to_uri(clip, None).unwrap();
        let filter = gst::parse::launch(filter).unwrap();
        let sink = gst_app::AppSink::builder().sync(true).build();
        let audio = gst::ElementFactory::make("fakesink")
            .property("sync", true)
            .build()
            .unwrap();
        let playbin = gst::ElementFactory::make("playbin")
            .property("uri", uri.as_str())
            .property("video-filter", &filter)
            .property("video-sink", &sink)
            .property("audio-sink", &audio)
            .build()
            .unwrap();
        let bus = playbin.bus().unwrap();
        Self {
            playbin,
            sink,
            bus,
            bound,
            label: label.to_string(),
            seen: Default::default(),
        }
    }

    /// Panics on any error on the bus; keeps the other messages.
    fn check_bus(&self) {
        while let Some(msg) = self.bus.pop() {
            if let gst::MessageView::Error(e) = msg.view() {
                panic!(
                    "{}: error from {:?}: {} ({:?})",
                    self.label,
                    msg.src().map(|s| s.path_string()),
                    e.error(),
                    e.debug()
                );
            }
            self.seen.borrow_mut().push(msg);
        }
    }

    /// Waits (within the bound) for a message that `is` takes, and forgets the messages before.
    fn wait_message(&self, what: &str, is: impl Fn(&gst::Message) -> bool) {
        let t0 = Instant::now();
        loop {
            self.check_bus();
            let found = self.seen.borrow().iter().position(&is);
            if let Some(i) = found {
                self.seen.borrow_mut().drain(..=i);
                return;
            }
            assert!(
                t0.elapsed() < self.bound,
                "{}: no {what} within {:?}",
                self.label,
                self.bound
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn set_state(&self, state: gst::State) {
        self.playbin.set_state(state).unwrap();
        let (res, now, _) = self.playbin.state(gst::ClockTime::from_seconds(60));
        self.check_bus();
        assert!(
            res.is_ok() && now == state,
            "{}: no {state:?} within 60 s",
            self.label
        );
    }

    fn seek(
        &self,
        rate: f64,
        flags: gst::SeekFlags,
        start: gst::ClockTime,
        stop: Option<gst::ClockTime>,
    ) {
        self.playbin
            .seek(
                rate,
                flags,
                gst::SeekType::Set,
                start,
                if stop.is_some() {
                    gst::SeekType::Set
                } else {
                    gst::SeekType::None
                },
                stop,
            )
            .unwrap_or_else(|e| panic!("{}: seek to {start} refused: {e}", self.label));
    }

    /// The first `n` frames of the first segment that `accept` takes (frames of the segment
    /// before the seek may still be on their way), within the bound.
    fn frames(
        &self,
        what: &str,
        n: usize,
        accept: impl Fn(&gst::FormattedSegment<gst::ClockTime>) -> bool,
    ) -> Arrival {
        let t0 = Instant::now();
        let mut got: Option<Arrival> = None;
        loop {
            let waited = t0.elapsed();
            let done = got.as_ref().map_or(0, |a| a.pts.len());
            assert!(
                waited < self.bound * (1 + done as u32),
                "{}: {what}: {done} of {n} frames in {waited:?}",
                self.label
            );
            self.check_bus();
            let Some(sample) = self.sink.try_pull_sample(gst::ClockTime::from_mseconds(50)) else {
                assert!(
                    !self.sink.is_eos(),
                    "{}: {what}: EOS before {n} frames",
                    self.label
                );
                continue;
            };
            let segment = sample
                .segment()
                .unwrap()
                .downcast_ref::<gst::ClockTime>()
                .unwrap()
                .clone();
            if !accept(&segment) {
                continue;
            }
            let pts = sample
                .buffer()
                .unwrap()
                .pts()
                .expect("frames have timestamps");
            let arrival = got.get_or_insert_with(|| Arrival {
                segment,
                pts: Vec::new(),
                first_after: t0.elapsed(),
            });
            arrival.pts.push(pts);
            if arrival.pts.len() == n {
                break;
            }
        }
        let a = got.unwrap();
        eprintln!(
            "{}: {what}: first frame {} after {:.2} s, {} frames",
            self.label,
            a.pts[0],
            a.first_after.as_secs_f64(),
            a.pts.len()
        );
        a
    }
}

/// Frames at or after the segment's start, one frame apart, in increasing order.
fn assert_forward(p: &Player, what: &str, a: &Arrival) {
    let start = a.segment.start().unwrap();
    assert!(
        a.pts[0] >= start,
        "{}: {what}: first frame {} before {start}",
        p.label,
        a.pts[0]
    );
    for w in a.pts.windows(2) {
        assert_eq!(
            w[1],
            w[0] + FRAME,
            "{}: {what}: frames {:?}",
            p.label,
            a.pts
        );
    }
}

/// A segment that starts at `target`, or at most one keyframe interval before it.
fn near(target: gst::ClockTime) -> impl Fn(&gst::FormattedSegment<gst::ClockTime>) -> bool {
    move |s| {
        s.rate() > 0.0
            && s.start()
                .is_some_and(|st| st <= target && target < st + 3 * SECOND)
    }
}

fn play_and_seek(p: &Player, frames_per_check: usize) {
    use gst::SeekFlags as F;
    let n = frames_per_check;
    p.set_state(gst::State::Playing);
    let a = p.frames("play", n, near(gst::ClockTime::ZERO));
    assert_eq!(a.pts[0], gst::ClockTime::ZERO);
    assert_forward(p, "play", &a);

    let target = 5 * SECOND;
    p.seek(1.0, F::FLUSH, target, None);
    let a = p.frames("flushing seek forward to 5 s", n, near(target));
    assert_forward(p, "flushing seek", &a);

    let target = gst::ClockTime::from_mseconds(7520);
    p.seek(1.0, F::FLUSH | F::ACCURATE, target, None);
    let a = p.frames("accurate seek to 7.52 s", n, near(target));
    assert_eq!(a.pts[0], target, "{}: accurate seek", p.label);
    assert_forward(p, "accurate seek", &a);

    let target = SECOND;
    p.seek(1.0, F::FLUSH | F::ACCURATE, target, None);
    let a = p.frames("accurate seek back to 1 s", n, near(target));
    assert_eq!(a.pts[0], target, "{}: seek back", p.label);
    assert_forward(p, "seek back", &a);

    let target = gst::ClockTime::from_mseconds(5500);
    p.seek(1.0, F::FLUSH | F::KEY_UNIT | F::SNAP_BEFORE, target, None);
    let a = p.frames("key-unit seek to 5.5 s", n, near(target));
    // Keyframes every 60 frames: the segment snaps back to the one at 4.8 s.
    assert_eq!(a.segment.start(), Some(gst::ClockTime::from_mseconds(4800)));
    assert_eq!(a.pts[0], gst::ClockTime::from_mseconds(4800));
    assert_forward(p, "key-unit seek", &a);

    // Seeks in quick succession, as a user dragging the position slider: the last one wins.
    for ms in [3000, 6000, 2000, 8000] {
        p.seek(
            1.0,
            F::FLUSH | F::ACCURATE,
            gst::ClockTime::from_mseconds(ms),
            None,
        );
    }
    let target = gst::ClockTime::from_mseconds(4400);
    p.seek(1.0, F::FLUSH | F::ACCURATE, target, None);
    let a = p.frames(
        "five quick accurate seeks, the last to 4.4 s",
        n,
        near(target),
    );
    assert_eq!(a.pts[0], target, "{}: quick seeks", p.label);
    assert_forward(p, "quick seeks", &a);

    // A segment seek plays 2 s .. 4 s and ends with SEGMENT_DONE instead of EOS: all 50 frames
    // come, the last ones too (SEGMENT_DONE drains the element).
    let (start, stop) = (2 * SECOND, 4 * SECOND);
    p.seek(1.0, F::FLUSH | F::ACCURATE | F::SEGMENT, start, Some(stop));
    let a = p.frames("segment seek 2 s .. 4 s", 50, near(start));
    assert_eq!(a.pts[0], start);
    assert_eq!(*a.pts.last().unwrap(), stop - FRAME);
    assert_forward(p, "segment seek", &a);
    p.wait_message("SEGMENT_DONE", |m| {
        matches!(m.view(), gst::MessageView::SegmentDone(_))
    });
}

/// Frame stepping in PAUSED, past the first window, then reverse playback.
fn step_and_reverse(p: &Player) {
    use gst::SeekFlags as F;
    p.seek(1.0, F::FLUSH | F::ACCURATE, SECOND, None);
    p.frames("seek to 1 s before stepping", 1, near(SECOND));
    p.set_state(gst::State::Paused);
    let t0 = Instant::now();
    let steps = 12;
    for i in 0..steps {
        p.seen.borrow_mut().clear();
        assert!(p.playbin.send_event(gst::event::Step::new(
            gst::format::Buffers::ONE,
            1.0,
            true,
            false
        )));
        p.wait_message(&format!("STEP_DONE of step {i}"), |m| {
            matches!(m.view(), gst::MessageView::StepDone(_))
        });
    }
    eprintln!(
        "{}: {steps} frame steps in PAUSED in {:.2} s",
        p.label,
        t0.elapsed().as_secs_f64()
    );

    // Reverse playback from 6 s down: frames come with falling timestamps.
    p.set_state(gst::State::Playing);
    p.seek(
        -1.0,
        F::FLUSH | F::ACCURATE,
        gst::ClockTime::ZERO,
        Some(6 * SECOND),
    );
    let a = p.frames("reverse playback from 6 s", 5, |s| s.rate() < 0.0);
    assert!(a.pts[0] < 6 * SECOND, "{}: reverse: {:?}", p.label, a.pts);
    for w in a.pts.windows(2) {
        assert!(w[1] < w[0], "{}: reverse: frames {:?}", p.label, a.pts);
    }
    p.set_state(gst::State::Null);
}

#[test]
fn playbin_seeks_with_the_bicubic_baseline() {
    let p = Player::new(
        "bicubic",
        &clip(160, 90),
        "turbovsr model=bicubic",
        Duration::from_secs(20),
    );
    play_and_seek(&p, 12);
    step_and_reverse(&p);
}

#[test]
fn playbin_seeks_with_a_random_checkpoint() {
    let p = Player::new(
        "tiny random checkpoint",
        &clip(64, 48),
        &format!(
            "turbovsr model={} steps=1 device=cpu",
            common::tiny_model("player").display()
        ),
        Duration::from_secs(30),
    );
    play_and_seek(&p, 10);
    step_and_reverse(&p);
}

#[test]
fn playbin_seeks_with_the_default_model() {
    let p = Player::new(
        "default model",
        &clip(32, 24),
        "turbovsr steps=1 device=cpu",
        Duration::from_secs(60),
    );
    play_and_seek(&p, 10);
    p.set_state(gst::State::Null);
}
