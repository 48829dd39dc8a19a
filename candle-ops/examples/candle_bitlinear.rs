//! A Llama-style model written with plain candle-nn layers, whose projections are ternary
//! `BitLinear`s loaded through a `VarBuilder`: what a Candle app changes to run BitNet b1.58.
//!
//! The one-line change per projection, from candle-transformers' Llama:
//! ```text
//! - let q_proj = candle_nn::linear_no_bias(hidden, q_dim, vb.pp("q_proj"))?;
//! + let q_proj = bitnet_candle::bit_linear(hidden, q_dim, &rule, vb.pp("q_proj"))?;
//! ```
//! (`rule` comes from the checkpoint's config.json: what `weight_scale` means, and whether
//! float masters are ternarized at load.) BitNet b1.58 2B4T adds two RMSNorms ("sub-norms")
//! before `o_proj` and `down_proj` and gates the FFN with relu², both visible below.
//!
//! Run: `cargo run --release -p bitnet-candle --example candle_bitlinear -- <checkpoint folder>
//! [prompt] [new tokens]` (a 2B4T-style folder: config.json, model.safetensors, tokenizer.json).
//! `cargo test` runs it on a transformers fixture and compares its logits with transformers'.

use std::path::Path;

use bitnet_candle::{bit_linear, BitLinear, HfConfig, WeightRule};
use candle_core::{DType, Device, IndexOp, Module, Result, Tensor, D};
use candle_nn::{embedding, rms_norm, Embedding, RmsNorm, VarBuilder};

struct Attention {
    q_proj: BitLinear,
    k_proj: BitLinear,
    v_proj: BitLinear,
    attn_sub_norm: RmsNorm,
    o_proj: BitLinear,
    n_head: usize,
    n_kv_head: usize,
    head_dim: usize,
}

impl Attention {
    fn load(vb: VarBuilder, cfg: &HfConfig, rule: &WeightRule) -> Result<Self> {
        let (h, d) = (cfg.hidden_size, cfg.head_dim);
        let (q_dim, kv_dim) = (cfg.num_attention_heads * d, cfg.num_key_value_heads * d);
        Ok(Self {
            q_proj: bit_linear(h, q_dim, rule, vb.pp("q_proj"))?,
            k_proj: bit_linear(h, kv_dim, rule, vb.pp("k_proj"))?,
            v_proj: bit_linear(h, kv_dim, rule, vb.pp("v_proj"))?,
            attn_sub_norm: rms_norm(q_dim, cfg.rms_norm_eps as f64, vb.pp("attn_sub_norm"))?,
            o_proj: bit_linear(q_dim, h, rule, vb.pp("o_proj"))?,
            n_head: cfg.num_attention_heads,
            n_kv_head: cfg.num_key_value_heads,
            head_dim: d,
        })
    }

