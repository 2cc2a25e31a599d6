//! Reading safetensors files and diffusers' shard index with every check a damaged or hand-made
//! checkpoint needs (DESIGN §3.3: errors name the file and the key).
//!
//! The format (<https://github.com/huggingface/safetensors>, "Format"): 8 bytes little-endian
//! header length N, N bytes of JSON `{"name": {"dtype", "shape", "data_offsets": [begin, end]},
//! "__metadata__": {...}}`, then the data; offsets are relative to the end of the header. The
//! parsing here is ours (not the `safetensors` crate's) so that each error can say which file and
//! which key is wrong. This file depends on `anyhow` and `serde_json` only, so that the fuzz
//! targets in `fuzz/` compile it on its own.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};

/// A header larger than this is rejected before it is read: the real LTX checkpoints have
/// headers of a few hundred KiB; the safetensors reference caps them at 100 MB too.
pub const MAX_HEADER_BYTES: u64 = 100 * 1024 * 1024;

/// Element types of the safetensors format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StDtype {
    Bool,
    U8,
    I8,
    I16,
    U16,
    F16,
    Bf16,
    I32,
    U32,
    F32,
    F64,
    I64,
    U64,
    F8E4M3,
    F8E5M2,
}

impl StDtype {
    /// The header's spelling (`"BF16"`), or `None` for an unknown dtype.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "BOOL" => Self::Bool,
            "U8" => Self::U8,
            "I8" => Self::I8,
            "I16" => Self::I16,
            "U16" => Self::U16,
            "F16" => Self::F16,
            "BF16" => Self::Bf16,
            "I32" => Self::I32,
            "U32" => Self::U32,
            "F32" => Self::F32,
            "F64" => Self::F64,
            "I64" => Self::I64,
            "U64" => Self::U64,
            "F8_E4M3" => Self::F8E4M3,
            "F8_E5M2" => Self::F8E5M2,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Bool => "BOOL",
            Self::U8 => "U8",
            Self::I8 => "I8",
            Self::I16 => "I16",
            Self::U16 => "U16",
            Self::F16 => "F16",
            Self::Bf16 => "BF16",
            Self::I32 => "I32",
            Self::U32 => "U32",
            Self::F32 => "F32",
            Self::F64 => "F64",
            Self::I64 => "I64",
            Self::U64 => "U64",
            Self::F8E4M3 => "F8_E4M3",
            Self::F8E5M2 => "F8_E5M2",
        }
    }

    pub fn size_in_bytes(self) -> usize {
        match self {
            Self::Bool | Self::U8 | Self::I8 | Self::F8E4M3 | Self::F8E5M2 => 1,
            Self::I16 | Self::U16 | Self::F16 | Self::Bf16 => 2,
            Self::I32 | Self::U32 | Self::F32 => 4,
            Self::F64 | Self::I64 | Self::U64 => 8,
        }
    }

    /// Whether weights of this type are converted to the run precision on load.
    pub fn is_float(self) -> bool {
        matches!(self, Self::F16 | Self::Bf16 | Self::F32 | Self::F64)
    }
}

impl std::fmt::Display for StDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One tensor of a header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub dtype: StDtype,
    pub shape: Vec<usize>,
    /// Byte range in the file (absolute: the header is already added).
    pub start: usize,
    pub end: usize,
}

