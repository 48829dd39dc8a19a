//! Model hyper-parameters read from GGUF metadata (`{arch}.*` keys).

use bitnet_backend::gguf::{GgufFile, Value};

use crate::rope::RopeStyle;
use crate::{Error, Result};

/// The model families this crate runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Architecture {
    /// BitNet b1.58 2B4T (`bitnet-b1.58`, formerly `bitnet-25`): sub-norms, ReLU² gated FFN.
    BitNetB158,
    /// llama.cpp's `bitnet` (1bitLLM bitnet_b1_58 family): sub-norms, SiLU gated FFN, optional
    /// per-projection `.scale` tensors.
    BitNet,
    /// `llama` with ternary projections (HF1BitLLM Llama3-8B-1.58, Falcon3 1.58bit, Falcon-E).
    LlamaTernary,
}

impl Architecture {
    /// Maps `general.architecture` to a family.
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "bitnet-b1.58" | "bitnet-25" => Ok(Architecture::BitNetB158),
            "bitnet" => Ok(Architecture::BitNet),
            "llama" => Ok(Architecture::LlamaTernary),
            other => Err(Error::UnsupportedArchitecture(other.to_owned())),
        }
    }

    /// Rotary convention: BitNet files are not q/k-permuted (NEOX); llama.cpp's llama
    /// converters permute q/k for the interleaved ("NORM") form.
    pub fn rope_style(self) -> RopeStyle {
        match self {
            Architecture::BitNetB158 | Architecture::BitNet => RopeStyle::Neox,
            Architecture::LlamaTernary => RopeStyle::Interleaved,
        }
    }
}

/// Hyper-parameters of one model.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    /// `general.architecture` as written in the file.
    pub architecture: String,
    /// The family it maps to.
    pub arch: Architecture,
    /// Vocabulary size (rows of the embedding).
    pub n_vocab: usize,
    /// Context length the model was trained with.
    pub n_ctx_train: usize,
    /// Hidden size.
    pub n_embd: usize,
    /// Number of transformer blocks.
    pub n_layer: usize,
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads (GQA when smaller than `n_head`).
    pub n_head_kv: usize,
    /// Size of one head.
    pub head_dim: usize,
    /// FFN inner width.
    pub n_ff: usize,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
    /// RoPE base θ.
    pub rope_theta: f32,
    /// Linear RoPE scaling factor (positions are divided by it); 1.0 when absent.
    pub rope_scale: f32,
    /// Rotary convention.
    pub rope_style: RopeStyle,
}

/// A metadata lookup: GGUF keys to values (a file's, or the converter's plan for a checkpoint).
pub(crate) type Metadata<'a> = &'a dyn Fn(&str) -> Option<&'a Value>;

/// Typed access to `{arch}.*` keys with errors that name the key.
struct Keys<'g, 'p> {
    get: Metadata<'g>,
    prefix: &'p str,
}

impl Keys<'_, '_> {
    fn key(&self, k: &str) -> String {
        format!("{}.{k}", self.prefix)
    }

    fn opt<T>(&self, k: &str, conv: impl Fn(&Value) -> Option<T>, want: &str) -> Result<Option<T>> {
        let key = self.key(k);
        match (self.get)(&key) {
            None => Ok(None),
            Some(v) => conv(v)
                .map(Some)
                .ok_or_else(|| Error::Config(format!("metadata key `{key}` must be {want}"))),
        }
    }

    fn usize_opt(&self, k: &str) -> Result<Option<usize>> {
        self.opt(
            k,
            |v| v.to_u64_lossless().and_then(|x| usize::try_from(x).ok()),
            "a non-negative integer",
        )
    }

    fn usize(&self, k: &str) -> Result<usize> {
        self.usize_opt(k)?
            .ok_or_else(|| Error::MissingMetadata { key: self.key(k) })
    }

    fn f32_opt(&self, k: &str) -> Result<Option<f32>> {
        self.opt(k, |v| v.to_f32_lossless(), "a number")
    }
}

