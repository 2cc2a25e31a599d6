//! Checkpoint layouts and validation (issue 7): every layout written from the committed parity
//! fixtures (diffusers folder, shards + index, the original single-file names, bf16 / f16) loads
//! to the same outputs as the diffusers-layout original (exactly in f32, within 1e-2 in half
//! precision); bad files are errors naming the file and the key; `inspect` and `convert`.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use gstturbovsr::model::checkpoint::inspect::{convert, inspect, ConvertTo};
use gstturbovsr::model::checkpoint::ltx_keys::{transformer_key_to_original, VaeGeneration};
use gstturbovsr::model::checkpoint::safetensors::{parse_header, parse_index};
use gstturbovsr::model::checkpoint::Checkpoint;
use gstturbovsr::model::relative_l2;
use gstturbovsr::model::transformer::{RopePositions, TransformerInputs};
use gstturbovsr::model::turbovsr::load_prompt;
use gstturbovsr::model::turbovsr::{write_test_model, Preset, TestModelOptions, TurboVsrDenoiser};
use gstturbovsr::model::vae::AutoencoderKlLtxVideo;

const HALF_TOL: f32 = 1e-2;
/// bf16 weights against the f16-stored VAE fixtures: the rounding of the weights itself (see
/// the VAE test).
const BF16_VAE_TOL: f32 = 3e-2;
const VERSIONS: [&str; 4] = ["0.9.0", "0.9.1", "0.9.5", "0.9.7"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// A fresh scratch folder.
fn scratch(tag: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("checkpoints")
        .join(tag);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn load(path: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn save(tensors: &HashMap<String, Tensor>, path: &Path) {
    candle_core::safetensors::save(tensors, path).unwrap();
}

fn cast(tensors: &HashMap<String, Tensor>, dtype: DType) -> HashMap<String, Tensor> {
    tensors
        .iter()
        .map(|(k, v)| (k.clone(), v.to_dtype(dtype).unwrap()))
        .collect()
}

fn same(a: &Tensor, b: &Tensor) -> bool {
    a.dims() == b.dims()
        && a.flatten_all().unwrap().to_vec1::<f32>().unwrap()
            == b.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn err_text<T>(r: anyhow::Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => format!("{e:#}"),
    }
}

// ---------------------------------------------------------------- VAE layouts

/// Encode (posterior mean) and decode of the fixture's 17-frame cases.
fn vae_outputs(model: &Path, version: &str) -> Vec<Tensor> {
    let vae = AutoencoderKlLtxVideo::load(model, &Device::Cpu, DType::F32)
        .unwrap_or_else(|e| panic!("{}: {e:#}", model.display()));
    let cases = load(&root().join(format!("vae/{version}/cases.safetensors")));
    let f32 = |k: &str| cases[k].to_dtype(DType::F32).unwrap();
    let mean = vae.encode(&f32("enc_vid.sample")).unwrap().mean;
    let timestep = cases
        .get("dec_vid.timestep")
        .map(|t| t.to_dtype(DType::F32).unwrap());
    let sample = vae
        .decode(&f32("dec_vid.latent"), timestep.as_ref())
        .unwrap();
    vec![mean, sample]
}

/// The fixture VAE's weights renamed to the single-file names, with the per-channel statistics
/// the original files carry besides the two diffusers keeps.
fn vae_single_file(version: &str) -> HashMap<String, Tensor> {
    let src = root().join(format!("vae/{version}"));
    let cfg = gstturbovsr::model::vae::VaeConfig::from_json(
        &std::fs::read_to_string(src.join("config.json")).unwrap(),
    )
    .unwrap();
    let generation = VaeGeneration::of_config(&cfg);
    let mut out: HashMap<String, Tensor> = load(&src.join("diffusion_pytorch_model.safetensors"))
        .into_iter()
        .map(|(k, v)| (generation.vae_key_to_original(&k).unwrap(), v))
        .collect();
    let c = cfg.latent_channels;
    out.insert(
        "vae.per_channel_statistics.channel".into(),
        Tensor::arange(0f32, c as f32, &Device::Cpu).unwrap(),
    );
    out.insert(
        "vae.per_channel_statistics.mean-of-stds".into(),
        Tensor::ones(c, DType::F32, &Device::Cpu).unwrap(),
    );
    out
}

#[test]
fn vae_single_file_shards_and_half_precision_match_the_original() {
    for version in VERSIONS {
        let original = root().join(format!("vae/{version}"));
        let want = vae_outputs(&original, version);

        // Single file in a checkpoint folder; the tiny fixture config beside it (the presets
        // are the real 128-channel VAEs).
        let single = scratch(&format!("vae-single-{version}"));
        let st = vae_single_file(version);
        save(&st, &single.join("ltx.safetensors"));
        std::fs::create_dir_all(single.join("vae")).unwrap();
        std::fs::copy(original.join("config.json"), single.join("vae/config.json")).unwrap();
        let ck = Checkpoint::open(&single).unwrap();
        let vae = ck.vae().unwrap();
        assert_eq!(
            vae.generation,
            VaeGeneration::of_config(&vae.config),
            "{version}"
        );
        let got = vae_outputs(&single, version);
        for (g, w) in got.iter().zip(&want) {
            assert!(
                same(g, w),
                "{version}: single file differs from the original"
            );
        }

        // Sharded diffusers folder with its index.
        let sharded = scratch(&format!("vae-shards-{version}"));
        std::fs::copy(original.join("config.json"), sharded.join("config.json")).unwrap();
        let all = load(&original.join("diffusion_pytorch_model.safetensors"));
        let mut shards = [HashMap::new(), HashMap::new()];
        let mut map = serde_json::Map::new();
        for (i, (k, v)) in all.iter().enumerate() {
            shards[i % 2].insert(k.clone(), v.clone());
            let name = format!(
                "diffusion_pytorch_model-0000{}-of-00002.safetensors",
                i % 2 + 1
            );
            map.insert(k.clone(), name.into());
        }
        for (i, s) in shards.iter().enumerate() {
            save(
                s,
                &sharded.join(format!(
                    "diffusion_pytorch_model-0000{}-of-00002.safetensors",
                    i + 1
                )),
            );
        }
        std::fs::write(
            sharded.join("diffusion_pytorch_model.safetensors.index.json"),
            serde_json::json!({"metadata": {}, "weight_map": map}).to_string(),
        )
        .unwrap();
        for (g, w) in vae_outputs(&sharded, version).iter().zip(&want) {
            assert!(same(g, w), "{version}: sharded differs from the original");
        }

        // The VAE fixtures are stored in f16: widened to f32 on disk, and as they are, they
        // load to exactly the original's outputs.
        for (dtype, tag) in [(DType::F32, "f32"), (DType::F16, "f16")] {
            let dir = scratch(&format!("vae-{tag}-{version}"));
            std::fs::copy(original.join("config.json"), dir.join("config.json")).unwrap();
            save(
                &cast(&all, dtype),
                &dir.join("diffusion_pytorch_model.safetensors"),
            );
            for (g, w) in vae_outputs(&dir, version).iter().zip(&want) {
                assert!(
                    same(g, w),
                    "{version} {tag} on disk differs from the original"
                );
            }
        }
        // bf16 on disk: the loader adds nothing to the rounding of the weights (exactly the
        // outputs of f32 weights rounded to bf16), in the diffusers and the single-file layout.
        let rounded = scratch(&format!("vae-bf16ref-{version}"));
        std::fs::copy(original.join("config.json"), rounded.join("config.json")).unwrap();
        save(
            &cast(&cast(&all, DType::BF16), DType::F32),
            &rounded.join("diffusion_pytorch_model.safetensors"),
        );
        let want_bf16 = vae_outputs(&rounded, version);
        let dir = scratch(&format!("vae-bf16-{version}"));
        std::fs::copy(original.join("config.json"), dir.join("config.json")).unwrap();
        save(
            &cast(&all, DType::BF16),
            &dir.join("diffusion_pytorch_model.safetensors"),
        );
        save(&cast(&st, DType::BF16), &single.join("ltx.safetensors"));
        for model in [&dir, &single] {
            let got = vae_outputs(model, version);
            for ((g, r), w) in got.iter().zip(&want_bf16).zip(&want) {
                assert!(
                    same(g, r),
                    "{version} bf16 {}: loader changed values",
                    model.display()
                );
                // bf16 keeps 8 significant bits; through these random-weight VAEs that alone
                // moves the outputs by up to 2.0e-2 (measured, 0.9.0 decode).
                let err = relative_l2(g, w).unwrap();
                assert!(err <= BF16_VAE_TOL, "{version} bf16: relative error {err}");
            }
        }
    }
}

#[test]
fn vae_generation_is_detected_from_the_single_file_keys() {
    for (version, want) in [
        ("0.9.0", VaeGeneration::V090),
        ("0.9.1", VaeGeneration::V091),
        ("0.9.5", VaeGeneration::V095),
        ("0.9.7", VaeGeneration::V095),
    ] {
        let dir = scratch(&format!("vae-detect-{version}"));
        save(&vae_single_file(version), &dir.join("ltx.safetensors"));
        // No config beside it: the preset of the detected generation is used, which is the
        // real (128-channel) VAE, so the tiny fixture's weights have the wrong shapes, and the
        // error says where the config came from.
        let ck = Checkpoint::open(&dir).unwrap();
        let vae = ck.vae().unwrap();
        assert_eq!(vae.generation, want, "{version}");
        assert!(
            vae.config_source.contains("preset"),
            "{}",
            vae.config_source
        );
        assert_eq!(vae.config.latent_channels, 128);
        let e = err_text(AutoencoderKlLtxVideo::from_checkpoint(
            &vae,
            &Device::Cpu,
            DType::F32,
        ));
        assert!(e.contains("ltx.safetensors") && e.contains("shape"), "{e}");
    }
}

// ---------------------------------------------------------------- transformer layouts

fn transformer_output(model: &Path, case: &str, tag: &str) -> Tensor {
    let out = scratch(&format!("tf-out-{tag}")).join("out.safetensors");
    let input = root().join(format!("transformer/{case}/inputs.safetensors"));
    common::forward("transformer", model, &input, &out)
        .unwrap_or_else(|e| panic!("{}: {e}", model.display()));
    load(&out)["sample"].clone()
}

#[test]
fn transformer_single_file_shards_and_half_precision_match_the_original() {
    for case in ["ltx_heads2x8_batch_timestep", "ltx_heads2x5_geglu_nobias"] {
        let original = root().join(format!("transformer/{case}"));
        let want = transformer_output(&original, case, &format!("{case}-orig"));
        let all = load(&original.join("diffusion_pytorch_model.safetensors"));

        let single = scratch(&format!("tf-single-{case}"));
        let st: HashMap<String, Tensor> = all
            .iter()
            .map(|(k, v)| (transformer_key_to_original(k).unwrap(), v.clone()))
            .collect();
        assert!(st.contains_key("model.diffusion_model.patchify_proj.weight"));
        save(&st, &single.join("model.safetensors"));
        std::fs::create_dir_all(single.join("transformer")).unwrap();
        std::fs::copy(
            original.join("config.json"),
            single.join("transformer/config.json"),
        )
        .unwrap();
        let got = transformer_output(&single, case, &format!("{case}-single"));
        assert!(same(&got, &want), "{case}: single file differs");

        let sharded = scratch(&format!("tf-shards-{case}"));
        std::fs::copy(original.join("config.json"), sharded.join("config.json")).unwrap();
        let mut map = serde_json::Map::new();
        let mut shards = [HashMap::new(), HashMap::new(), HashMap::new()];
        for (i, (k, v)) in all.iter().enumerate() {
            shards[i % 3].insert(k.clone(), v.clone());
            map.insert(k.clone(), format!("part-{}.safetensors", i % 3).into());
        }
        for (i, s) in shards.iter().enumerate() {
            save(s, &sharded.join(format!("part-{i}.safetensors")));
        }
        std::fs::write(
            sharded.join("diffusion_pytorch_model.safetensors.index.json"),
            serde_json::json!({"weight_map": map}).to_string(),
        )
        .unwrap();
        let got = transformer_output(&sharded, case, &format!("{case}-sharded"));
        assert!(same(&got, &want), "{case}: sharded differs");

        for (dtype, tag) in [(DType::BF16, "bf16"), (DType::F16, "f16")] {
            let dir = scratch(&format!("tf-{tag}-{case}"));
            std::fs::copy(original.join("config.json"), dir.join("config.json")).unwrap();
            save(
                &cast(&all, dtype),
                &dir.join("diffusion_pytorch_model.safetensors"),
            );
            let got = transformer_output(&dir, case, &format!("{case}-{tag}"));
            let err = relative_l2(&got, &want).unwrap();
            eprintln!("{case} {tag}: relative error {err:.2e}");
            assert!(err <= HALF_TOL, "{case} {tag}: relative error {err}");
        }
    }
}

// ---------------------------------------------------------------- TurboVSR model, convert

fn tiny_model(tag: &str) -> PathBuf {
    let dir = scratch(tag);
    write_test_model(&dir, &TestModelOptions::new(Preset::Tiny)).unwrap();
    dir
}

/// One denoiser forward of the tiny model at `model`.
fn denoiser_output(model: &Path) -> Tensor {
    let m = TurboVsrDenoiser::load(model, 8, 0.7, DType::F32, &Device::Cpu)
        .unwrap_or_else(|e| panic!("{}: {e:#}", model.display()));
    let dev = Device::Cpu;
    let n = 12;
    let seeded = |seed: u64, shape: (usize, usize, usize)| {
        let len = shape.0 * shape.1 * shape.2;
        let v: Vec<f32> = (0..len)
            .map(|i| (((i as u64 + 1) * (seed * 2 + 7919)) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        Tensor::from_vec(v, shape, &dev).unwrap()
    };
    let x = seeded(1, (1, n, 8));
    let cond = seeded(2, (1, n, 8));
    let prompt = seeded(3, (1, 3, 16));
    let timestep = Tensor::new(&[500f32], &dev).unwrap();
    let inputs = TransformerInputs {
        hidden_states: &x,
        encoder_hidden_states: &prompt,
        timestep: &timestep,
        encoder_attention_mask: None,
        video_shape: (2, 2, 3),
        positions: RopePositions::Grid {
            rope_interpolation_scale: Some([0.32, 32.0, 32.0]),
        },
    };
    m.forward(&inputs, &cond, 0.25).unwrap()
}

#[test]
fn convert_round_trips_and_single_file_runs_the_denoiser() {
    let folder = tiny_model("conv-src");
    let want = denoiser_output(&folder);

    // Folder -> single file (with the tiny configs beside it, they are not the presets).
    let single = scratch("conv-single");
    let ck = Checkpoint::open(&folder).unwrap();
    convert(&ck, &single, ConvertTo::SingleFile, None).unwrap();
    assert!(single.join("ltx-video.safetensors").is_file());
    assert!(single.join("turbovsr.json").is_file());
    let file = gstturbovsr::model::checkpoint::SafetensorsFile::open(
        &single.join("ltx-video.safetensors"),
    )
    .unwrap();
    let keys = &file.header.tensors;
    for k in [
        "model.diffusion_model.patchify_proj.weight",
        "model.diffusion_model.cond_embedder.weight",
        "model.diffusion_model.adaln_single.emb.step_embedder.linear_1.weight",
        "vae.decoder.last_scale_shift_table",
        "vae.per_channel_statistics.mean-of-means",
    ] {
        assert!(keys.contains_key(k), "{k} missing from the single file");
    }
    assert!(same(&denoiser_output(&single), &want));
    let report = inspect(&single);
    assert!(report.can_run(), "{}", report.text());
    assert!(report.text().contains("single-file"), "{}", report.text());

    // And back: every tensor as in the original.
    let back = scratch("conv-back");
    convert(
        &Checkpoint::open(&single).unwrap(),
        &back,
        ConvertTo::Folder,
        None,
    )
    .unwrap();
    for sub in ["vae", "transformer"] {
        let a = load(&folder.join(sub).join("diffusion_pytorch_model.safetensors"));
        let b = load(&back.join(sub).join("diffusion_pytorch_model.safetensors"));
        assert_eq!(a.len(), b.len(), "{sub}");
        for (k, v) in &a {
            assert!(same(v, &b[k]), "{sub}: {k} changed");
        }
    }

    // A bare file cannot carry the tiny configs: a clear error, nothing half-written.
    let bare = scratch("conv-bare").join("m.safetensors");
    let e = err_text(convert(&ck, &bare, ConvertTo::SingleFile, None));
    assert!(e.contains("differs from the LTX-Video preset"), "{e}");

    // Cast to bf16 / f16 on the way: within 1e-2 of the f32 model.
    for (dtype, tag) in [(DType::BF16, "bf16"), (DType::F16, "f16")] {
        let dir = scratch(&format!("conv-{tag}"));
        convert(&ck, &dir, ConvertTo::SingleFile, Some(dtype)).unwrap();
        let err = relative_l2(&denoiser_output(&dir), &want).unwrap();
        eprintln!("tiny TurboVSR {tag}: relative error {err:.2e}");
        assert!(err <= HALF_TOL, "{tag}: relative error {err}");
    }
}

#[test]
fn inspect_reports_and_fails_on_broken_models() {
    let good = tiny_model("inspect-good");
    let r = inspect(&good);
    let text = r.text();
    assert!(r.can_run(), "{text}");
    for needle in [
        "generation: LTX-Video 0.9.1",
        "shortcut model",
        "missing keys: none",
        "unexpected keys: none",
        "dtypes: F32",
        "status: ok",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }

    let bin = env!("CARGO_BIN_EXE_turbovsr");
    let ok = std::process::Command::new(bin)
        .args(["inspect", good.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    // A missing head key, a misshaped VAE key and an unexpected transformer key, all listed.
    let broken = tiny_model("inspect-broken");
    let tf_file = broken.join("transformer/diffusion_pytorch_model.safetensors");
    let mut w = load(&tf_file);
    w.remove("cond_embedder.bias").unwrap();
    w.insert(
        "transformer_blocks.0.attn1.to_x.weight".into(),
        Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap(),
    );
    save(&w, &tf_file);
    let vae_file = broken.join("vae/diffusion_pytorch_model.safetensors");
    let mut w = load(&vae_file);
    w.insert(
        "encoder.conv_in.conv.bias".into(),
        Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
    );
    save(&w, &vae_file);
    let r = inspect(&broken);
    let text = r.text();
    assert!(!r.can_run());
    for needle in [
        "cond_embedder.bias",
        "transformer_blocks.0.attn1.to_x.weight",
        "encoder.conv_in.conv.bias: found [3], expected [4]",
        "cannot run (3 problem(s))",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    let out = std::process::Command::new(bin)
        .args(["inspect", broken.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());

    // The unexpected transformer key is an error at load time too (not only the VAE's).
    let e = err_text(TurboVsrDenoiser::load(
        &broken,
        8,
        0.7,
        DType::F32,
        &Device::Cpu,
    ));
    assert!(e.contains("cond_embedder.bias"), "{e}");
    let mut w = load(&tf_file);
    w.insert(
        "cond_embedder.bias".into(),
        Tensor::zeros(16, DType::F32, &Device::Cpu).unwrap(),
    );
    save(&w, &tf_file);
    let e = err_text(TurboVsrDenoiser::load(
        &broken,
        8,
        0.7,
        DType::F32,
        &Device::Cpu,
    ));
    assert!(
        e.contains("unexpected") && e.contains("transformer_blocks.0.attn1.to_x.weight"),
        "{e}"
    );

    // A plain LTX transformer (no head) is not a TurboVSR model.
    let plain = tiny_model("inspect-plain");
    let f = plain.join("transformer/diffusion_pytorch_model.safetensors");
    let w: HashMap<String, Tensor> = load(&f)
        .into_iter()
        .filter(|(k, _)| !k.starts_with("cond_embedder") && !k.contains("step_embedder"))
        .collect();
    save(&w, &f);
    let r = inspect(&plain);
    assert!(!r.can_run());
    assert!(r.text().contains("no TurboVSR head"), "{}", r.text());

    let r = inspect(Path::new("/nonexistent/turbovsr-model"));
    assert!(!r.can_run() && r.text().contains("/nonexistent/turbovsr-model"));
}

// ---------------------------------------------------------------- bad input

/// A VAE folder holding `bytes` as its weights; the load error.
fn vae_load_error(tag: &str, bytes: &[u8]) -> (String, PathBuf) {
    let dir = scratch(tag);
    std::fs::copy(
        root().join("vae/0.9.1/config.json"),
        dir.join("config.json"),
    )
    .unwrap();
    let file = dir.join("diffusion_pytorch_model.safetensors");
    std::fs::write(&file, bytes).unwrap();
    let e = err_text(AutoencoderKlLtxVideo::load(&dir, &Device::Cpu, DType::F32));
    (e, file)
}

fn fixture_bytes() -> Vec<u8> {
    std::fs::read(root().join("vae/0.9.1/diffusion_pytorch_model.safetensors")).unwrap()
}

/// The fixture with its header edited (the data kept).
fn with_header(edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) -> Vec<u8> {
    let bytes = fixture_bytes();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    edit(&mut header);
    let mut text = serde_json::to_vec(&header).unwrap();
    while !text.len().is_multiple_of(8) {
        text.push(b' ');
    }
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend(text);
    out.extend_from_slice(&bytes[8 + n..]);
    out
}

#[test]
fn bad_files_are_errors_naming_the_file_and_the_key() {
    let bytes = fixture_bytes();
    let name = "diffusion_pytorch_model.safetensors";

    // Truncated inside the data: the tensor that runs past the end is named.
    let (e, _) = vae_load_error("bad-trunc", &bytes[..bytes.len() - 64]);
    assert!(
        e.contains(name) && e.contains("key `") && e.contains("truncated"),
        "{e}"
    );
    let (e, _) = vae_load_error("bad-trunc8", &bytes[..5]);
    assert!(e.contains(name) && e.contains("truncated"), "{e}");

    let mut long = bytes.clone();
    long[..8].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
    let (e, _) = vae_load_error("bad-hlen", &long);
    assert!(
        e.contains(name) && e.contains("runs past the end of the file"),
        "{e}"
    );

    let mut garbage = bytes.clone();
    garbage[8] = b'[';
    garbage[9] = b'!';
    let (e, _) = vae_load_error("bad-json", &garbage);
    assert!(e.contains(name) && e.contains("invalid JSON header"), "{e}");

    let key = "decoder.conv_in.conv.bias";
    let (e, _) = vae_load_error(
        "bad-dtype",
        &with_header(|h| h[key]["dtype"] = "F31".into()),
    );
    assert!(
        e.contains(name) && e.contains(&format!("key `{key}`")) && e.contains("unknown dtype"),
        "{e}"
    );

    let (a, b) = ("decoder.conv_in.conv.bias", "decoder.conv_in.conv.weight");
    let (e, _) = vae_load_error(
        "bad-overlap",
        &with_header(|h| {
            let start = h[b]["data_offsets"][0].as_u64().unwrap();
            let len = h[a]["data_offsets"][1].as_u64().unwrap()
                - h[a]["data_offsets"][0].as_u64().unwrap();
            h[a]["data_offsets"] = serde_json::json!([start, start + len]);
        }),
    );
    assert!(
        e.contains(name) && e.contains(a) && e.contains(b) && e.contains("overlap"),
        "{e}"
    );

    let (e, _) = vae_load_error(
        "bad-past",
        &with_header(|h| {
            let len = h[a]["data_offsets"][1].as_u64().unwrap()
                - h[a]["data_offsets"][0].as_u64().unwrap();
            let end = (bytes.len() as u64) * 2;
            h[a]["data_offsets"] = serde_json::json!([end - len, end]);
        }),
    );
    assert!(
        e.contains(name) && e.contains(a) && e.contains("run past the end"),
        "{e}"
    );

    // Missing and misshaped keys of a single file name the stored key and the file.
    let dir = scratch("bad-single");
    let mut st = vae_single_file("0.9.1");
    st.remove("vae.encoder.conv_out.conv.bias").unwrap();
    save(&st, &dir.join("ltx.safetensors"));
    std::fs::create_dir_all(dir.join("vae")).unwrap();
    std::fs::copy(
        root().join("vae/0.9.1/config.json"),
        dir.join("vae/config.json"),
    )
    .unwrap();
    let e = err_text(AutoencoderKlLtxVideo::load(&dir, &Device::Cpu, DType::F32));
    assert!(
        e.contains("ltx.safetensors") && e.contains("missing key `encoder.conv_out.conv.bias`"),
        "{e}"
    );
    let mut st = vae_single_file("0.9.1");
    st.insert(
        "vae.encoder.conv_in.conv.bias".into(),
        Tensor::zeros(5, DType::F32, &Device::Cpu).unwrap(),
    );
    save(&st, &dir.join("ltx.safetensors"));
    let e = err_text(AutoencoderKlLtxVideo::load(&dir, &Device::Cpu, DType::F32));
    assert!(
        e.contains("ltx.safetensors")
            && e.contains("stored as `vae.encoder.conv_in.conv.bias`")
            && e.contains("has shape [5], expected [4]"),
        "{e}"
    );

    // An index pointing at a shard that is not there.
    let dir = scratch("bad-index");
    std::fs::copy(
        root().join("vae/0.9.1/config.json"),
        dir.join("config.json"),
    )
    .unwrap();
    std::fs::write(dir.join("shard-1.safetensors"), &bytes).unwrap();
    let keys = load(&root().join("vae/0.9.1/diffusion_pytorch_model.safetensors"));
    let mut map: BTreeMap<String, String> = keys
        .keys()
        .map(|k| (k.clone(), "shard-1.safetensors".to_string()))
        .collect();
    map.insert("latents_std".into(), "shard-2.safetensors".into());
    std::fs::write(
        dir.join("diffusion_pytorch_model.safetensors.index.json"),
        serde_json::json!({ "weight_map": map }).to_string(),
    )
    .unwrap();
    let e = err_text(AutoencoderKlLtxVideo::load(&dir, &Device::Cpu, DType::F32));
    assert!(
        e.contains("index.json")
            && e.contains("key `latents_std`")
            && e.contains("shard-2.safetensors")
            && e.contains("does not exist"),
        "{e}"
    );
}

#[test]
fn prompt_embeddings_are_checked_against_the_caption_channels() {
    let dir = scratch("prompt");
    let path = dir.join("prompt_embeds.safetensors");
    let dev = Device::Cpu;
    let write = |t: Vec<(&str, Tensor)>| {
        let m: HashMap<String, Tensor> = t.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        save(&m, &path);
    };
    write(vec![
        (
            "prompt_embeds",
            Tensor::ones((5, 16), DType::F32, &dev).unwrap(),
        ),
        (
            "prompt_attention_mask",
            Tensor::new(&[1i64, 1, 1, 0, 0], &dev).unwrap(),
        ),
    ]);
    let (e, m) = load_prompt(&path, 16, &dev).unwrap();
    assert_eq!(e.dims(), &[1, 5, 16]);
    assert_eq!(m.to_vec2::<f32>().unwrap(), vec![vec![1., 1., 1., 0., 0.]]);
    let e = err_text(load_prompt(&path, 32, &dev));
    assert!(
        e.contains("prompt_embeds.safetensors")
            && e.contains("key `prompt_embeds` has shape [5, 16], expected [L, 32]"),
        "{e}"
    );
    write(vec![
        (
            "prompt_embeds",
            Tensor::ones((5, 16), DType::F32, &dev).unwrap(),
        ),
        (
            "prompt_attention_mask",
            Tensor::ones(4, DType::F32, &dev).unwrap(),
        ),
    ]);
    let e = err_text(load_prompt(&path, 16, &dev));
    assert!(
        e.contains("key `prompt_attention_mask` has shape [4], expected [5]"),
        "{e}"
    );
    write(vec![(
        "embeds",
        Tensor::ones((5, 16), DType::F32, &dev).unwrap(),
    )]);
    let e = err_text(load_prompt(&path, 16, &dev));
    assert!(
        e.contains("missing key `prompt_embeds`") && e.contains("embeds"),
        "{e}"
    );

    // Through the processor: a checkpoint's own file is validated at load.
    let model = tiny_model("prompt-model");
    write(vec![(
        "prompt_embeds",
        Tensor::ones((2, 8), DType::F32, &dev).unwrap(),
    )]);
    std::fs::copy(&path, model.join("prompt_embeds.safetensors")).unwrap();
    let e = err_text(gstturbovsr::pipeline::load_processor(
        model.to_str().unwrap(),
        &Default::default(),
    ));
    assert!(e.contains("expected [L, 16]"), "{e}");
}

/// Random and mutated headers and index files never panic the parsers (the deterministic
/// counterpart of the cargo-fuzz targets in `fuzz/`).
#[test]
fn parsers_survive_random_and_mutated_input() {
    let seed_file = with_header(|_| {});
    let n = u64::from_le_bytes(seed_file[..8].try_into().unwrap()) as usize;
    let header = seed_file[..8 + n].to_vec();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let path = Path::new("fuzz.safetensors");
    let mut parsed = 0;
    for i in 0..3000 {
        let mut bytes = if i % 10 == 0 {
            (0..(next() % 64)).map(|_| next() as u8).collect()
        } else {
            header.clone()
        };
        for _ in 0..(1 + next() % 8) {
            if bytes.is_empty() {
                break;
            }
            let at = (next() as usize) % bytes.len();
            match next() % 4 {
                0 => bytes[at] = next() as u8,
                1 => bytes[at] = b"{}[]\",:0123456789-e"[(next() % 19) as usize],
                2 => bytes.truncate(at),
                _ => bytes.insert(at, next() as u8),
            }
        }
        let file_len = bytes.len() as u64 + next() % 4096;
        if parse_header(&bytes, file_len, path).is_ok() {
            parsed += 1;
        }
        let text = String::from_utf8_lossy(&bytes[bytes.len().min(8)..]);
        let _ = parse_index(&text, Path::new("i.json"));
    }
    // The unmutated header parses: the mutations, not the seed, are what is rejected.
    assert!(parse_header(&header, seed_file.len() as u64, path).is_ok());
    eprintln!("{parsed} of 3000 mutated inputs parsed");
}

/// The whole TurboVSR processor runs from a folder whose single file stands in for `vae/` and
/// `transformer/`, and gives bit-identical frames; a bare file with the tiny model's non-preset
/// shapes is refused naming the preset and the key.
#[test]
fn processor_runs_from_a_single_file_checkpoint() {
    use gstturbovsr::pipeline::{CancelToken, DiffusionProcessor, FrameProcessor, WindowInput};
    let folder = tiny_model("proc-folder");
    let single = scratch("proc-single");
    convert(
        &Checkpoint::open(&folder).unwrap(),
        &single,
        ConvertTo::SingleFile,
        None,
    )
    .unwrap();
    let settings = gstturbovsr::pipeline::ProcessorSettings {
        steps: 1,
        ..Default::default()
    };
    let frames = Tensor::arange(0f32, 3.0 * 32.0 * 32.0, &Device::Cpu)
        .unwrap()
        .reshape((3, 1, 32, 32))
        .unwrap()
        .affine(1.0 / 3072.0, -0.5)
        .unwrap();
    let run = |model: &Path| {
        let mut p = DiffusionProcessor::load(model, &settings, &Device::Cpu)
            .unwrap_or_else(|e| panic!("{}: {e:#}", model.display()));
        let input = WindowInput {
            index: 0,
            frames: &frames,
            real_frames: 1,
            emit: 0..1,
            starts_stream: true,
        };
        p.process(&input, &CancelToken::default()).unwrap()
    };
    assert!(same(&run(&folder), &run(&single)));

    let e = err_text(DiffusionProcessor::load(
        &single.join("ltx-video.safetensors"),
        &settings,
        &Device::Cpu,
    ));
    assert!(
        e.contains("preset") && e.contains("ltx-video.safetensors") && e.contains("shape"),
        "{e}"
    );
}
