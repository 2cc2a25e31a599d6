//! NIQE (src/eval/niqe.rs) against scikit-video 1.1.11's `skvideo.measure.niqe` on the
//! fixtures of `scripts/fixtures/gen_niqe.py`.

use std::path::{Path, PathBuf};

use gstturbovsr::eval::niqe::{niqe, niqe_luma};
use gstturbovsr::eval::set::read_png_rgb8;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/niqe")
}

/// The luma of a fixture (grayscale PNGs: the reader's R channel).
fn luma(name: &str) -> (usize, usize, Vec<f32>) {
    let (w, h, rgb) = read_png_rgb8(&fixtures().join(name)).unwrap();
    (w, h, rgb.chunks_exact(3).map(|p| p[0] as f32).collect())
}

#[test]
fn niqe_matches_skvideo() {
    let text = std::fs::read_to_string(fixtures().join("expected.json")).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let entries = doc["fixtures"].as_array().unwrap();
    assert_eq!(entries.len(), 3);
    for e in entries {
        let name = e["file"].as_str().unwrap();
        let (w, h, y) = luma(name);
        assert_eq!(
            (w as u64, h as u64),
            (e["width"].as_u64().unwrap(), e["height"].as_u64().unwrap())
        );
        let score = niqe_luma(w, h, &y).unwrap();
        // skvideo returns float32; niqe_f64 is its value before that store.
        let f32_score = e["niqe"].as_f64().unwrap();
        let f64_score = e["niqe_f64"].as_f64().unwrap();
        let rel = (score - f64_score).abs() / f64_score;
        println!(
            "{name}: {score} vs skvideo {f64_score} (float32 {f32_score}), relative {rel:.2e}"
        );
        assert_eq!(
            score as f32, f32_score as f32,
            "{name}: {score} vs {f32_score}"
        );
        assert!(rel < 1e-9, "{name}: {score} vs {f64_score}");

        // The Plane entry point: 8-bit values / 255, scaled back.
        let plane = gstturbovsr::eval::metrics::Plane {
            width: w,
            height: h,
            data: y.iter().map(|v| v / 255.0).collect(),
        };
        let p = niqe(&plane).unwrap();
        assert!((p - score).abs() < 1e-4 * score, "{name}: {p} vs {score}");
    }
}

/// The speed at 640x360: `cargo test --release --test niqe -- --ignored --nocapture`.
#[test]
#[ignore]
fn niqe_speed_640x360() {
    let (fw, fh, y) = luma("c.png");
    let (w, h) = (640, 360);
    let data: Vec<f32> = (0..w * h)
        .map(|i| y[(i / w % fh) * fw + i % w % fw])
        .collect();
    niqe_luma(w, h, &data).unwrap();
    let n = 20;
    let t = std::time::Instant::now();
    for _ in 0..n {
        std::hint::black_box(niqe_luma(w, h, std::hint::black_box(&data)).unwrap());
    }
    println!(
        "niqe 640x360: {:.2} ms",
        t.elapsed().as_secs_f64() * 1e3 / n as f64
    );
}
