//! Caps: raw video in the formats of [`PixelFormat`], any size in, the input size times
//! `scale` out unless downstream fixes another size (then the display aspect ratio is kept),
//! and the frame layouts the core converts from and to.

use crate::pipeline::{FrameLayout, PixelFormat, YuvMatrix};

/// The caps of both pad templates: every supported format, any size and rate.
pub(super) fn template_caps() -> gst::Caps {
    let formats: Vec<&str> = PixelFormat::ALL.iter().map(|f| f.name()).collect();
    gst::Caps::builder("video/x-raw")
        .field("format", gst::List::new(formats))
        .field("width", gst::IntRange::new(1, i32::MAX))
        .field("height", gst::IntRange::new(1, i32::MAX))
        .field(
            "framerate",
            gst::FractionRange::new(gst::Fraction::new(0, 1), gst::Fraction::new(i32::MAX, 1)),
        )
        .build()
}

/// The core's layout of a negotiated video format; the error says what is not supported.
pub(crate) fn layout_from_info(info: &gst_video::VideoInfo) -> Result<FrameLayout, String> {
    let format = PixelFormat::from_name(info.format().to_str()).ok_or_else(|| {
        format!(
            "format {} is not supported (supported: {})",
            info.format().to_str(),
            PixelFormat::ALL.map(|f| f.name()).join(", ")
        )
    })?;
    if info.interlace_mode() != gst_video::VideoInterlaceMode::Progressive {
        return Err(format!(
            "interlace-mode {} is not supported: deinterlace first",
            info.interlace_mode().to_str()
        ));
    }
    let colorimetry = info.colorimetry();
    let matrix = match colorimetry.matrix() {
        gst_video::VideoColorMatrix::Bt709 => YuvMatrix::Bt709,
        gst_video::VideoColorMatrix::Bt2020 => YuvMatrix::Bt2020,
        gst_video::VideoColorMatrix::Smpte240m => YuvMatrix::Smpte240m,
        _ => YuvMatrix::Bt601,
    };
    Ok(FrameLayout {
        format,
        width: info.width() as usize,
        height: info.height() as usize,
        matrix,
        full_range: colorimetry.range() == gst_video::VideoColorRange::Range0_255,
    })
}

/// `caps` with width, height and pixel-aspect-ratio free: any size maps to any other.
pub(super) fn free_size(caps: &gst::Caps) -> gst::Caps {
    let mut caps = caps.clone();
    for s in caps.make_mut().iter_mut() {
        s.set("width", gst::IntRange::new(1, i32::MAX));
        s.set("height", gst::IntRange::new(1, i32::MAX));
        s.remove_field("pixel-aspect-ratio");
    }
    caps
}

/// The input caps at `scale`x the size if downstream takes them, else the size downstream
/// fixes (nearest to the scaled size).
pub(super) fn src_caps_for(
    in_info: &gst_video::VideoInfo,
    scale: usize,
    peer: &gst::Caps,
) -> Option<gst::Caps> {
    let (w, h) = (in_info.width() as i32, in_info.height() as i32);
    let (sw, sh) = (
        w.saturating_mul(scale as i32),
        h.saturating_mul(scale as i32),
    );
    let in_caps = in_info.to_caps().ok()?;
    let mut preferred = in_caps.clone();
    {
        let s = preferred.make_mut().structure_mut(0)?;
        s.set("width", sw);
        s.set("height", sh);
    }
    if preferred.can_intersect(peer) {
        return Some(preferred);
    }
    let mut fixed = free_size(&in_caps).intersect(peer);
    if fixed.is_empty() {
        return None;
    }
    fixed.truncate();
    {
        let s = fixed.make_mut().structure_mut(0)?;
        s.fixate_field_nearest_int("width", sw);
        s.fixate_field_nearest_int("height", sh);
    }
    fixed.fixate();
    // Keep the display aspect ratio of the input with the size downstream chose.
    let par_in = in_info.par();
    {
        let s = fixed.make_mut().structure_mut(0)?;
        let (ow, oh) = (s.get::<i32>("width").ok()?, s.get::<i32>("height").ok()?);
        let num = par_in.numer() as i64 * w as i64 * oh as i64;
        let den = par_in.denom() as i64 * h as i64 * ow as i64;
        let g = gcd(num, den).max(1);
        let par = gst::Fraction::new((num / g) as i32, (den / g) as i32);
        s.set("pixel-aspect-ratio", par);
    }
    if fixed.can_intersect(peer) {
        Some(fixed)
    } else {
        // Downstream fixed the pixel-aspect-ratio too: take its.
        let mut caps = free_size(&in_caps).intersect(peer);
        caps.fixate();
        Some(caps)
    }
}

/// The sink pad's CAPS answer: any input size gives any output size, so downstream's formats
/// and rates at any size.
pub(super) fn sink_caps(
    peer: &gst::Caps,
    template: &gst::Caps,
    filter: Option<&gst::CapsRef>,
) -> gst::Caps {
    let caps = free_size(peer).intersect(template);
    match filter {
        Some(filter) => filter.intersect_with_mode(&caps, gst::CapsIntersectMode::First),
        None => caps,
    }
}

/// The source pad's CAPS answer: the scaled size of fixed upstream sizes first, then any size.
pub(super) fn src_caps(
    peer: &gst::Caps,
    scale: usize,
    template: &gst::Caps,
    filter: Option<&gst::CapsRef>,
) -> gst::Caps {
    let scale = scale as i32;
    let mut scaled = gst::Caps::new_empty();
    for s in peer.iter() {
        if let (Ok(w), Ok(h)) = (s.get::<i32>("width"), s.get::<i32>("height")) {
            let mut s = s.to_owned();
            s.set("width", w.saturating_mul(scale));
            s.set("height", h.saturating_mul(scale));
            s.remove_field("pixel-aspect-ratio");
            scaled.make_mut().append_structure(s);
        }
    }
    scaled.merge(free_size(peer));
    let caps = scaled.intersect_with_mode(template, gst::CapsIntersectMode::First);
    match filter {
        Some(filter) => filter.intersect_with_mode(&caps, gst::CapsIntersectMode::First),
        None => caps,
    }
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 {
        a.abs()
    } else {
        gcd(b, a % b)
    }
}
