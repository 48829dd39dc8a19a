//! Which GGUF architecture a checkpoint becomes, and its tensors and hyper-parameters.
//!
//! The GGUF architecture always states the model's true math, whatever the tensor type:
//! - sub-norm BitNet with ReLU² (`BitNetForCausalLM`, 2B4T) → `bitnet-b1.58` ([`bitnet_b158`]);
//! - sub-norm BitNet with SiLU (`BitnetForCausalLM`, 1bitLLM) → mainline `bitnet` ([`bitnet_1bitllm`]);
//! - `LlamaForCausalLM` with ternary weights → `llama` ([`llama_ternary`]).
//!
//! The plan is the one table from Hugging Face tensor names and scale meanings to this project's
//! tensors: the converter writes it to GGUF, and `bitnet-candle`'s `VarBuilder` loader builds a
//! model from it directly. It needs only the config and which tensor names exist
//! ([`TensorNames`]); shapes and dtypes are checked by whoever reads the data.

pub mod bitnet_1bitllm;
pub mod bitnet_b158;
pub mod llama_ternary;

use bitnet_backend::gguf::Value;
use serde_json::Value as Json;

use crate::error::{ConvertError, Result};
use crate::hf::config::{HfConfig, LinearClass, QuantMode};
use crate::hf::safetensors_source::SafetensorsSource;
use crate::tensor_map::{PlannedTensor, TensorKind};

/// Which tensor names a checkpoint holds: all the plan needs to know about its files.
pub trait TensorNames {
    fn contains(&self, name: &str) -> bool;
}

/// GGUF `general.architecture` values we write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GgufArch {
    /// bitnet.cpp's BitNet b1.58 (2B4T): sub-norms, ReLU², NEOX RoPE.
    BitnetB158,
    /// llama.cpp mainline `bitnet` (1bitLLM): sub-norms, SiLU, NEOX RoPE, tied LM head.
    Bitnet,
    /// llama.cpp `llama`: interleaved RoPE, SiLU, no sub-norms.
    Llama,
}

impl GgufArch {
    pub fn name(self) -> &'static str {
        match self {
            GgufArch::BitnetB158 => "bitnet-b1.58",
            GgufArch::Bitnet => "bitnet",
            GgufArch::Llama => "llama",
        }
    }
}

/// How the ternary projections are read from the checkpoint.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WeightRule {
    /// The model ternarizes float masters by absmean in every forward pass (1bitLLM's
    /// `weight_quant`, transformers `quantization_mode: online`): do the same.
    pub online: bool,
    /// Meaning of `weight_scale` for offline-quantized weights, from quantization_config.
    pub linear_class: Option<LinearClass>,
}

/// Everything the writer needs to know about the model (the tokenizer comes separately).
#[derive(Clone, Debug)]
pub struct ArchPlan {
    pub arch: GgufArch,
    pub tensors: Vec<PlannedTensor>,
    /// `<arch>.*` hyper-parameter keys.
    pub hparams: Vec<(String, Value)>,
    pub weights: WeightRule,
    /// Rows of the token embedding, which the vocabulary is padded to.
    pub n_vocab: usize,
}

/// Picks the GGUF architecture for `cfg` and lists its tensors.
pub fn plan(cfg: &HfConfig, src: &dyn TensorNames) -> Result<ArchPlan> {
    check_common(cfg)?;
    match (cfg.architecture.as_str(), cfg.hidden_act.as_str()) {
        ("BitNetForCausalLM" | "BitnetForCausalLM", "relu2") => bitnet_b158::plan(cfg, src),
        ("BitNetForCausalLM" | "BitnetForCausalLM", "silu") => bitnet_1bitllm::plan(cfg, src),
        ("BitNetForCausalLM" | "BitnetForCausalLM", act) => Err(ConvertError::Unsupported(format!(
            "{}: hidden_act `{act}` is not supported for BitNet (relu2 → bitnet-b1.58, silu → bitnet)",
            cfg.architecture
        ))),
        ("LlamaForCausalLM", "silu") => llama_ternary::plan(cfg, src),
        ("LlamaForCausalLM", act) => Err(ConvertError::Unsupported(format!(
            "LlamaForCausalLM: hidden_act `{act}` is not supported (llama.cpp's llama graph uses silu)"
        ))),
        (other, _) => Err(ConvertError::Unsupported(format!(
            "architecture `{other}` (config.json) is not supported; supported: BitNetForCausalLM \
             (BitNet b1.58 2B4T, packed or -bf16 masters), BitnetForCausalLM (1bitLLM) and \
             LlamaForCausalLM with ternary BitNet weights (HF1BitLLM Llama3-8B-1.58, Falcon3 *-1.58bit, Falcon-E)"
        ))),
    }
}

