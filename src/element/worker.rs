//! The worker thread that runs the model on one window at a time, the one-slot queue between
//! it and the streaming thread, and the push thread that pushes finished windows downstream as
//! soon as they are done (see `imp.rs` for the threads' protocol).

use std::collections::VecDeque;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use gst::glib;
use gst::subclass::prelude::*;
use parking_lot::{Condvar, Mutex};

use super::buffers::{build_buffers, Frame};
use super::imp::PushMode;
use crate::pipeline::{
    CancelToken, FrameLayout, HeldState, OutputSize, ProcessError, UpscaleEngine, Window,
};

/// A window for the worker, with what it needs to build the output buffers.
pub(super) struct Job {
    pub(super) window: Window<Frame>,
    pub(super) generation: u64,
    pub(super) out_info: gst_video::VideoInfo,
    pub(super) out_layout: FrameLayout,
}

pub(super) struct JobResult {
    pub(super) window: u64,
    pub(super) buffers: Result<Vec<gst::Buffer>, String>,
    pub(super) elapsed_ms: f64,
    /// What the model keeps on its device after this window.
    pub(super) held: HeldState,
}

/// The one-slot queue between the streaming thread and the worker.
#[derive(Default)]
pub(super) struct Queue {
    pub(super) job: Option<Job>,
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
            q.job = None;
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
        engine: UpscaleEngine,
        element: glib::WeakRef<super::TurboVsr>,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let thread_shared = shared.clone();
        let handle = std::thread::Builder::new()
            .name("turbovsr-worker".into())
            .spawn(move || worker_loop(engine, &thread_shared))?;
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

fn worker_loop(mut engine: UpscaleEngine, shared: &Shared) {
    let mut last_generation = 0;
    loop {
        let (job, cancel) = {
            let mut q = shared.queue.lock();
            loop {
                if q.shutdown {
                    return;
                }
                if let Some(job) = q.job.take() {
                    let cancel = Arc::new(CancelToken::default());
                    q.running_cancel = Some(cancel.clone());
                    q.busy = true;
                    // A slot freed up: wake a chain waiting to queue the next window.
                    shared.cond.notify_all();
                    break (job, cancel);
                }
                shared.cond.wait(&mut q);
            }
        };
        if job.generation != last_generation {
            engine.reset();
            last_generation = job.generation;
        }
        let start = Instant::now();
        engine.set_output(OutputSize::Fixed {
            width: job.out_layout.width,
            height: job.out_layout.height,
        });
        let outcome = engine.run_output(&job.window, &job.out_layout, &cancel);
        let buffers = match outcome {
            Ok(frames) => Some(build_buffers(
                &job.window,
                &job.out_info,
                &job.out_layout,
                &frames,
            )),
            Err(ProcessError::Cancelled) => None,
            Err(ProcessError::Model(e)) => Some(Err(format!("{e:#}"))),
        };
        let elapsed_ms = start.elapsed().as_secs_f64() * 1e3;
        let held = engine.held();
        // The window's input frames are released here, before the result is announced, so
        // `frames-held` never counts a finished window.
        let (index, generation) = (job.window.index, job.generation);
        drop(job);
        let mut q = shared.queue.lock();
        q.busy = false;
        q.running_cancel = None;
        if let Some(buffers) = buffers {
            if generation == q.generation && !q.flushing {
                q.results.push_back(JobResult {
                    window: index,
                    buffers,
                    elapsed_ms,
                    held,
                });
            }
        }
        shared.cond.notify_all();
    }
}
