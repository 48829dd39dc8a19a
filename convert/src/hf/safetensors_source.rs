//! The checkpoint's tensors: `model.safetensors` or the shards listed in
//! `model.safetensors.index.json`.
//!
//! Only the headers are kept in memory. Tensor data is read on demand with positioned reads, so
//! resident memory stays bounded by what the converter holds at once (one tensor, or a slice of
//! rows of the embedding), not by the checkpoint size, and a file that is truncated or shrinks
//! under us gives an error instead of a SIGBUS as a memory map would.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use safetensors::tensor::{Metadata, TensorInfo};
use safetensors::Dtype;
use serde_json::Value;

use crate::error::{ConvertError, Result};

/// Largest header accepted, as the safetensors crate does.
const MAX_HEADER: u64 = 100_000_000;

/// One tensor of the checkpoint: where its bytes are and what they mean.
#[derive(Clone, Debug)]
pub struct TensorEntry {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    shard: usize,
    /// Absolute byte offset of the data in the shard file.
    start: u64,
    len: u64,
}

impl TensorEntry {
    pub fn n_elements(&self) -> usize {
        self.shape.iter().product()
    }
}

struct Shard {
    path: PathBuf,
    file: File,
}

impl crate::arch::TensorNames for SafetensorsSource {
    fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
}

/// All tensors of a checkpoint folder.
pub struct SafetensorsSource {
    shards: Vec<Shard>,
    tensors: HashMap<String, TensorEntry>,
}

impl SafetensorsSource {
    /// Opens `<dir>/model.safetensors.index.json` (sharded) or `<dir>/model.safetensors`,
    /// validating every header against its file.
    pub fn open(dir: &Path) -> Result<Self> {
        let index = dir.join("model.safetensors.index.json");
        let single = dir.join("model.safetensors");
        let mut source = SafetensorsSource {
            shards: Vec::new(),
            tensors: HashMap::new(),
        };
        if index.is_file() {
            let weight_map = read_index(&index)?;
            let mut files: Vec<&String> = weight_map.values().collect();
            files.sort();
            files.dedup();
            for file in files {
                source.add_shard(&dir.join(file))?;
            }
            for (name, file) in &weight_map {
                let entry = source.tensors.get(name).ok_or_else(|| {
                    ConvertError::json(&index, format!("weight_map lists `{name}` in `{file}`, but that shard has no such tensor"))
                })?;
                if source.shards[entry.shard].path != dir.join(file) {
                    return Err(ConvertError::json(
                        &index,
                        format!("weight_map puts `{name}` in `{file}`, but it is stored elsewhere"),
                    ));
                }
            }
        } else if single.is_file() {
            source.add_shard(&single)?;
        } else {
            let hint = if dir.join("pytorch_model.bin").exists() {
                " (pytorch_model.bin checkpoints are not supported: they are pickles; save the model with \
                 safe_serialization=True)"
            } else {
                ""
            };
            return Err(ConvertError::Input {
                input: dir.display().to_string(),
                problem: format!(
                    "no model.safetensors or model.safetensors.index.json in this folder{hint}"
                ),
            });
        }
        Ok(source)
    }

    fn add_shard(&mut self, path: &Path) -> Result<()> {
        let shard = self.shards.len();
        let file = File::open(path).map_err(|e| ConvertError::io("open", path, e))?;
        let file_len = file
            .metadata()
            .map_err(|e| ConvertError::io("stat", path, e))?
            .len();
        let bad = |problem: String| ConvertError::safetensors(path, problem);
        if file_len < 8 {
            return Err(bad(format!(
                "file is {file_len} bytes, too short for the 8-byte header length"
            )));
        }
        let mut len_bytes = [0u8; 8];
        read_at(&file, 0, &mut len_bytes).map_err(|e| ConvertError::io("read", path, e))?;
        let header_len = u64::from_le_bytes(len_bytes);
        if header_len > MAX_HEADER {
            return Err(bad(format!(
                "header length {header_len} exceeds the {MAX_HEADER}-byte limit"
            )));
        }
        if 8 + header_len > file_len {
            return Err(bad(format!(
                "header length {header_len} runs past the end of the file ({file_len} bytes): truncated or not safetensors"
            )));
        }
        let mut header = vec![0u8; header_len as usize];
        read_at(&file, 8, &mut header).map_err(|e| ConvertError::io("read", path, e))?;
        let header: HashMap<String, Value> = serde_json::from_slice(&header)
            .map_err(|e| bad(format!("header is not a JSON object: {e}")))?;
        let mut infos: Vec<(String, TensorInfo)> = Vec::with_capacity(header.len());
        for (name, value) in header {
            if name == "__metadata__" {
                continue;
            }
            let info: TensorInfo = serde_json::from_value(value)
                .map_err(|e| bad(format!("tensor `{name}` has an invalid header entry: {e}")))?;
            infos.push((name, info));
        }
        infos.sort_by_key(|(_, info)| info.data_offsets);
        // The safetensors crate's own check: offsets contiguous from 0, sizes match dtype × shape.
        let meta = Metadata::new(None, infos.clone())
            .map_err(|e| bad(format!("inconsistent header: {e}")))?;
        let data_start = 8 + header_len;
        let data_len = meta.data_len() as u64;
        if data_start + data_len != file_len {
            return Err(bad(format!(
                "header describes {data_len} data bytes but the file holds {} after the header (truncated or corrupt)",
                file_len - data_start
            )));
        }
        for (name, info) in infos {
            if let Some(prev) = self.tensors.get(&name) {
                return Err(bad(format!(
                    "tensor `{name}` is also stored in `{}`",
                    self.shards[prev.shard].path.display()
                )));
            }
            let (s, e) = info.data_offsets;
            self.tensors.insert(
                name.clone(),
                TensorEntry {
                    name,
                    dtype: info.dtype,
                    shape: info.shape,
                    shard,
                    start: data_start + s as u64,
                    len: (e - s) as u64,
                },
            );
        }
        self.shards.push(Shard {
            path: path.to_path_buf(),
            file,
        });
        Ok(())
    }