/// Rejects config features none of the GGUF graphs can express.
fn check_common(cfg: &HfConfig) -> Result<()> {
    let unsupported = |what: String| {
        Err(ConvertError::Unsupported(format!(
            "{}: {what}",
            cfg.path.display()
        )))
    };
    if cfg.attention_bias || cfg.mlp_bias {
        return unsupported(
            "attention_bias/mlp_bias are set; projections with biases are not supported".into(),
        );
    }
    if let Some(q) = &cfg.quantization {
        if q.use_rms_norm {
            return unsupported(
                "quantization_config.use_rms_norm adds an RMSNorm inside every BitLinear, which no \
                 GGUF architecture (bitnet-b1.58, bitnet, llama) has"
                    .into(),
            );
        }
        for pattern in &q.modules_to_not_convert {
            if pattern.contains(|c: char| "*?[](){}|^$\\".contains(c)) {
                return unsupported(format!(
                    "quantization_config.modules_to_not_convert pattern `{pattern}` is a regex; only plain module names are understood"
                ));
            }
        }
    }
    Ok(())
}

/// Whether transformers keeps `module` (e.g. `model.layers.0.mlp.down_proj`) in full precision.
fn not_converted(cfg: &HfConfig, module: &str) -> bool {
    cfg.quantization.as_ref().is_some_and(|q| {
        q.modules_to_not_convert.iter().any(|p| {
            module == p
                || module.starts_with(&format!("{p}."))
                || module.ends_with(&format!(".{p}"))
        })
    })
}

impl WeightRule {
    /// The rule of a checkpoint: online absmean for models that ternarize in the forward pass
    /// (1bitLLM's `BitnetForCausalLM` always does; others when `quantization_mode` is `online`),
    /// and the meaning of `weight_scale` from `quantization_config.linear_class`.
    pub fn for_config(cfg: &HfConfig) -> Self {
        WeightRule {
            online: cfg.architecture == "BitnetForCausalLM"
                || cfg
                    .quantization
                    .as_ref()
                    .is_some_and(|q| q.mode == QuantMode::Online),
            linear_class: cfg.quantization.as_ref().map(|q| q.linear_class),
        }
    }
}

/// Names of the two sub-norms, which differ between 2B4T and 1bitLLM checkpoints.
pub(crate) struct SubNormNames {
    pub attn: &'static str,
    pub ffn: &'static str,
}

const SUBNORMS_2B4T: SubNormNames = SubNormNames {
    attn: "self_attn.attn_sub_norm",
    ffn: "mlp.ffn_sub_norm",
};
const SUBNORMS_1BITLLM: SubNormNames = SubNormNames {
    attn: "self_attn.inner_attn_ln",
    ffn: "mlp.ffn_layernorm",
};

/// Finds which sub-norm naming the checkpoint uses.
fn sub_norm_names(src: &dyn TensorNames) -> Result<SubNormNames> {
    for names in [SUBNORMS_2B4T, SUBNORMS_1BITLLM] {
        if src.contains(&format!("model.layers.0.{}.weight", names.attn)) {
            return Ok(names);
        }
    }
    Err(ConvertError::MissingTensor {
        name: "model.layers.0.self_attn.attn_sub_norm.weight (or 1bitLLM's self_attn.inner_attn_ln.weight)".into(),
        where_: "the checkpoint".into(),
    })
}

/// Token embedding, final norm and (if untied) LM head `output.weight`, plus the embedding row
/// count. Whether a GGUF architecture can hold the head is the converter's question
/// ([`fit_head_to_gguf`]); a model in memory always can.
fn embedding_and_head(cfg: &HfConfig, src: &dyn TensorNames) -> (Vec<PlannedTensor>, usize) {
    let n_vocab = cfg.vocab_size;
    let mut out = vec![
        PlannedTensor::new(
            "token_embd.weight",
            "model.embed_tokens.weight",
            TensorKind::Embedding,
            vec![n_vocab, cfg.hidden_size],
        ),
        PlannedTensor::new(
            "output_norm.weight",
            "model.norm.weight",
            TensorKind::Norm,
            vec![cfg.hidden_size],
        ),
    ];
    if src.contains("lm_head.weight") && !cfg.tie_word_embeddings {
        out.push(PlannedTensor::new(
            "output.weight",
            "lm_head.weight",
            TensorKind::Output,
            vec![n_vocab, cfg.hidden_size],
        ));
    }
    (out, n_vocab)
}

