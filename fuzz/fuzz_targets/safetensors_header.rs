//! Any bytes, as a whole file or as the first bytes of a longer one, give a header or an error,
//! never a panic; a header that parses keeps its promises (tensors inside the file, no overlap).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

#[path = "../../src/model/checkpoint/header.rs"]
#[allow(dead_code)]
mod header;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.safetensors");
    for file_len in [data.len() as u64, data.len() as u64 + 4096] {
        if let Ok(h) = header::parse_header(data, file_len, path) {
            let mut ranges: Vec<(usize, usize)> = h
                .tensors
                .values()
                .map(|t| {
                    assert!(t.start >= h.data_start && t.start <= t.end);
                    assert!(t.end as u64 <= file_len);
                    assert_eq!(t.end - t.start, t.elem_count() * t.dtype.size_in_bytes());
                    (t.start, t.end)
                })
                .filter(|(s, e)| e > s)
                .collect();
            ranges.sort();
            assert!(ranges.windows(2).all(|w| w[0].1 <= w[1].0));
        }
    }
});