    /// The tensor called `name`, if the checkpoint has it.
    pub fn get(&self, name: &str) -> Option<&TensorEntry> {
        self.tensors.get(name)
    }

    /// The tensor called `name`, or an error saying it is missing.
    pub fn require(&self, name: &str) -> Result<&TensorEntry> {
        self.get(name).ok_or_else(|| ConvertError::MissingTensor {
            name: name.to_string(),
            where_: self.describe(),
        })
    }

    /// Names of all tensors (unordered).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// Where the tensors come from, for error messages.
    pub fn describe(&self) -> String {
        match self.shards.as_slice() {
            [one] => format!("searched `{}`", one.path.display()),
            many => format!("searched {} shards", many.len()),
        }
    }

    /// `len` raw bytes of `t` starting `offset` bytes into its data.
    pub fn read_raw(&self, t: &TensorEntry, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        self.read_into(t, offset, &mut buf)?;
        Ok(buf)
    }

    /// Fills `buf` with the raw bytes of `t` starting `offset` bytes into its data (lets a
    /// caller read straight into a typed buffer, with no second copy).
    pub fn read_into(&self, t: &TensorEntry, offset: u64, buf: &mut [u8]) -> Result<()> {
        let len = buf.len();
        if offset + len as u64 > t.len {
            return Err(ConvertError::tensor(
                &t.name,
                format!(
                    "read of {len} bytes at {offset} is outside its {} bytes",
                    t.len
                ),
            ));
        }
        let shard = &self.shards[t.shard];
        read_at(&shard.file, t.start + offset, buf)
            .map_err(|e| ConvertError::io("read tensor data from", &shard.path, e))
    }

    /// Every tensor of the checkpoint (unordered).
    pub fn entries(&self) -> impl Iterator<Item = &TensorEntry> {
        self.tensors.values()
    }

    /// Bytes of tensor data in all shards.
    pub fn data_bytes(&self) -> u64 {
        self.tensors.values().map(|t| t.len).sum()
    }

    /// The whole of a float tensor (f32, f16 or bf16) as f32.
    pub fn read_f32(&self, t: &TensorEntry) -> Result<Vec<f32>> {
        let bytes = self.read_raw(t, 0, t.len as usize)?;
        to_f32(t, &bytes)
    }

    /// Rows `[row0, row0 + n_rows)` of a 2-D float tensor as f32.
    pub fn read_f32_rows(&self, t: &TensorEntry, row0: usize, n_rows: usize) -> Result<Vec<f32>> {
        let [rows, cols] = t.shape[..] else {
            return Err(ConvertError::tensor(
                &t.name,
                format!("expected a 2-D tensor, shape is {:?}", t.shape),
            ));
        };
        if row0 + n_rows > rows {
            return Err(ConvertError::tensor(
                &t.name,
                format!("rows {row0}..{} are outside its {rows} rows", row0 + n_rows),
            ));
        }
        let elem = float_size(t)?;
        let bytes = self.read_raw(t, (row0 * cols * elem) as u64, n_rows * cols * elem)?;
        to_f32(t, &bytes)
    }
}

fn float_size(t: &TensorEntry) -> Result<usize> {
    match t.dtype {
        Dtype::F32 => Ok(4),
        Dtype::F16 | Dtype::BF16 => Ok(2),
        other => Err(ConvertError::tensor(
            &t.name,
            format!("dtype {other:?} where a float tensor (F32, F16 or BF16) is expected"),
        )),
    }
}

/// Decodes little-endian f32/f16/bf16 bytes, rejecting NaN and infinity.
fn to_f32(t: &TensorEntry, bytes: &[u8]) -> Result<Vec<f32>> {
    let out: Vec<f32> = match float_size(t)? {
        4 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        _ if t.dtype == Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        _ => bytes
            .chunks_exact(2)
            .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
    };
    if let Some(i) = out.iter().position(|v| !v.is_finite()) {
        return Err(ConvertError::tensor(
            &t.name,
            format!("value {} at element {i} is not finite", out[i]),
        ));
    }
    Ok(out)
}

/// `weight_map` of a sharded checkpoint's index, with shard names checked to be plain file names.
fn read_index(path: &Path) -> Result<HashMap<String, String>> {
    let text = std::fs::read_to_string(path).map_err(|e| ConvertError::io("read", path, e))?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| ConvertError::json(path, format!("invalid JSON: {e}")))?;
    let map = v
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| ConvertError::json(path, "missing `weight_map` object"))?;
    let mut out = HashMap::with_capacity(map.len());
    for (name, file) in map {
        let file = file.as_str().ok_or_else(|| {
            ConvertError::json(
                path,
                format!("weight_map entry `{name}` is not a file name"),
            )
        })?;
        let plain =
            !file.is_empty() && Path::new(file).file_name() == Some(std::ffi::OsStr::new(file));
        if !plain || file == ".." {
            return Err(ConvertError::json(
                path,
                format!("shard name `{file}` is not a plain file name"),
            ));
        }
        out.insert(name.clone(), file.to_string());
    }
    if out.is_empty() {
        return Err(ConvertError::json(path, "`weight_map` is empty"));
    }
    Ok(out)
}

#[cfg(unix)]
fn read_at(file: &File, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(windows)]
fn read_at(file: &File, mut offset: u64, mut buf: &mut [u8]) -> std::io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match file.seek_read(buf, offset)? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
        }
    }
    Ok(())
}
