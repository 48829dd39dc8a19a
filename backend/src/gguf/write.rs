//! Streaming, atomic GGUF v3 writer.
//!
//! Declare metadata and tensors on a [`GgufWriter`], then [`GgufWriter::begin`] writes the
//! header to a temporary file in the target's directory and returns a [`GgufStreamWriter`]
//! that takes tensor data one tensor at a time, in declaration order. Only
//! [`GgufStreamWriter::finish`] renames the temporary file over the target, so an interrupted
//! or abandoned write never leaves a partial file at the target path; dropping the stream
//! writer without finishing deletes the temporary file. A process killed outright cannot
//! delete it: the file stays locked while its writer lives, so a later run can tell it is
//! stale and remove it ([`super::remove_stale_partials`]).

use std::collections::HashSet;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

use super::partial;
use super::read::MAX_ARRAY_DEPTH;
use super::{is_bitnet_flavoured, GgmlType, Value, DEFAULT_ALIGNMENT, MAX_DIMS};
use crate::{Error, Result};

const GGUF_VERSION: u32 = 3;
const ALIGNMENT_KEY: &str = "general.alignment";

#[derive(Debug, Clone)]
struct PlannedTensor {
    name: String,
    dims: Vec<u64>,
    ggml_type: GgmlType,
    n_bytes: u64,
}

/// Collects metadata and tensor declarations for a GGUF file.
#[derive(Debug, Default)]
pub struct GgufWriter {
    metadata: Vec<(String, Value)>,
    keys: HashSet<String>,
    tensors: Vec<PlannedTensor>,
    names: HashSet<String>,
}

impl GgufWriter {
    pub fn new() -> GgufWriter {
        GgufWriter::default()
    }

    /// Adds a metadata entry (kept in insertion order). Keys must be unique; arrays must be
    /// homogeneous; `general.alignment` must be a power-of-two U32.
    pub fn add(&mut self, key: impl Into<String>, value: impl Into<Value>) -> Result<()> {
        let key = key.into();
        let value = value.into();
        if self.keys.contains(&key) {
            return Err(Error::Writer(format!("duplicate metadata key `{key}`")));
        }
        check_value(&key, &value, 0)?;
        if key == ALIGNMENT_KEY && !matches!(value, Value::U32(a) if a.is_power_of_two()) {
            return Err(Error::Writer(format!(
                "{ALIGNMENT_KEY} must be a power-of-two U32, got {:?} {value}",
                value.value_type()
            )));
        }
        self.keys.insert(key.clone());
        self.metadata.push((key, value));
        Ok(())
    }

