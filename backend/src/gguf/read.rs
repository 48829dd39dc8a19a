//! Zero-copy GGUF reader (versions 2 and 3, little endian).
//!
//! The whole header (metadata and tensor infos) is parsed and validated up front, so that
//! every later access is a bounds-checked slice of the memory map. Malformed input of any
//! kind is a [`GgufErrorKind`] naming the byte offset; nothing panics and no allocation is
//! larger than what the remaining bytes could encode.
//!
//! Tensors whose type id cannot be sized ([`GgmlType::Unknown`], e.g. 36 outside
//! bitnet.cpp-flavoured files) are still listed, so any GGUF can be inspected. Their
//! `n_bytes` is 0, their data range is not validated, and [`GgufFile::tensor_data`] /
//! [`GgufFile::tensor_range`] / [`TensorInfo::byte_len`] return an error for them.

use std::collections::HashMap;
use std::fs::File;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use memmap2::{Mmap, MmapOptions};

use super::{is_bitnet_flavoured, GgmlType, Value, ValueType, DEFAULT_ALIGNMENT, MAX_DIMS};
use crate::error::GgufErrorKind;
use crate::{Error, Result};

/// Deepest array nesting accepted (arrays of arrays of ...); real files use at most 2.
pub const MAX_ARRAY_DEPTH: usize = 8;

/// One tensor's entry in the GGUF header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` = ne0, the contiguous dimension (in_features for weights).
    pub dims: Vec<u64>,
    /// The type id exactly as stored in the file.
    pub raw_type: u32,
    /// `raw_type` interpreted for this file's flavour.
    pub ggml_type: GgmlType,
    /// Offset of the data relative to the start of the data section.
    pub offset: u64,
    /// Data size in bytes; 0 when `ggml_type` is [`GgmlType::Unknown`] (see [`Self::byte_len`]).
    pub n_bytes: u64,
}

impl TensorInfo {
    /// Number of elements (validated not to overflow when the file was read).
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Data size in bytes, or an error if the type is unknown.
    pub fn byte_len(&self) -> Result<u64> {
        if self.ggml_type.is_known() {
            Ok(self.n_bytes)
        } else {
            Err(self.unknown_type_error())
        }
    }

    fn unknown_type_error(&self) -> Error {
        Error::Tensor {
            name: self.name.clone(),
            problem: format!(
                "ggml type id {} is unknown here (36 is I2_S only in bitnet.cpp files), \
                 so its size and data are unavailable",
                self.raw_type
            ),
        }
    }
}

/// A GGUF file, memory-mapped, with its header parsed.
#[derive(Debug)]
pub struct GgufFile {
    mmap: Arc<Mmap>,
    version: u32,
    alignment: u64,
    data_offset: u64,
    bitnet_flavoured: bool,
    metadata: Vec<(String, Value)>,
    key_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
}

