//! The bicubic resize against PyTorch's `interpolate(mode="bicubic", align_corners=False)`
//! (fixture from scripts/fixtures/gen_bicubic.py), and the gst-free `Upscaler` end to end.

use candle_core::Device;
use gstturbovsr::model::relative_l2;
use gstturbovsr::pipeline::resize_bicubic;
use gstturbovsr::pipeline::{OutputSize, ProcessorSettings, RgbFrame, Upscaler, WindowConfig};

#[test]
fn bicubic_matches_pytorch() {
    let fixture =
        candle_core::safetensors::load("tests/fixtures/bicubic.safetensors", &Device::Cpu)
            .expect("tests/fixtures/bicubic.safetensors (scripts/fixtures/gen_bicubic.py)");
    let mut cases = 0;
    for i in 0.. {
        let (Some(input), Some(expected)) = (
            fixture.get(&format!("case{i}.input")),
            fixture.get(&format!("case{i}.output")),
        ) else {
            break;
        };
        let (oh, ow) = (expected.dim(2).unwrap(), expected.dim(3).unwrap());
        let got = resize_bicubic(input, oh, ow).unwrap();
        let err = relative_l2(&got, expected).unwrap();
        assert!(
            err < 1e-6,
            "case {i}: {:?} -> {oh}x{ow}: relative L2 {err}",
            input.dims()
        );
        cases += 1;
    }
    assert_eq!(cases, 4);
}

#[test]
fn upscaler_outputs_one_frame_per_input_frame() {
    let windows = WindowConfig::new(17, 9).unwrap();
    let mut up = Upscaler::load(
        "bicubic",
        &ProcessorSettings::default(),
        windows,
        OutputSize::Scale(3),
    )
    .unwrap();
    let mut out = Vec::new();
    for i in 0..40 {
        let v = i as f32 / 40.0 - 0.5;
        let frame = RgbFrame::new(5, 4, vec![v; 3 * 5 * 4], None);
        out.extend(up.push(frame).unwrap());
    }
    out.extend(up.finish().unwrap());
    assert_eq!(out.len(), 40);
    for (i, f) in out.iter().enumerate() {
        assert_eq!((f.width, f.height), (15, 12));
        let v = i as f32 / 40.0 - 0.5;
        assert!(f.rgb.iter().all(|x| (x - v).abs() < 1e-5), "frame {i}");
    }
    // A new stream after finish starts cleanly, including a one-frame stream.
    let out = up.push(RgbFrame::new(2, 2, vec![0.0; 12], None)).unwrap();
    assert!(out.is_empty());
    assert_eq!(up.finish().unwrap().len(), 1);
}

#[test]
fn upscaler_resizes_alpha_with_the_frame() {
    let mut up = Upscaler::load(
        "bicubic",
        &ProcessorSettings::default(),
        WindowConfig::default(),
        OutputSize::Fixed {
            width: 7,
            height: 9,
        },
    )
    .unwrap();
    up.push(RgbFrame::new(2, 3, vec![0.0; 18], Some(vec![0.25; 6])))
        .unwrap();
    let out = up.finish().unwrap();
    let alpha = out[0].alpha.as_ref().expect("alpha kept");
    assert_eq!(alpha.len(), 63);
    assert!(alpha.iter().all(|a| (a - 0.25).abs() < 1e-6));
}