impl ModelConfig {
    /// Reads the configuration; missing required keys are reported by name.
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let get = |k: &str| file.get(k);
        Self::from_metadata(&get, &|| {
            file.tensor("token_embd.weight")
                .and_then(|t| t.dims.get(1).copied())
                .map(|n| n as usize)
        })
    }

    /// Reads the configuration from GGUF-named metadata; `embedding_rows` is the vocabulary size
    /// of last resort (no `vocab_size` key and no token list).
    pub(crate) fn from_metadata(
        get: Metadata<'_>,
        embedding_rows: &dyn Fn() -> Option<usize>,
    ) -> Result<Self> {
        let architecture = match get("general.architecture") {
            Some(v) => v
                .as_str()
                .ok_or_else(|| Error::Config("`general.architecture` must be a string".into()))?
                .to_owned(),
            None => {
                return Err(Error::MissingMetadata {
                    key: "general.architecture".into(),
                })
            }
        };
        let arch = Architecture::from_name(&architecture)?;
        let keys = Keys {
            get,
            prefix: &architecture,
        };
        let n_embd = keys.usize("embedding_length")?;
        let n_layer = keys.usize("block_count")?;
        let n_head = keys.usize("attention.head_count")?;
        let n_head_kv = keys.usize_opt("attention.head_count_kv")?.unwrap_or(n_head);
        let n_ff = keys.usize("feed_forward_length")?;
        let n_ctx_train = keys.usize("context_length")?;
        let rms_eps = keys
            .f32_opt("attention.layer_norm_rms_epsilon")?
            .ok_or_else(|| Error::MissingMetadata {
                key: keys.key("attention.layer_norm_rms_epsilon"),
            })?;
        let rope_theta = keys.f32_opt("rope.freq_base")?.unwrap_or(10_000.0);
        if n_head == 0 || n_head_kv == 0 || n_layer == 0 || n_embd == 0 || n_ff == 0 {
            return Err(Error::Config(format!(
                "zero-sized model: n_embd {n_embd}, n_layer {n_layer}, n_head {n_head}, n_head_kv {n_head_kv}, n_ff {n_ff}"
            )));
        }
        if n_head % n_head_kv != 0 {
            return Err(Error::Config(format!(
                "head_count {n_head} is not a multiple of head_count_kv {n_head_kv}"
            )));
        }
        let head_dim = match keys.usize_opt("attention.key_length")? {
            Some(d) => d,
            None if n_embd % n_head == 0 => n_embd / n_head,
            None => {
                return Err(Error::Config(format!(
                    "embedding_length {n_embd} is not a multiple of head_count {n_head}"
                )))
            }
        };
        if let Some(v) = keys.usize_opt("attention.value_length")? {
            if v != head_dim {
                return Err(Error::Config(format!(
                    "attention.value_length {v} differs from key_length {head_dim} (unsupported)"
                )));
            }
        }
        if let Some(rot) = keys.usize_opt("rope.dimension_count")? {
            if rot != head_dim {
                return Err(Error::Config(format!(
                    "partial rotary embeddings (rope.dimension_count {rot} < head size {head_dim}) are not supported"
                )));
            }
        }
        let rope_scale = rope_scaling(&keys)?;
        let n_vocab = match keys.usize_opt("vocab_size")? {
            Some(n) => n,
            None => match get("tokenizer.ggml.tokens").and_then(|v| v.as_array()) {
                Some(tokens) => tokens.len(),
                None => embedding_rows().ok_or_else(|| Error::MissingMetadata {
                    key: keys.key("vocab_size"),
                })?,
            },
        };
        Ok(Self {
            rope_style: arch.rope_style(),
            architecture,
            arch,
            n_vocab,
            n_ctx_train,
            n_embd,
            n_layer,
            n_head,
            n_head_kv,
            head_dim,
            n_ff,
            rms_eps,
            rope_theta,
            rope_scale,
        })
    }

    /// Query heads per key/value head.
    pub fn gqa_ratio(&self) -> usize {
        self.n_head / self.n_head_kv
    }
}

/// Linear scaling is a position divisor; other schemes change the math and are refused.
fn rope_scaling(keys: &Keys<'_, '_>) -> Result<f32> {
    let kind = keys.opt(
        "rope.scaling.type",
        |v| v.as_str().map(str::to_owned),
        "a string",
    )?;
    let factor = keys.f32_opt("rope.scaling.factor")?;
    match (kind.as_deref(), factor) {
        (None | Some("none"), _) => Ok(1.0),
        (Some("linear"), None) => Ok(1.0),
        (Some("linear"), Some(f)) if f == 0.0 || f == 1.0 => Ok(1.0),
        (Some("linear"), Some(f)) if f.is_finite() && f > 0.0 => Ok(f),
        (Some(kind), f) => Err(Error::Config(format!(
            "rope scaling `{kind}` (factor {f:?}) is not supported (only linear)"
        ))),
    }
}
