//! Helpers shared by the element and pipeline test binaries (`mod common;` in each).
#![allow(dead_code)] // each test binary uses its own subset

use std::path::{Path, PathBuf};
use std::sync::{Once, OnceLock};

use gst::prelude::*;

static INIT: Once = Once::new();

/// Initialises GStreamer and registers the plugin from this build, once per test binary.
pub fn init() {
    INIT.call_once(|| {
        gst::init().unwrap();
        gstturbovsr::plugin_register_static().expect("register the turbovsr plugin");
    });
}

/// A pipeline from a `gst-launch-1.0` description.
pub fn launch(description: &str) -> gst::Pipeline {
    gst::parse::launch(description)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap()
}

/// The appsink named `name` in `pipeline`.
pub fn appsink(pipeline: &gst::Pipeline, name: &str) -> gst_app::AppSink {
    pipeline
        .by_name(name)
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap()
}

/// Waits for EOS or an error (60 s at most); returns the error's text, if any.
pub fn finish(pipeline: &gst::Pipeline) -> Option<String> {
    let msg = pipeline
        .bus()
        .unwrap()
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(60),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .expect("EOS or an error within 60 s");
    match msg.view() {
        gst::MessageView::Error(e) => Some(format!("{} {:?}", e.error(), e.debug())),
        _ => None,
    }
}

/// The tiny random checkpoint (`turbovsr make-test-model --preset tiny`), written once per test
/// binary under cargo's scratch folder; `name` and the process id keep binaries and runs apart.
pub fn tiny_model(name: &str) -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        use gstturbovsr::model::turbovsr::{write_test_model, Preset, TestModelOptions};
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("{name}-tiny-model-{}", std::process::id()));
        write_test_model(&dir, &TestModelOptions::new(Preset::Tiny)).unwrap();
        dir
    })
}

pub mod png;

/// Runs `turbovsr forward MODULE --model M --input I --output O` on the CPU in f32 (the built
/// binary); Err is its stderr.
pub fn forward(module: &str, model: &Path, input: &Path, output: &Path) -> Result<(), String> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_turbovsr"))
        .arg("forward")
        .arg(module)
        .arg("--model")
        .arg(model)
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(output)
        .output()
        .expect("run turbovsr forward");
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}