    /// Causal self-attention over the whole sequence `x` `[1, t, hidden]`.
    fn forward(&self, x: &Tensor, cos: &Tensor, sin: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let heads = |y: Tensor, n: usize| -> Result<Tensor> {
            y.reshape((b, t, n, self.head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = heads(self.q_proj.forward(x)?, self.n_head)?;
        let k = heads(self.k_proj.forward(x)?, self.n_kv_head)?;
        let v = heads(self.v_proj.forward(x)?, self.n_kv_head)?;
        let q = candle_nn::rotary_emb::rope(&q, cos, sin)?;
        let k = candle_nn::rotary_emb::rope(&k, cos, sin)?;
        // Grouped-query attention: query head j reads key/value head j / group.
        let group = self.n_head / self.n_kv_head;
        let repeat = |y: Tensor| -> Result<Tensor> {
            y.unsqueeze(2)?
                .expand((b, self.n_kv_head, group, t, self.head_dim))?
                .reshape((b, self.n_head, t, self.head_dim))
        };
        let (k, v) = (repeat(k)?, repeat(v)?);
        let scores = (q.matmul(&k.t()?)? / (self.head_dim as f64).sqrt())?.broadcast_add(mask)?;
        let a = candle_nn::ops::softmax_last_dim(&scores)?.matmul(&v)?;
        let a = a
            .transpose(1, 2)?
            .reshape((b, t, self.n_head * self.head_dim))?;
        self.o_proj.forward(&self.attn_sub_norm.forward(&a)?)
    }
}

struct Mlp {
    gate_proj: BitLinear,
    up_proj: BitLinear,
    ffn_sub_norm: RmsNorm,
    down_proj: BitLinear,
}

impl Mlp {
    fn load(vb: VarBuilder, cfg: &HfConfig, rule: &WeightRule) -> Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(Self {
            gate_proj: bit_linear(h, i, rule, vb.pp("gate_proj"))?,
            up_proj: bit_linear(h, i, rule, vb.pp("up_proj"))?,
            ffn_sub_norm: rms_norm(i, cfg.rms_norm_eps as f64, vb.pp("ffn_sub_norm"))?,
            down_proj: bit_linear(i, h, rule, vb.pp("down_proj"))?,
        })
    }

    /// `down(sub_norm(relu(gate(x))² ⊙ up(x)))`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let gate = self.gate_proj.forward(x)?.relu()?.sqr()?;
        let m = (gate * self.up_proj.forward(x)?)?;
        self.down_proj.forward(&self.ffn_sub_norm.forward(&m)?)
    }
}

struct Block {
    input_layernorm: RmsNorm,
    self_attn: Attention,
    post_attention_layernorm: RmsNorm,
    mlp: Mlp,
}

/// BitNet b1.58 2B4T as a Llama with ternary projections and sub-norms.
pub struct BitNetLlama {
    embed_tokens: Embedding,
    layers: Vec<Block>,
    norm: RmsNorm,
    cos: Tensor,
    sin: Tensor,
}

impl BitNetLlama {
    /// Loads the model under `vb` (rooted at the checkpoint's top level).
    pub fn load(vb: VarBuilder, cfg: &HfConfig) -> Result<Self> {
        let rule = WeightRule::for_config(cfg);
        let eps = cfg.rms_norm_eps as f64;
        let vb_m = vb.pp("model");
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let vb_l = vb_m.pp(format!("layers.{i}"));
            layers.push(Block {
                input_layernorm: rms_norm(cfg.hidden_size, eps, vb_l.pp("input_layernorm"))?,
                self_attn: Attention::load(vb_l.pp("self_attn"), cfg, &rule)?,
                post_attention_layernorm: rms_norm(
                    cfg.hidden_size,
                    eps,
                    vb_l.pp("post_attention_layernorm"),
                )?,
                mlp: Mlp::load(vb_l.pp("mlp"), cfg, &rule)?,
            });
        }
        // Rotary tables (NEOX pairing, as transformers' rotate_half): angle = pos · θ^(-2i/d).
        let d = cfg.head_dim;
        let inv_freq: Vec<f32> = (0..d / 2)
            .map(|i| 1.0 / cfg.rope_theta.powf(2.0 * i as f32 / d as f32))
            .collect();
        let n = cfg.max_position_embeddings;
        let inv_freq = Tensor::from_vec(inv_freq, (1, d / 2), vb.device())?;
        let pos = Tensor::arange(0u32, n as u32, vb.device())?
            .to_dtype(DType::F32)?
            .reshape((n, 1))?;
        let angles = pos.broadcast_mul(&inv_freq)?;
        Ok(Self {
            embed_tokens: embedding(cfg.vocab_size, cfg.hidden_size, vb_m.pp("embed_tokens"))?,
            layers,
            norm: rms_norm(cfg.hidden_size, eps, vb_m.pp("norm"))?,
            cos: angles.cos()?,
            sin: angles.sin()?,
        })
    }

