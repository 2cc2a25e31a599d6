//! `--start` / `--end` of `turbovsr upscale`: a frame-accurate time range of the input.
//!
//! The range is applied right after the decoder, on every pad `uridecodebin` exposes. The
//! first video buffer triggers one flushing, accurate seek to the range's start (so a segment of
//! a long file does not decode everything before it); until that seek has gone through, every
//! buffer and the seek's own flush events are dropped, so downstream (`turbovsr`, the muxer)
//! only ever sees the range, starting at running time 0. A frame is kept when its timestamp is
//! after the start boundary and before the end boundary; boundaries lie half a frame
//! before the frame they name, so millisecond-rounded container timestamps still select whole
//! frames. At the first buffer past the end the branch gets EOS and the decoder is refused with
//! EOS, which stops the demuxer. Where the input cannot seek, the frames before the start are
//! decoded and dropped instead.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use gst::prelude::*;

/// A position in the input: a frame number or a time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Position {
    /// Frame number, counting from 0 (`120f`).
    Frame(u64),
    /// Seconds from the first frame (`4.8`, `4.8s`, `1:02.5`, `1:00:02`).
    Seconds(f64),
}

impl FromStr for Position {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let s = text.trim();
        let bad = || {
            format!(
                "'{text}' is not a position: write frames as 120f, or seconds as 4.8, 4.8s or \
                 [h:]m:s (1:02.5)"
            )
        };
        if let Some(frames) = s.strip_suffix('f') {
            return frames
                .parse::<u64>()
                .map(Position::Frame)
                .map_err(|_| bad());
        }
        let s = s.strip_suffix('s').unwrap_or(s);
        let mut seconds = 0.0f64;
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() > 3 || parts.iter().any(|p| p.is_empty()) {
            return Err(bad());
        }
        for (i, part) in parts.iter().enumerate() {
            let value: f64 = part.parse().map_err(|_| bad())?;
            let last = i + 1 == parts.len();
            // minutes and seconds below an hour or a minute; fractions only in the last part
            if !value.is_finite() || value < 0.0 || (!last && value.fract() != 0.0) {
                return Err(bad());
            }
            if i > 0 && value >= 60.0 {
                return Err(bad());
            }
            seconds = seconds * 60.0 + value;
        }
        Ok(Position::Seconds(seconds))
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Frame(n) => write!(f, "{n}f"),
            Position::Seconds(s) => write!(f, "{s}s"),
        }
    }
}

/// Frame duration and conversions for a constant frame rate (`fps` = numer / denom).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameRate {
    pub numer: u64,
    pub denom: u64,
}

impl FrameRate {
    pub fn from_caps(caps: &gst::CapsRef) -> Option<Self> {
        let fps = caps.structure(0)?.get::<gst::Fraction>("framerate").ok()?;
        (fps.numer() > 0 && fps.denom() > 0).then(|| FrameRate {
            numer: fps.numer() as u64,
            denom: fps.denom() as u64,
        })
    }

    /// Presentation time of frame `n` in nanoseconds.
    pub fn frame_time(&self, n: u64) -> u64 {
        ((n as u128 * self.denom as u128 * 1_000_000_000) / self.numer as u128) as u64
    }

    /// The frame nearest to `seconds`.
    pub fn frame_at(&self, seconds: f64) -> u64 {
        (seconds * self.numer as f64 / self.denom as f64)
            .round()
            .max(0.0) as u64
    }

    /// The time, in nanoseconds, half a frame before frame `n`: where a range boundary at
    /// frame `n` lies.
    pub fn boundary(&self, n: u64) -> u64 {
        let half = self.frame_time(1) / 2;
        self.frame_time(n).saturating_sub(half)
    }
}

/// The keep-interval `[start, end)` in nanoseconds of presentation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub start: u64,
    pub end: Option<u64>,
}

/// `--start` and `--end` as given.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Range {
    pub start: Option<Position>,
    pub end: Option<Position>,
}

impl Range {
    pub fn is_set(&self) -> bool {
        self.start.is_some() || self.end.is_some()
    }

    /// The range in frames at `rate` (None: from the first / to the last frame).
    pub fn frames(&self, rate: FrameRate) -> (u64, Option<u64>) {
        let frame = |p: Position| match p {
            Position::Frame(n) => n,
            Position::Seconds(s) => rate.frame_at(s),
        };
        (self.start.map_or(0, frame), self.end.map(frame))
    }

