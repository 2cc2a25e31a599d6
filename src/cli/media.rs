//! GStreamer pieces the subcommands share: output formats by extension, input URIs, elements
//! with install hints, the audio branch, bus errors.

use std::path::Path;

use anyhow::{bail, Context};
use gst::glib;
use gst::prelude::*;

/// The Debian package that ships a GStreamer element this tool uses, for "missing element"
/// errors.
fn debian_package(element: &str) -> Option<&'static str> {
    Some(match element {
        "x264enc" => "gstreamer1.0-plugins-ugly",
        "avenc_aac" | "avenc_ffv1" | "avdec_ffv1" => "gstreamer1.0-libav",
        "opusenc" | "vorbisenc" | "videoconvert" | "audioconvert" | "audioresample"
        | "uridecodebin" | "decodebin" | "appsrc" | "appsink" => "gstreamer1.0-plugins-base",
        "queue" | "capsfilter" | "filesink" | "fakesink" => "libgstreamer1.0-0",
        "matroskamux" | "mp4mux" | "qtmux" | "webmmux" | "vp8enc" | "vp9enc" | "pngenc"
        | "multifilesink" | "y4menc" | "lamemp3enc" => "gstreamer1.0-plugins-good",
        _ => return None,
    })
}

/// Where to get `element`, for error messages.
fn install_hint(element: &str) -> String {
    match debian_package(element) {
        Some(package) => format!("Debian: apt-get install {package}"),
        None => format!(
            "install the GStreamer plugin that provides it; `gst-inspect-1.0 {element}` checks"
        ),
    }
}

/// Fails with the element and its Debian package when `name` is not installed.
pub(crate) fn require_element(name: &str, purpose: &str) -> anyhow::Result<()> {
    if gst::ElementFactory::find(name).is_none() {
        bail!(
            "{purpose} needs the GStreamer element '{name}', which is not installed ({})",
            install_hint(name)
        );
    }
    Ok(())
}

/// What OUT's extension asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OutputPlan {
    /// e.g. ".mp4", for messages.
    pub kind: &'static str,
    /// The video encoder description (gst-launch syntax), with the caps it needs in front.
    pub video_encoder: &'static str,
    /// Muxer element, or None when the encoder writes the file format itself.
    pub muxer: Option<&'static str>,
    /// Audio encoders to try in order (empty: the format holds no audio).
    pub audio_encoders: &'static [&'static str],
    /// One file per frame (`multifilesink`) rather than one file.
    pub sequence: bool,
}

/// H.264 in 4:2:0 (what hardware decoders and players take), constant quality close to
/// transparent: `pass=qual` is x264's CRF mode with `quantizer` as the CRF.
const H264: &str =
    "capsfilter caps=video/x-raw,format=I420 ! x264enc pass=qual quantizer=18 speed-preset=medium";
/// The same without B-frames for MP4/QuickTime: with B-frames the first decode time is before
/// the first presentation time, and qtmux (1.22) shifts the whole video track later by that
/// reordering delay (two frames at speed-preset=medium) instead of writing an edit list, which
/// puts the video out of sync with the audio.
const H264_NO_B_FRAMES: &str = "capsfilter caps=video/x-raw,format=I420 ! \
     x264enc pass=qual quantizer=18 speed-preset=medium bframes=0";

pub(crate) fn plan_output(output: &Path) -> anyhow::Result<OutputPlan> {
    let name = output.to_string_lossy();
    let ext = output
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let plan = |kind, video_encoder, muxer, audio_encoders| OutputPlan {
        kind,
        video_encoder,
        muxer,
        audio_encoders,
        sequence: false,
    };
    Ok(match ext.as_str() {
        "mkv" => plan(".mkv", H264, Some("matroskamux"), &["opusenc", "vorbisenc"]),
        "mp4" => plan(
            ".mp4",
            H264_NO_B_FRAMES,
            Some("mp4mux"),
            &["avenc_aac", "lamemp3enc"],
        ),
        "mov" => plan(
            ".mov",
            H264_NO_B_FRAMES,
            Some("qtmux"),
            &["avenc_aac", "lamemp3enc"],
        ),
        "webm" => plan(
            ".webm",
            // constant quality; the bitrate is only a ceiling in cq mode
            "vp9enc deadline=1 cpu-used=4 row-mt=true end-usage=cq cq-level=24 \
             target-bitrate=50000000",
            Some("webmmux"),
            &["opusenc", "vorbisenc"],
        ),
        "y4m" => plan(".y4m", "y4menc", None, &[]),
        "png" => {
            if !name.contains('%') {
                bail!(
                    "PNG output '{name}' needs a frame-number pattern such as out_%05d.png \
                     (one file per frame)"
                );
            }
            OutputPlan {
                kind: ".png",
                video_encoder: "pngenc",
                muxer: None,
                audio_encoders: &[],
                sequence: true,
            }
        }
        _ => bail!(
            "cannot tell the output format of '{name}' from its extension: use .mkv, .mp4, \
             .mov, .webm, .y4m or a PNG pattern such as out_%05d.png"
        ),
    })
}

