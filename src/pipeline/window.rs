//! Temporal windows over an unbounded frame stream (DESIGN §5, paper §3.5).
//!
//! Windows hold `window` = 1 + 8k frames and step by `window - overlap` frames, so consecutive
//! windows share `overlap` = 1 + 8j frames. Window k's first frame is an output frame of window
//! k - 1 (it conditions window k), so each frame is emitted exactly once:
//!
//! - window 0 is shorter: `first_window` frames (default 9: frame 0 as image SR plus one
//!   latent), so that the first output frame needs no more input than a player queues (DESIGN
//!   §6: at stream start, after a flush and after a new segment, which all start a new stream).
//!   It shares `overlap` frames with window 1 when it is longer than that, else only its last
//!   frame, and emits its frames `0 ..= first_window - shared`; with `first_window = window`
//!   it is a full window like the others;
//! - window k > 0 emits its frames `1 ..= step` (its frame 0 was emitted by window k - 1, and the
//!   frames of the overlapping latents are emitted by the later window, decoded from fused latents);
//! - the tail (at end of stream) holds the frames from the last window start to the end, is
//!   padded by repeating its last frame up to the next 1 + 8k length, and emits every real frame
//!   not emitted yet. Padded frames are never emitted. A one-frame stream is one one-frame window.
//!
//! The scheduler holds at most `window` frames, whatever the stream length, and at most
//! `first_window` before the first window is formed.

use std::collections::VecDeque;
use std::ops::Range;

/// Default window length (paper §3.5: 49 frames = 1 + 6 * 8).
pub const DEFAULT_WINDOW: usize = 49;
/// Default overlap between consecutive windows (paper §3.5: 9 frames = 1 + 8).
pub const DEFAULT_OVERLAP: usize = 9;
/// Default length of the first window of a stream: the shortest clip with a latent after the
/// conditioning frame (1 + 8). Players queue about 2 s of audio; 9 frames fit at any frame rate
/// up to 120 fps with room to spare.
pub const DEFAULT_FIRST_WINDOW: usize = 9;
/// The VAE compresses time by 8 with a causal first frame, so clips are 1 + 8k frames long.
pub const TEMPORAL_COMPRESSION: usize = 8;

/// An invalid window / overlap choice.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowConfigError {
    #[error("window={0} is not 1 + 8k with k >= 1 (valid: 9, 17, 25, 33, 41, 49, ...)")]
    Window(usize),
    #[error("overlap={0} is not 1 + 8j (valid: 1, 9, 17, ...)")]
    Overlap(usize),
    #[error("overlap={overlap} must be smaller than window={window}")]
    OverlapTooLarge { window: usize, overlap: usize },
    #[error("first-window={first} is not 1 + 8k up to window={window} (valid: 1, 9, 17, ...)")]
    FirstWindow { first: usize, window: usize },
}

/// Whether `n` frames form a valid clip for the causal VAE (1 + 8k, k >= 0).
pub fn is_valid_clip_len(n: usize) -> bool {
    n >= 1 && (n - 1).is_multiple_of(TEMPORAL_COMPRESSION)
}

/// The smallest valid clip length (1 + 8k) that holds `n` frames.
pub fn padded_clip_len(n: usize) -> usize {
    if n <= 1 {
        return 1;
    }
    1 + (n - 1).div_ceil(TEMPORAL_COMPRESSION) * TEMPORAL_COMPRESSION
}

/// Validated window length, overlap and first-window length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowConfig {
    window: usize,
    overlap: usize,
    first_window: usize,
}

impl Default for WindowConfig {
    fn default() -> Self {
        Self {
            window: DEFAULT_WINDOW,
            overlap: DEFAULT_OVERLAP,
            first_window: DEFAULT_FIRST_WINDOW,
        }
    }
}

impl WindowConfig {
    pub fn new(window: usize, overlap: usize) -> Result<Self, WindowConfigError> {
        if window < 1 + TEMPORAL_COMPRESSION || !is_valid_clip_len(window) {
            return Err(WindowConfigError::Window(window));
        }
        if !is_valid_clip_len(overlap) {
            return Err(WindowConfigError::Overlap(overlap));
        }
        if overlap >= window {
            return Err(WindowConfigError::OverlapTooLarge { window, overlap });
        }
        Ok(Self {
            window,
            overlap,
            first_window: DEFAULT_FIRST_WINDOW.min(window),
        })
    }