    /// The keep-interval for a stream at `rate` whose first frame is at `origin` (ns; files
    /// may start later than 0), or, without a constant frame rate, the times as given from
    /// `origin` (frame positions then cannot be placed).
    pub fn bounds(&self, rate: Option<FrameRate>, origin: u64) -> Result<Bounds, String> {
        match rate {
            Some(rate) => {
                let (start, end) = self.frames(rate);
                Ok(Bounds {
                    start: if start == 0 {
                        0
                    } else {
                        origin + rate.boundary(start)
                    },
                    end: end.map(|e| origin + rate.boundary(e)),
                })
            }
            None => {
                let ns = |p: Position| match p {
                    Position::Seconds(s) => Ok((s * 1e9).round() as u64),
                    Position::Frame(_) => Err(format!(
                        "--start/--end in frames ({p}) need a constant frame rate, and the \
                         input's video has none: give the position in seconds"
                    )),
                };
                Ok(Bounds {
                    start: self.start.map(ns).transpose()?.map_or(0, |t| origin + t),
                    end: self.end.map(ns).transpose()?.map(|t| origin + t),
                })
            }
        }
    }

    /// Checks what can be checked before the input is open.
    pub fn validate(&self) -> Result<(), String> {
        match (self.start, self.end) {
            (Some(Position::Frame(a)), Some(Position::Frame(b))) if b <= a => Err(format!(
                "--end {b}f is not after --start {a}f: the range holds no frame"
            )),
            (Some(Position::Seconds(a)), Some(Position::Seconds(b))) if b <= a => Err(format!(
                "--end {b}s is not after --start {a}s: the range holds no frame"
            )),
            _ => Ok(()),
        }
    }
}

/// What the seek to the range's start has reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seek {
    /// No seek needed (the range starts at the first frame) or it failed: frames are selected
    /// by their timestamps alone.
    NotUsed,
    /// Waiting for the first video buffer, which gives the frame rate.
    Waiting,
    /// Sent with this sequence number; buffers and the seek's flushes are dropped until the
    /// new segment arrives.
    Sent(gst::Seqnum),
}

/// The range applied to the decoder's pads (shared by all of them).
pub struct RangeGate {
    range: Range,
    inner: Mutex<GateState>,
    /// Set when the range cannot be applied; the message for the user.
    error: Mutex<Option<String>>,
}

struct GateState {
    seek: Seek,
    bounds: Option<Bounds>,
    rate: Option<FrameRate>,
}

/// Per pad: whether the seek's new segment has arrived on it.
#[derive(Default)]
struct PadState {
    /// The pad's segment before the seek: seek positions are stream time.
    segment: Option<gst::FormattedSegment<gst::ClockTime>>,
    flushed: bool,
    open: bool,
    ended: bool,
}

impl RangeGate {
    pub fn new(range: Range) -> Arc<Self> {
        let seek = if range.start.is_some_and(|p| p != Position::Frame(0)) {
            Seek::Waiting
        } else {
            Seek::NotUsed
        };
        Arc::new(RangeGate {
            range,
            inner: Mutex::new(GateState {
                seek,
                bounds: None,
                rate: None,
            }),
            error: Mutex::new(None),
        })
    }

    /// Why the range could not be applied, if it could not.
    pub fn error(&self) -> Option<String> {
        self.error.lock().unwrap().clone()
    }

    /// The number of frames the range holds, once the frame rate is known (None: open end or
    /// unknown).
    pub fn expected_frames(&self) -> Option<u64> {
        let state = self.inner.lock().unwrap();
        let (start, end) = self.range.frames(state.rate?);
        end.map(|e| e.saturating_sub(start))
    }

    /// The range in frames once the video's frame rate is known.
    pub fn frames(&self) -> Option<(u64, Option<u64>)> {
        let state = self.inner.lock().unwrap();
        state.rate.map(|rate| self.range.frames(rate))
    }

    /// Installs the range on one of the decoder's pads. `video` is the pad that is upscaled;
    /// the others (audio, streams sent to fakesink) are cut to the same times.
    pub fn attach(self: &Arc<Self>, pad: &gst::Pad, video: bool) {
        let gate = Arc::clone(self);
        let pad_state = Mutex::new(PadState::default());
        pad.add_probe(
            gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM,
            move |pad, info| gate.on_data(pad, info, video, &mut pad_state.lock().unwrap()),
        );
    }

