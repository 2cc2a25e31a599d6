//! The shipped default model: the checkpoint folder `models/default/` (DESIGN §3.3 layout),
//! compiled into the library so that the plugin and the binary carry it wherever they are
//! installed, and used when `model` is unset (issue 11).
//!
//! The files are embedded with `include_bytes!` (cargo rebuilds when they change) and written
//! once into a cache folder named after a hash of their contents,
//! `$XDG_CACHE_HOME/turbovsr/default-<hash>/` (else `~/.cache/turbovsr/...`, else the system
//! temporary folder), which the normal checkpoint loader then reads. A new model gets a new
//! hash, hence a new folder; an existing folder with the right hash is reused as it is.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::Context;

/// The embedded files: path inside the checkpoint folder, contents. The list is the checkpoint
/// folder of DESIGN §3.3 without prompt embeddings: the default model is caption-free (zero
/// prompt embedding, issue 11), which the loader uses when `prompt_embeds.safetensors` is absent.
macro_rules! embed {
    ($($path:literal),* $(,)?) => {
        &[$(($path, include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/models/default/", $path)) as &[u8])),*]
    };
}

pub const DEFAULT_MODEL_FILES: &[(&str, &[u8])] = embed!(
    "turbovsr.json",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
    "transformer/config.json",
    "transformer/diffusion_pytorch_model.safetensors",
);

/// What messages call the default model (`model` unset).
pub const DEFAULT_MODEL_NAME: &str = "the shipped default model";

/// 64-bit FNV-1a over the file names and contents (a cache key, not a security measure: a
/// folder can only be confused with another build's default model if the hashes collide).
pub fn default_model_hash() -> u64 {
    static HASH: OnceLock<u64> = OnceLock::new();
    *HASH.get_or_init(|| {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut feed = |bytes: &[u8]| {
            for &b in bytes {
                h ^= b as u64;
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        };
        for (name, data) in DEFAULT_MODEL_FILES {
            feed(name.as_bytes());
            feed(&[0]);
            feed(&(data.len() as u64).to_le_bytes());
            feed(data);
        }
        h
    })
}

/// The cache root: `$XDG_CACHE_HOME/turbovsr`, else `$HOME/.cache/turbovsr`, else
/// `<temp>/turbovsr` (XDG Base Directory Specification; relative values are ignored as it says).
fn cache_root() -> PathBuf {
    let absolute = |var: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    if let Some(dir) = absolute("XDG_CACHE_HOME") {
        return dir.join("turbovsr");
    }
    if let Some(home) = absolute("HOME") {
        return home.join(".cache").join("turbovsr");
    }
    std::env::temp_dir().join("turbovsr")
}

/// The folder of the shipped default model, written on first use. Safe against concurrent
/// callers in this and other processes: each writes a private temporary folder and renames it
/// into place; the first rename wins and the others remove theirs.
pub fn default_model_dir() -> anyhow::Result<PathBuf> {
    let root = cache_root();
    materialise(&root).or_else(|first| {
        // An unwritable cache folder (read-only home, sandbox): the temporary folder instead.
        let fallback = std::env::temp_dir().join("turbovsr");
        if fallback == root {
            return Err(first);
        }
        materialise(&fallback).map_err(|e| {
            e.context(format!(
                "cannot write the default model to '{}' either ({first:#})",
                root.display()
            ))
        })
    })
}

/// Writes the default model under `root` unless a complete copy is there; returns its folder.
pub fn materialise(root: &Path) -> anyhow::Result<PathBuf> {
    let dir = root.join(format!("default-{:016x}", default_model_hash()));
    if is_complete(&dir) {
        return Ok(dir);
    }
    std::fs::create_dir_all(root)
        .with_context(|| format!("cannot create the cache folder '{}'", root.display()))?;
    let tmp = root.join(format!(
        ".default-{:016x}.tmp-{}-{}",
        default_model_hash(),
        std::process::id(),
        unique()
    ));
    let result = write_files(&tmp).and_then(|()| {
        if dir.exists() && !is_complete(&dir) {
            // A damaged copy (a file truncated or deleted since): moved aside, then removed,
            // so that the rename below can put a complete one in its place.
            let stale = root.join(format!(
                ".default-stale-{}-{}",
                std::process::id(),
                unique()
            ));
            if std::fs::rename(&dir, &stale).is_ok() {
                let _ = std::fs::remove_dir_all(&stale);
            }
        }
        match std::fs::rename(&tmp, &dir) {
            Ok(()) => Ok(()),
            // Another writer renamed its complete copy first (the target exists and is not
            // empty): theirs is identical, keep it.
            Err(_) if is_complete(&dir) => Ok(()),
            Err(e) => Err(e).with_context(|| {
                format!(
                    "cannot move the default model from '{}' to '{}'",
                    tmp.display(),
                    dir.display()
                )
            }),
        }
    });
    let _ = std::fs::remove_dir_all(&tmp);
    result?;
    Ok(dir)
}

/// A per-call counter, so two threads of one process never share a temporary folder.
fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

fn write_files(dir: &Path) -> anyhow::Result<()> {
    for (name, data) in DEFAULT_MODEL_FILES {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create '{}'", parent.display()))?;
        }
        std::fs::write(&path, data)
            .with_context(|| format!("cannot write the default model file '{}'", path.display()))?;
    }
    Ok(())
}

/// Every file is there with the embedded size. Folders only appear by rename of a complete
/// copy, so sizes are enough to reject one damaged afterwards (e.g. a truncated file).
fn is_complete(dir: &Path) -> bool {
    DEFAULT_MODEL_FILES.iter().all(|(name, data)| {
        std::fs::metadata(dir.join(name)).is_ok_and(|m| m.is_file() && m.len() == data.len() as u64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "turbovsr-default-model-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn materialises_the_embedded_files_once() {
        let root = scratch("once");
        let dir = materialise(&root).unwrap();
        assert!(dir
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("default-"));
        for (name, data) in DEFAULT_MODEL_FILES {
            assert_eq!(&std::fs::read(dir.join(name)).unwrap(), data, "{name}");
        }
        // A second call reuses the folder; a damaged copy is replaced.
        let modified = std::fs::metadata(dir.join("turbovsr.json"))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(materialise(&root).unwrap(), dir);
        assert_eq!(
            std::fs::metadata(dir.join("turbovsr.json"))
                .unwrap()
                .modified()
                .unwrap(),
            modified
        );
        // Only the finished folder is left (no temporary folders).
        let entries: Vec<_> = std::fs::read_dir(&root).unwrap().collect();
        assert_eq!(entries.len(), 1);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn concurrent_writers_leave_one_complete_copy() {
        let root = scratch("concurrent");
        let dirs: Vec<PathBuf> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4).map(|_| s.spawn(|| materialise(&root))).collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap().unwrap())
                .collect()
        });
        assert!(dirs.windows(2).all(|w| w[0] == w[1]));
        for (name, data) in DEFAULT_MODEL_FILES {
            assert_eq!(&std::fs::read(dirs[0].join(name)).unwrap(), data, "{name}");
        }
        assert_eq!(std::fs::read_dir(&root).unwrap().count(), 1);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn truncated_copy_is_rewritten() {
        let root = scratch("truncated");
        let dir = materialise(&root).unwrap();
        let file = dir.join("vae/diffusion_pytorch_model.safetensors");
        std::fs::write(&file, b"truncated").unwrap();
        assert!(!is_complete(&dir));
        // The damaged folder blocks the rename; it is moved aside and replaced.
        let again = materialise(&root).unwrap();
        assert_eq!(again, dir);
        assert!(is_complete(&dir));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
