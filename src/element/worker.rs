//! The worker thread, which feeds the stream's frames to an [`Upscaler`] and turns each window
//! it completes into output buffers; the bounded queue between it and the streaming thread; and
//! the push thread, which pushes finished windows downstream as soon as they are done (see
//! `imp.rs` for the threads' protocol).

use std::collections::VecDeque;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use gst::glib;
use gst::subclass::prelude::*;
use parking_lot::{Condvar, Mutex};

use super::buffers::{build_buffers, Frame};
use crate::pipeline::upscaler::{Upscaler, WindowRun};
use crate::pipeline::{CancelToken, FrameLayout, HeldState, ProcessError};

/// Who pushes finished windows, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PushMode {
    /// The streaming thread after each buffer: only if no push is in progress.
    Chain,
    /// The push thread: waits for a push in progress.
    Pusher,
    /// Draining (EOS, new segment, caps): first waits until the worker is idle.
    Drain,
}

/// The negotiated output: the buffers' video info and the core's layout of it.
#[derive(Debug)]
pub(super) struct OutFormat {
    pub(super) info: gst_video::VideoInfo,
    pub(super) layout: FrameLayout,
}

/// What the streaming thread hands the worker, in stream order.
pub(super) enum Input {
    /// The next frame of the stream.
    Frame(Frame),
    /// The end of a stream (EOS, new caps or segment, a discontinuity): the tail window.
    Drain,
}

/// An input with the output format of its stream and the flush generation it belongs to.
pub(super) struct Job {
    pub(super) input: Input,
    pub(super) format: Arc<OutFormat>,
    pub(super) generation: u64,
}

pub(super) struct JobResult {
    pub(super) window: u64,
    pub(super) buffers: Result<Vec<gst::Buffer>, String>,
    pub(super) elapsed_ms: f64,
    /// What the model keeps on its device after this window.
    pub(super) held: HeldState,
}

/// The queue between the streaming thread and the worker: at most one window's new frames wait
/// while the worker runs a window (the streaming thread waits for room before it reads the next
/// buffer), and finished windows wait for the push.
#[derive(Default)]
pub(super) struct Queue {
    pub(super) jobs: VecDeque<Job>,
    /// The worker is handling a job (running a window, most of the time).
    pub(super) busy: bool,
    pub(super) results: VecDeque<JobResult>,
    pub(super) flushing: bool,
    pub(super) shutdown: bool,
    /// Bumped on flush: results of an older generation are dropped.
    pub(super) generation: u64,
    /// Cancels the window the worker is running.
    running_cancel: Option<Arc<CancelToken>>,
    /// What downstream last refused from the push thread (not-linked, EOS, an error): returned
    /// by the next chain, like a pad's last flow return, until the next flush.
    pub(super) downstream: Option<gst::FlowError>,
}

#[derive(Default)]
pub(super) struct Shared {
    pub(super) queue: Mutex<Queue>,
    pub(super) cond: Condvar,
}

impl Shared {
    /// Starts or ends flushing. Starting unblocks a waiting streaming thread and cancels the
    /// running window (FLUSH_START, PAUSED->READY, shutdown); ending drops the queued window and
    /// the finished ones, whose results belong to the flushed stream (FLUSH_STOP).
    pub(super) fn set_flushing(&self, flushing: bool) {
        let mut q = self.queue.lock();
        q.flushing = flushing;
        if flushing {
            if let Some(c) = &q.running_cancel {
                c.cancel();
            }
        } else {
            q.jobs.clear();
            q.results.clear();
            q.downstream = None;
            q.generation += 1;
        }
        self.cond.notify_all();
    }
}

/// The model's worker thread and the push thread, which share the queue.
pub(super) struct Worker {
    pub(super) shared: Arc<Shared>,
    handle: Option<JoinHandle<()>>,
    pusher: Option<JoinHandle<()>>,
}

