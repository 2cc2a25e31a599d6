//! Device time by part of the model, for `turbovsr bench --profile` (issue 8: where a GPU window's
//! time goes, with the binary alone; the GPU machine has no profiler).
//!
//! Off by default and then free (one relaxed atomic load per scope). When on, a [`scope`]
//! synchronizes the device where it starts and where it ends, so that its time is the device
//! time of the work queued inside it, not the time to queue it. The synchronizations stall the
//! GPU's queue, so a profiled window is slower than an unprofiled one: the bench times its
//! windows unprofiled and profiles one extra window. Scopes nest and their times are inclusive
//! (a block's self-attention includes its attention core).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use candle_core::Device;

static ENABLED: AtomicBool = AtomicBool::new(false);
/// Held by the tests that turn profiling on, which run in parallel threads of one process.
#[cfg(test)]
pub(crate) static TEST_LOCK: Mutex<()> = Mutex::new(());
static TIMES: Mutex<BTreeMap<&'static str, Part>> = Mutex::new(BTreeMap::new());

/// The accumulated time and the number of scopes of one part.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Part {
    pub time: Duration,
    pub calls: u64,
}

/// Turns profiling on or off for the whole process.
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The parts measured since the last call, by name; clears them.
pub fn take() -> BTreeMap<&'static str, Part> {
    std::mem::take(&mut *TIMES.lock().unwrap_or_else(|e| e.into_inner()))
}

/// A running measurement of `name`, recorded when dropped.
#[must_use = "the scope measures until it is dropped"]
pub struct Scope {
    name: &'static str,
    device: Device,
    start: Instant,
}

/// Starts measuring `name` on `device`, or nothing when profiling is off.
pub fn scope(name: &'static str, device: &Device) -> Option<Scope> {
    if !enabled() {
        return None;
    }
    // Work queued before the scope is not the scope's; a failed synchronize shows up in the
    // model's own next call, so it is not reported twice here.
    let _ = device.synchronize();
    Some(Scope {
        name,
        device: device.clone(),
        start: Instant::now(),
    })
}

impl Drop for Scope {
    fn drop(&mut self) {
        let _ = self.device.synchronize();
        let elapsed = self.start.elapsed();
        let mut times = TIMES.lock().unwrap_or_else(|e| e.into_inner());
        let part = times.entry(self.name).or_default();
        part.time += elapsed;
        part.calls += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_count_only_while_enabled_and_nest_inclusively() {
        let _lock = TEST_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let dev = Device::Cpu;
        set_enabled(false);
        drop(scope("profile-test outer", &dev));
        assert!(!take().contains_key("profile-test outer"));
        set_enabled(true);
        {
            let _outer = scope("profile-test outer", &dev);
            for _ in 0..3 {
                let _inner = scope("profile-test inner", &dev);
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        set_enabled(false);
        let parts = take();
        let (outer, inner) = (parts["profile-test outer"], parts["profile-test inner"]);
        assert_eq!((outer.calls, inner.calls), (1, 3));
        assert!(inner.time >= Duration::from_millis(6), "{inner:?}");
        assert!(outer.time >= inner.time, "{outer:?} {inner:?}");
    }
}
