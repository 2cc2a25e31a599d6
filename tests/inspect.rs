//! `gst-inspect-1.0 turbovsr` with GST_PLUGIN_PATH at the build lists the element, its pads,
//! caps and every property with its documentation.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn gst_inspect_lists_the_element() {
    // The plugin is built next to this test binary, in <target>/<profile>/deps.
    let deps = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let registry = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("inspect-registry.bin");
    let out = Command::new("gst-inspect-1.0")
        .arg("turbovsr")
        .env("GST_PLUGIN_PATH", &deps)
        .env("GST_REGISTRY", registry)
        .output()
        .expect("gst-inspect-1.0 (gstreamer1.0-tools) is installed");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "gst-inspect-1.0 failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "TurboVSR video super-resolution",
        "SINK template: 'sink'",
        "SRC template: 'src'",
        "I420",
        "NV12",
        "BGRx",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    for property in [
        "model",
        "scale",
        "steps",
        "window",
        "overlap",
        "tile-size",
        "tile-overlap",
        "device",
        "device-id",
        "precision",
        "seed",
        "prompt-embeds",
        "color-fix",
        "frames-processed",
        "window-ms",
    ] {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{property} ")))
            .unwrap_or_else(|| panic!("property {property} not listed"));
        // Every property has a blurb after the colon.
        let blurb = line.split_once(':').map(|(_, b)| b.trim()).unwrap_or("");
        assert!(
            blurb.len() > 10,
            "property {property} has no documentation: {line}"
        );
    }
}