/// The element names in a gst-launch description (the first word of each `!`-separated part;
/// caps between elements are skipped).
fn description_elements(description: &str) -> Vec<&str> {
    description
        .split('!')
        .filter_map(|part| part.split_whitespace().next())
        .filter(|word| !word.contains('/') && !word.contains('='))
        .collect()
}

/// `input` as a URI: URIs pass through, paths must exist.
pub(crate) fn input_uri(input: &str) -> anyhow::Result<String> {
    // `scheme://...`: a URI for uridecodebin (http, rtsp, file, ...).
    if input.split_once("://").is_some_and(|(scheme, _)| {
        !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    }) {
        return Ok(input.to_string());
    }
    let path = Path::new(input);
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot open input file '{input}'"))?;
    if meta.is_dir() {
        bail!("input '{input}' is a folder, expected a video file");
    }
    let abs = std::fs::canonicalize(path)
        .with_context(|| format!("cannot resolve input file '{input}'"))?;
    Ok(glib::filename_to_uri(&abs, None)
        .with_context(|| format!("cannot turn '{}' into a URI", abs.display()))?
        .to_string())
}

pub(crate) fn make(factory: &str) -> anyhow::Result<gst::Element> {
    gst::ElementFactory::make(factory).build().with_context(|| {
        format!(
            "cannot create the GStreamer element '{factory}' ({})",
            install_hint(factory)
        )
    })
}

/// Parses a gst-launch description into a bin with ghost pads.
pub(crate) fn encoder_bin(description: &str, what: &str) -> anyhow::Result<gst::Element> {
    for element in description_elements(description) {
        require_element(element, what)?;
    }
    let bin = gst::parse::bin_from_description(description, true)
        .with_context(|| format!("{what} '{description}'"))?;
    Ok(bin.upcast())
}

/// Where the decoded audio goes.
pub(crate) struct AudioPlan {
    pub kind: &'static str,
    pub encoders: &'static [&'static str],
    pub custom: Option<String>,
    pub dropped: bool,
}

impl AudioPlan {
    /// Links an audio pad through an encoder into the muxer; Err is the note to print when the
    /// audio is dropped instead.
    pub(crate) fn link(
        &self,
        pipeline: &gst::Pipeline,
        muxer: Option<&gst::Element>,
        pad: &gst::Pad,
    ) -> Result<(), String> {
        if self.dropped {
            return Err("audio dropped (--no-audio)".into());
        }
        let Some(muxer) = muxer.filter(|_| !self.encoders.is_empty()) else {
            return Err(format!(
                "the input has audio, but {} output holds no audio: audio dropped (write .mkv \
                 or .mp4 to keep it)",
                self.kind
            ));
        };
        let encoder = match &self.custom {
            Some(desc) => encoder_bin(desc, "--audio-encoder").map_err(|e| format!("{e:#}"))?,
            None => {
                let Some(name) = self
                    .encoders
                    .iter()
                    .find(|name| gst::ElementFactory::find(name).is_some())
                else {
                    return Err(format!(
                        "audio dropped: {} audio needs one of {} ({})",
                        self.kind,
                        self.encoders.join(", "),
                        self.encoders
                            .iter()
                            .map(|e| install_hint(e))
                            .collect::<Vec<_>>()
                            .join("; ")
                    ));
                };
                make(name).map_err(|e| format!("{e:#}"))?
            }
        };
        let build = || -> anyhow::Result<()> {
            // Unbounded: the video branch lags by up to two windows (the model), and a bounded
            // audio queue would then block the demuxer that also feeds the video.
            let queue = make("queue")?;
            queue.set_property("max-size-buffers", 0u32);
            queue.set_property("max-size-bytes", 0u32);
            queue.set_property("max-size-time", 0u64);
            let convert = make("audioconvert")?;
            let resample = make("audioresample")?;
            let elements = [&queue, &convert, &resample, &encoder];
            pipeline.add_many(elements)?;
            gst::Element::link_many(elements)?;
            encoder
                .link(muxer)
                .with_context(|| format!("{} cannot take this audio", muxer.name()))?;
            for e in elements {
                e.sync_state_with_parent()?;
            }
            pad.link(&queue.static_pad("sink").expect("queue has a sink pad"))?;
            Ok(())
        };
        build().map_err(|e| format!("audio dropped: {e:#}"))
    }
}