    /// The same windows with a first window of `first` frames (1 + 8k, at most `window`;
    /// `first = window` makes every window full length).
    pub fn with_first_window(self, first: usize) -> Result<Self, WindowConfigError> {
        if !is_valid_clip_len(first) || first > self.window {
            return Err(WindowConfigError::FirstWindow {
                first,
                window: self.window,
            });
        }
        Ok(Self {
            first_window: first,
            ..self
        })
    }

    pub fn first_window(&self) -> usize {
        self.first_window
    }

    pub fn window(&self) -> usize {
        self.window
    }

    pub fn overlap(&self) -> usize {
        self.overlap
    }

    /// Frames between the starts of consecutive windows.
    pub fn step(&self) -> usize {
        self.window - self.overlap
    }

    /// Frames between the starts of window 0 and window 1: window 0 shares `overlap` frames
    /// with window 1 when it is longer than that, else its last frame only.
    pub fn first_step(&self) -> usize {
        if self.first_window > self.overlap {
            self.first_window - self.overlap
        } else {
            self.first_window - 1
        }
    }
}

/// One window of frames handed to a processor.
#[derive(Debug, Clone)]
pub struct Window<F> {
    /// Window number since the stream (re)started.
    pub index: u64,
    /// Stream index (since the stream (re)started) of `frames[0]`.
    pub start: u64,
    /// The real frames of the window; the tail has fewer than `window`.
    pub frames: Vec<F>,
    /// `frames.len()` rounded up to 1 + 8k: the processor repeats the last frame to this length.
    pub padded_len: usize,
    /// Indices into `frames` that this window outputs, in order.
    pub emit: Range<usize>,
}

impl<F> Window<F> {
    /// Whether this window starts the stream, i.e. has no previous window to condition on.
    pub fn starts_stream(&self) -> bool {
        self.start == 0
    }
}

/// Groups a frame stream into overlapping windows.
#[derive(Debug)]
pub struct WindowScheduler<F> {
    config: WindowConfig,
    /// Frames from `buffered_start` on that a future window still needs.
    buffered: VecDeque<F>,
    buffered_start: u64,
    /// Stream index of the next frame to emit.
    next_emit: u64,
    received: u64,
    windows: u64,
}

impl<F: Clone> WindowScheduler<F> {
    pub fn new(config: WindowConfig) -> Self {
        Self {
            config,
            buffered: VecDeque::with_capacity(config.window()),
            buffered_start: 0,
            next_emit: 0,
            received: 0,
            windows: 0,
        }
    }

    pub fn config(&self) -> WindowConfig {
        self.config
    }

    /// Frames received since the stream (re)started.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Frames held for windows not formed yet.
    pub fn buffered(&self) -> usize {
        self.buffered.len()
    }

    /// Frames received but not yet handed out in a window's emit range.
    pub fn pending_output(&self) -> u64 {
        self.received - self.next_emit
    }

    /// Adds the next frame; returns a window once it is full (`first_window` frames for window
    /// 0, `window` frames after it).
    pub fn push(&mut self, frame: F) -> Option<Window<F>> {
        self.buffered.push_back(frame);
        self.received += 1;
        let (len, step) = if self.windows == 0 {
            (self.config.first_window(), self.config.first_step())
        } else {
            (self.config.window(), self.config.step())
        };
        if self.buffered.len() < len {
            return None;
        }
        let window = self.take_window(step + 1);
        // The next window starts `step` frames later; the overlap stays buffered.
        self.buffered.drain(..step);
        self.buffered_start += step as u64;
        Some(window)
    }

    /// Ends the stream: returns the padded tail window if any frame is not emitted yet, and
    /// resets the scheduler for a new stream.
    pub fn finish(&mut self) -> Option<Window<F>> {
        let tail = if self.next_emit < self.received {
            Some(self.take_window(self.buffered.len()))
        } else {
            None
        };
        self.reset();
        tail
    }

    /// Drops every buffered frame and starts a new stream (flush, discontinuity).
    pub fn reset(&mut self) {
        self.buffered.clear();
        self.buffered_start = 0;
        self.next_emit = 0;
        self.received = 0;
        self.windows = 0;
    }

