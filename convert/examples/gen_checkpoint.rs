//! Writes a full-size synthetic checkpoint (random ternary weights in real shapes) for
//! peak-memory and speed measurements of the converter; nothing this big is committed.
//!
//! `cargo run --release -p bitnet-convert --example gen_checkpoint -- <dir> [2b4t|2b4t-bf16|llama8b]`
//!
//! - `2b4t`: BitNet b1.58 2B4T shapes, packed uint8 + bf16 weight_scale (autobitlinear), ~1.2 GB;
//! - `2b4t-bf16`: the same shapes as bf16 masters (quantization_mode online), ~4.8 GB;
//! - `llama8b`: Llama3-8B-1.58 shapes, packed (bitlinear), untied LM head, ~3.9 GB.
//!
//! The safetensors file is streamed tensor by tensor, so the generator itself stays small.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use serde_json::{json, Map, Value};

struct Shape {
    hidden: usize,
    inter: usize,
    layers: usize,
    heads: usize,
    kv_heads: usize,
    vocab: usize,
    packed: bool,
    lm_head: bool,
    llama: bool,
}

/// xorshift64*: fast, deterministic bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

enum Data {
    /// bf16 values uniform in about [-scale, scale].
    Bf16(f32),
    /// HF-packed ternary bytes: four codes in 0..=2.
    Packed,
    /// One bf16 value.
    Scalar(f32),
}

fn tensors(s: &Shape) -> Vec<(String, &'static str, Vec<usize>, Data)> {
    let hd = s.hidden / s.heads;
    let mut v = vec![(
        "model.embed_tokens.weight".to_string(),
        "BF16",
        vec![s.vocab, s.hidden],
        Data::Bf16(1.0),
    )];
    for l in 0..s.layers {
        let p = format!("model.layers.{l}");
        v.push((
            format!("{p}.input_layernorm.weight"),
            "BF16",
            vec![s.hidden],
            Data::Bf16(1.0),
        ));
        v.push((
            format!("{p}.post_attention_layernorm.weight"),
            "BF16",
            vec![s.hidden],
            Data::Bf16(1.0),
        ));
        if !s.llama {
            v.push((
                format!("{p}.self_attn.attn_sub_norm.weight"),
                "BF16",
                vec![s.hidden],
                Data::Bf16(1.0),
            ));
            v.push((
                format!("{p}.mlp.ffn_sub_norm.weight"),
                "BF16",
                vec![s.inter],
                Data::Bf16(1.0),
            ));
        }
        let projs = [
            ("self_attn.q_proj", s.heads * hd, s.hidden),
            ("self_attn.k_proj", s.kv_heads * hd, s.hidden),
            ("self_attn.v_proj", s.kv_heads * hd, s.hidden),
            ("self_attn.o_proj", s.hidden, s.heads * hd),
            ("mlp.gate_proj", s.inter, s.hidden),
            ("mlp.up_proj", s.inter, s.hidden),
            ("mlp.down_proj", s.hidden, s.inter),
        ];
        for (name, out, inp) in projs {
            if s.packed {
                v.push((
                    format!("{p}.{name}.weight"),
                    "U8",
                    vec![out / 4, inp],
                    Data::Packed,
                ));
                v.push((
                    format!("{p}.{name}.weight_scale"),
                    "BF16",
                    vec![1],
                    Data::Scalar(0.5),
                ));
            } else {
                v.push((
                    format!("{p}.{name}.weight"),
                    "BF16",
                    vec![out, inp],
                    Data::Bf16(0.05),
                ));
            }
        }
    }
    v.push((
        "model.norm.weight".into(),
        "BF16",
        vec![s.hidden],
        Data::Bf16(1.0),
    ));
    if s.lm_head {
        v.push((
            "lm_head.weight".into(),
            "BF16",
            vec![s.vocab, s.hidden],
            Data::Bf16(1.0),
        ));
    }
    v
}

