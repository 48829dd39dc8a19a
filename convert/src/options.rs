//! What to convert and how: the library's [`ConvertOptions`] and the CLI's [`ConvertArgs`].

use std::fmt;
use std::path::PathBuf;

/// Tensor type of the ternary projection weights (q/k/v/o/gate/up/down).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum OutType {
    /// bitnet.cpp's I2_S (type 36): 2 bits per weight, one f32 scale per tensor; rows % 128 == 0.
    #[value(name = "i2_s")]
    I2S,
    /// ggml mainline TQ2_0 (type 35): 2.06 bits per weight, f16 scale per 256; rows % 256 == 0.
    #[value(name = "tq2_0")]
    Tq2_0,
    /// ggml mainline TQ1_0 (type 34): 1.69 bits per weight, f16 scale per 256; rows % 256 == 0.
    #[value(name = "tq1_0")]
    Tq1_0,
    /// Dequantized ternary·scale in f16 (reference).
    #[value(name = "f16")]
    F16,
    /// Dequantized ternary·scale in f32 (reference).
    #[value(name = "f32")]
    F32,
}

impl OutType {
    /// The name used on the command line and in default file names (`ggml-model-<name>.gguf`).
    pub fn name(self) -> &'static str {
        match self {
            OutType::I2S => "i2_s",
            OutType::Tq2_0 => "tq2_0",
            OutType::Tq1_0 => "tq1_0",
            OutType::F16 => "f16",
            OutType::F32 => "f32",
        }
    }

    /// llama.cpp's `general.file_type` (LLAMA_FTYPE_*) for a file whose projections have this type.
    pub fn file_type(self) -> u32 {
        match self {
            OutType::F32 => 0,
            OutType::F16 => 1,
            OutType::Tq1_0 => 36,
            OutType::Tq2_0 => 37,
            // bitnet.cpp's LLAMA_FTYPE_MOSTLY_I2_S, as in the official ggml-model-i2_s.gguf.
            OutType::I2S => 40,
        }
    }
}

impl fmt::Display for OutType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Tensor type of the token embedding (and of a separate LM head).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum EmbeddingType {
    #[value(name = "f32")]
    F32,
    #[value(name = "f16")]
    F16,
    /// ggml Q8_0 (block 32).
    #[value(name = "q8_0")]
    Q8_0,
    /// bfloat16: keeps a bf16 checkpoint's values exactly, in half the bytes of f32.
    #[value(name = "bf16")]
    BF16,
    /// ggml Q6_K (block 256); bitnet.cpp's recommended embedding type.
    #[value(name = "q6_k")]
    Q6K,
    /// ggml Q4_0 (block 32).
    #[value(name = "q4_0")]
    Q4_0,
}

impl EmbeddingType {
    pub fn name(self) -> &'static str {
        match self {
            EmbeddingType::F32 => "f32",
            EmbeddingType::F16 => "f16",
            EmbeddingType::Q8_0 => "q8_0",
            EmbeddingType::Q6K => "q6_k",
            EmbeddingType::Q4_0 => "q4_0",
            EmbeddingType::BF16 => "bf16",
        }
    }

    /// The default for an output type: f32 for the f32 reference file, f16 otherwise (as
    /// llama-quantize does for I2_S).
    pub fn default_for(outtype: OutType) -> Self {
        match outtype {
            OutType::F32 => EmbeddingType::F32,
            _ => EmbeddingType::F16,
        }
    }
}

impl fmt::Display for EmbeddingType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Everything [`crate::convert`] needs.
#[derive(Clone, Debug)]
pub struct ConvertOptions {
    /// A local Hugging Face model folder, or a hub repo id (`owner/name`).
    pub input: String,
    /// Type of the ternary projection weights.
    pub outtype: OutType,
    /// Output path; default `<input folder>/ggml-model-<outtype>.gguf` (for a hub repo:
    /// `./<name>-ggml-model-<outtype>.gguf`).
    pub outfile: Option<PathBuf>,
    /// Type of `token_embd.weight`; default from [`EmbeddingType::default_for`].
    pub token_embedding_type: Option<EmbeddingType>,
    /// Type of `output.weight` when the checkpoint has an untied LM head; same default.
    pub output_tensor_type: Option<EmbeddingType>,
    /// Hub revision (branch, tag or commit); default `main`.
    pub revision: Option<String>,
    /// Never touch the network (also enabled by `HF_HUB_OFFLINE=1`).
    pub offline: bool,
}

impl ConvertOptions {
    /// Options with every default: I2_S, default file name and embedding type.
    pub fn new(input: impl Into<String>) -> Self {
        ConvertOptions {
            input: input.into(),
            outtype: OutType::I2S,
            outfile: None,
            token_embedding_type: None,
            output_tensor_type: None,
            revision: None,
            offline: false,
        }
    }

    pub(crate) fn embedding_type(&self) -> EmbeddingType {
        self.token_embedding_type
            .unwrap_or_else(|| EmbeddingType::default_for(self.outtype))
    }

    pub(crate) fn output_type(&self) -> EmbeddingType {
        self.output_tensor_type
            .unwrap_or_else(|| EmbeddingType::default_for(self.outtype))
    }
}

/// `bitnet convert` arguments, for the CLI to `#[command(flatten)]`.
#[derive(Clone, Debug, clap::Args)]
pub struct ConvertArgs {
    /// Hugging Face model folder, or hub repo id such as microsoft/bitnet-b1.58-2B-4T.
    pub input: String,
    /// Type of the ternary projection weights.
    #[arg(long, value_enum, default_value_t = OutType::I2S)]
    pub outtype: OutType,
    /// Output file [default: <input folder>/ggml-model-<outtype>.gguf].
    #[arg(long)]
    pub outfile: Option<PathBuf>,
    /// Type of the token embedding [default: f16; f32 with --outtype f32].
    #[arg(long, value_enum)]
    pub token_embedding_type: Option<EmbeddingType>,
    /// Type of a separate (untied) LM head [default: as the token embedding default].
    #[arg(long, value_enum)]
    pub output_tensor_type: Option<EmbeddingType>,
    /// Hub revision (branch, tag or commit) [default: main].
    #[arg(long)]
    pub revision: Option<String>,
    /// Use only the local Hugging Face cache (same as HF_HUB_OFFLINE=1).
    #[arg(long)]
    pub offline: bool,
}

impl From<ConvertArgs> for ConvertOptions {
    fn from(a: ConvertArgs) -> Self {
        ConvertOptions {
            input: a.input,
            outtype: a.outtype,
            outfile: a.outfile,
            token_embedding_type: a.token_embedding_type,
            output_tensor_type: a.output_tensor_type,
            revision: a.revision,
            offline: a.offline,
        }
    }
}
