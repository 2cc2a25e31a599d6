//! `turbovsr eval` end to end on a tiny eval set written here (the folder format of
//! `python -m turbovsr_train.data.evalset`): bicubic and the tiny random checkpoint, the Markdown
//! table and the JSON, and the errors for a missing file and a wrong size.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use gstturbovsr::model::turbovsr::{write_test_model, Preset, TestModelOptions};

const SCALE: usize = 4;
const FRAMES: usize = 5;
const LR_W: usize = 32;
const LR_H: usize = 24;

fn scratch(name: &str) -> PathBuf {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("eval-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A smooth colour gradient drifting by `t` pixels per frame, at HR size, values in [0, 1].
fn hr_value(c: usize, x: f64, y: f64) -> f64 {
    let (w, h) = ((LR_W * SCALE) as f64, (LR_H * SCALE) as f64);
    match c {
        0 => 0.15 + 0.7 * x / w,
        1 => 0.15 + 0.7 * y / h,
        _ => 0.5 + 0.3 * (std::f64::consts::PI * (x / w + y / h)).sin(),
    }
}

/// Writes clip `name`: HR frames of the gradient, LR frames its exact 4x4 box average.
fn write_clip(dir: &Path, name: &str) {
    let clip = dir.join(name);
    std::fs::create_dir_all(&clip).unwrap();
    let (hw, hh) = (LR_W * SCALE, LR_H * SCALE);
    for f in 0..FRAMES {
        let shift = f as f64;
        let hr_f = |c: usize, x: usize, y: usize| hr_value(c, x as f64 + shift, y as f64);
        let mut hr = Vec::with_capacity(3 * hw * hh);
        for y in 0..hh {
            for x in 0..hw {
                for c in 0..3 {
                    hr.push((hr_f(c, x, y) * 255.0).round() as u8);
                }
            }
        }
        let mut lr = Vec::with_capacity(3 * LR_W * LR_H);
        for y in 0..LR_H {
            for x in 0..LR_W {
                for c in 0..3 {
                    let mut s = 0.0;
                    for dy in 0..SCALE {
                        for dx in 0..SCALE {
                            s += hr_f(c, x * SCALE + dx, y * SCALE + dy);
                        }
                    }
                    lr.push((s / (SCALE * SCALE) as f64 * 255.0).round() as u8);
                }
            }
        }
        common::png::write_rgb8(&clip.join(format!("hr_{f:03}.png")), hw, hh, &hr);
        common::png::write_rgb8(&clip.join(format!("lr_{f:03}.png")), LR_W, LR_H, &lr);
    }
}

fn write_set(dir: &Path) {
    let manifest = serde_json::json!({
        "scale": SCALE,
        "frames": FRAMES,
        "clips": [{"name": "clip_000", "source": "gradient", "seed": 0},
                  {"name": "clip_001", "source": "gradient", "seed": 1}],
        "degradation": {"kind": "box 4x"},
    });
    std::fs::write(dir.join("manifest.json"), manifest.to_string()).unwrap();
    write_clip(dir, "clip_000");
    write_clip(dir, "clip_001");
}

fn eval(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_turbovsr"))
        .arg("eval")
        .args(args)
        .output()
        .expect("run turbovsr")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "turbovsr eval failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// The numbers of the table row starting with `| label |` (`n/a`: NaN, `inf`: infinity).
fn row(table: &str, label: &str) -> Vec<f64> {
    let line = table
        .lines()
        .find(|l| l.starts_with(&format!("| {label} |")))
        .unwrap_or_else(|| panic!("no row {label} in\n{table}"));
    line.split('|')
        .skip(2)
        .filter(|c| !c.trim().is_empty())
        .map(|c| match c.trim() {
            "n/a" => f64::NAN,
            v => v.parse::<f64>().unwrap(),
        })
        .collect()
}

#[test]
fn bicubic_and_tiny_model_give_a_table_of_finite_numbers() {
    let dir = scratch("set");
    write_set(&dir);
    let set = dir.to_str().unwrap();
    let table_path = dir.join("table.md");
    let json_path = dir.join("out.json");
    let stdout = ok(&eval(&[
        "--set",
        set,
        "--model",
        "bicubic",
        "--out",
        table_path.to_str().unwrap(),
        "--json",
        json_path.to_str().unwrap(),
        "--device",
        "cpu",
    ]));
    let table = std::fs::read_to_string(&table_path).unwrap();
    assert_eq!(stdout, table);
    assert!(table.contains("2 clips x 5 frames, scale 4"), "{table}");
    assert!(
        table.contains("Degradation: `{\"kind\":\"box 4x\"}`"),
        "{table}"
    );
    assert!(
        table.contains("turbovsr"),
        "the command is in the report: {table}"
    );
    let gt = row(&table, "ground truth");
    let bicubic = row(&table, "bicubic");
    // PSNR-Y, PSNR-RGB, SSIM, NIQE, blockiness, flicker, sharpness, fps
    assert_eq!(bicubic.len(), 8, "{table}");
    // NIQE needs 194x194 frames: these are 128x96
    assert!(bicubic[3].is_nan() && gt[0].is_nan(), "{table}");
    assert!(
        bicubic
            .iter()
            .enumerate()
            .all(|(i, v)| i == 3 || v.is_finite()),
        "{table}"
    );
    // A smooth gradient, box-downscaled exactly: bicubic recovers it closely.
    assert!(bicubic[0] > 30.0, "PSNR-Y {} dB\n{table}", bicubic[0]);
    assert!(bicubic[2] > 0.9 && bicubic[2] <= 1.0, "SSIM {}", bicubic[2]);
    // ground truth: NIQE, blockiness, flicker 0, sharpness
    assert_eq!(gt.len(), 4, "{table}");
    assert!(gt[3] > 0.0 && bicubic[6] > 0.0);
    // no token grid in a smooth gradient; the bicubic output changes as the ground truth does
    assert!(
        (gt[1] - 1.0).abs() < 0.3 && (bicubic[4] - 1.0).abs() < 0.3,
        "{table}"
    );
    assert!(bicubic[5] < 2.0, "flicker {}\n{table}", bicubic[5]);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    assert_eq!(json["rows"][0]["method"], "bicubic");
    assert_eq!(json["clips"], 2);
    assert_eq!(json["window"], 9);
    assert_eq!(json["per_clip"].as_array().unwrap().len(), 2);
    assert_eq!(json["per_clip"][1]["clip"], "clip_001");
    assert!((json["rows"][0]["psnr_y"].as_f64().unwrap() - bicubic[0]).abs() < 0.01);

    // The tiny random checkpoint at 1 step, beside bicubic, through the same path.
    let model = dir.join("tiny");
    write_test_model(&model, &TestModelOptions::new(Preset::Tiny)).unwrap();
    let out = eval(&[
        "--set",
        set,
        "--model",
        model.to_str().unwrap(),
        "--steps",
        "1",
        "--device",
        "cpu",
        "--limit",
        "1",
    ]);
    let table = ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("model@1 clip 1/1 (clip_000)"), "{stderr}");
    assert!(table.contains("1 clips x 5 frames"), "{table}");
    let bicubic1 = row(&table, "bicubic");
    let tiny = row(&table, "model@1");
    assert!(
        tiny.iter()
            .enumerate()
            .all(|(i, v)| i == 3 || v.is_finite()),
        "{table}"
    );
    // A random model does not reconstruct the gradient.
    assert!(tiny[0] < bicubic1[0], "{table}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Copies clip `name`'s ground truth into OUT/name/sr_YYY.png (a perfect method's output).
fn write_outputs(set: &Path, out: &Path, name: &str) {
    std::fs::create_dir_all(out.join(name)).unwrap();
    for f in 0..FRAMES {
        std::fs::copy(
            set.join(name).join(format!("hr_{f:03}.png")),
            out.join(name).join(format!("sr_{f:03}.png")),
        )
        .unwrap();
    }
}

#[test]
fn outputs_of_other_methods_are_scored_beside_bicubic() {
    let dir = scratch("outputs");
    write_set(&dir);
    let perfect = dir.join("perfect");
    write_outputs(&dir, &perfect, "clip_000");
    write_outputs(&dir, &perfect, "clip_001");
    std::fs::write(
        perfect.join("timing.json"),
        r#"{"seconds_per_frame": 0.25}"#,
    )
    .unwrap();
    let set = dir.to_str().unwrap();
    let spec = format!("perfect={}", perfect.display());
    let json_path = dir.join("out.json");
    let table = ok(&eval(&[
        "--set",
        set,
        "--model",
        "bicubic",
        "--device",
        "cpu",
        "--outputs",
        &spec,
        "--json",
        json_path.to_str().unwrap(),
    ]));
    let gt = row(&table, "ground truth");
    let p = row(&table, "perfect");
    assert!(p[0].is_infinite() && p[1].is_infinite(), "{table}");
    assert_eq!(p[2], 1.0, "{table}");
    // the ground truth's own blockiness and sharpness, no flicker, fps from timing.json
    assert_eq!(
        (p[4], p[5], p[6], p[7]),
        (gt[1], 0.0, gt[3], 4.0),
        "{table}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    assert_eq!(json["rows"][1]["method"], "perfect");
    assert_eq!(json["rows"][1]["steps"], serde_json::Value::Null);
    assert_eq!(json["rows"][1]["seconds_per_frame"], 0.25);

    // a missing frame, a frame of the wrong size and a malformed option are named
    let gone = perfect.join("clip_001/sr_002.png");
    std::fs::remove_file(&gone).unwrap();
    let out = eval(&["--set", set, "--model", "bicubic", "--outputs", &spec]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && e.contains("clip_001/sr_002.png"),
        "{e}"
    );
    common::png::write_rgb8(&gone, 8, 8, &[0; 3 * 64]);
    let out = eval(&["--set", set, "--model", "bicubic", "--outputs", &spec]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && e.contains("8x8"), "{e}");
    let out = eval(&["--set", set, "--outputs", "perfect"]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && e.contains("NAME=DIR"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn missing_files_and_wrong_sizes_are_named() {
    let dir = scratch("bad");
    write_set(&dir);
    let set = dir.to_str().unwrap();
    let missing = dir.join("clip_001/lr_003.png");
    std::fs::remove_file(&missing).unwrap();
    let out = eval(&["--set", set, "--model", "bicubic", "--device", "cpu"]);
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("clip_001/lr_003.png"), "{e}");
    // An LR frame of the wrong size.
    common::png::write_rgb8(&missing, LR_W + 1, LR_H, &vec![0; 3 * (LR_W + 1) * LR_H]);
    let out = eval(&["--set", set, "--model", "bicubic", "--device", "cpu"]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        e.contains("clip_001/hr_003.png") && e.contains("33x24"),
        "{e}"
    );
    // No manifest.
    std::fs::remove_file(dir.join("manifest.json")).unwrap();
    let out = eval(&["--set", set]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("manifest.json"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
