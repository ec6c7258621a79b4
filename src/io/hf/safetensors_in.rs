//! Reading Hugging Face checkpoint folders: `config.json` plus either one `model.safetensors` or a
//! sharded `model.safetensors.index.json` (`{"weight_map": {tensor: shard file}}`) and its shards,
//! as written by transformers' `save_pretrained` / `huggingface_hub.split_torch_state_dict_into_shards`.
//!
//! Files are memory-mapped (`memmap2`) and validated by the `safetensors` crate's header parser
//! (offsets contiguous, sizes matching dtype × shape, buffer fully covered) before any tensor is
//! read. Tensors are converted to f32 from F32, F16 or BF16 (the dtypes HF LLaMA and Dinov2
//! checkpoints ship in); anything else is refused with the tensor's name.
//!
//! Model files must not be rewritten in place while mapped (a truncated mapped file raises SIGBUS):
//! replace them by atomic rename.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::NamedTensor;
use crate::{Error, Result};

/// File name of an unsharded checkpoint.
pub const SINGLE_FILE: &str = "model.safetensors";
/// File name of the shard index of a sharded checkpoint.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// Where one tensor lives: which mapped file and which bytes.
#[derive(Debug, Clone)]
struct TensorEntry {
    /// Index into [`SafetensorsSet::files`].
    file: usize,
    dtype: Dtype,
    shape: Vec<usize>,
    /// Absolute byte range in the mapped file.
    bytes: std::ops::Range<usize>,
}

/// A mapped safetensors file.
#[derive(Debug)]
struct MappedFile {
    path: PathBuf,
    map: Mmap,
}

/// One or more memory-mapped safetensors files seen as a single name → tensor table.
#[derive(Debug)]
pub struct SafetensorsSet {
    /// Human-readable origin (the folder or file), for error messages.
    origin: String,
    files: Vec<MappedFile>,
    /// Sorted by name so iteration order is deterministic.
    tensors: BTreeMap<String, TensorEntry>,
}

/// `model.safetensors.index.json`; only `weight_map` is used (`metadata.total_size` is advisory).
#[derive(Debug, Deserialize)]
struct ShardIndex {
    weight_map: BTreeMap<String, String>,
}

/// Read and parse a JSON file (`config.json`, `adapter_config.json`, an index).
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::format(path.display().to_string(), e.to_string()))
}

/// Map a file read-only.
fn map_file(path: &Path) -> Result<Mmap> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: the map is read-only and lives as long as `SafetensorsSet`. The documented contract
    // (module docs, DESIGN.md §9) is that checkpoint files are not modified or truncated while a
    // conversion reads them; every access goes through bounds validated by the safetensors header
    // parser against the map's length.
    unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))
}

impl SafetensorsSet {
    /// Open a checkpoint folder: `model.safetensors`, else `model.safetensors.index.json` and the
    /// shards it names.
    pub fn open_dir(dir: &Path) -> Result<Self> {
        let single = dir.join(SINGLE_FILE);
        let index = dir.join(INDEX_FILE);
        if single.is_file() {
            Self::open_file(&single)
        } else if index.is_file() {
            Self::open_sharded(&index)
        } else if dir.join("pytorch_model.bin").exists() || dir.join("pytorch_model.bin.index.json").exists()
        {
            Err(Error::Unsupported(format!(
                "{}: only safetensors checkpoints are read (found pytorch_model.bin); \
                 re-save with `save_pretrained(..., safe_serialization=True)`",
                dir.display()
            )))
        } else {
            Err(Error::NotFound(format!("{}: neither {SINGLE_FILE} nor {INDEX_FILE}", dir.display())))
        }
    }

    /// Open one safetensors file; every tensor in it is visible.
    pub fn open_file(path: &Path) -> Result<Self> {
        let (file, infos) = Self::map_and_parse(path)?;
        let tensors = infos.into_iter().map(|(name, mut e)| {
            e.file = 0;
            (name, e)
        });
        Ok(Self { origin: path.display().to_string(), files: vec![file], tensors: tensors.collect() })
    }

    /// Open a sharded checkpoint from its index. Only the tensors the index names are visible, and
    /// each must be in the shard the index says.
    pub fn open_sharded(index_path: &Path) -> Result<Self> {
        let index: ShardIndex = read_json(index_path)?;
        let dir = index_path.parent().unwrap_or(Path::new("."));
        let mut shard_names: Vec<&str> = index.weight_map.values().map(String::as_str).collect();
        shard_names.sort_unstable();
        shard_names.dedup();

        let mut files = Vec::with_capacity(shard_names.len());
        let mut tensors = BTreeMap::new();
        for (file_idx, shard) in shard_names.iter().enumerate() {
            // A shard must be a plain file name next to the index (no path escapes).
            if shard.is_empty() || shard.contains(['/', '\\']) || *shard == ".." || *shard == "." {
                return Err(Error::format(
                    index_path.display().to_string(),
                    format!("shard file name `{shard}` is not a plain file name"),
                ));
            }
            let shard_path = dir.join(shard);
            let (mapped, mut infos) = Self::map_and_parse(&shard_path)?;
            for (name, _) in index.weight_map.iter().filter(|(_, s)| s.as_str() == *shard) {
                let mut entry = infos.remove(name).ok_or_else(|| {
                    Error::NotFound(format!(
                        "tensor `{name}`: {} places it in shard {shard}, which does not contain it",
                        index_path.display()
                    ))
                })?;
                entry.file = file_idx;
                tensors.insert(name.clone(), entry);
            }
            files.push(mapped);
        }
        Ok(Self { origin: index_path.display().to_string(), files, tensors })
    }