    /// Logits `[t, vocab]` for every position of `tokens` (no cache: the whole sequence).
    pub fn forward(&self, tokens: &[u32]) -> Result<Tensor> {
        let t = tokens.len();
        let dev = self.cos.device();
        let ids = Tensor::new(tokens, dev)?.unsqueeze(0)?;
        let mut x = self.embed_tokens.forward(&ids)?;
        let (cos, sin) = (self.cos.narrow(0, 0, t)?, self.sin.narrow(0, 0, t)?);
        let mask: Vec<f32> = (0..t * t)
            .map(|i| match i % t > i / t {
                true => f32::NEG_INFINITY,
                false => 0.0,
            })
            .collect();
        let mask = Tensor::from_vec(mask, (t, t), dev)?;
        for block in &self.layers {
            let h = block.input_layernorm.forward(&x)?;
            x = (x + block.self_attn.forward(&h, &cos, &sin, &mask)?)?;
            let h = block.post_attention_layernorm.forward(&x)?;
            x = (x + block.mlp.forward(&h)?)?;
        }
        // Tied LM head: the embedding table, in full precision.
        let x = self.norm.forward(&x)?.i(0)?;
        x.matmul(&self.embed_tokens.embeddings().t()?)
    }
}

/// The model of the checkpoint folder `dir`, with weights read as f32.
pub fn load_folder(dir: &Path) -> bitnet_candle::Result<BitNetLlama> {
    let cfg = HfConfig::load(dir)?;
    let bytes = std::fs::read(dir.join("model.safetensors"))
        .map_err(|e| candle_core::Error::wrap(e).context(dir.display().to_string()))?;
    let vb = VarBuilder::from_buffered_safetensors(bytes, DType::F32, &Device::Cpu)?;
    Ok(BitNetLlama::load(vb, &cfg)?)
}

#[cfg_attr(test, allow(dead_code))]
fn main() -> bitnet_candle::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let Some(dir) = args.get(1) else {
        eprintln!("usage: candle_bitlinear <checkpoint folder> [prompt] [new tokens]");
        std::process::exit(2);
    };
    let prompt = args
        .get(2)
        .map_or("The capital of France is", String::as_str);
    let n_new: usize = args.get(3).and_then(|n| n.parse().ok()).unwrap_or(16);
    let dir = Path::new(dir);
    let model = load_folder(dir)?;
    let tok = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json"))
        .map_err(|e| bitnet_candle::Error::Tokenizer(e.to_string()))?;
    let mut ids = tok
        .encode(prompt, true)
        .map_err(|e| bitnet_candle::Error::Tokenizer(e.to_string()))?
        .get_ids()
        .to_vec();
    for _ in 0..n_new {
        let logits = model.forward(&ids)?;
        let last = logits.i(ids.len() - 1)?;
        ids.push(last.argmax(D::Minus1)?.to_scalar::<u32>()?);
    }
    let text = tok
        .decode(&ids, false)
        .map_err(|e| bitnet_candle::Error::Tokenizer(e.to_string()))?;
    println!("{text}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fixture's teacher-forced logits against transformers', with the bounds the fixtures'
    /// README gives for W1.58A8 engines (int8 rounding ties may flip): every row within 1.0,
    /// median row within 0.5, and the first row (BOS, no flips yet) within 1e-3 relative.
    #[test]
    fn matches_transformers_on_a_fixture() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/bitnet-gqa4-autobitlinear");
        let reference: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("reference.json")).unwrap()).unwrap();
        let vocab = reference["model"]["vocab_size"].as_u64().unwrap() as usize;
        let sequence: Vec<u32> = reference["sequence_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let want: Vec<f32> = std::fs::read(dir.join("logits.bin"))
            .unwrap()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let model = load_folder(&dir).unwrap();
        let got: Vec<Vec<f32>> = model
            .forward(&sequence[..sequence.len() - 1])
            .unwrap()
            .to_vec2()
            .unwrap();
        let mut row_max: Vec<f32> = got
            .iter()
            .enumerate()
            .map(|(r, row)| {
                let w = &want[r * vocab..(r + 1) * vocab];
                row.iter()
                    .zip(w)
                    .fold(0f32, |m, (a, b)| m.max((a - b).abs()))
            })
            .collect();
        let top = want[..vocab].iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(row_max[0] <= 1e-3 * top, "row 0: {}", row_max[0]);
        row_max.sort_by(f32::total_cmp);
        let (max, median) = (row_max[row_max.len() - 1], row_max[row_max.len() / 2]);
        assert!(max <= 1.0 && median <= 0.5, "max {max}, median {median}");
    }
}