    fn on_data(
        self: &Arc<Self>,
        pad: &gst::Pad,
        info: &mut gst::PadProbeInfo,
        video: bool,
        ps: &mut PadState,
    ) -> gst::PadProbeReturn {
        if let Some(event) = info.event() {
            return self.on_event(event, ps);
        }
        let Some(buffer) = info.buffer() else {
            return gst::PadProbeReturn::Ok;
        };
        if ps.ended {
            info.flow_res = Err(gst::FlowError::Eos);
            return gst::PadProbeReturn::Handled;
        }
        let pts = buffer.pts().map(|t| t.nseconds());
        let mut state = self.inner.lock().unwrap();
        if video && state.bounds.is_none() {
            let rate = pad
                .current_caps()
                .and_then(|caps| FrameRate::from_caps(&caps));
            state.rate = rate;
            // the first buffer is the stream's first frame: positions count from it
            match self.range.bounds(rate, pts.unwrap_or(0)) {
                Ok(bounds) => state.bounds = Some(bounds),
                Err(msg) => {
                    *self.error.lock().unwrap() = Some(msg);
                    drop(state);
                    return self.end_branch(pad, info, ps);
                }
            }
            if state.seek == Seek::Waiting {
                let start = state.bounds.map_or(0, |b| b.start);
                // Timestamps to stream time (they differ where a file starts later than 0,
                // e.g. an MP4 edit list).
                let start = ps
                    .segment
                    .as_ref()
                    .and_then(|seg| seg.to_stream_time(gst::ClockTime::from_nseconds(start)))
                    .map_or(start, |t| t.nseconds());
                let seek = gst::event::Seek::new(
                    1.0,
                    gst::SeekFlags::FLUSH | gst::SeekFlags::ACCURATE,
                    gst::SeekType::Set,
                    gst::ClockTime::from_nseconds(start),
                    gst::SeekType::None,
                    gst::ClockTime::NONE,
                );
                state.seek = Seek::Sent(seek.seqnum());
                // A flushing seek waits for this streaming thread to unwind: send it from
                // another one.
                let pad = pad.clone();
                let gate = Arc::clone(self);
                std::thread::spawn(move || {
                    if !pad.send_event(seek) {
                        // Not seekable (a pipe, a live source): the frames before the start
                        // are decoded and dropped by their timestamps.
                        gate.inner.lock().unwrap().seek = Seek::NotUsed;
                    }
                });
            }
        }
        if !ps.open {
            match state.seek {
                // Until the seek's new segment: the buffers before it are from the start of
                // the input.
                Seek::Sent(_) | Seek::Waiting => return gst::PadProbeReturn::Drop,
                Seek::NotUsed => ps.open = true,
            }
        }
        let Some(bounds) = state.bounds else {
            return gst::PadProbeReturn::Ok;
        };
        drop(state);
        let Some(pts) = pts else {
            // Without a timestamp a buffer cannot be placed; keep it with its neighbours.
            return gst::PadProbeReturn::Ok;
        };
        // Strictly after: the accurate seek to the start boundary makes the decoder clip the
        // frame before it to a buffer that starts exactly there.
        if bounds.start > 0 && pts <= bounds.start {
            return gst::PadProbeReturn::Drop;
        }
        if bounds.end.is_some_and(|end| pts >= end) {
            return self.end_branch(pad, info, ps);
        }
        gst::PadProbeReturn::Ok
    }

    fn on_event(&self, event: &gst::EventRef, ps: &mut PadState) -> gst::PadProbeReturn {
        if let gst::EventView::Segment(seg) = event.view() {
            if let Ok(seg) = seg.segment().clone().downcast::<gst::ClockTime>() {
                ps.segment.get_or_insert(seg);
            }
        }
        let state = self.inner.lock().unwrap();
        let Seek::Sent(seqnum) = state.seek else {
            return gst::PadProbeReturn::Ok;
        };
        if ps.open {
            return gst::PadProbeReturn::Ok;
        }
        match event.type_() {
            // Downstream has seen no data: the seek's flush is not its business.
            gst::EventType::FlushStart => gst::PadProbeReturn::Drop,
            gst::EventType::FlushStop => {
                ps.flushed = true;
                gst::PadProbeReturn::Drop
            }
            gst::EventType::Segment if ps.flushed || event.seqnum() == seqnum => {
                ps.open = true;
                gst::PadProbeReturn::Ok
            }
            _ => gst::PadProbeReturn::Ok,
        }
    }

    /// EOS downstream of this pad, and EOS to the decoder from now on.
    fn end_branch(
        &self,
        pad: &gst::Pad,
        info: &mut gst::PadProbeInfo,
        ps: &mut PadState,
    ) -> gst::PadProbeReturn {
        ps.ended = true;
        if let Some(peer) = pad.peer() {
            peer.send_event(gst::event::Eos::new());
        }
        info.flow_res = Err(gst::FlowError::Eos);
        gst::PadProbeReturn::Handled
    }
}