pub(crate) fn link_to_fakesink(pipeline: &gst::Pipeline, pad: &gst::Pad) {
    let Ok(sink) = make("fakesink") else { return };
    sink.set_property("sync", false);
    sink.set_property("async", false);
    if pipeline.add(&sink).is_ok() {
        let _ = sink.sync_state_with_parent();
        let _ = pad.link(&sink.static_pad("sink").expect("fakesink has a sink pad"));
    }
}

/// The first error message waiting on the bus, if any.
pub(crate) fn first_error(bus: &gst::Bus) -> Option<String> {
    while let Some(msg) = bus.pop() {
        if let gst::MessageView::Error(err) = msg.view() {
            return Some(error_text(err));
        }
    }
    None
}

pub(crate) fn error_text(err: &gst::message::Error) -> String {
    let source = err
        .src()
        .map(|s| s.name().to_string())
        .unwrap_or_else(|| "pipeline".into());
    // GStreamer's debug string is "file(line): function (): /element/path:\nDETAIL"; the detail
    // (an element's own message, e.g. why the model did not load) is what the user needs.
    match err.debug().as_deref().and_then(|d| d.split_once('\n')) {
        Some((_, detail)) if !detail.trim().is_empty() => {
            let error = err.error().to_string();
            format!(
                "{source}: {}: {}",
                error.trim_end_matches('.'),
                detail.trim()
            )
        }
        _ => format!("{source}: {}", err.error()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_choose_encoder_and_muxer() {
        let p = plan_output(Path::new("a/b.MP4")).unwrap();
        assert_eq!((p.kind, p.muxer), (".mp4", Some("mp4mux")));
        assert!(p.video_encoder.contains("x264enc"));
        assert_eq!(
            plan_output(Path::new("x.mkv")).unwrap().muxer,
            Some("matroskamux")
        );
        assert_eq!(
            plan_output(Path::new("x.mov")).unwrap().muxer,
            Some("qtmux")
        );
        let webm = plan_output(Path::new("x.webm")).unwrap();
        assert_eq!(webm.muxer, Some("webmmux"));
        assert!(webm.video_encoder.starts_with("vp9enc"));
        let y4m = plan_output(Path::new("x.y4m")).unwrap();
        assert_eq!((y4m.muxer, y4m.audio_encoders.len()), (None, 0));
        let png = plan_output(Path::new("frames/out_%05d.png")).unwrap();
        assert!(png.sequence);
        let e = plan_output(Path::new("out.png")).unwrap_err().to_string();
        assert!(e.contains("out_%05d.png"), "{e}");
        let e = plan_output(Path::new("out.avi")).unwrap_err().to_string();
        assert!(e.contains("'out.avi'") && e.contains(".mkv"), "{e}");
    }

    #[test]
    fn descriptions_name_their_elements() {
        assert_eq!(description_elements(H264), vec!["capsfilter", "x264enc"]);
        assert_eq!(
            description_elements("videoscale ! x264enc bitrate=9000"),
            vec!["videoscale", "x264enc"]
        );
    }

    #[test]
    fn every_default_encoder_description_builds() {
        gst::init().unwrap();
        for out in ["a.mkv", "a.mp4", "a.mov", "a.webm", "a.y4m", "a_%03d.png"] {
            let plan = plan_output(Path::new(out)).unwrap();
            // Only where the plugins are installed (scripts/setup.sh installs them all).
            if description_elements(plan.video_encoder)
                .iter()
                .all(|e| gst::ElementFactory::find(e).is_some())
            {
                encoder_bin(plan.video_encoder, out).unwrap();
            }
        }
    }

    #[test]
    fn missing_elements_name_the_debian_package() {
        gst::init().unwrap();
        let e = require_element("no-such-element-x", "--encoder")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("'no-such-element-x'") && e.contains("gst-inspect-1.0 no-such-element-x"),
            "{e}"
        );
        assert_eq!(debian_package("x264enc"), Some("gstreamer1.0-plugins-ugly"));
        assert!(install_hint("mp4mux").contains("apt-get install gstreamer1.0-plugins-good"));
    }
}