impl TensorInfo {
    pub fn elem_count(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A parsed and checked header.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Header {
    pub tensors: BTreeMap<String, TensorInfo>,
    /// `__metadata__`, string to string as the format requires.
    pub metadata: BTreeMap<String, String>,
    /// Where the data starts in the file (8 + header length).
    pub data_start: usize,
}

/// Parses and checks the header of a safetensors file whose first bytes are `prefix` (at least
/// the 8-byte length and the header; the data need not be there) and whose total size is
/// `file_len`. `path` only names the file in errors.
///
/// Checked: the file holds the length and the header; the header is a UTF-8 JSON object; each
/// entry has a known dtype, a shape and `data_offsets` whose length matches dtype x shape; every
/// tensor lies inside the data and no two overlap.
pub fn parse_header(prefix: &[u8], file_len: u64, path: &Path) -> Result<Header> {
    let p = path.display();
    if file_len < 8 || prefix.len() < 8 {
        bail!(
            "{p}: truncated: the file has {file_len} bytes, a safetensors file starts with an \
             8-byte header length"
        );
    }
    let n = u64::from_le_bytes(prefix[..8].try_into().expect("8 bytes"));
    if n > file_len - 8 {
        bail!(
            "{p}: the header length {n} runs past the end of the file ({file_len} bytes): \
             truncated or not a safetensors file"
        );
    }
    if n > MAX_HEADER_BYTES {
        bail!("{p}: the header length {n} is larger than the {MAX_HEADER_BYTES}-byte limit");
    }
    let n = n as usize;
    if prefix.len() < 8 + n {
        bail!(
            "{p}: truncated: {} bytes read, the header needs {}",
            prefix.len(),
            8 + n
        );
    }
    let text = std::str::from_utf8(&prefix[8..8 + n])
        .map_err(|e| anyhow::anyhow!("{p}: invalid JSON header: not UTF-8 ({e})"))?;
    // The reference writer pads the header with spaces to an 8-byte boundary.
    let json: serde_json::Value = serde_json::from_str(text.trim_end_matches([' ', '\0']))
        .map_err(|e| anyhow::anyhow!("{p}: invalid JSON header: {e}"))?;
    let serde_json::Value::Object(entries) = json else {
        bail!("{p}: invalid JSON header: expected an object of tensors");
    };
    let data_start = 8 + n;
    let data_len = (file_len - 8) as usize - n;
    let mut header = Header {
        data_start,
        ..Header::default()
    };
    for (name, value) in entries {
        if name == "__metadata__" {
            let serde_json::Value::Object(meta) = value else {
                bail!("{p}: `__metadata__` is not an object of strings");
            };
            for (k, v) in meta {
                let serde_json::Value::String(v) = v else {
                    bail!("{p}: `__metadata__.{k}` is not a string");
                };
                header.metadata.insert(k, v);
            }
            continue;
        }
        let info = parse_entry(&value, data_start, data_len)
            .with_context(|| format!("{p}: key `{name}`"))?;
        header.tensors.insert(name, info);
    }
    check_overlaps(&header).with_context(|| p.to_string())?;
    Ok(header)
}

fn parse_entry(
    value: &serde_json::Value,
    data_start: usize,
    data_len: usize,
) -> Result<TensorInfo> {
    let obj = value
        .as_object()
        .context("the entry is not an object with dtype, shape and data_offsets")?;
    let dtype_name = obj
        .get("dtype")
        .and_then(|d| d.as_str())
        .context("no `dtype` string")?;
    let dtype = StDtype::parse(dtype_name).with_context(|| {
        format!(
            "unknown dtype {dtype_name:?} (expected one of BOOL, U8, I8, I16, U16, F16, BF16, \
             I32, U32, F32, F64, I64, U64, F8_E4M3, F8_E5M2)"
        )
    })?;
    let shape = obj
        .get("shape")
        .and_then(|s| s.as_array())
        .context("no `shape` list")?
        .iter()
        .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
        .collect::<Option<Vec<usize>>>()
        .context("`shape` is not a list of non-negative integers")?;
    let offsets = obj
        .get("data_offsets")
        .and_then(|o| o.as_array())
        .context("no `data_offsets` [begin, end]")?;
    let (begin, end) = match offsets.as_slice() {
        [b, e] => match (
            b.as_u64().and_then(|v| usize::try_from(v).ok()),
            e.as_u64().and_then(|v| usize::try_from(v).ok()),
        ) {
            (Some(b), Some(e)) => (b, e),
            _ => bail!("`data_offsets` {offsets:?} are not two non-negative integers"),
        },
        _ => bail!("`data_offsets` {offsets:?} are not [begin, end]"),
    };
    if end < begin {
        bail!("`data_offsets` [{begin}, {end}] end before they begin");
    }
    let need = shape
        .iter()
        .try_fold(dtype.size_in_bytes(), |acc, &d| acc.checked_mul(d))
        .with_context(|| format!("shape {shape:?} of {dtype} overflows"))?;
    if end - begin != need {
        bail!(
            "`data_offsets` [{begin}, {end}] hold {} bytes, shape {shape:?} of {dtype} needs {need}",
            end - begin
        );
    }
    if end > data_len {
        bail!(
            "`data_offsets` [{begin}, {end}] run past the end of the data ({data_len} bytes): \
             the file is truncated"
        );
    }
    Ok(TensorInfo {
        dtype,
        shape,
        start: data_start + begin,
        end: data_start + end,
    })
}

/// Two tensors sharing bytes would alias each other's data.
fn check_overlaps(header: &Header) -> Result<()> {
    let mut ranges: Vec<(&str, &TensorInfo)> = header
        .tensors
        .iter()
        .filter(|(_, t)| t.end > t.start)
        .map(|(k, t)| (k.as_str(), t))
        .collect();
    ranges.sort_by_key(|(_, t)| (t.start, t.end));
    for pair in ranges.windows(2) {
        let ((a, ta), (b, tb)) = (pair[0], pair[1]);
        if tb.start < ta.end {
            let d = header.data_start;
            bail!(
                "the tensors `{a}` (data_offsets [{}, {}]) and `{b}` ([{}, {}]) overlap",
                ta.start - d,
                ta.end - d,
                tb.start - d,
                tb.end - d
            );
        }
    }
    Ok(())
}

/// A diffusers shard index (`diffusion_pytorch_model.safetensors.index.json`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardIndex {
    /// Key -> shard file name (relative to the index's folder).
    pub weight_map: BTreeMap<String, String>,
}

impl ShardIndex {
    /// The shard file names, sorted, each once.
    pub fn shards(&self) -> Vec<String> {
        let mut files: Vec<String> = self.weight_map.values().cloned().collect();
        files.sort();
        files.dedup();
        files
    }
}

/// Parses an index JSON `{"metadata": {...}, "weight_map": {"key": "shard.safetensors"}}`.
/// Shard names must be plain file names in the index's folder. `path` names the file in errors.
pub fn parse_index(text: &str, path: &Path) -> Result<ShardIndex> {
    let p = path.display();
    let json: serde_json::Value =
        serde_json::from_str(text).map_err(|e| anyhow::anyhow!("{p}: invalid JSON: {e}"))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .with_context(|| format!("{p}: no `weight_map` object"))?;
    if map.is_empty() {
        bail!("{p}: `weight_map` is empty");
    }
    let mut weight_map = BTreeMap::new();
    for (key, shard) in map {
        let shard = shard
            .as_str()
            .with_context(|| format!("{p}: key `{key}`: the shard name is not a string"))?;
        let plain = Path::new(shard)
            .file_name()
            .is_some_and(|n| n == std::ffi::OsStr::new(shard));
        if !plain || shard == "." || shard == ".." {
            bail!("{p}: key `{key}`: shard {shard:?} is not a file name in the index's folder");
        }
        weight_map.insert(key.clone(), shard.to_string());
    }
    Ok(ShardIndex { weight_map })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(header: &str, data: usize) -> Vec<u8> {
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(header.as_bytes());
        out.extend(std::iter::repeat_n(0u8, data));
        out
    }

    fn err(bytes: &[u8]) -> String {
        format!(
            "{:#}",
            parse_header(bytes, bytes.len() as u64, Path::new("m.safetensors")).unwrap_err()
        )
    }

    #[test]
    fn a_valid_header_parses() {
        let f = file(
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"BF16","shape":[],"data_offsets":[8,10]},"__metadata__":{"format":"pt"}}  "#,
            10,
        );
        let h = parse_header(&f, f.len() as u64, Path::new("x")).unwrap();
        assert_eq!(h.tensors["a"].shape, vec![2]);
        assert_eq!(h.tensors["b"].dtype, StDtype::Bf16);
        assert_eq!(h.tensors["b"].start, h.data_start + 8);
        assert_eq!(h.metadata["format"], "pt");
    }

    #[test]
    fn each_defect_is_named() {
        assert!(err(&[1, 0, 0]).contains("truncated"));
        let mut f = file(r#"{}"#, 0);
        f[0] = 200;
        assert!(err(&f).contains("header length 200 runs past the end"));
        assert!(err(&file("{not json", 0)).contains("invalid JSON header"));
        let e = err(&file(
            r#"{"w":{"dtype":"Q7","shape":[1],"data_offsets":[0,1]}}"#,
            1,
        ));
        assert!(
            e.contains("key `w`") && e.contains("unknown dtype \"Q7\""),
            "{e}"
        );
        let e = err(&file(
            r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#,
            8,
        ));
        assert!(
            e.contains("key `w`") && e.contains("run past the end"),
            "{e}"
        );
        let e = err(&file(
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
            12,
        ));
        assert!(
            e.contains("`a`") && e.contains("`b`") && e.contains("overlap"),
            "{e}"
        );
        let e = err(&file(
            r#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
            8,
        ));
        assert!(e.contains("needs 12"), "{e}");
        let e = err(&file(
            r#"{"w":{"dtype":"F32","shape":[4294967296,4294967296,4],"data_offsets":[0,8]}}"#,
            8,
        ));
        assert!(e.contains("overflows"), "{e}");
    }

    #[test]
    fn index_shard_names_are_checked() {
        let p = Path::new("i.json");
        let ok = parse_index(
            r#"{"weight_map":{"a":"s1.safetensors","b":"s2.safetensors","c":"s1.safetensors"}}"#,
            p,
        )
        .unwrap();
        assert_eq!(ok.shards(), vec!["s1.safetensors", "s2.safetensors"]);
        for (text, want) in [
            ("[", "invalid JSON"),
            (r#"{"metadata":{}}"#, "no `weight_map`"),
            (r#"{"weight_map":{"a":3}}"#, "key `a`"),
            (
                r#"{"weight_map":{"a":"../x.safetensors"}}"#,
                "not a file name",
            ),
            (r#"{"weight_map":{"a":"/etc/x"}}"#, "not a file name"),
        ] {
            let e = format!("{:#}", parse_index(text, p).unwrap_err());
            assert!(e.contains(want) && e.contains("i.json"), "{text}: {e}");
        }
    }
}
