//! Every size with every model (DESIGN §2): frames are padded to the model's grid, the VAE's
//! spatial compression times the transformer's patch size (4 x 2 = 8 for the shipped default,
//! 32 x 1 for the tiny random checkpoint), and cropped back exactly. The sweep covers 1x1, 2x2,
//! primes, sizes whose latent is odd at 4x and at 32x compression (an odd latent failed at the
//! default model's 2x2 patches), and scales 4, 3 and 2, through `Upscaler`, the element's
//! window path without GStreamer.

use gstturbovsr::pipeline::{OutputSize, ProcessorSettings, RgbFrame, Upscaler, WindowConfig};

mod common;

/// (width, height, scale): the output is `scale` times each.
const SIZES: &[(usize, usize, usize)] = &[
    (1, 1, 4),
    (2, 2, 4),
    (1, 1, 3),
    (3, 5, 4),    // 12x20: 3x5 latents at 4x (odd), 1x1 at 32x
    (7, 13, 3),   // 21x39, primes
    (11, 2, 2),   // 22x4
    (17, 19, 4),  // 68x76: 17x19 latents at 4x
    (24, 40, 4),  // 96x160: 3x5 latents at 32x
    (112, 75, 4), // 448x300: the size first reported (latent 112x75 at 4x)
    (37, 29, 3),  // 111x87
];

/// Upscales `frames` frames of a `w`x`h` gradient; checks the count, order and size of the
/// output.
fn check(model: &str, frames: usize, window: WindowConfig) {
    let settings = ProcessorSettings {
        steps: 1,
        ..Default::default()
    };
    for &(w, h, scale) in SIZES {
        let label = format!("model {model:?}: {w}x{h} x{scale}, {frames} frames");
        let mut up = Upscaler::load(model, &settings, window, OutputSize::Scale(scale))
            .unwrap_or_else(|e| panic!("{label}: {e:#}"));
        let mut out = Vec::new();
        for f in 0..frames {
            let rgb: Vec<f32> = (0..3 * w * h)
                .map(|i| ((i + 7 * f) % 17) as f32 / 8.0 - 1.0)
                .collect();
            out.extend(
                up.push(RgbFrame::new(w, h, rgb, None))
                    .unwrap_or_else(|e| panic!("{label}: {e:#}")),
            );
        }
        out.extend(up.finish().unwrap_or_else(|e| panic!("{label}: {e:#}")));
        assert_eq!(out.len(), frames, "{label}: frame count");
        for (i, frame) in out.iter().enumerate() {
            assert_eq!(
                (frame.width, frame.height),
                (w * scale, h * scale),
                "{label}: frame {i}"
            );
            assert_eq!(
                frame.rgb.len(),
                3 * w * scale * h * scale,
                "{label}: frame {i}"
            );
            assert!(
                frame.rgb.iter().all(|v| v.is_finite()),
                "{label}: frame {i}"
            );
        }
    }
}

#[test]
fn every_size_with_the_bicubic_baseline() {
    check("bicubic", 11, WindowConfig::new(9, 1).unwrap());
}

#[test]
fn every_size_with_a_random_32x_checkpoint() {
    check(
        common::tiny_model("sizes").to_str().unwrap(),
        11,
        WindowConfig::new(9, 1).unwrap(),
    );
}

#[test]
fn every_size_with_the_shipped_default_model() {
    // One frame (image SR, the first window's first step) and a stream of two windows.
    check("", 1, WindowConfig::default());
    check("", 10, WindowConfig::new(9, 1).unwrap());
}
