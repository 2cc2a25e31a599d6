//! A training run's folder: the last checkpoint (weights, optimizer moments, step, settings),
//! replaced atomically, and a CSV log. A run interrupted at any point resumes from its last
//! checkpoint; the settings it was started with must match.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use candle_nn::VarMap;
use serde_json::Value;

use super::optim::AdamW;
use super::params;

/// `<run>/checkpoint/`: `params.safetensors`, `optim.safetensors`, `state.json`.
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    pub fn create(root: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn checkpoint(&self) -> PathBuf {
        self.root.join("checkpoint")
    }

    pub fn log_path(&self) -> PathBuf {
        self.root.join("log.csv")
    }

    /// Saves weights, optimizer and `state` (which must hold `step` and `settings`). A crash
    /// while saving leaves the previous checkpoint in place: the new one is written beside it
    /// and swapped in with renames.
    pub fn save(&self, varmap: &VarMap, opt: &AdamW, state: &Value) -> anyhow::Result<()> {
        let tmp = self.root.join("checkpoint.tmp");
        let old = self.root.join("checkpoint.old");
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        params::save(
            varmap,
            &tmp.join("params.safetensors"),
            candle_core::DType::F32,
        )?;
        opt.save(&tmp.join("optim.safetensors"))?;
        std::fs::write(
            tmp.join("state.json"),
            serde_json::to_string_pretty(state)? + "\n",
        )?;
        let cur = self.checkpoint();
        let _ = std::fs::remove_dir_all(&old);
        if cur.exists() {
            std::fs::rename(&cur, &old)?;
        }
        std::fs::rename(&tmp, &cur)?;
        let _ = std::fs::remove_dir_all(&old);
        Ok(())
    }

    /// Loads the last checkpoint into `varmap` and `opt` when there is one; checks that it was
    /// written with the same `settings`. Returns the step to continue from (0: fresh run).
    pub fn resume(
        &self,
        varmap: &VarMap,
        opt: &mut AdamW,
        settings: &Value,
    ) -> anyhow::Result<usize> {
        let mut dir = self.checkpoint();
        if !dir.join("state.json").exists() {
            // a crash between the two renames of `save` leaves only the old one
            let old = self.root.join("checkpoint.old");
            if old.join("state.json").exists() {
                dir = old;
            } else {
                return Ok(0);
            }
        }
        let state_path = dir.join("state.json");
        let state: Value = serde_json::from_str(
            &std::fs::read_to_string(&state_path)
                .with_context(|| format!("reading {}", state_path.display()))?,
        )
        .with_context(|| format!("parsing {}", state_path.display()))?;
        if state.get("settings") != Some(settings) {
            bail!(
                "{} was started with other settings: {}\nnow: {}\n(use another --out folder, or the same settings)",
                self.root.display(),
                state.get("settings").unwrap_or(&Value::Null),
                settings
            );
        }
        let Some(step) = state.get("step").and_then(Value::as_u64) else {
            bail!("{} has no step", state_path.display());
        };
        params::load(varmap, &dir.join("params.safetensors"))?;
        opt.load(&dir.join("optim.safetensors"))?;
        opt.step = step as usize;
        // Log lines written after this checkpoint belong to the lost steps.
        self.truncate_log(step as usize)?;
        Ok(step as usize)
    }

    /// Appends one CSV line (writes `header` first when the log is new).
    pub fn log(&self, header: &str, line: &str) -> anyhow::Result<()> {
        let path = self.log_path();
        let new = !path.exists();
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        if new {
            writeln!(f, "{header}")?;
        }
        writeln!(f, "{line}")?;
        Ok(())
    }

    fn truncate_log(&self, step: usize) -> anyhow::Result<()> {
        let path = self.log_path();
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok(());
        };
        let kept: Vec<&str> = text
            .lines()
            .enumerate()
            .filter(|(i, l)| {
                *i == 0
                    || l.split(',')
                        .next()
                        .and_then(|s| s.parse::<usize>().ok())
                        .is_some_and(|s| s <= step)
            })
            .map(|(_, l)| l)
            .collect();
        std::fs::write(&path, kept.join("\n") + "\n")?;
        Ok(())
    }
}
