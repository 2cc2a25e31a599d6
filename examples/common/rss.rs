//! Resident memory of this process, from /proc/self/status (Linux), for the soak examples.

/// A `/proc/self/status` field in KiB (`VmHWM`: peak resident set, `VmRSS`: current).
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Peak resident set size of this process in KiB.
pub fn peak_rss_kib() -> u64 {
    status_kib("VmHWM:")
}

/// Current resident set size of this process in KiB.
#[allow(dead_code)]
pub fn rss_kib() -> u64 {
    status_kib("VmRSS:")
}
