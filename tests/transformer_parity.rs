//! Parity of the LTX transformer against diffusers 0.42.1 on the fixtures of
//! `scripts/fixtures/gen_transformer.py` (random weights, every parameter randomized), half
//! precision against f32, and the errors on bad input (issue 4).

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use gstturbovsr::model::relative_l2;
use gstturbovsr::model::transformer::{
    LtxVideoTransformer3DModel, RopePositions, TransformerInputs,
};

const F32_TOL: f32 = 1e-4;
const HALF_TOL: f32 = 2e-2;

fn fixtures_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/transformer")
}

fn cases() -> Vec<String> {
    let text = std::fs::read_to_string(fixtures_root().join("cases.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn load(path: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The fixture's inputs, owned, with the video shape and RoPE positions decoded.
struct Case {
    name: String,
    dir: PathBuf,
    inputs: HashMap<String, Tensor>,
    expected: Tensor,
    video_shape: (usize, usize, usize),
    scale: Option<[f32; 3]>,
}

impl Case {
    fn read(name: &str) -> Self {
        let dir = fixtures_root().join(name);
        let inputs = load(&dir.join("inputs.safetensors"));
        let expected = load(&dir.join("expected.safetensors"))["sample"].clone();
        let vs = inputs["video_shape"].to_vec1::<i64>().unwrap();
        let scale = inputs.get("rope_interpolation_scale").map(|t| {
            let v = t.to_vec1::<f32>().unwrap();
            [v[0], v[1], v[2]]
        });
        Self {
            name: name.to_string(),
            dir,
            inputs,
            expected,
            video_shape: (vs[0] as usize, vs[1] as usize, vs[2] as usize),
            scale,
        }
    }

    fn model_inputs(&self) -> TransformerInputs<'_> {
        TransformerInputs {
            hidden_states: &self.inputs["hidden_states"],
            encoder_hidden_states: &self.inputs["encoder_hidden_states"],
            timestep: &self.inputs["timestep"],
            encoder_attention_mask: self.inputs.get("encoder_attention_mask"),
            video_shape: self.video_shape,
            positions: match self.inputs.get("video_coords") {
                Some(c) => RopePositions::Coords(c),
                None => RopePositions::Grid {
                    rope_interpolation_scale: self.scale,
                },
            },
        }
    }

    fn model(&self, dtype: DType) -> LtxVideoTransformer3DModel {
        LtxVideoTransformer3DModel::from_pretrained(&self.dir, dtype, &Device::Cpu)
            .unwrap_or_else(|e| panic!("{}: {e:#}", self.name))
    }
}

/// Every fixture, f32 on the CPU: relative L2 <= 1e-4 against diffusers, with the attention in one
/// block and split into tiny query/key chunks (online softmax).
#[test]
fn f32_matches_diffusers_on_every_fixture() {
    let names = cases();
    assert!(
        names.len() >= 2,
        "expected at least two fixture configurations"
    );
    for name in names {
        let case = Case::read(&name);
        let mut model = case.model(DType::F32);
        let out = model.forward(&case.model_inputs()).unwrap();
        assert_eq!(out.dims(), case.expected.dims(), "{name}");
        let err = relative_l2(&out, &case.expected).unwrap();
        eprintln!("{name}: f32 relative L2 {err:.2e}");
        assert!(err <= F32_TOL, "{name}: relative L2 {err} > {F32_TOL}");

        model.set_max_attention_scores(7);
        let chunked = model.forward(&case.model_inputs()).unwrap();
        let err = relative_l2(&chunked, &case.expected).unwrap();
        assert!(
            err <= F32_TOL,
            "{name} (chunked attention): relative L2 {err}"
        );
    }
}

/// bf16 and f16 weights and activations stay within 2e-2 of the f32 result.
#[test]
fn half_precision_close_to_f32() {
    for name in cases() {
        let case = Case::read(&name);
        let want = case
            .model(DType::F32)
            .forward(&case.model_inputs())
            .unwrap();
        for dtype in [DType::BF16, DType::F16] {
            let out = case.model(dtype).forward(&case.model_inputs()).unwrap();
            assert_eq!(out.dtype(), dtype);
            let err = relative_l2(&out, &want).unwrap();
            eprintln!("{name}: {dtype:?} vs f32 relative L2 {err:.2e}");
            assert!(
                err <= HALF_TOL,
                "{name} {dtype:?}: relative L2 {err} > {HALF_TOL}"
            );
        }
    }
}

/// The split forward (timestep embedding, prepare, blocks one range at a time, output) that the
/// TurboVSR denoiser builds on gives the same result as `forward`.
#[test]
fn split_forward_equals_forward() {
    let case = Case::read("ltx_heads3x8_token_timestep");
    let model = case.model(DType::F32);
    let inputs = case.model_inputs();
    let (b, n, _) = inputs.hidden_states.dims3().unwrap();
    let time = model.embed_timestep(inputs.timestep, b, n).unwrap();
    // per-token timesteps (first frame at 0, one token at 31.25): three rows per batch element
    assert_eq!(time.rows.values.len(), 6);
    let (h, ctx) = model.prepare(&inputs, &time).unwrap();
    let h0 = model.forward_blocks(&h, &ctx, 0..1).unwrap();
    let h = model
        .forward_blocks(&h0, &ctx, 1..model.blocks().len())
        .unwrap();
    let out = model.output(&h, &time).unwrap();
    assert!(relative_l2(&out, &case.expected).unwrap() <= F32_TOL);
    assert!(model.forward_blocks(&h, &ctx, 0..99).is_err());
}

fn forward_err(case: &Case, edit: impl FnOnce(&mut HashMap<String, Tensor>)) -> String {
    let mut changed = Case::read(&case.name);
    edit(&mut changed.inputs);
    let model = case.model(DType::F32);
    match model.forward(&changed.model_inputs()) {
        Ok(_) => panic!("bad input accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_inputs_are_named_errors() {
    let case = Case::read("ltx_heads2x8_batch_timestep");
    // wrong hidden size: 9 channels for in_channels = 8
    let err = forward_err(&case, |i| {
        let h = &i["hidden_states"];
        let extra = Tensor::zeros((2, 24, 1), DType::F32, &Device::Cpu).unwrap();
        let bad = Tensor::cat(&[h, &extra], 2).unwrap();
        i.insert("hidden_states".into(), bad);
    });
    assert!(
        err.contains("hidden_states") && err.contains("in_channels"),
        "{err}"
    );
    // token count not matching video_shape (2 x 3 x 4 = 24)
    let err = forward_err(&case, |i| {
        let bad = i["hidden_states"].narrow(1, 0, 20).unwrap();
        i.insert("hidden_states".into(), bad);
    });
    assert!(
        err.contains("video_shape") && err.contains("20 tokens"),
        "{err}"
    );
    // mask length mismatch (prompt has 5 tokens)
    let err = forward_err(&case, |i| {
        let bad = i["encoder_attention_mask"].narrow(1, 0, 4).unwrap();
        i.insert("encoder_attention_mask".into(), bad);
    });
    assert!(err.contains("encoder_attention_mask"), "{err}");
    // caption width
    let err = forward_err(&case, |i| {
        let bad = i["encoder_hidden_states"].narrow(2, 0, 11).unwrap();
        i.insert("encoder_hidden_states".into(), bad);
    });
    assert!(err.contains("caption_channels"), "{err}");
    // timestep neither (b,) nor (b, n)
    let err = forward_err(&case, |i| {
        let bad = Tensor::zeros((2, 7), DType::F32, &Device::Cpu).unwrap();
        i.insert("timestep".into(), bad);
    });
    assert!(err.contains("timestep"), "{err}");
}

/// A copy of a fixture's folder with its weights edited by `edit`.
fn edited_model_dir(
    from: &str,
    tag: &str,
    edit: impl FnOnce(&mut HashMap<String, Tensor>),
) -> PathBuf {
    let src = fixtures_root().join(from);
    let dst = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("transformer_{tag}"));
    std::fs::create_dir_all(&dst).unwrap();
    std::fs::copy(src.join("config.json"), dst.join("config.json")).unwrap();
    let mut weights = load(&src.join("diffusion_pytorch_model.safetensors"));
    edit(&mut weights);
    candle_core::safetensors::save(&weights, dst.join("diffusion_pytorch_model.safetensors"))
        .unwrap();
    dst
}

#[test]
fn missing_or_misshaped_key_is_named() {
    let key = "transformer_blocks.1.attn2.to_k.weight";
    let dir = edited_model_dir("ltx_heads2x8_batch_timestep", "missing", |w| {
        w.remove(key).unwrap();
    });
    let err =
        LtxVideoTransformer3DModel::from_pretrained(&dir, DType::F32, &Device::Cpu).unwrap_err();
    assert!(format!("{err:#}").contains(key), "{err:#}");

    let key = "transformer_blocks.0.scale_shift_table";
    let dir = edited_model_dir("ltx_heads2x8_batch_timestep", "misshaped", |w| {
        let t = w[key].narrow(0, 0, 5).unwrap();
        w.insert(key.to_string(), t);
    });
    let err =
        LtxVideoTransformer3DModel::from_pretrained(&dir, DType::F32, &Device::Cpu).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains(key) && msg.contains("[6, 16]"), "{msg}");
}

/// `turbovsr forward transformer` on a checkpoint folder holding `transformer/`, through the same
/// code path as the CLI.
#[test]
fn cli_forward_runs_the_transformer() {
    let case = Case::read("ltx_heads3x8_token_timestep");
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("transformer_cli");
    let model_dir = root.join("checkpoint").join("transformer");
    std::fs::create_dir_all(&model_dir).unwrap();
    for f in ["config.json", "diffusion_pytorch_model.safetensors"] {
        std::fs::copy(case.dir.join(f), model_dir.join(f)).unwrap();
    }
    let output = root.join("out.safetensors");
    let model = root.join("checkpoint");
    common::forward(
        "transformer",
        &model,
        &case.dir.join("inputs.safetensors"),
        &output,
    )
    .unwrap();
    let got = load(&output)["sample"].clone();
    assert!(relative_l2(&got, &case.expected).unwrap() <= F32_TOL);

    let missing = case.dir.join("expected.safetensors");
    let err = common::forward("transformer", &model, &missing, &output).unwrap_err();
    assert!(err.contains("video_shape"), "{err}");
}