    /// Declares a tensor (ggml dims, `dims[0]` contiguous); its size comes from the type.
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        dims: &[u64],
        ggml_type: GgmlType,
    ) -> Result<()> {
        let name = name.into();
        if self.names.contains(&name) {
            return Err(Error::Writer(format!("duplicate tensor name `{name}`")));
        }
        if dims.len() > MAX_DIMS {
            return Err(Error::Writer(format!(
                "tensor `{name}` has {} dims (at most {MAX_DIMS})",
                dims.len()
            )));
        }
        let too_big = dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .is_none_or(|n| n > i64::MAX as u64);
        if too_big {
            return Err(Error::Writer(format!(
                "tensor `{name}` dims {dims:?} overflow"
            )));
        }
        let n_bytes = ggml_type.tensor_bytes(dims).map_err(|e| Error::Tensor {
            name: name.clone(),
            problem: e.to_string(),
        })?;
        self.names.insert(name.clone());
        self.tensors.push(PlannedTensor {
            name,
            dims: dims.to_vec(),
            ggml_type,
            n_bytes,
        });
        Ok(())
    }

    fn alignment(&self) -> u64 {
        self.metadata
            .iter()
            .find(|(k, _)| k == ALIGNMENT_KEY)
            .and_then(|(_, v)| v.as_u32())
            .map_or(DEFAULT_ALIGNMENT, u64::from)
    }

    /// Writes the header to a temporary file next to `path` and returns the writer for the
    /// tensor data.
    pub fn begin(self, path: impl AsRef<Path>) -> Result<GgufStreamWriter> {
        let target = path.as_ref().to_path_buf();
        let uses_i2s = self.tensors.iter().any(|t| t.ggml_type == GgmlType::I2S);
        if uses_i2s && !is_bitnet_flavoured(&self.metadata) {
            return Err(Error::Writer(
                "I2_S tensors need a bitnet.cpp-flavoured file (general.architecture \
                 bitnet-b1.58 or general.file_type 40), or readers will not recognise type 36"
                    .to_string(),
            ));
        }
        let alignment = self.alignment();
        let mut offsets = Vec::with_capacity(self.tensors.len());
        let mut next = 0u64;
        for t in &self.tensors {
            offsets.push(next);
            next = next
                .checked_add(t.n_bytes)
                .map(|e| e.next_multiple_of(alignment))
                .ok_or_else(|| Error::Writer("total tensor data size overflows".to_string()))?;
        }

        let dir = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let tmp = partial::create(&dir)?;
        let mut out = Counting {
            inner: BufWriter::with_capacity(1 << 20, tmp),
            written: 0,
        };
        let header = self.encode_header(&offsets);
        out.write_all(&header)
            .and_then(|()| pad(&mut out, alignment))
            .map_err(|e| Error::io("writing", &target, e))?;
        Ok(GgufStreamWriter {
            out,
            target,
            tensors: self.tensors,
            next: 0,
            alignment,
            failed: false,
        })
    }

    fn encode_header(&self, offsets: &[u64]) -> Vec<u8> {
        let mut h = Vec::new();
        h.extend_from_slice(b"GGUF");
        h.extend_from_slice(&GGUF_VERSION.to_le_bytes());
        h.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        h.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            put_str(&mut h, key);
            h.extend_from_slice(&value.value_type().id().to_le_bytes());
            put_value(&mut h, value);
        }
        for (t, offset) in self.tensors.iter().zip(offsets) {
            put_str(&mut h, &t.name);
            h.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                h.extend_from_slice(&d.to_le_bytes());
            }
            h.extend_from_slice(&t.ggml_type.id().to_le_bytes());
            h.extend_from_slice(&offset.to_le_bytes());
        }
        h
    }
}

/// Writes tensor data, in declaration order, into the temporary file; see the module docs.
#[derive(Debug)]
pub struct GgufStreamWriter {
    out: Counting<BufWriter<NamedTempFile>>,
    target: PathBuf,
    tensors: Vec<PlannedTensor>,
    next: usize,
    alignment: u64,
    failed: bool,
}

impl GgufStreamWriter {
    /// Writes the next tensor's data, which must be exactly its declared size.
    pub fn write_tensor(&mut self, name: &str, data: &[u8]) -> Result<()> {
        self.write_tensor_with(name, |w| Ok(w.write_all(data)?))
    }

    /// Streams the next tensor's data through `write`, which must write exactly its
    /// declared size; useful to convert a large tensor piece by piece.
    pub fn write_tensor_with(
        &mut self,
        name: &str,
        write: impl FnOnce(&mut dyn Write) -> Result<()>,
    ) -> Result<()> {
        let expected = self.start_tensor(name)?;
        let out = &mut self.out;
        let before = out.written;
        let result = write(out).and_then(|()| {
            let got = out.written - before;
            if got != expected.n_bytes {
                return Err(Error::Tensor {
                    name: name.to_string(),
                    problem: format!(
                        "{got} bytes written, but a {} tensor of dims {:?} is {} bytes",
                        expected.ggml_type, expected.dims, expected.n_bytes
                    ),
                });
            }
            pad(out, self.alignment).map_err(|e| Error::io("writing", &self.target, e))
        });
        if result.is_err() {
            // The file is now inconsistent; refuse further writes (drop removes it).
            self.failed = true;
        } else {
            self.next += 1;
        }
        result
    }

    fn start_tensor(&self, name: &str) -> Result<PlannedTensor> {
        if self.failed {
            return Err(Error::Writer(
                "an earlier tensor write failed; the file is abandoned".to_string(),
            ));
        }
        match self.tensors.get(self.next) {
            Some(t) if t.name == name => Ok(t.clone()),
            Some(t) => Err(Error::Writer(format!(
                "expected tensor `{}` next (declaration order), got `{name}`",
                t.name
            ))),
            None => Err(Error::Writer(format!(
                "tensor `{name}` was not declared, or all tensors are already written"
            ))),
        }
    }

