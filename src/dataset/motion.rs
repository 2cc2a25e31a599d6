//! Pseudo-videos from still images (TurboVSR paper, supplementary §6): a virtual camera moves over
//! the photo with a smooth random affine motion (translation, rotation, zoom), and each frame is
//! the camera's view sampled bilinearly from the source. Per clip the camera gets a random
//! velocity for each motion component plus a small constant acceleration, so the path is smooth
//! (no jitter between frames) yet not a plain straight pan.
//!
//! Magnitudes are per frame at the HR crop's resolution and chosen to look like handheld or
//! panning footage at 24-30 fps: up to 3 px of translation (0.75 px at the 4x LR), up to 0.5 deg of
//! rotation and up to 1 % of zoom per frame.

use image::RgbImage;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::ops::Img;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MotionConfig {
    /// Largest translation speed, HR pixels per frame.
    pub max_shift: f32,
    /// Largest rotation speed, degrees per frame.
    pub max_rotation_deg: f32,
    /// Largest zoom speed, relative scale change per frame (0.01 = 1 %).
    pub max_zoom: f32,
    /// Largest change of each speed per frame, as a fraction of that speed's maximum.
    pub max_accel: f32,
}

impl Default for MotionConfig {
    fn default() -> Self {
        MotionConfig {
            max_shift: 3.0,
            max_rotation_deg: 0.5,
            max_zoom: 0.01,
            max_accel: 0.1,
        }
    }
}

/// Where frame k's pixel u (pixel centres, crop coordinates) is read from in the source:
/// `origin + c + t + A (u - c)`, c the crop centre, A = zoom * rotation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Affine {
    pub a: [f32; 4],
    pub t: [f32; 2],
}

impl Affine {
    pub const IDENTITY: Affine = Affine {
        a: [1.0, 0.0, 0.0, 1.0],
        t: [0.0, 0.0],
    };

    fn apply(&self, u: f32, v: f32) -> (f32, f32) {
        (
            self.a[0] * u + self.a[1] * v + self.t[0],
            self.a[2] * u + self.a[3] * v + self.t[1],
        )
    }
}

fn signed(rng: &mut ChaCha8Rng, max: f32) -> f32 {
    if max > 0.0 {
        rng.random_range(-max..=max)
    } else {
        0.0
    }
}

/// The camera path of a clip: one [`Affine`] per frame, frame 0 the identity.
pub fn sample_motion(rng: &mut ChaCha8Rng, frames: usize, cfg: &MotionConfig) -> Vec<Affine> {
    if frames <= 1 {
        return vec![Affine::IDENTITY; frames];
    }
    // speed and acceleration of (x, y, rotation, log-zoom)
    let max = [
        cfg.max_shift,
        cfg.max_shift,
        cfg.max_rotation_deg.to_radians(),
        cfg.max_zoom,
    ];
    let mut vel = [0.0f32; 4];
    let mut acc = [0.0f32; 4];
    // the translation direction is uniform, its speed uniform in [0, max]
    let speed = rng.random_range(0.0..=1.0f32) * cfg.max_shift;
    let dir = rng.random_range(0.0..std::f32::consts::TAU);
    vel[0] = speed * dir.cos();
    vel[1] = speed * dir.sin();
    vel[2] = signed(rng, max[2]);
    vel[3] = signed(rng, max[3]);
    for (a, m) in acc.iter_mut().zip(max) {
        *a = signed(rng, m * cfg.max_accel);
    }
    let mut pos = [0.0f32; 4];
    let mut out = Vec::with_capacity(frames);
    for _ in 0..frames {
        let zoom = pos[3].exp();
        let (s, c) = pos[2].sin_cos();
        out.push(Affine {
            a: [zoom * c, -zoom * s, zoom * s, zoom * c],
            t: [pos[0], pos[1]],
        });
        for i in 0..4 {
            pos[i] += vel[i];
            vel[i] = (vel[i] + acc[i]).clamp(-max[i], max[i]);
        }
    }
    out
}

