//! The GGUF container: types, metadata values, a zero-copy reader and a streaming writer.

mod ggml_type;
mod value;

pub use ggml_type::{GgmlType, I2S_ID};
pub use value::{ScalarType, Value, ValueType};
