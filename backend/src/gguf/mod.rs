//! The GGUF container: ggml types, metadata values, a zero-copy reader and a streaming,
//! atomic writer.
//!
//! Byte layout (little endian): `"GGUF"`, u32 version, u64 tensor count, u64 metadata count,
//! the metadata entries (string key, u32 value type, value), the tensor infos (string name,
//! u32 n_dims, u64 dims, u32 type, u64 offset), zero padding to the alignment, then the tensor
//! data, each tensor at an aligned offset from the start of the data section. Strings are a
//! u64 length and UTF-8 bytes; arrays are a u32 item type, a u64 count and the items.
//!
//! Type id 36 is I2_S only in bitnet.cpp-flavoured files ([`is_bitnet_flavoured`]); elsewhere
//! it is a removed mainline type and is read as [`GgmlType::Unknown`].

mod ggml_type;
mod partial;
mod read;
mod value;
mod write;

pub use ggml_type::{GgmlType, I2S_ID};
pub use partial::{remove_stale_partials, StalePartial, PARTIAL_PREFIX};
pub use read::{GgufFile, TensorInfo, MAX_ARRAY_DEPTH};
pub use value::{ScalarType, Value, ValueType};
pub use write::{GgufStreamWriter, GgufWriter};

/// Alignment of tensor data when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Most dimensions a ggml tensor can have.
pub const MAX_DIMS: usize = 4;
/// `general.file_type` value bitnet.cpp uses for I2_S models (`LLAMA_FTYPE_MOSTLY_I2_S`).
pub const FILE_TYPE_I2S: u32 = 40;
/// Architectures whose files come from bitnet.cpp's converters.
pub const BITNET_CPP_ARCHITECTURES: [&str; 2] = ["bitnet-b1.58", "bitnet-25"];

/// Whether metadata marks a bitnet.cpp file, where type id 36 means I2_S: architecture
/// `bitnet-b1.58` or `bitnet-25`, or `general.file_type` 40.
pub fn is_bitnet_flavoured(metadata: &[(String, Value)]) -> bool {
    metadata.iter().any(|(k, v)| match k.as_str() {
        "general.architecture" => v
            .as_str()
            .is_some_and(|a| BITNET_CPP_ARCHITECTURES.contains(&a)),
        "general.file_type" => v.to_u32_lossless() == Some(FILE_TYPE_I2S),
        _ => false,
    })
}