fn write_safetensors(
    path: &Path,
    list: &[(String, &'static str, Vec<usize>, Data)],
) -> std::io::Result<()> {
    let mut header = Map::new();
    let mut offset = 0usize;
    for (name, dtype, shape, _) in list {
        let n: usize = shape.iter().product::<usize>() * if *dtype == "U8" { 1 } else { 2 };
        header.insert(
            name.clone(),
            json!({"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}),
        );
        offset += n;
    }
    let mut text = Value::Object(header).to_string();
    while !text.len().is_multiple_of(8) {
        text.push(' ');
    }
    let mut out = BufWriter::with_capacity(8 << 20, File::create(path)?);
    out.write_all(&(text.len() as u64).to_le_bytes())?;
    out.write_all(text.as_bytes())?;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut buf = Vec::with_capacity(8 << 20);
    for (_, _, shape, data) in list {
        let n: usize = shape.iter().product();
        let mut left = n;
        while left > 0 {
            let k = left.min(4 << 20);
            buf.clear();
            match data {
                Data::Packed => buf.extend((0..k).map(|_| {
                    let r = rng.next();
                    (0..4).fold(0u8, |b, i| {
                        b | ((((r >> (16 * i)) & 0xffff) % 3) as u8) << (2 * i)
                    })
                })),
                Data::Bf16(scale) => {
                    for _ in 0..k {
                        let u = (rng.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
                        buf.extend(half::bf16::from_f32(u * scale).to_le_bytes());
                    }
                }
                Data::Scalar(v) => buf.extend(half::bf16::from_f32(*v).to_le_bytes()),
            }
            out.write_all(&buf)?;
            left -= k;
        }
    }
    out.flush()
}

fn write_tokenizer(dir: &Path, vocab: usize) -> std::io::Result<()> {
    let regular = vocab - 256;
    let mut v = Map::new();
    for i in 0..regular {
        v.insert(format!("t{i}"), json!(i));
    }
    let merges: Vec<Value> = (0..regular.saturating_sub(1).min(200_000))
        .map(|i| json!(format!("t{i} t{}", i + 1)))
        .collect();
    let added: Vec<Value> = (0..256)
        .map(|i| {
            let content = match i {
                0 => "<|begin_of_text|>".to_string(),
                1 => "<|end_of_text|>".to_string(),
                9 => "<|eot_id|>".to_string(),
                _ => format!("<|reserved_special_token_{i}|>"),
            };
            json!({"id": regular + i, "content": content, "special": true})
        })
        .collect();
    let regex = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    let tok = json!({
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]},
        "decoder": {"type": "ByteLevel"},
        "model": {"type": "BPE", "vocab": v, "merges": merges}
    });
    std::fs::write(dir.join("tokenizer.json"), tok.to_string())?;
    std::fs::write(
        dir.join("tokenizer_config.json"),
        json!({"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>", "add_bos_token": true}).to_string(),
    )
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(dir), kind) = (
        args.get(1),
        args.get(2).map(String::as_str).unwrap_or("2b4t"),
    ) else {
        eprintln!("usage: gen_checkpoint <dir> [2b4t|2b4t-bf16|llama8b]");
        std::process::exit(2);
    };
    let two_b = Shape {
        hidden: 2560,
        inter: 6912,
        layers: 30,
        heads: 20,
        kv_heads: 5,
        vocab: 128256,
        packed: true,
        lm_head: false,
        llama: false,
    };
    let (shape, config) = match kind {
        "2b4t" | "2b4t-bf16" => {
            let packed = kind == "2b4t";
            let mode = if packed { "offline" } else { "online" };
            let config = json!({
                "architectures": ["BitNetForCausalLM"], "hidden_act": "relu2", "hidden_size": 2560,
                "intermediate_size": 6912, "max_position_embeddings": 4096, "model_type": "bitnet",
                "num_attention_heads": 20, "num_hidden_layers": 30, "num_key_value_heads": 5,
                "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "tie_word_embeddings": true, "vocab_size": 128256,
                "bos_token_id": 128000, "eos_token_id": 128001,
                "quantization_config": {"quant_method": "bitnet", "linear_class": "autobitlinear", "quantization_mode": mode}
            });
            (Shape { packed, ..two_b }, config)
        }
        "llama8b" => {
            let config = json!({
                "architectures": ["LlamaForCausalLM"], "hidden_act": "silu", "hidden_size": 4096,
                "intermediate_size": 14336, "max_position_embeddings": 8192, "num_attention_heads": 32,
                "num_hidden_layers": 32, "num_key_value_heads": 8, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
                "tie_word_embeddings": false, "vocab_size": 128256, "bos_token_id": 128000, "eos_token_id": 128001,
                "quantization_config": {"quant_method": "bitnet"}
            });
            let s = Shape {
                hidden: 4096,
                inter: 14336,
                layers: 32,
                heads: 32,
                kv_heads: 8,
                vocab: 128256,
                packed: true,
                lm_head: true,
                llama: true,
            };
            (s, config)
        }
        other => {
            eprintln!("unknown kind `{other}`");
            std::process::exit(2);
        }
    };
    let dir = Path::new(dir);
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("config.json"), config.to_string())?;
    write_tokenizer(dir, shape.vocab)?;
    write_safetensors(&dir.join("model.safetensors"), &tensors(&shape))?;
    eprintln!("wrote {kind} checkpoint to {}", dir.display());
    Ok(())
}
