//! [`PackageWriter`]: streams a package to disk, tensor by tensor, in a fixed order.
//!
//! The layout (every tensor 64-byte aligned, `__pad.N` fillers) is planned up front from the
//! tensor list, so the header is written first with a placeholder checksum; the data is then
//! streamed through the hasher, and the checksum is patched into the header at the end. The
//! file is written to `<target>.tmp.<pid>` and renamed over the target only when complete
//! (never rewrite a mapped model in place).

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use super::checksum::{preamble, ChecksumEntry, ChecksumHasher, CHECKSUM_LEN};
use super::{keys, ALIGNMENT, FORMAT_VERSION, MAX_HEADER_LEN};
use crate::model::config::ModelConfig;
use crate::model::names::PAD_PREFIX;
use crate::tensor::{numel, shape_string, DType};
use crate::{Error, Result};

/// One stored tensor to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
}

impl TensorSpec {
    pub fn new(name: impl Into<String>, dtype: DType, shape: &[usize]) -> Self {
        TensorSpec { name: name.into(), dtype, shape: shape.to_vec() }
    }

    fn n_bytes(&self) -> Result<usize> {
        numel(&self.shape).and_then(|n| n.checked_mul(self.dtype.size())).ok_or_else(|| {
            Error::invalid(
                "tensor shape",
                format!("`{}` {}: size overflows", self.name, shape_string(&self.shape)),
            )
        })
    }
}

/// A planned stored tensor: data offsets relative to the data section.
#[derive(Clone, Debug)]
pub(crate) struct Slot {
    pub spec: TensorSpec,
    pub begin: usize,
    pub end: usize,
}

/// Plans the data section: tensors in the given order, each preceded by a filler when needed
/// so that `data_start + begin` is a multiple of [`ALIGNMENT`] (`data_start` is itself a
/// multiple of it).
pub(crate) fn plan_layout(tensors: &[TensorSpec]) -> Result<Vec<Slot>> {
    let mut slots = Vec::with_capacity(tensors.len() * 2);
    let mut offset = 0usize;
    let mut n_pads = 0usize;
    for spec in tensors {
        let gap = offset.next_multiple_of(ALIGNMENT) - offset;
        if gap > 0 {
            let pad = TensorSpec::new(format!("{PAD_PREFIX}{n_pads}"), DType::U8, &[gap]);
            n_pads += 1;
            slots.push(Slot { spec: pad, begin: offset, end: offset + gap });
            offset += gap;
        }
        let n = spec.n_bytes()?;
        slots.push(Slot { spec: spec.clone(), begin: offset, end: offset + n });
        offset += n;
    }
    Ok(slots)
}