/// Scale a path's motion down by `f` (about the identity), for clips whose motion does not fit
/// inside a small source image.
fn damp(path: &[Affine], f: f32) -> Vec<Affine> {
    path.iter()
        .map(|m| Affine {
            a: [
                1.0 + f * (m.a[0] - 1.0),
                f * m.a[1],
                f * m.a[2],
                1.0 + f * (m.a[3] - 1.0),
            ],
            t: [f * m.t[0], f * m.t[1]],
        })
        .collect()
}

/// Source-coordinate bounds (relative to the crop origin) every frame of `path` reads from.
fn bounds(path: &[Affine], w: usize, h: usize) -> [f32; 4] {
    let (cx, cy) = ((w as f32 - 1.0) / 2.0, (h as f32 - 1.0) / 2.0);
    let mut b = [f32::MAX, f32::MAX, f32::MIN, f32::MIN];
    for m in path {
        for (u, v) in [(0.0, 0.0), (w as f32 - 1.0, 0.0), (0.0, h as f32 - 1.0)]
            .into_iter()
            .chain([(w as f32 - 1.0, h as f32 - 1.0)])
        {
            let (x, y) = m.apply(u - cx, v - cy);
            b[0] = b[0].min(x + cx);
            b[1] = b[1].min(y + cy);
            b[2] = b[2].max(x + cx);
            b[3] = b[3].max(y + cy);
        }
    }
    b
}

/// Choose an integer crop origin so that every frame of the path stays inside the
/// `src_w` x `src_h` source; the motion is halved until it fits (a still clip always fits when the
/// crop does). Returns the origin and the path actually used.
pub fn place(
    rng: &mut ChaCha8Rng,
    path: &[Affine],
    src_w: usize,
    src_h: usize,
    w: usize,
    h: usize,
) -> Option<((usize, usize), Vec<Affine>)> {
    if w > src_w || h > src_h {
        return None;
    }
    let mut path = path.to_vec();
    for attempt in 0..6 {
        if attempt == 5 {
            path = vec![Affine::IDENTITY; path.len()];
        }
        let b = bounds(&path, w, h);
        // origin + b[0] >= 0 and origin + b[2] <= src_w - 1 (bilinear reads pixel floor + 1,
        // clamped, so the last pixel centre is the limit)
        let lo_x = (-b[0]).ceil().max(0.0);
        let hi_x = (src_w as f32 - 1.0 - b[2]).floor();
        let lo_y = (-b[1]).ceil().max(0.0);
        let hi_y = (src_h as f32 - 1.0 - b[3]).floor();
        if lo_x <= hi_x && lo_y <= hi_y {
            let ox = rng.random_range(lo_x as usize..=hi_x as usize);
            let oy = rng.random_range(lo_y as usize..=hi_y as usize);
            return Some(((ox, oy), path));
        }
        path = damp(&path, 0.5);
    }
    None
}