impl Worker {
    pub(super) fn spawn(
        upscaler: Upscaler<Frame>,
        element: glib::WeakRef<super::TurboVsr>,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let thread_shared = shared.clone();
        let handle = std::thread::Builder::new()
            .name("turbovsr-worker".into())
            .spawn(move || worker_loop(upscaler, &thread_shared))?;
        let mut worker = Self {
            shared: shared.clone(),
            handle: Some(handle),
            pusher: None,
        };
        worker.pusher = Some(
            std::thread::Builder::new()
                .name("turbovsr-push".into())
                .spawn(move || push_loop(&shared, &element))?,
        );
        Ok(worker)
    }

    pub(super) fn stop(&mut self) {
        self.shared.queue.lock().shutdown = true;
        self.shared.set_flushing(true);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
        if let Some(handle) = self.pusher.take() {
            // The push thread may hold the last reference to the element, and so stop here.
            if handle.thread().id() != std::thread::current().id() {
                let _ = handle.join();
            }
        }
    }
}

/// The push thread: pushes each finished window downstream as soon as the worker is done
/// with it, whether or not another input buffer comes.
fn push_loop(shared: &Shared, element: &glib::WeakRef<super::TurboVsr>) {
    loop {
        {
            let mut q = shared.queue.lock();
            while !q.shutdown && (q.results.is_empty() || q.flushing || q.downstream.is_some()) {
                shared.cond.wait(&mut q);
            }
            if q.shutdown {
                return;
            }
        }
        let Some(element) = element.upgrade() else {
            return;
        };
        if let Err(err) = element.imp().push_ready(PushMode::Pusher) {
            let mut q = shared.queue.lock();
            if err != gst::FlowError::Flushing && !q.flushing {
                q.downstream.get_or_insert(err);
                // A chain waiting to queue a window returns the error instead.
                shared.cond.notify_all();
            }
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The worker: takes the jobs in order (not while a finished window waits for its push, so that
/// downstream's back-pressure reaches upstream), feeds them to the upscaler and queues each
/// window it completes as output buffers.
fn worker_loop(mut upscaler: Upscaler<Frame>, shared: &Shared) {
    let mut last_generation = 0;
    loop {
        let (job, cancel) = {
            let mut q = shared.queue.lock();
            loop {
                if q.shutdown {
                    return;
                }
                if !q.flushing && q.generation != last_generation {
                    // A flush ended (FLUSH_STOP): the frames the upscaler holds belong to the
                    // flushed stream, so they go now, not when the next stream's first frame
                    // comes (`frames-held` counts them until then).
                    last_generation = q.generation;
                    q.busy = true;
                    drop(q);
                    upscaler.reset();
                    q = shared.queue.lock();
                    q.busy = false;
                    shared.cond.notify_all();
                    continue;
                }
                if !q.flushing && q.results.is_empty() {
                    if let Some(job) = q.jobs.pop_front() {
                        let cancel = Arc::new(CancelToken::default());
                        q.running_cancel = Some(cancel.clone());
                        q.busy = true;
                        // Room freed up: wake a chain waiting to queue the next frame.
                        shared.cond.notify_all();
                        break (job, cancel);
                    }
                }
                shared.cond.wait(&mut q);
            }
        };
        let start = Instant::now();
        let layout = &job.format.layout;
        let run = match job.input {
            Input::Frame(frame) => upscaler.push_to_layout(frame, layout, &cancel),
            Input::Drain => upscaler.finish_to_layout(layout, &cancel),
        };
        let result = run.and_then(|WindowRun { window, frames }| {
            let buffers = match frames {
                Ok(frames) => build_buffers(&window, &job.format.info, layout, &frames),
                Err(ProcessError::Cancelled) => return None,
                Err(ProcessError::Model(e)) => Err(format!("{e:#}")),
            };
            // The window's input frames are released here, before the result is announced, so
            // `frames-held` never counts a finished window.
            Some(JobResult {
                window: window.index,
                buffers,
                elapsed_ms: start.elapsed().as_secs_f64() * 1e3,
                held: upscaler.held(),
            })
        });
        let mut q = shared.queue.lock();
        q.busy = false;
        q.running_cancel = None;
        if let Some(result) = result {
            if job.generation == q.generation && !q.flushing {
                q.results.push_back(result);
            }
        }
        shared.cond.notify_all();
    }
}
