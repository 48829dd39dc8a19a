//! `LlamaForCausalLM` with ternary BitNet weights (HF1BitLLM Llama3-8B-1.58, Falcon3 *-1.58bit,
//! Falcon-E) → llama.cpp's `llama` architecture.
//!
//! llama.cpp's `llama` graph uses interleaved (NORM) RoPE, so q and k rows are permuted within
//! each head as llama.cpp's converter does. A permutation of rows keeps a tensor ternary with
//! the same scale.

use bitnet_backend::gguf::Value;

use super::{
    check_u32_sizes, common_hparams, embedding_and_head, layer_norms, projections, rope_scaling,
    ArchPlan, GgufArch, RopeScaling, TensorNames, WeightRule,
};
use crate::error::{ConvertError, Result};
use crate::hf::config::HfConfig;
use crate::tensor_map::{PlannedTensor, TensorKind};

pub fn plan(cfg: &HfConfig, src: &dyn TensorNames) -> Result<ArchPlan> {
    check_u32_sizes(cfg)?;
    for sub in ["self_attn.attn_sub_norm", "self_attn.inner_attn_ln"] {
        let name = format!("model.layers.0.{sub}.weight");
        if src.contains(&name) {
            return Err(ConvertError::Unsupported(format!(
                "LlamaForCausalLM checkpoint has BitNet sub-norm `{name}`, which llama's graph lacks; \
                 set architectures to [\"BitnetForCausalLM\"] if this is a BitNet model"
            )));
        }
    }
    let arch = GgufArch::Llama;
    let (mut tensors, n_vocab) = embedding_and_head(cfg, src);
    let mut hparams = common_hparams(arch, cfg, n_vocab);
    if cfg.head_dim * cfg.num_attention_heads != cfg.hidden_size {
        hparams.push((
            "llama.attention.key_length".into(),
            Value::U32(cfg.head_dim as u32),
        ));
        hparams.push((
            "llama.attention.value_length".into(),
            Value::U32(cfg.head_dim as u32),
        ));
    }
    match rope_scaling(cfg)? {
        RopeScaling::None => {}
        RopeScaling::Linear(factor) => {
            hparams.push((
                "llama.rope.scaling.type".into(),
                Value::String("linear".into()),
            ));
            hparams.push(("llama.rope.scaling.factor".into(), Value::F32(factor)));
        }
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        } => {
            let freqs = llama3_rope_factors(
                cfg.rope_theta,
                cfg.head_dim,
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            );
            let n = freqs.len();
            tensors.push(PlannedTensor::new(
                "rope_freqs.weight",
                "",
                TensorKind::Computed(freqs),
                vec![n],
            ));
        }
    }
    for layer in 0..cfg.num_hidden_layers {
        tensors.extend(layer_norms(
            layer,
            &[
                ("attn_norm", "input_layernorm", cfg.hidden_size),
                ("ffn_norm", "post_attention_layernorm", cfg.hidden_size),
            ],
        ));
        tensors.extend(projections(cfg, layer, true)?);
    }
    Ok(ArchPlan {
        arch,
        tensors,
        hparams,
        weights: WeightRule::for_config(cfg),
        n_vocab,
    })
}

/// Llama-3.1 per-frequency RoPE factors, as llama.cpp's converter computes `rope_freqs`.
fn llama3_rope_factors(
    theta: f32,
    dim: usize,
    factor: f32,
    low: f32,
    high: f32,
    old_ctx: f32,
) -> Vec<f32> {
    let low_wavelen = old_ctx / low;
    let high_wavelen = old_ctx / high;
    (0..dim)
        .step_by(2)
        .map(|i| {
            let freq = 1.0 / theta.powf(i as f32 / dim as f32);
            let wavelen = 2.0 * std::f32::consts::PI / freq;
            if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                factor
            } else {
                let smooth = (old_ctx / wavelen - low) / (high - low);
                1.0 / ((1.0 - smooth) / factor + smooth)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama3_factors_span_one_to_factor() {
        let f = llama3_rope_factors(500000.0, 128, 8.0, 1.0, 4.0, 8192.0);
        assert_eq!(f.len(), 64);
        assert_eq!(f[0], 1.0); // highest frequency is not scaled
        assert_eq!(f[63], 8.0); // lowest frequency gets the full factor
        assert!(f.windows(2).all(|w| w[0] <= w[1]), "{f:?}");
    }
}