impl GgufFile {
    /// Opens and memory-maps `path`, then parses and validates its header.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| Error::io("opening", path, e))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io("reading metadata of", path, e))?
            .len();
        if len == 0 {
            return Err(gguf_err(0, GgufErrorKind::Truncated { needed: 4 }));
        }
        let mmap = map_file(&file).map_err(|e| Error::io("memory-mapping", path, e))?;
        Self::from_mmap(Arc::new(mmap))
    }

    /// Parses an in-memory GGUF (copied into an anonymous mapping so the API is the same as
    /// for files). Used by tests and the fuzz target.
    pub fn parse(bytes: &[u8]) -> Result<GgufFile> {
        if bytes.is_empty() {
            return Err(gguf_err(0, GgufErrorKind::Truncated { needed: 4 }));
        }
        let mut anon = MmapOptions::new()
            .len(bytes.len())
            .map_anon()
            .map_err(|e| Error::io("allocating memory for", "<in-memory GGUF>", e))?;
        anon.copy_from_slice(bytes);
        let mmap = anon
            .make_read_only()
            .map_err(|e| Error::io("protecting memory of", "<in-memory GGUF>", e))?;
        Self::from_mmap(Arc::new(mmap))
    }

    /// Parses the header of an existing mapping.
    pub fn from_mmap(mmap: Arc<Mmap>) -> Result<GgufFile> {
        let header = parse_header(&mmap)?;
        Ok(GgufFile {
            mmap,
            version: header.version,
            alignment: header.alignment,
            data_offset: header.data_offset,
            bitnet_flavoured: header.bitnet_flavoured,
            key_index: index_of(header.metadata.iter().map(|(k, _)| k)),
            metadata: header.metadata,
            tensor_index: index_of(header.tensors.iter().map(|t| &t.name)),
            tensors: header.tensors,
        })
    }

    /// GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Data alignment (`general.alignment`, default 32).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Absolute offset of the tensor data section.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// Whether type id 36 means I2_S here (see [`is_bitnet_flavoured`]).
    pub fn is_bitnet_flavoured(&self) -> bool {
        self.bitnet_flavoured
    }

    /// All metadata in file order.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.key_index.get(key).map(|&i| &self.metadata[i].1)
    }

    fn require(&self, key: &str) -> Result<&Value> {
        self.get(key).ok_or_else(|| Error::Metadata {
            key: key.to_string(),
            problem: "missing".to_string(),
        })
    }

    fn typed<'a, T>(
        &'a self,
        key: &str,
        want: &str,
        f: impl FnOnce(&'a Value) -> Option<T>,
    ) -> Result<T> {
        let v = self.require(key)?;
        f(v).ok_or_else(|| Error::Metadata {
            key: key.to_string(),
            problem: format!("expected {want}, found {:?} value {v}", v.value_type()),
        })
    }

    /// A string value.
    pub fn get_str(&self, key: &str) -> Result<&str> {
        self.typed(key, "a string", Value::as_str)
    }

    /// Any integer value that fits u32.
    pub fn get_u32(&self, key: &str) -> Result<u32> {
        self.typed(key, "an integer fitting u32", Value::to_u32_lossless)
    }

    /// Any non-negative integer value.
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        self.typed(key, "a non-negative integer", Value::to_u64_lossless)
    }

    /// Any integer value that fits i64.
    pub fn get_i64(&self, key: &str) -> Result<i64> {
        self.typed(key, "an integer fitting i64", Value::to_i64_lossless)
    }

    /// An F32, an F64 exactly representable as f32, or a small integer.
    pub fn get_f32(&self, key: &str) -> Result<f32> {
        self.typed(
            key,
            "a number exactly representable as f32",
            Value::to_f32_lossless,
        )
    }

    /// An F32, F64, or an integer up to 2^53 in magnitude.
    pub fn get_f64(&self, key: &str) -> Result<f64> {
        self.typed(
            key,
            "a number exactly representable as f64",
            Value::to_f64_lossless,
        )
    }

    /// A boolean value.
    pub fn get_bool(&self, key: &str) -> Result<bool> {
        self.typed(key, "a bool", Value::as_bool)
    }

    /// An array value's items.
    pub fn get_array(&self, key: &str) -> Result<&[Value]> {
        self.typed(key, "an array", Value::as_array)
    }

    /// An array of strings.
    pub fn get_str_array(&self, key: &str) -> Result<Vec<&str>> {
        self.typed(key, "an array of strings", |v| {
            v.as_array()?.iter().map(Value::as_str).collect()
        })
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Result<&str> {
        self.get_str("general.architecture")
    }

    /// All tensor infos in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The tensor named `name`, if present.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The tensor named `name`, or an error saying it is missing.
    pub fn require_tensor(&self, name: &str) -> Result<&TensorInfo> {
        self.tensor(name).ok_or_else(|| Error::Tensor {
            name: name.to_string(),
            problem: "not found in the GGUF file".to_string(),
        })
    }

    /// Absolute byte range of a tensor's data in [`Self::mmap`].
    ///
    /// Errors if the type is unknown or `info` is not a tensor of this file.
    pub fn tensor_range(&self, info: &TensorInfo) -> Result<Range<usize>> {
        let ours = self.tensor(&info.name).filter(|t| *t == info);
        let Some(t) = ours else {
            return Err(Error::Tensor {
                name: info.name.clone(),
                problem: "this tensor info does not belong to this GGUF file".to_string(),
            });
        };
        t.byte_len()?;
        // Both ends were checked against the file length when the header was parsed.
        let start = (self.data_offset + t.offset) as usize;
        Ok(start..start + t.n_bytes as usize)
    }

    /// A tensor's data, borrowed from the memory map.
    pub fn tensor_data(&self, info: &TensorInfo) -> Result<&[u8]> {
        let range = self.tensor_range(info)?;
        Ok(&self.mmap[range])
    }

    /// The underlying memory map, for sharing tensor data without copies.
    pub fn mmap(&self) -> &Arc<Mmap> {
        &self.mmap
    }
}

/// Maps a file read-only.
fn map_file(file: &File) -> std::io::Result<Mmap> {
    // SAFETY: the mapping is read-only and all access goes through bounds-checked slices.
    // The remaining hazard of any file mapping — another process truncating or rewriting
    // the file while it is mapped — cannot be excluded by a library; our writer never
    // modifies a file in place (it renames a new file over the old one), so files it
    // produces are not affected.
    unsafe { Mmap::map(file) }
}