/// For a GGUF file: llama.cpp's `bitnet` graph always uses `token_embd` as the LM head and has
/// no `output` tensor, so an untied head must equal the embedding (then it is dropped) or the
/// checkpoint cannot be written.
pub(crate) fn fit_head_to_gguf(plan: &mut ArchPlan, src: &SafetensorsSource) -> Result<()> {
    if plan.arch != GgufArch::Bitnet {
        return Ok(());
    }
    let Some(at) = plan
        .tensors
        .iter()
        .position(|t| t.kind == TensorKind::Output)
    else {
        return Ok(());
    };
    if !same_data(src, "lm_head.weight", "model.embed_tokens.weight")? {
        return Err(ConvertError::Unsupported(format!(
            "lm_head.weight differs from model.embed_tokens.weight, but llama.cpp's `{}` \
             architecture always uses token_embd as the LM head, so this untied checkpoint \
             cannot be represented",
            plan.arch.name()
        )));
    }
    plan.tensors.remove(at);
    Ok(())
}

/// Byte equality of two tensors, read in bounded chunks.
fn same_data(src: &SafetensorsSource, a: &str, b: &str) -> Result<bool> {
    let (ta, tb) = (src.require(a)?, src.require(b)?);
    if ta.dtype != tb.dtype || ta.shape != tb.shape {
        return Ok(false);
    }
    let total = ta.n_elements() as u64 * (ta.dtype.bitsize() as u64 / 8);
    const CHUNK: u64 = 64 << 20;
    let mut off = 0;
    while off < total {
        let n = CHUNK.min(total - off) as usize;
        if src.read_raw(ta, off, n)? != src.read_raw(tb, off, n)? {
            return Ok(false);
        }
        off += n as u64;
    }
    Ok(true)
}

/// The seven BitLinear projections of one layer, with their `[out, in]` shapes.
fn projections(cfg: &HfConfig, layer: usize, permute_qk: bool) -> Result<Vec<PlannedTensor>> {
    let (h, hd) = (cfg.hidden_size, cfg.head_dim);
    let (q, kv, ff) = (
        cfg.num_attention_heads * hd,
        cfg.num_key_value_heads * hd,
        cfg.intermediate_size,
    );
    let p = |heads: usize| TensorKind::Ternary {
        permute_heads: permute_qk.then_some(heads),
    };
    let plain = TensorKind::Ternary {
        permute_heads: None,
    };
    let list = [
        (
            "attn_q",
            "self_attn.q_proj",
            p(cfg.num_attention_heads),
            [q, h],
        ),
        (
            "attn_k",
            "self_attn.k_proj",
            p(cfg.num_key_value_heads),
            [kv, h],
        ),
        ("attn_v", "self_attn.v_proj", plain.clone(), [kv, h]),
        ("attn_output", "self_attn.o_proj", plain.clone(), [h, q]),
        ("ffn_gate", "mlp.gate_proj", plain.clone(), [ff, h]),
        ("ffn_up", "mlp.up_proj", plain.clone(), [ff, h]),
        ("ffn_down", "mlp.down_proj", plain, [h, ff]),
    ];
    let mut out = Vec::with_capacity(list.len());
    for (gguf, hf, kind, shape) in list {
        let module = format!("model.layers.{layer}.{hf}");
        if not_converted(cfg, &module) {
            return Err(ConvertError::Unsupported(format!(
                "quantization_config.modules_to_not_convert keeps `{module}` in full precision, but every \
                 projection must be ternary in these GGUF architectures"
            )));
        }
        out.push(PlannedTensor::new(
            format!("blk.{layer}.{gguf}.weight"),
            format!("{module}.weight"),
            kind,
            shape.to_vec(),
        ));
    }
    Ok(out)
}

/// Per-layer norms: `(gguf suffix, HF name suffix, width)`.
fn layer_norms(layer: usize, norms: &[(&str, &str, usize)]) -> Vec<PlannedTensor> {
    norms
        .iter()
        .map(|(gguf, hf, n)| {
            PlannedTensor::new(
                format!("blk.{layer}.{gguf}.weight"),
                format!("model.layers.{layer}.{hf}.weight"),
                TensorKind::Norm,
                vec![*n],
            )
        })
        .collect()
}

/// `rope_scaling` of config.json.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum RopeScaling {
    None,
    Linear(f32),
    /// Llama-3.1 frequency-dependent scaling, stored as a `rope_freqs` tensor.
    Llama3 {
        factor: f32,
        low_freq_factor: f32,
        high_freq_factor: f32,
        original_max_position_embeddings: f32,
    },
}

