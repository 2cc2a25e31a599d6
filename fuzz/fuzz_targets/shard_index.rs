//! Any text gives a shard index or an error, never a panic; shard names that parse are plain
//! file names (no path can escape the index's folder).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

#[path = "../../src/model/checkpoint/header.rs"]
#[allow(dead_code)]
mod header;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(index) = header::parse_index(text, Path::new("index.json")) {
        for shard in index.shards() {
            assert!(!shard.contains('/') && shard != ".." && shard != ".");
        }
    }
});