    /// Map a file and parse its header into entries (with `file` left at 0).
    fn map_and_parse(path: &Path) -> Result<(MappedFile, BTreeMap<String, TensorEntry>)> {
        let map = map_file(path)?;
        let (header_len, metadata) = SafeTensors::read_metadata(&map).map_err(|e| {
            Error::format(path.display().to_string(), format!("not a valid safetensors file: {e}"))
        })?;
        // Data starts after the 8-byte length and the JSON header; offsets are relative to it.
        let data_start = 8 + header_len;
        let entries = metadata
            .tensors()
            .into_iter()
            .map(|(name, info)| {
                let (s, e) = info.data_offsets;
                let entry = TensorEntry {
                    file: 0,
                    dtype: info.dtype,
                    shape: info.shape.clone(),
                    bytes: data_start + s..data_start + e,
                };
                (name, entry)
            })
            .collect();
        Ok((MappedFile { path: path.to_path_buf(), map }, entries))
    }

    /// Where these tensors come from (a folder's index or a file), for messages.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// All tensor names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// Whether a tensor exists.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// The shape of a tensor, if it exists.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.tensors.get(name).map(|e| e.shape.as_slice())
    }

    /// Read a tensor as f32 (converting F16/BF16 exactly): (shape, row-major data).
    pub fn read_f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let entry = self
            .tensors
            .get(name)
            .ok_or_else(|| Error::NotFound(format!("tensor `{name}` in {}", self.origin)))?;
        let file = &self.files[entry.file];
        // The range was validated against the map length by `read_metadata`; `get` keeps a
        // corrupt state from panicking all the same.
        let bytes = file.map.get(entry.bytes.clone()).ok_or_else(|| {
            Error::format(file.path.display().to_string(), format!("tensor `{name}` lies outside the file"))
        })?;
        let data = bytes_to_f32(bytes, entry.dtype).ok_or_else(|| {
            Error::Unsupported(format!(
                "tensor `{name}` in {} has dtype {}; only F32, F16 and BF16 are read",
                file.path.display(),
                entry.dtype
            ))
        })?;
        Ok((entry.shape.clone(), data))
    }

    /// Read a tensor as f32 under a new (canonical) name, checking its shape.
    pub fn read_named(&self, name: &str, canonical: &str, expected_shape: &[usize]) -> Result<NamedTensor> {
        if let Some(shape) = self.shape(name) {
            check_shape(name, expected_shape, shape)?;
        }
        let (shape, data) = self.read_f32(name)?;
        Ok(NamedTensor { name: canonical.to_string(), shape, data })
    }
}

/// An [`Error::Shape`] naming the tensor when `found != expected`.
pub fn check_shape(name: &str, expected: &[usize], found: &[usize]) -> Result<()> {
    if expected == found {
        Ok(())
    } else {
        Err(Error::Shape {
            what: format!("tensor `{name}`"),
            expected: format!("{expected:?}"),
            found: format!("{found:?}"),
        })
    }
}

/// Little-endian F32/F16/BF16 bytes → f32 (exact). `None` for any other dtype.
fn bytes_to_f32(bytes: &[u8], dtype: Dtype) -> Option<Vec<f32>> {
    // Chunked reads: the data of a tensor need not be aligned in the mapped file.
    let out = match dtype {
        Dtype::F32 => bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|b| half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32())
            .collect(),
        // bf16 is the top half of an f32.
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16))
            .collect(),
        _ => return None,
    };
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precision_conversions_are_exact() {
        // 1.5 is 0x3E00 in f16 and 0x3FC0 in bf16; −2 is 0xC000 in bf16.
        assert_eq!(bytes_to_f32(&[0x00, 0x3E], Dtype::F16), Some(vec![1.5]));
        assert_eq!(bytes_to_f32(&[0xC0, 0x3F], Dtype::BF16), Some(vec![1.5]));
        assert_eq!(bytes_to_f32(&[0x00, 0xC0], Dtype::BF16), Some(vec![-2.0]));
        assert_eq!(bytes_to_f32(&1.25f32.to_le_bytes(), Dtype::F32), Some(vec![1.25]));
        assert_eq!(bytes_to_f32(&[0; 8], Dtype::I64), None);
    }
}
