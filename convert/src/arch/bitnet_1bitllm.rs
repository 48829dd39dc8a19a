//! BitNet b1.58 with SiLU (1bitLLM/bitnet_b1_58-*, `BitnetForCausalLM`) → llama.cpp mainline's
//! `bitnet` architecture, so mainline loads and runs the file.
//!
//! Same tensor names as `bitnet-b1.58` (1bitLLM's `inner_attn_ln` / `ffn_layernorm` become
//! `attn_sub_norm` / `ffn_sub_norm`). Mainline's graph always uses `token_embd` as the LM head and
//! has no `output` tensor, so an untied, different `lm_head` is an error. 1bitLLM models
//! ternarize their float weights in the forward pass, so the converter applies the same absmean.

use super::{subln_plan, ArchPlan, GgufArch, TensorNames};
use crate::error::Result;
use crate::hf::config::HfConfig;
use bitnet_backend::gguf::Value;

pub fn plan(cfg: &HfConfig, src: &dyn TensorNames) -> Result<ArchPlan> {
    let mut plan = subln_plan(cfg, src, GgufArch::Bitnet)?;
    // Written by llama.cpp's own converter for this architecture.
    plan.hparams.push((
        "bitnet.rope.scaling.type".into(),
        Value::String("linear".into()),
    ));
    plan.hparams
        .push(("bitnet.rope.scaling.factor".into(), Value::F32(1.0)));
    Ok(plan)
}