/// Frame `m` of a clip: the `w` x `h` view at `origin` sampled bilinearly from `src`.
pub fn warp(src: &RgbImage, origin: (usize, usize), m: &Affine, w: usize, h: usize) -> Img {
    let (sw, sh) = (src.width() as usize, src.height() as usize);
    let raw = src.as_raw();
    let (cx, cy) = ((w as f32 - 1.0) / 2.0, (h as f32 - 1.0) / 2.0);
    let (ox, oy) = (origin.0 as f32 + cx, origin.1 as f32 + cy);
    let mut out = Img::new(w, h);
    for v in 0..h {
        for u in 0..w {
            let (dx, dy) = m.apply(u as f32 - cx, v as f32 - cy);
            let x = (ox + dx).clamp(0.0, sw as f32 - 1.0);
            let y = (oy + dy).clamp(0.0, sh as f32 - 1.0);
            let (x0, y0) = (x.floor() as usize, y.floor() as usize);
            let (fx, fy) = (x - x0 as f32, y - y0 as f32);
            let (x1, y1) = ((x0 + 1).min(sw - 1), (y0 + 1).min(sh - 1));
            let px = |xx: usize, yy: usize, c: usize| raw[(yy * sw + xx) * 3 + c] as f32;
            let o = &mut out.data[(v * w + u) * 3..(v * w + u) * 3 + 3];
            for (c, oc) in o.iter_mut().enumerate() {
                let top = px(x0, y0, c) * (1.0 - fx) + px(x1, y0, c) * fx;
                let bot = px(x0, y1, c) * (1.0 - fx) + px(x1, y1, c) * fx;
                *oc = (top * (1.0 - fy) + bot * fy) / 255.0;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn texture(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            let f = (x as f32 * 0.21).sin()
                + (y as f32 * 0.13).cos()
                + ((x + 2 * y) as f32 * 0.05).sin();
            let v = ((f + 3.0) / 6.0 * 255.0) as u8;
            image::Rgb([v, v.wrapping_add(40), 255 - v])
        })
    }

    #[test]
    fn identity_frame_is_the_exact_crop() {
        let src = texture(90, 70);
        let f = warp(&src, (13, 9), &Affine::IDENTITY, 32, 24);
        for y in 0..24 {
            for x in 0..32 {
                let p = src.get_pixel(13 + x, 9 + y);
                for c in 0..3 {
                    assert_eq!(
                        f.data[((y * 32 + x) * 3 + c as u32) as usize],
                        p[c] as f32 / 255.0
                    );
                }
            }
        }
    }

    #[test]
    fn motion_is_small_and_smooth() {
        let cfg = MotionConfig::default();
        let src = texture(400, 300);
        for seed in 0..8 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let path = sample_motion(&mut rng, 9, &cfg);
            assert_eq!(path[0], Affine::IDENTITY);
            // per-frame steps bounded by the configured speeds (centre shift <= max_shift)
            let mut steps = Vec::new();
            for pair in path.windows(2) {
                let d = ((pair[1].t[0] - pair[0].t[0]).powi(2)
                    + (pair[1].t[1] - pair[0].t[1]).powi(2))
                .sqrt();
                assert!(d <= cfg.max_shift * 2f32.sqrt() + 1e-4, "step {d}");
                steps.push(d);
            }
            // smooth: the speed changes by at most the acceleration bound per frame
            for s in steps.windows(2) {
                assert!((s[1] - s[0]).abs() <= 2.0 * cfg.max_accel * cfg.max_shift + 1e-4);
            }
            let ((ox, oy), path) = place(&mut rng, &path, 400, 300, 64, 64).unwrap();
            let frames: Vec<Img> = path
                .iter()
                .map(|m| warp(&src, (ox, oy), m, 64, 64))
                .collect();
            for pair in frames.windows(2) {
                let mad = pair[0]
                    .data
                    .iter()
                    .zip(&pair[1].data)
                    .map(|(a, b)| (a - b).abs())
                    .sum::<f32>()
                    / pair[0].data.len() as f32;
                // consecutive frames of a smooth texture stay close
                assert!(mad < 0.15, "seed {seed}: mean abs frame difference {mad}");
            }
        }
        // and some seed really moves
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let path = sample_motion(&mut rng, 9, &cfg);
        let last = path[8];
        assert!(last.t[0].abs() + last.t[1].abs() > 0.5 || (last.a[0] - 1.0).abs() > 1e-3);
    }

    #[test]
    fn placement_keeps_every_frame_inside_or_damps_the_motion() {
        let cfg = MotionConfig {
            max_shift: 40.0,
            ..MotionConfig::default()
        };
        for seed in 0..20 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let path = sample_motion(&mut rng, 9, &cfg);
            let ((ox, oy), used) = place(&mut rng, &path, 80, 70, 64, 64).unwrap();
            let b = bounds(&used, 64, 64);
            assert!(ox as f32 + b[0] >= -1e-3 && oy as f32 + b[1] >= -1e-3);
            assert!(ox as f32 + b[2] <= 79.001 && oy as f32 + b[3] <= 69.001);
        }
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        assert!(place(&mut rng, &[Affine::IDENTITY], 50, 50, 64, 32).is_none());
    }
}