/// The header JSON (padded with spaces so that `8 + len` is a multiple of [`ALIGNMENT`]) and
/// the byte position of the checksum value inside it.
pub(crate) fn header_bytes(metadata: &[(&str, &str)], slots: &[Slot]) -> Result<(Vec<u8>, usize)> {
    let mut root = Map::new();
    let mut meta = Map::new();
    for (k, v) in metadata {
        meta.insert(k.to_string(), Value::String(v.to_string()));
    }
    root.insert("__metadata__".to_string(), Value::Object(meta));
    for s in slots {
        root.insert(
            s.spec.name.clone(),
            json!({ "dtype": s.spec.dtype.name(), "shape": s.spec.shape, "data_offsets": [s.begin, s.end] }),
        );
    }
    let mut bytes = serde_json::to_vec(&Value::Object(root))
        .map_err(|e| Error::Internal(format!("serializing the package header: {e}")))?;
    let padded = (8 + bytes.len()).next_multiple_of(ALIGNMENT) - 8;
    bytes.resize(padded, b' ');
    if bytes.len() as u64 > MAX_HEADER_LEN {
        return Err(Error::Unsupported(format!(
            "package header of {} bytes exceeds the {MAX_HEADER_LEN}-byte limit",
            bytes.len()
        )));
    }
    let key = format!("\"{}\":\"", keys::CHECKSUM);
    let at = find(&bytes, key.as_bytes())
        .ok_or_else(|| Error::Internal("checksum placeholder missing from the header".into()))?;
    Ok((bytes, at + key.len()))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Writes a package, one stored tensor after another in the order given to
/// [`PackageWriter::create`]. Dropping it unfinished deletes the temporary file.
pub struct PackageWriter {
    out: Option<BufWriter<File>>,
    tmp_path: PathBuf,
    path: PathBuf,
    slots: Vec<Slot>,
    /// Index of the slot being written.
    current: usize,
    /// Bytes of the current slot written so far.
    current_written: usize,
    hasher: Option<ChecksumHasher>,
    header_len: usize,
    checksum_at: usize,
    data_len: usize,
}

impl PackageWriter {
    /// Plans the layout of `tensors` (stored tensors, in file order), writes the header and
    /// prepares to receive the data. `config` is validated; `tensors` is not checked against
    /// it here (the builder does that; the loader rejects a mismatch).
    pub fn create(path: &Path, config: &ModelConfig, tensors: &[TensorSpec]) -> Result<PackageWriter> {
        config.validate()?;
        let mut names: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(Error::invalid("tensors", format!("tensor `{}` listed twice", w[0])));
        }
        if let Some(t) = tensors.iter().find(|t| t.name.starts_with(PAD_PREFIX) || t.name == "__metadata__") {
            return Err(Error::invalid("tensors", format!("`{}` is a reserved name", t.name)));
        }
        let slots = plan_layout(tensors)?;
        let data_len = slots.last().map_or(0, |s| s.end);
        let config_json = config.to_json();
        let tokenizer = config.tokenizer.kind.name();
        let placeholder = format!("sha256:{}", "0".repeat(64));
        let version = FORMAT_VERSION.to_string();
        let writer = format!("medregion {}", crate::VERSION);
        let metadata = [
            (keys::FORMAT_VERSION, version.as_str()),
            (keys::CONFIG, config_json.as_str()),
            (keys::TOKENIZER, tokenizer),
            (keys::CHECKSUM, placeholder.as_str()),
            (keys::WRITER, writer.as_str()),
        ];
        let (header, checksum_at) = header_bytes(&metadata, &slots)?;

        let mut hasher = ChecksumHasher::new();
        hasher.update(&preamble(
            FORMAT_VERSION,
            tokenizer,
            &config_json,
            slots.iter().map(|s| ChecksumEntry {
                name: &s.spec.name,
                dtype: s.spec.dtype,
                shape: &s.spec.shape,
                begin: s.begin,
                end: s.end,
            }),
            data_len,
        ));

        let file_name = path
            .file_name()
            .ok_or_else(|| Error::invalid("output", format!("`{}` is not a file path", path.display())))?;
        let mut tmp_name = file_name.to_os_string();
        tmp_name.push(format!(".tmp.{}", std::process::id()));
        let tmp_path = path.with_file_name(tmp_name);
        let file = File::create(&tmp_path).map_err(|e| Error::io(&tmp_path, e))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let io = |e| Error::io(&tmp_path, e);
        out.write_all(&(header.len() as u64).to_le_bytes()).map_err(io)?;
        out.write_all(&header).map_err(io)?;

        let mut w = PackageWriter {
            out: Some(out),
            tmp_path: tmp_path.clone(),
            path: path.to_path_buf(),
            slots,
            current: 0,
            current_written: 0,
            hasher: Some(hasher),
            header_len: header.len(),
            checksum_at: 8 + checksum_at,
            data_len,
        };
        w.skip_pads()?;
        Ok(w)
    }

    /// Size of the file that will be written.
    pub fn file_len(&self) -> u64 {
        (8 + self.header_len + self.data_len) as u64
    }

    /// Appends `bytes` to tensor `name`, which must be the current tensor (a tensor may be
    /// written in several calls; it is complete when all its bytes have been written).
    pub fn write(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        let Some(slot) = self.slots.get(self.current) else {
            return Err(Error::invalid("tensor", format!("`{name}`: all tensors are already written")));
        };
        if slot.spec.name != name {
            return Err(Error::invalid(
                "tensor",
                format!("`{name}` written out of order: the next tensor is `{}`", slot.spec.name),
            ));
        }
        let size = slot.end - slot.begin;
        let remaining = size - self.current_written;
        if bytes.len() > remaining {
            return Err(Error::Shape {
                what: format!("bytes written to tensor `{name}`"),
                expected: size.to_string(),
                found: (self.current_written + bytes.len()).to_string(),
            });
        }
        self.emit(bytes)?;
        self.current_written += bytes.len();
        if self.current_written == size {
            self.current += 1;
            self.current_written = 0;
            self.skip_pads()?;
        }
        Ok(())
    }

    /// Writes the filler tensors that come next.
    fn skip_pads(&mut self) -> Result<()> {
        while let Some(slot) = self.slots.get(self.current) {
            if !slot.spec.name.starts_with(PAD_PREFIX) {
                break;
            }
            let zeros = [0u8; ALIGNMENT];
            let n = slot.end - slot.begin;
            self.emit(&zeros[..n])?;
            self.current += 1;
        }
        Ok(())
    }

    fn emit(&mut self, bytes: &[u8]) -> Result<()> {
        if let Some(h) = self.hasher.as_mut() {
            h.update(bytes);
        }
        let out = self.out.as_mut().ok_or_else(|| Error::Internal("package writer already closed".into()))?;
        out.write_all(bytes).map_err(|e| Error::io(&self.tmp_path, e))
    }

    /// Checks every tensor was written, patches the checksum into the header, syncs and renames
    /// the file into place. Returns the checksum.
    pub fn finish(mut self) -> Result<String> {
        if let Some(slot) = self.slots.get(self.current) {
            return Err(Error::invalid(
                "tensor",
                format!("package incomplete: tensor `{}` was not written (fully)", slot.spec.name),
            ));
        }
        let checksum = self.hasher.take().map(ChecksumHasher::finish).unwrap_or_default();
        debug_assert_eq!(checksum.len(), CHECKSUM_LEN);
        let out = self.out.take().ok_or_else(|| Error::Internal("package writer already closed".into()))?;
        let result = self.close(out, &checksum);
        if result.is_err() {
            let _ = std::fs::remove_file(&self.tmp_path);
        }
        result.map(|()| checksum)
    }

    fn close(&self, out: BufWriter<File>, checksum: &str) -> Result<()> {
        let tmp = &self.tmp_path;
        let io = |e| Error::io(tmp, e);
        let mut file = out.into_inner().map_err(|e| Error::io(tmp, e.into_error()))?;
        file.seek(SeekFrom::Start(self.checksum_at as u64)).map_err(io)?;
        file.write_all(checksum.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        drop(file);
        std::fs::rename(tmp, &self.path).map_err(|e| Error::io(&self.path, e))
    }
}

impl Drop for PackageWriter {
    fn drop(&mut self) {
        if self.out.is_some() {
            self.out = None;
            let _ = std::fs::remove_file(&self.tmp_path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_aligns_every_tensor() {
        let specs = [
            TensorSpec::new("a", DType::F32, &[3]),
            TensorSpec::new("b", DType::U8, &[64]),
            TensorSpec::new("c", DType::F16, &[5, 7]),
            TensorSpec::new("d", DType::U8, &[1]),
        ];
        let slots = plan_layout(&specs).unwrap();
        let names: Vec<&str> = slots.iter().map(|s| s.spec.name.as_str()).collect();
        assert_eq!(names, ["a", "__pad.0", "b", "c", "__pad.1", "d"]);
        for s in &slots {
            if !s.spec.name.starts_with(PAD_PREFIX) {
                assert_eq!(s.begin % ALIGNMENT, 0, "{}", s.spec.name);
            }
        }
        let (header, at) = header_bytes(&[(keys::CHECKSUM, "sha256:x")], &slots).unwrap();
        assert_eq!((8 + header.len()) % ALIGNMENT, 0);
        assert_eq!(&header[at..at + 8], b"sha256:x");
    }
}