    /// A window of all buffered frames that emits from `next_emit` up to `emit_end` (exclusive,
    /// relative to the window start).
    fn take_window(&mut self, emit_end: usize) -> Window<F> {
        let frames: Vec<F> = self.buffered.iter().cloned().collect();
        let emit_start = (self.next_emit - self.buffered_start) as usize;
        let window = Window {
            index: self.windows,
            start: self.buffered_start,
            padded_len: padded_clip_len(frames.len()),
            frames,
            emit: emit_start..emit_end,
        };
        self.windows += 1;
        self.next_emit = self.buffered_start + emit_end as u64;
        window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIGS: &[(usize, usize)] = &[
        (9, 1),
        (17, 1),
        (17, 9),
        (25, 9),
        (33, 17),
        (49, 9),
        (49, 17),
        (57, 49),
    ];

    /// Every config with first windows of 1 frame, 9 frames (the default), 17 and full length.
    fn configs() -> Vec<WindowConfig> {
        let mut out = Vec::new();
        for &(w, o) in CONFIGS {
            for first in [1, 9, 17, w] {
                if let Ok(c) = WindowConfig::new(w, o).unwrap().with_first_window(first) {
                    if !out.contains(&c) {
                        out.push(c);
                    }
                }
            }
        }
        out
    }

    /// Runs a stream of `n` frames (numbered) through the scheduler; returns the windows.
    fn run(n: u64, config: WindowConfig) -> Vec<Window<u64>> {
        let mut scheduler = WindowScheduler::new(config);
        let mut windows: Vec<_> = (0..n).filter_map(|i| scheduler.push(i)).collect();
        windows.extend(scheduler.finish());
        windows
    }

    #[test]
    fn every_frame_is_emitted_once_in_order() {
        for config in configs() {
            for n in 1..=300u64 {
                let windows = run(n, config);
                let emitted: Vec<u64> = windows
                    .iter()
                    .flat_map(|win| win.emit.clone().map(|i| win.frames[i]))
                    .collect();
                let expected: Vec<u64> = (0..n).collect();
                assert_eq!(emitted, expected, "{config:?} frames={n}");
            }
        }
    }

    #[test]
    fn windows_have_valid_lengths_and_overlap() {
        for config in configs() {
            let (w, o, first) = (config.window(), config.overlap(), config.first_window());
            for n in 1..=300u64 {
                let windows = run(n, config);
                for (k, win) in windows.iter().enumerate() {
                    let ctx = format!("{config:?} frames={n} k={k}");
                    assert_eq!(win.index, k as u64, "{ctx}");
                    // Frames are consecutive from `start`.
                    for (i, f) in win.frames.iter().enumerate() {
                        assert_eq!(*f, win.start + i as u64, "{ctx}");
                    }
                    assert!(win.frames.len() <= w, "{ctx}");
                    assert!(is_valid_clip_len(win.padded_len), "{ctx}");
                    assert!(win.padded_len >= win.frames.len(), "{ctx}");
                    assert!(win.padded_len <= w, "{ctx}");
                    // Padded frames are never emitted.
                    assert!(win.emit.end <= win.frames.len(), "{ctx}");
                    assert!(!win.emit.is_empty(), "{ctx}");
                    if k == 0 {
                        assert_eq!(win.start, 0, "{ctx}");
                        assert_eq!(win.emit.start, 0, "{ctx}");
                    } else {
                        // Each later window starts at the previous one's last emitted frame,
                        // which conditions it, and steps by window - overlap (window 0 by its
                        // own step).
                        let prev = &windows[k - 1];
                        let step = if k == 1 { config.first_step() } else { w - o };
                        assert_eq!(win.start, prev.start + step as u64, "{ctx}");
                        assert_eq!(win.start, prev.start + prev.emit.end as u64 - 1, "{ctx}");
                        assert_eq!(win.emit.start, 1, "{ctx}");
                    }
                    if k + 1 < windows.len() {
                        let (len, step) = if k == 0 {
                            (first, config.first_step())
                        } else {
                            (w, w - o)
                        };
                        assert_eq!(win.frames.len(), len, "{ctx}");
                        assert_eq!(win.emit.end, step + 1, "{ctx}");
                    }
                }
            }
        }
    }

    #[test]
    fn one_frame_stream_is_one_image_window() {
        let windows = run(1, WindowConfig::default());
        assert_eq!(windows.len(), 1);
        assert_eq!(windows[0].frames, vec![0]);
        assert_eq!(windows[0].padded_len, 1);
        assert_eq!(windows[0].emit, 0..1);
    }

    #[test]
    fn the_first_window_is_short_and_then_windows_are_full() {
        // Default: 9 frames, all emitted, then 49-frame windows from frame 8 on.
        let windows = run(120, WindowConfig::default());
        assert_eq!((windows[0].start, windows[0].frames.len()), (0, 9));
        assert_eq!(windows[0].emit, 0..9);
        assert_eq!((windows[1].start, windows[1].frames.len()), (8, 49));
        assert_eq!(windows[1].emit, 1..41);
        assert_eq!((windows[2].start, windows[2].frames.len()), (48, 49));
        // The first output needs 9 input frames, after every reset too.
        let mut scheduler = WindowScheduler::new(WindowConfig::default());
        for round in 0..3 {
            let got: Vec<_> = (0..9u64).map(|i| scheduler.push(i).is_some()).collect();
            assert_eq!(got, [vec![false; 8], vec![true]].concat(), "round {round}");
            scheduler.reset();
        }
        // A first window longer than the overlap shares the overlap with window 1.
        let c = WindowConfig::new(49, 9)
            .unwrap()
            .with_first_window(25)
            .unwrap();
        let windows = run(100, c);
        assert_eq!(
            (windows[0].frames.len(), windows[0].emit.clone()),
            (25, 0..17)
        );
        assert_eq!(windows[1].start, 16);
        // One frame: image SR of frame 0, which then conditions a full window.
        let c = WindowConfig::default().with_first_window(1).unwrap();
        let windows = run(60, c);
        assert_eq!(
            (windows[0].frames.len(), windows[0].emit.clone()),
            (1, 0..1)
        );
        assert_eq!((windows[1].start, windows[1].frames.len()), (0, 49));
        assert_eq!(windows[1].emit, 1..41);
        // Full length: the windows of earlier releases.
        let c = WindowConfig::default().with_first_window(49).unwrap();
        assert_eq!(run(100, c)[1].start, 40);
    }

    #[test]
    fn buffered_frames_stay_bounded() {
        let config = WindowConfig::default();
        let mut scheduler = WindowScheduler::new(config);
        for i in 0..10_000u64 {
            scheduler.push(i);
            assert!(scheduler.buffered() < config.window());
        }
    }

    #[test]
    fn reset_starts_a_new_stream() {
        let mut scheduler = WindowScheduler::new(WindowConfig::new(9, 1).unwrap());
        for i in 0..5u64 {
            assert!(scheduler.push(i).is_none());
        }
        scheduler.reset();
        assert_eq!(scheduler.received(), 0);
        let windows: Vec<_> = (100..109u64).filter_map(|i| scheduler.push(i)).collect();
        assert_eq!(windows.len(), 1);
        assert_eq!(windows[0].start, 0);
        assert_eq!(windows[0].frames[0], 100);
        assert!(windows[0].starts_stream());
    }

    #[test]
    fn config_validation() {
        assert!(WindowConfig::new(49, 9).is_ok());
        assert!(WindowConfig::new(9, 1).is_ok());
        assert_eq!(WindowConfig::new(48, 9), Err(WindowConfigError::Window(48)));
        assert_eq!(WindowConfig::new(1, 1), Err(WindowConfigError::Window(1)));
        assert_eq!(WindowConfig::new(49, 8), Err(WindowConfigError::Overlap(8)));
        assert_eq!(
            WindowConfig::new(17, 17),
            Err(WindowConfigError::OverlapTooLarge {
                window: 17,
                overlap: 17
            })
        );
        let c = WindowConfig::new(17, 9).unwrap();
        assert_eq!(c.first_window(), 9);
        for bad in [0, 2, 8, 25] {
            assert_eq!(
                c.with_first_window(bad),
                Err(WindowConfigError::FirstWindow {
                    first: bad,
                    window: 17
                })
            );
        }
        assert_eq!(padded_clip_len(1), 1);
        assert_eq!(padded_clip_len(2), 9);
        assert_eq!(padded_clip_len(9), 9);
        assert_eq!(padded_clip_len(10), 17);
    }
}