fn index_of<'a>(names: impl Iterator<Item = &'a String>) -> HashMap<String, usize> {
    names.enumerate().map(|(i, n)| (n.clone(), i)).collect()
}

fn gguf_err(offset: usize, kind: GgufErrorKind) -> Error {
    Error::Gguf {
        offset: offset as u64,
        kind,
    }
}

/// Everything the header says, validated against the file length.
struct Header {
    version: u32,
    alignment: u64,
    data_offset: u64,
    bitnet_flavoured: bool,
    metadata: Vec<(String, Value)>,
    tensors: Vec<TensorInfo>,
}

/// Bounds-checked little-endian reads from a byte slice.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.bytes.len() - self.pos) as u64
    }

    fn err(&self, kind: GgufErrorKind) -> Error {
        gguf_err(self.pos, kind)
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.err(GgufErrorKind::Truncated {
                needed: n - self.remaining(),
            }));
        }
        let start = self.pos;
        self.pos += n as usize;
        Ok(&self.bytes[start..self.pos])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N as u64)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64> {
        self.array().map(u64::from_le_bytes)
    }

    /// Checks `count` items of at least `min_len` bytes each can fit in what remains.
    fn check_count(&self, what: &'static str, count: u64, min_len: u64) -> Result<()> {
        let remaining = self.remaining();
        match count.checked_mul(min_len) {
            Some(need) if need <= remaining => Ok(()),
            _ => Err(self.err(GgufErrorKind::CountTooLarge {
                what,
                count,
                remaining,
            })),
        }
    }

    fn string(&mut self) -> Result<String> {
        let start = self.pos;
        let len = self.u64()?;
        self.check_count("string length", len, 1)?;
        let bytes = self.take(len)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_string()),
            Err(_) => Err(gguf_err(start, GgufErrorKind::InvalidUtf8)),
        }
    }

    fn value_type(&mut self) -> Result<ValueType> {
        let start = self.pos;
        let id = self.u32()?;
        ValueType::from_id(id).ok_or_else(|| gguf_err(start, GgufErrorKind::InvalidValueType(id)))
    }

    fn value(&mut self, ty: ValueType, depth: usize) -> Result<Value> {
        Ok(match ty {
            ValueType::U8 => Value::U8(self.u8()?),
            ValueType::I8 => Value::I8(i8::from_le_bytes(self.array()?)),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array()?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array()?)),
            ValueType::U32 => Value::U32(self.u32()?),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array()?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array()?)),
            ValueType::U64 => Value::U64(self.u64()?),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array()?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array()?)),
            ValueType::Bool => {
                let start = self.pos;
                match self.u8()? {
                    0 => Value::Bool(false),
                    1 => Value::Bool(true),
                    b => return Err(gguf_err(start, GgufErrorKind::InvalidBool(b))),
                }
            }
            ValueType::String => Value::String(self.string()?),
            ValueType::Array => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(self.err(GgufErrorKind::NestingTooDeep {
                        limit: MAX_ARRAY_DEPTH,
                    }));
                }
                let item_ty = self.value_type()?;
                let count = self.u64()?;
                self.check_count("array item", count, item_ty.min_encoded_len())?;
                let mut items = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    items.push(self.value(item_ty, depth + 1)?);
                }
                Value::Array(item_ty, items)
            }
        })
    }
}

/// Fewest bytes of one metadata entry: key length, value type, one-byte value.
const MIN_KV_LEN: u64 = 8 + 4 + 1;
/// Fewest bytes of one tensor info: name length, n_dims, type, offset.
const MIN_TENSOR_INFO_LEN: u64 = 8 + 4 + 4 + 8;