pub(crate) fn rope_scaling(cfg: &HfConfig) -> Result<RopeScaling> {
    let Some(rs) = &cfg.rope_scaling else {
        return Ok(RopeScaling::None);
    };
    let ty = rs
        .get("rope_type")
        .or_else(|| rs.get("type"))
        .and_then(Json::as_str)
        .unwrap_or("");
    let num = |key: &str, default: Option<f32>| -> Result<f32> {
        match rs.get(key).and_then(Json::as_f64) {
            Some(v) if v.is_finite() && v > 0.0 => Ok(v as f32),
            None if default.is_some() && rs.get(key).is_none() => Ok(default.unwrap_or_default()),
            _ => Err(ConvertError::json(
                &cfg.path,
                format!("rope_scaling.{key} must be a positive number"),
            )),
        }
    };
    match ty {
        "linear" => Ok(RopeScaling::Linear(num("factor", None)?)),
        "default" => Ok(RopeScaling::None),
        "llama3" => Ok(RopeScaling::Llama3 {
            factor: num("factor", Some(8.0))?,
            low_freq_factor: num("low_freq_factor", Some(1.0))?,
            high_freq_factor: num("high_freq_factor", Some(4.0))?,
            original_max_position_embeddings: num(
                "original_max_position_embeddings",
                Some(8192.0),
            )?,
        }),
        other => Err(ConvertError::Unsupported(format!(
            "{}: rope_scaling type `{other}` is not supported (supported: linear, llama3)",
            cfg.path.display()
        ))),
    }
}

/// The `<arch>.*` keys every architecture here shares.
fn common_hparams(arch: GgufArch, cfg: &HfConfig, n_vocab: usize) -> Vec<(String, Value)> {
    let a = arch.name();
    let u = |v: usize| Value::U32(v as u32);
    vec![
        (format!("{a}.vocab_size"), u(n_vocab)),
        (
            format!("{a}.context_length"),
            u(cfg.max_position_embeddings),
        ),
        (format!("{a}.embedding_length"), u(cfg.hidden_size)),
        (format!("{a}.block_count"), u(cfg.num_hidden_layers)),
        (format!("{a}.feed_forward_length"), u(cfg.intermediate_size)),
        (format!("{a}.rope.dimension_count"), u(cfg.head_dim)),
        (
            format!("{a}.attention.head_count"),
            u(cfg.num_attention_heads),
        ),
        (
            format!("{a}.attention.head_count_kv"),
            u(cfg.num_key_value_heads),
        ),
        (
            format!("{a}.attention.layer_norm_rms_epsilon"),
            Value::F32(cfg.rms_norm_eps),
        ),
        (format!("{a}.rope.freq_base"), Value::F32(cfg.rope_theta)),
    ]
}

/// Rejects values that cannot be stored in the u32 GGUF keys.
fn check_u32_sizes(cfg: &HfConfig) -> Result<()> {
    for (key, v) in [
        ("hidden_size", cfg.hidden_size),
        ("intermediate_size", cfg.intermediate_size),
        ("num_hidden_layers", cfg.num_hidden_layers),
        ("vocab_size", cfg.vocab_size),
        ("max_position_embeddings", cfg.max_position_embeddings),
    ] {
        if u32::try_from(v).is_err() {
            return Err(ConvertError::json(
                &cfg.path,
                format!("`{key}` = {v} does not fit in 32 bits"),
            ));
        }
    }
    Ok(())
}

/// Sub-norm BitNet layers (2B4T and 1bitLLM): norms, sub-norms and projections.
fn subln_layers(cfg: &HfConfig, src: &dyn TensorNames) -> Result<Vec<PlannedTensor>> {
    let names = sub_norm_names(src)?;
    let attn_width = cfg.num_attention_heads * cfg.head_dim;
    let mut out = Vec::new();
    for layer in 0..cfg.num_hidden_layers {
        out.extend(layer_norms(
            layer,
            &[
                ("attn_norm", "input_layernorm", cfg.hidden_size),
                ("attn_sub_norm", names.attn, attn_width),
                ("ffn_norm", "post_attention_layernorm", cfg.hidden_size),
                ("ffn_sub_norm", names.ffn, cfg.intermediate_size),
            ],
        ));
        // NEOX RoPE in both bitnet graphs: rows stay in Hugging Face order.
        out.extend(projections(cfg, layer, false)?);
    }
    Ok(out)
}

/// Shared by the two sub-norm BitNet architectures.
fn subln_plan(cfg: &HfConfig, src: &dyn TensorNames, arch: GgufArch) -> Result<ArchPlan> {
    check_u32_sizes(cfg)?;
    match rope_scaling(cfg)? {
        RopeScaling::None => {}
        RopeScaling::Linear(1.0) => {}
        other => {
            return Err(ConvertError::Unsupported(format!(
                "{}: rope_scaling {other:?} is not supported by the `{}` architecture",
                cfg.path.display(),
                arch.name()
            )))
        }
    }
    let (mut tensors, n_vocab) = embedding_and_head(cfg, src);
    tensors.extend(subln_layers(cfg, src)?);
    Ok(ArchPlan {
        arch,
        tensors,
        hparams: common_hparams(arch, cfg, n_vocab),
        weights: WeightRule::for_config(cfg),
        n_vocab,
    })
}
