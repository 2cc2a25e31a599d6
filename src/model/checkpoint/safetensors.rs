//! Memory-mapped safetensors files, their headers checked by `checkpoint::header`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::DType;

pub use super::header::{parse_header, parse_index, Header, ShardIndex, StDtype, TensorInfo};

impl StDtype {
    /// The candle dtype the bytes can be read as, when candle has one.
    pub fn to_candle(self) -> Option<DType> {
        Some(match self {
            Self::Bool | Self::U8 => DType::U8,
            Self::I16 => DType::I16,
            Self::I32 => DType::I32,
            Self::U32 => DType::U32,
            Self::I64 => DType::I64,
            Self::F16 => DType::F16,
            Self::Bf16 => DType::BF16,
            Self::F32 => DType::F32,
            Self::F64 => DType::F64,
            Self::F8E4M3 => DType::F8E4M3,
            Self::I8 | Self::U16 | Self::U64 | Self::F8E5M2 => return None,
        })
    }
}

/// A memory-mapped safetensors file with its checked header.
pub struct SafetensorsFile {
    pub path: PathBuf,
    pub header: Header,
    pub file_len: u64,
    mmap: memmap2::Mmap,
}

impl std::fmt::Debug for SafetensorsFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SafetensorsFile")
            .field("path", &self.path)
            .field("tensors", &self.header.tensors.len())
            .finish_non_exhaustive()
    }
}

impl SafetensorsFile {
    /// Maps `path` read-only and checks its header.
    pub fn open(path: &Path) -> Result<Self> {
        let file =
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let file_len = file
            .metadata()
            .with_context(|| format!("reading the size of {}", path.display()))?
            .len();
        if file_len < 8 {
            // mmap of an empty file fails with an unhelpful message; parse_header names it.
            parse_header(&[], file_len, path)?;
        }
        // SAFETY: mapped read-only. Like every safetensors loader we rely on nobody truncating
        // the file while it is mapped (tensors are copied out of the map when loaded).
        let mmap = unsafe { memmap2::Mmap::map(&file) }
            .with_context(|| format!("mapping {}", path.display()))?;
        let header = parse_header(&mmap, file_len, path)?;
        Ok(Self {
            path: path.to_path_buf(),
            header,
            file_len,
            mmap,
        })
    }

    /// The bytes of `info` (a tensor of this file's header).
    pub fn bytes(&self, info: &TensorInfo) -> &[u8] {
        &self.mmap[info.start..info.end]
    }

    /// Tells the kernel the mapped pages of `info` are no longer needed, so that a loaded model
    /// is not counted twice in resident memory (once in its tensors, once in the map). The
    /// file's pages stay in the page cache; a later read faults them back in.
    pub fn release(&self, info: &TensorInfo) {
        #[cfg(unix)]
        if info.end > info.start {
            // SAFETY: MADV_DONTNEED on a private read-only file mapping only drops pages that
            // are re-read from the file on the next access; no slice into the map is alive
            // across this call (the tensor's bytes were copied out).
            let _ = unsafe {
                self.mmap.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    info.start,
                    info.end - info.start,
                )
            };
        }
    }
}