fn parse_header(bytes: &[u8]) -> Result<Header> {
    let mut c = Cursor { bytes, pos: 0 };
    let magic: [u8; 4] = c.array()?;
    if &magic != b"GGUF" {
        return Err(gguf_err(0, GgufErrorKind::BadMagic(magic)));
    }
    let version = c.u32()?;
    match version {
        2 | 3 => {}
        v if matches!(v.swap_bytes(), 1..=3) => return Err(gguf_err(4, GgufErrorKind::BigEndian)),
        v => return Err(gguf_err(4, GgufErrorKind::UnsupportedVersion(v))),
    }
    let n_tensors = c.u64()?;
    let n_kv = c.u64()?;
    c.check_count("metadata key", n_kv, MIN_KV_LEN)?;
    c.check_count("tensor info", n_tensors, MIN_TENSOR_INFO_LEN)?;

    let mut metadata = Vec::with_capacity(n_kv as usize);
    let mut keys = HashMap::with_capacity(n_kv as usize);
    let mut alignment = DEFAULT_ALIGNMENT;
    for i in 0..n_kv as usize {
        let start = c.pos;
        let key = c.string()?;
        let ty = c.value_type()?;
        let value = c.value(ty, 0)?;
        if keys.insert(key.clone(), i).is_some() {
            return Err(gguf_err(start, GgufErrorKind::DuplicateKey(key)));
        }
        if key == "general.alignment" {
            alignment = match value {
                Value::U32(a) if a.is_power_of_two() => a as u64,
                ref other => {
                    let why = format!("{:?} value {other}", other.value_type());
                    return Err(gguf_err(start, GgufErrorKind::BadAlignment(why)));
                }
            };
        }
        metadata.push((key, value));
    }
    let bitnet_flavoured = is_bitnet_flavoured(&metadata);

    let mut tensors = Vec::with_capacity(n_tensors as usize);
    let mut names = HashMap::with_capacity(n_tensors as usize);
    let mut info_offsets = Vec::with_capacity(n_tensors as usize);
    for _ in 0..n_tensors {
        let start = c.pos;
        let info = tensor_info(&mut c, bitnet_flavoured, alignment, start)?;
        if names.insert(info.name.clone(), ()).is_some() {
            return Err(gguf_err(start, GgufErrorKind::DuplicateTensor(info.name)));
        }
        tensors.push(info);
        info_offsets.push(start);
    }

    let data_offset = (c.pos as u64).next_multiple_of(alignment);
    check_data_layout(&tensors, &info_offsets, data_offset, bytes.len() as u64)?;
    Ok(Header {
        version,
        alignment,
        data_offset,
        bitnet_flavoured,
        metadata,
        tensors,
    })
}

fn tensor_info(
    c: &mut Cursor<'_>,
    bitnet_flavoured: bool,
    alignment: u64,
    start: usize,
) -> Result<TensorInfo> {
    let name = c.string()?;
    let n_dims = c.u32()?;
    if n_dims as usize > MAX_DIMS {
        return Err(gguf_err(
            start,
            GgufErrorKind::TooManyDims {
                tensor: name,
                n_dims,
            },
        ));
    }
    let dims = (0..n_dims).map(|_| c.u64()).collect::<Result<Vec<u64>>>()?;
    let n_elements = dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d));
    if dims.iter().any(|&d| d > i64::MAX as u64) || n_elements.is_none_or(|n| n > i64::MAX as u64) {
        return Err(gguf_err(
            start,
            GgufErrorKind::BadDims { tensor: name, dims },
        ));
    }
    let raw_type = c.u32()?;
    let offset = c.u64()?;
    let ggml_type = GgmlType::from_id(raw_type, bitnet_flavoured);
    let n_bytes = if ggml_type.is_known() {
        ggml_type.tensor_bytes(&dims).map_err(|e| {
            gguf_err(
                start,
                GgufErrorKind::BadShape {
                    tensor: name.clone(),
                    problem: e.to_string(),
                },
            )
        })?
    } else {
        0
    };
    if !offset.is_multiple_of(alignment) {
        return Err(gguf_err(
            start,
            GgufErrorKind::MisalignedOffset {
                tensor: name,
                offset,
                alignment,
            },
        ));
    }
    Ok(TensorInfo {
        name,
        dims,
        raw_type,
        ggml_type,
        offset,
        n_bytes,
    })
}

/// Every sized tensor must lie inside the file, and no two may overlap.
fn check_data_layout(
    tensors: &[TensorInfo],
    info_offsets: &[usize],
    data_offset: u64,
    file_len: u64,
) -> Result<()> {
    let mut ranges = Vec::with_capacity(tensors.len());
    for (t, &at) in tensors.iter().zip(info_offsets) {
        if !t.ggml_type.is_known() {
            continue;
        }
        let start = data_offset.checked_add(t.offset);
        let end = start.and_then(|s| s.checked_add(t.n_bytes));
        match (start, end) {
            (Some(start), Some(end)) if end <= file_len => {
                if t.n_bytes > 0 {
                    ranges.push((start, end, &t.name, at));
                }
            }
            _ => {
                return Err(gguf_err(
                    at,
                    GgufErrorKind::DataOutOfBounds {
                        tensor: t.name.clone(),
                        start: start.unwrap_or(u64::MAX),
                        end: end.unwrap_or(u64::MAX),
                        file_len,
                    },
                ))
            }
        }
    }
    ranges.sort_unstable();
    for pair in ranges.windows(2) {
        let ((_, end_a, name_a, _), (start_b, _, name_b, at_b)) = (pair[0], pair[1]);
        if start_b < end_a {
            return Err(gguf_err(
                at_b,
                GgufErrorKind::Overlap {
                    first: name_a.clone(),
                    second: name_b.clone(),
                },
            ));
        }
    }
    Ok(())
}
