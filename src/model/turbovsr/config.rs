//! `turbovsr.json` (DESIGN §3.3): sampler and conditioning settings of a checkpoint folder.

use std::path::Path;

use anyhow::{bail, Context};
use serde::Deserialize;

use crate::sample::schedule::{default_step_sizes, ShiftConfig};

/// The file name inside a checkpoint folder.
pub const CONFIG_FILE: &str = "turbovsr.json";

/// Settings of a TurboVSR checkpoint; every field has the default of DESIGN §3.3.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TurboVsrConfig {
    /// Upscaling factor the model was trained for.
    pub scale: u32,
    /// LTX's resolution-dependent shift, or a fixed shift factor.
    pub shift: ShiftConfig,
    /// Step sizes the shortcut model was trained on (nearest-neighbour selection, paper §3.4).
    pub step_sizes: Vec<f64>,
    /// Weight of the cross-normalized condition added after the first block.
    pub cond_scale: f64,
    /// Training tile in latents: [frames, height, width].
    pub tile: [usize; 3],
    /// The most overlap (latents) the checkpoint's tiles need; `None`: no limit beyond half the
    /// tile. A model whose tokens do not see each other (no transformer blocks) needs none.
    pub tile_overlap: Option<usize>,
    /// Timestep of timestep-conditioned VAE decoders.
    pub decode_timestep: f64,
    /// Frame rate for the transformer's RoPE time axis.
    pub frame_rate: f64,
}

impl Default for TurboVsrConfig {
    fn default() -> Self {
        Self {
            scale: 4,
            shift: ShiftConfig::default(),
            step_sizes: default_step_sizes(),
            cond_scale: std::f64::consts::FRAC_1_SQRT_2,
            tile: [7, 32, 32],
            tile_overlap: None,
            decode_timestep: 0.05,
            frame_rate: 25.0,
        }
    }
}

impl TurboVsrConfig {
    /// Reads `turbovsr.json` from a checkpoint folder; defaults when the file is absent.
    pub fn load(folder: &Path) -> anyhow::Result<Self> {
        let path = folder.join(CONFIG_FILE);
        if !path.exists() {
            return Ok(Self::default());
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    /// Parses and validates the JSON text of a `turbovsr.json`.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let config: Self = serde_json::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if !(1..=8).contains(&self.scale) {
            bail!("scale={} is outside 1..=8", self.scale);
        }
        if self.step_sizes.is_empty() || self.step_sizes.iter().any(|d| !(*d > 0.0 && *d <= 1.0)) {
            bail!(
                "step_sizes must be a non-empty list of values in (0, 1], got {:?}",
                self.step_sizes
            );
        }
        if !self.cond_scale.is_finite() {
            bail!("cond_scale={} is not finite", self.cond_scale);
        }
        if self.tile.contains(&0) {
            bail!("tile={:?} has a zero dimension", self.tile);
        }
        if let Some(overlap) = self.tile_overlap {
            if overlap >= self.tile[1].min(self.tile[2]) {
                bail!(
                    "tile_overlap={overlap} is not smaller than the tile {:?}",
                    self.tile
                );
            }
        }
        if !(0.0..=1.0).contains(&self.decode_timestep) {
            bail!("decode_timestep={} is outside [0, 1]", self.decode_timestep);
        }
        if !(self.frame_rate > 0.0 && self.frame_rate.is_finite()) {
            bail!("frame_rate={} must be positive", self.frame_rate);
        }
        if let ShiftConfig::Fixed(f) = self.shift {
            if !(f > 0.0 && f.is_finite()) {
                bail!("shift={f} must be a positive shift factor");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_file_and_empty_object_give_the_design_defaults() {
        let dir = std::env::temp_dir().join(format!("turbovsr-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = TurboVsrConfig::load(&dir).unwrap();
        assert_eq!(config, TurboVsrConfig::default());
        assert_eq!(TurboVsrConfig::parse("{}").unwrap(), config);
        assert_eq!(config.tile, [7, 32, 32]);
        assert!((config.cond_scale - 0.5f64.sqrt()).abs() < 1e-15);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn fields_are_read() {
        let config = TurboVsrConfig::parse(
            r#"{"scale": 2, "shift": 3.0, "step_sizes": [1, 0.5], "cond_scale": 1.0,
                "tile": [5, 16, 24], "tile_overlap": 0, "decode_timestep": 0.0, "frame_rate": 30}"#,
        )
        .unwrap();
        assert_eq!(config.scale, 2);
        assert_eq!(config.tile_overlap, Some(0));
        assert_eq!(config.shift, ShiftConfig::Fixed(3.0));
        assert_eq!(config.step_sizes, vec![1.0, 0.5]);
        assert_eq!(config.tile, [5, 16, 24]);
    }

    #[test]
    fn mistakes_are_named() {
        let err = |t: &str| format!("{:#}", TurboVsrConfig::parse(t).unwrap_err());
        assert!(err(r#"{"step_size": [1]}"#).contains("unknown field `step_size`"));
        assert!(err(r#"{"scale": 9}"#).contains("scale=9"));
        assert!(err(r#"{"tile": [5, 16, 24], "tile_overlap": 16}"#).contains("tile_overlap=16"));
        assert!(err(r#"{"step_sizes": [2.0]}"#).contains("step_sizes"));
        assert!(err(r#"{"tile": [7, 0, 32]}"#).contains("tile"));
        assert!(err(r#"{"shift": -1}"#).contains("shift=-1"));
        assert!(err("{").contains("EOF"));
    }
}
