//! The measures against their references: NIQE against scikit-video 1.1.11's
//! `skvideo.measure.niqe` on the fixtures of `scripts/fixtures/gen_niqe.py`, PSNR, SSIM and
//! sharpness against scikit-image.

use std::path::{Path, PathBuf};

use super::niqe::{niqe, niqe_luma};
use super::set::read_png_rgb8;

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
        let plane = super::metrics::Plane {
            width: w,
            height: h,
            data: y.iter().map(|v| v / 255.0).collect(),
        };
        let p = niqe(&plane).unwrap();
        assert!((p - score).abs() < 1e-4 * score, "{name}: {p} vs {score}");
    }
}

/// The speed at 640x360: `cargo test --release --lib niqe_speed -- --ignored --nocapture`.
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

/// The metrics against scikit-image 0.26 / scipy 1.17 on a fixed pair of pictures
/// (scripts/fixtures/gen_eval_metrics.py writes them and prints these values).
#[test]
fn metrics_match_scikit_image() {
    use super::{metrics, set};
    let fixture = |name: &str| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/eval")
            .join(name);
        let (w, h, rgb) = set::read_png_rgb8(&path).unwrap();
        set::rgb8_to_image(w, h, &rgb)
    };
    let (a, b) = (fixture("a.png"), fixture("b.png"));
    let close = |got: f64, want: f64, what: &str| {
        assert!(
            (got - want).abs() < 1e-5,
            "{what}: {got}, scikit-image {want}"
        );
    };
    close(
        metrics::psnr_y(&a, &b, 4).unwrap(),
        24.828105063334846,
        "PSNR-Y",
    );
    close(
        metrics::psnr_rgb(&a, &b, 4).unwrap(),
        19.969882716327678,
        "PSNR-RGB",
    );
    close(
        metrics::ssim_y(&a, &b, 4).unwrap(),
        0.5886176662756428,
        "SSIM",
    );
    close(
        metrics::sharpness(&a, 4).unwrap(),
        0.33290507467555197,
        "sharpness a",
    );
    close(
        metrics::sharpness(&b, 4).unwrap(),
        0.2417339112400839,
        "sharpness b",
    );
}