    /// The path the file will have after [`Self::finish`].
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Checks every tensor was written, syncs the data to disk and atomically renames the
    /// temporary file to the target path.
    pub fn finish(self) -> Result<()> {
        if self.failed {
            return Err(Error::Writer(
                "an earlier tensor write failed; nothing was written".to_string(),
            ));
        }
        if let Some(t) = self.tensors.get(self.next) {
            return Err(Error::Writer(format!(
                "tensor `{}` (and any after it) was declared but not written",
                t.name
            )));
        }
        let GgufStreamWriter { out, target, .. } = self;
        let io = |e| Error::io("writing", &target, e);
        let tmp = out.inner.into_inner().map_err(|e| io(e.into_error()))?;
        set_readable_permissions(tmp.as_file()).map_err(io)?;
        tmp.as_file().sync_all().map_err(io)?;
        tmp.persist(&target).map_err(|e| io(e.error))?;
        sync_parent_dir(&target);
        Ok(())
    }
}

/// Counts bytes so sizes and padding need no `seek`.
#[derive(Debug)]
struct Counting<W> {
    inner: W,
    written: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn pad<W: Write>(out: &mut Counting<W>, alignment: u64) -> std::io::Result<()> {
    const ZEROS: [u8; 256] = [0; 256];
    let mut n = out.written.next_multiple_of(alignment) - out.written;
    while n > 0 {
        let k = n.min(ZEROS.len() as u64);
        out.write_all(&ZEROS[..k as usize])?;
        n -= k;
    }
    Ok(())
}

#[cfg(unix)]
fn set_readable_permissions(file: &std::fs::File) -> std::io::Result<()> {
    // Temporary files are created 0600; a model file should be as readable as any other.
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(0o644))
}

#[cfg(not(unix))]
fn set_readable_permissions(_file: &std::fs::File) -> std::io::Result<()> {
    Ok(())
}

/// Makes the rename durable where the platform allows; failure only weakens crash safety,
/// never correctness, so it is not reported.
fn sync_parent_dir(target: &Path) {
    #[cfg(unix)]
    if let Some(dir) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    #[cfg(not(unix))]
    let _ = target;
}

/// Rejects values the reader would reject: heterogeneous or too deeply nested arrays.
fn check_value(key: &str, value: &Value, depth: usize) -> Result<()> {
    let Value::Array(item_ty, items) = value else {
        return Ok(());
    };
    if depth >= MAX_ARRAY_DEPTH {
        return Err(Error::Writer(format!(
            "metadata `{key}`: arrays nested deeper than {MAX_ARRAY_DEPTH} levels"
        )));
    }
    for (i, item) in items.iter().enumerate() {
        if item.value_type() != *item_ty {
            return Err(Error::Writer(format!(
                "metadata `{key}`: array of {item_ty:?} has a {:?} item at index {i}",
                item.value_type()
            )));
        }
        check_value(key, item, depth + 1)?;
    }
    Ok(())
}

fn put_str(h: &mut Vec<u8>, s: &str) {
    h.extend_from_slice(&(s.len() as u64).to_le_bytes());
    h.extend_from_slice(s.as_bytes());
}

fn put_value(h: &mut Vec<u8>, value: &Value) {
    match value {
        Value::U8(v) => h.push(*v),
        Value::I8(v) => h.extend_from_slice(&v.to_le_bytes()),
        Value::U16(v) => h.extend_from_slice(&v.to_le_bytes()),
        Value::I16(v) => h.extend_from_slice(&v.to_le_bytes()),
        Value::U32(v) => h.extend_from_slice(&v.to_le_bytes()),
        Value::I32(v) => h.extend_from_slice(&v.to_le_bytes()),
        Value::F32(v) => h.extend_from_slice(&v.to_le_bytes()),
        Value::Bool(v) => h.push(u8::from(*v)),
        Value::String(s) => put_str(h, s),
        Value::Array(item_ty, items) => {
            h.extend_from_slice(&item_ty.id().to_le_bytes());
            h.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                put_value(h, item);
            }
        }
        Value::U64(v) => h.extend_from_slice(&v.to_le_bytes()),
        Value::I64(v) => h.extend_from_slice(&v.to_le_bytes()),
        Value::F64(v) => h.extend_from_slice(&v.to_le_bytes()),
    }
}
