//! Parity of TurboVSR's denoiser head (DESIGN §3.2: cond embedder, step-size embedding added to
//! the timestep embedding, cross normalization after block 0, cond scale) against the PyTorch
//! trainer's model (`training/turbovsr_train/model.py`, diffusers' LTX transformer plus the head),
//! on the fixtures of `scripts/fixtures/gen_denoiser.py`: every parameter randomized, f32 on the
//! CPU. The trainer and the element compute the same model, independently written.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use gstturbovsr::model::relative_l2;
use gstturbovsr::model::transformer::{RopePositions, TransformerInputs};
use gstturbovsr::model::turbovsr::TurboVsrDenoiser;

const F32_TOL: f32 = 1e-4;

fn fixtures_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/denoiser")
}

fn load(path: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The output of the element's denoiser on a fixture's inputs, and the reference output.
fn run(name: &str) -> (Tensor, Tensor, TurboVsrDenoiser) {
    let dir = fixtures_root().join(name);
    let inputs = load(&dir.join("inputs.safetensors"));
    let expected = load(&dir.join("expected.safetensors"))["sample"].clone();
    let vs = inputs["video_shape"].to_vec1::<i64>().unwrap();
    let scale = inputs["rope_interpolation_scale"].to_vec1::<f32>().unwrap();
    let cond = &inputs["cond"];
    let cond_scale = inputs["cond_scale"].to_vec1::<f64>().unwrap()[0];
    let step_size = inputs["step_size"].to_vec1::<f32>().unwrap()[0] as f64;
    let model = TurboVsrDenoiser::load(
        &dir.join("transformer"),
        cond.dim(2).unwrap(),
        cond_scale,
        DType::F32,
        &Device::Cpu,
    )
    .unwrap_or_else(|e| panic!("{name}: {e:#}"));
    let model_inputs = TransformerInputs {
        hidden_states: &inputs["hidden_states"],
        encoder_hidden_states: &inputs["encoder_hidden_states"],
        timestep: &inputs["timestep"],
        encoder_attention_mask: Some(&inputs["encoder_attention_mask"]),
        video_shape: (vs[0] as usize, vs[1] as usize, vs[2] as usize),
        positions: RopePositions::Grid {
            rope_interpolation_scale: Some([scale[0], scale[1], scale[2]]),
        },
    };
    let out = model
        .forward(&model_inputs, cond, step_size)
        .unwrap_or_else(|e| panic!("{name}: {e:#}"));
    (out, expected, model)
}

#[test]
fn the_element_computes_the_trainers_head_on_every_fixture() {
    let text = std::fs::read_to_string(fixtures_root().join("cases.json")).unwrap();
    let names: Vec<String> = serde_json::from_str(&text).unwrap();
    assert_eq!(names.len(), 3, "the three head configurations");
    for name in names {
        let (out, expected, model) = run(&name);
        assert_eq!(out.dims(), expected.dims(), "{name}");
        let err = relative_l2(&out, &expected).unwrap();
        eprintln!("{name}: f32 relative L2 {err:.2e}");
        assert!(err <= F32_TOL, "{name}: relative L2 {err} > {F32_TOL}");
        assert_eq!(
            model.is_shortcut(),
            !name.starts_with("flow_matching"),
            "{name}: step_embedder keys read from the trainer's export"
        );
    }
}
