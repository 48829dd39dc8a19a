//! Synthetic models: GGUF files with real shapes and random ternary weights.
//!
//! Model weights cannot be downloaded here, so benchmarks and tests generate files with the
//! exact tensor layout of real ones. [`SyntheticSpec::bitnet_2b4t`] has BitNet b1.58 2B4T's
//! shapes (2.4 B parameters; 1.18 GB with the F16 embedding) and writes in seconds.
//! The vocabulary is a byte-level BPE without merges plus Llama-3-style special tokens and,
//! like the official file, no `tokenizer.ggml.pre` key.
//!
//! The output is deterministic for a given spec (seeded generator).

use std::io::Write;
use std::path::Path;

use bitnet_backend::formats::{i2s, tq1_0, tq2_0};
use bitnet_backend::gguf::{GgmlType, GgufWriter, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use half::{bf16, f16};

use crate::{Error, Result};

/// Shapes and types of a synthetic model.
#[derive(Clone, Debug, PartialEq)]
pub struct SyntheticSpec {
    /// `general.architecture`: `bitnet-b1.58`, `bitnet-25`, `bitnet` or `llama`.
    pub architecture: String,
    /// Vocabulary size (at least 260: 256 byte tokens and the special tokens).
    pub n_vocab: usize,
    /// Hidden size.
    pub n_embd: usize,
    /// Number of blocks.
    pub n_layer: usize,
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads.
    pub n_head_kv: usize,
    /// FFN inner width.
    pub n_ff: usize,
    /// Training context written to the metadata.
    pub n_ctx_train: usize,
    /// RoPE base.
    pub rope_theta: f32,
    /// Type of the ternary projections: I2_S, TQ2_0 or TQ1_0.
    pub ternary_type: GgmlType,
    /// Type of the token embedding (and output): F32, F16, BF16, Q8_0, Q6_K, Q4_0, ...
    pub embedding_type: GgmlType,
    /// Write a separate `output.weight` (untied LM head).
    pub untied_output: bool,
    /// Write `blk.N.<projection>.scale` tensors (llama.cpp `bitnet` files).
    pub projection_scales: bool,
    /// Generator seed.
    pub seed: u64,
}

impl SyntheticSpec {
    /// BitNet b1.58 2B4T's shapes: 30 blocks of 2560 wide, 20 query / 5 KV heads, FFN 6912,
    /// 128256-token vocabulary, I2_S projections, F16 tied embedding.
    pub fn bitnet_2b4t() -> Self {
        Self {
            architecture: "bitnet-b1.58".into(),
            n_vocab: 128_256,
            n_embd: 2560,
            n_layer: 30,
            n_head: 20,
            n_head_kv: 5,
            n_ff: 6912,
            n_ctx_train: 4096,
            rope_theta: 500_000.0,
            ternary_type: GgmlType::I2S,
            embedding_type: GgmlType::F16,
            untied_output: false,
            projection_scales: false,
            seed: 0x5eed_b17e,
        }
    }

    /// A small model of the same kind (for tests): 2 blocks, 256 wide, GQA 4.
    pub fn tiny() -> Self {
        Self {
            n_vocab: 300,
            n_embd: 256,
            n_layer: 2,
            n_head: 8,
            n_head_kv: 2,
            n_ff: 512,
            n_ctx_train: 256,
            ..Self::bitnet_2b4t()
        }
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidArgument(format!("synthetic model: {m}")));
        if self.n_vocab < 260 {
            return bad(format!("n_vocab {} < 260", self.n_vocab));
        }
        if self.n_head == 0 || self.n_head_kv == 0 || !self.n_head.is_multiple_of(self.n_head_kv) {
            return bad(format!(
                "heads {} / kv heads {}",
                self.n_head, self.n_head_kv
            ));
        }
        if !self.n_embd.is_multiple_of(self.n_head)
            || !(self.n_embd / self.n_head).is_multiple_of(2)
        {
            return bad(format!("n_embd {} vs {} heads", self.n_embd, self.n_head));
        }
        if !matches!(
            self.ternary_type,
            GgmlType::I2S | GgmlType::TQ2_0 | GgmlType::TQ1_0
        ) {
            return bad(format!("ternary type {:?}", self.ternary_type));
        }
        Ok(())
    }

    fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }

    /// Names and `[out_features, in_features]` of the ternary projections of block `i`.
    fn projections(&self, i: usize) -> Vec<(String, usize, usize)> {
        let (e, ff) = (self.n_embd, self.n_ff);
        let kv = self.n_head_kv * self.head_dim();
        [
            ("attn_q", e, e),
            ("attn_k", kv, e),
            ("attn_v", kv, e),
            ("attn_output", e, e),
            ("ffn_gate", ff, e),
            ("ffn_up", ff, e),
            ("ffn_down", e, ff),
        ]
        .into_iter()
        .map(|(n, o, i_f)| (format!("blk.{i}.{n}"), o, i_f))
        .collect()
    }

    fn has_sub_norms(&self) -> bool {
        self.architecture != "llama"
    }
}

/// Writes BitNet b1.58 2B4T-shaped random weights with the given embedding type (F16 is the
/// official file's; Q6_K is what bitnet.cpp's `--quant-embd` produces).
pub fn write_2b4t_like_gguf(path: impl AsRef<Path>, embedding_type: GgmlType) -> Result<()> {
    write_synthetic_gguf(
        path,
        &SyntheticSpec {
            embedding_type,
            ..SyntheticSpec::bitnet_2b4t()
        },
    )
}

/// Writes a synthetic model file (atomically: a temporary file renamed at the end).
pub fn write_synthetic_gguf(path: impl AsRef<Path>, spec: &SyntheticSpec) -> Result<()> {
    spec.validate()?;
    let mut rng = SplitMix64(spec.seed);
    let mut w = GgufWriter::new();
    add_metadata(&mut w, spec)?;
    let (e, v) = (spec.n_embd as u64, spec.n_vocab as u64);
    w.add_tensor("token_embd.weight", &[e, v], spec.embedding_type)?;
    if spec.untied_output {
        w.add_tensor("output.weight", &[e, v], spec.embedding_type)?;
    }
    w.add_tensor("output_norm.weight", &[e], GgmlType::F32)?;
    for i in 0..spec.n_layer {
        for (name, width) in norms(spec, i) {
            w.add_tensor(name, &[width as u64], GgmlType::F32)?;
        }
        for (name, out_f, in_f) in spec.projections(i) {
            w.add_tensor(
                format!("{name}.weight"),
                &[in_f as u64, out_f as u64],
                spec.ternary_type,
            )?;
            if spec.projection_scales {
                w.add_tensor(format!("{name}.scale"), &[1], GgmlType::F32)?;
            }
        }
    }
    let mut out = w.begin(path.as_ref())?;
    write_table(&mut out, "token_embd.weight", spec, &mut rng)?;
    if spec.untied_output {
        write_table(&mut out, "output.weight", spec, &mut rng)?;
    }
    out.write_tensor("output_norm.weight", &norm_bytes(spec.n_embd, &mut rng))?;
    for i in 0..spec.n_layer {
        for (name, width) in norms(spec, i) {
            out.write_tensor(&name, &norm_bytes(width, &mut rng))?;
        }
        for (name, out_f, in_f) in spec.projections(i) {
            let bytes = ternary_bytes(spec.ternary_type, out_f * in_f, &mut rng)?;
            out.write_tensor(&format!("{name}.weight"), &bytes)?;
            if spec.projection_scales {
                let s = 0.5 + rng.unit();
                out.write_tensor(&format!("{name}.scale"), &s.to_le_bytes())?;
            }
        }
    }
    out.finish()?;
    Ok(())
}

fn norms(spec: &SyntheticSpec, i: usize) -> Vec<(String, usize)> {
    let e = spec.n_embd;
    let mut v = vec![(format!("blk.{i}.attn_norm.weight"), e)];
    if spec.has_sub_norms() {
        v.push((format!("blk.{i}.attn_sub_norm.weight"), e));
    }
    v.push((format!("blk.{i}.ffn_norm.weight"), e));
    if spec.has_sub_norms() {
        v.push((format!("blk.{i}.ffn_sub_norm.weight"), spec.n_ff));
    }
    v
}

fn add_metadata(w: &mut GgufWriter, spec: &SyntheticSpec) -> Result<()> {
    let a = spec.architecture.as_str();
    let k = |s: &str| format!("{a}.{s}");
    w.add("general.architecture", a)?;
    w.add("general.name", format!("synthetic {a}"))?;
    if spec.ternary_type == GgmlType::I2S {
        // bitnet.cpp's LLAMA_FTYPE_MOSTLY_I2_S: marks the file as using type 36 = I2_S.
        w.add("general.file_type", 40u32)?;
    }
    w.add(k("vocab_size"), spec.n_vocab as u32)?;
    w.add(k("context_length"), spec.n_ctx_train as u32)?;
    w.add(k("embedding_length"), spec.n_embd as u32)?;
    w.add(k("block_count"), spec.n_layer as u32)?;
    w.add(k("feed_forward_length"), spec.n_ff as u32)?;
    w.add(k("rope.dimension_count"), spec.head_dim() as u32)?;
    w.add(k("attention.head_count"), spec.n_head as u32)?;
    w.add(k("attention.head_count_kv"), spec.n_head_kv as u32)?;
    w.add(k("attention.layer_norm_rms_epsilon"), 1e-5f32)?;
    w.add(k("rope.freq_base"), spec.rope_theta)?;

    let n = spec.n_vocab;
    let (bos, eos, eot) = (n - 3, n - 2, n - 1);
    let mut tokens: Vec<String> = (0..=255u8).map(byte_level_char).map(String::from).collect();
    tokens.extend((256..bos).map(|i| format!("t{i}")));
    tokens.extend(["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"].map(String::from));
    let types: Vec<i32> = (0..n).map(|i| if i >= bos { 3 } else { 1 }).collect();
    w.add("tokenizer.ggml.model", "gpt2")?;
    w.add("tokenizer.ggml.tokens", Value::string_array(tokens))?;
    w.add("tokenizer.ggml.token_type", Value::array(types))?;
    w.add(
        "tokenizer.ggml.merges",
        Value::string_array(Vec::<String>::new()),
    )?;
    w.add("tokenizer.ggml.bos_token_id", bos as u32)?;
    w.add("tokenizer.ggml.eos_token_id", eos as u32)?;
    w.add("tokenizer.ggml.eot_token_id", eot as u32)?;
    w.add("tokenizer.ggml.add_bos_token", true)?;
    if a != "bitnet-b1.58" && a != "bitnet-25" {
        w.add("tokenizer.ggml.pre", "gpt-2")?;
    }
    Ok(())
}

/// GPT-2's printable stand-in for byte `b` (byte-level BPE vocabularies spell bytes this way).
fn byte_level_char(b: u8) -> char {
    let printable = |x: u8| (b'!'..=b'~').contains(&x) || (0xA1..=0xAC).contains(&x) || x >= 0xAE;
    if printable(b) {
        b as char
    } else {
        let shifted = (0..b).filter(|&x| !printable(x)).count() as u32;
        char::from_u32(256 + shifted).expect("below U+0200")
    }
}

/// Norm weights around 1.
fn norm_bytes(n: usize, rng: &mut SplitMix64) -> Vec<u8> {
    (0..n)
        .flat_map(|_| (0.8 + 0.4 * rng.unit()).to_le_bytes())
        .collect()
}

/// A table `[n_vocab, n_embd]` of values uniform in ±0.05, streamed in row chunks.
fn write_table(
    out: &mut bitnet_backend::gguf::GgufStreamWriter,
    name: &str,
    spec: &SyntheticSpec,
    rng: &mut SplitMix64,
) -> Result<()> {
    let (rows, cols, ty) = (spec.n_vocab, spec.n_embd, spec.embedding_type);
    out.write_tensor_with(name, |w: &mut dyn Write| {
        const CHUNK: usize = 2048;
        let mut r = 0;
        while r < rows {
            let n = CHUNK.min(rows - r);
            let values: Vec<f32> = (0..n * cols).map(|_| 0.1 * rng.unit() - 0.05).collect();
            let bytes = encode_table(ty, &values, n, cols)
                .map_err(|e| bitnet_backend::Error::Writer(format!("`{name}`: {e}")))?;
            w.write_all(&bytes)?;
            r += n;
        }
        Ok(())
    })?;
    Ok(())
}

fn encode_table(ty: GgmlType, values: &[f32], rows: usize, cols: usize) -> Result<Vec<u8>> {
    Ok(match ty {
        GgmlType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        GgmlType::F16 => values
            .iter()
            .flat_map(|v| f16::from_f32(*v).to_le_bytes())
            .collect(),
        GgmlType::BF16 => values
            .iter()
            .flat_map(|v| bf16::from_f32(*v).to_le_bytes())
            .collect(),
        other => {
            let dtype = match other {
                GgmlType::Q8_0 => GgmlDType::Q8_0,
                GgmlType::Q4_0 => GgmlDType::Q4_0,
                GgmlType::Q4_1 => GgmlDType::Q4_1,
                GgmlType::Q5_0 => GgmlDType::Q5_0,
                GgmlType::Q5_1 => GgmlDType::Q5_1,
                GgmlType::Q4_K => GgmlDType::Q4K,
                GgmlType::Q5_K => GgmlDType::Q5K,
                GgmlType::Q6_K => GgmlDType::Q6K,
                _ => {
                    return Err(Error::InvalidArgument(format!(
                        "synthetic model: embedding type {other:?} is not supported"
                    )))
                }
            };
            let t = Tensor::from_slice(values, (rows, cols), &Device::Cpu)?;
            QTensor::quantize(&t, dtype)?.data()?.into_owned()
        }
    })
}

/// Random ternary weights (uniform over -1, 0, 1) with a per-tensor scale, in `ty`'s layout.
/// The draw does not depend on `ty`, so one spec written as I2_S, TQ2_0 and TQ1_0 holds the
/// same weights in each (the scale is an f16 value, which all three store exactly): bitnet.cpp
/// and llama.cpp then run the same model, each in its own format.
fn ternary_bytes(ty: GgmlType, n: usize, rng: &mut SplitMix64) -> Result<Vec<u8>> {
    let scale = f16::from_f32(0.02 + 0.03 * rng.unit()).to_f32();
    // Every I2_S byte holds four 2-bit codes in {0, 1, 2}: draw bytes directly from the 81
    // valid ones (much faster than packing trit by trit).
    let valid: Vec<u8> = (0u8..=255)
        .filter(|b| (0..4).all(|k| (b >> (2 * k)) & 3 != 3))
        .collect();
    let mut out = Vec::with_capacity(n / 4 + i2s::TAIL_BYTES);
    while out.len() < n / 4 {
        let r = rng.next();
        for k in 0..4.min(n / 4 - out.len()) {
            let pick = ((r >> (16 * k)) & 0xffff) as usize % valid.len();
            out.push(valid[pick]);
        }
    }
    let mut tail = [0u8; i2s::TAIL_BYTES];
    tail[..4].copy_from_slice(&scale.to_le_bytes());
    out.extend_from_slice(&tail);
    if ty == GgmlType::I2S {
        return Ok(out);
    }
    let (values, _) = i2s::unpack(&out, n)?;
    Ok(match ty {
        GgmlType::TQ2_0 => tq2_0::pack_ternary(&values, scale)?,
        _ => tq1_0::pack_ternary(&values, scale)?,
    })
}

/// A small, fast, seedable generator (SplitMix64).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitnet_backend::gguf::GgufFile;

    /// Every tensor of `path`, dequantized, by name.
    fn dequantized(path: &Path) -> Vec<(String, Vec<f32>)> {
        let file = GgufFile::open(path).unwrap();
        file.tensors()
            .iter()
            .map(|t| {
                let data = file.tensor_data(t).unwrap();
                let n = t.n_elements() as usize;
                let values = match t.ggml_type {
                    GgmlType::I2S => {
                        let (v, s) = i2s::unpack(data, n).unwrap();
                        v.iter().map(|&v| f32::from(v) * s).collect()
                    }
                    GgmlType::TQ2_0 => tq2_0::dequantize(data, n).unwrap(),
                    GgmlType::TQ1_0 => tq1_0::dequantize(data, n).unwrap(),
                    _ => data.iter().map(|&b| f32::from(b)).collect(), // raw bytes compare
                };
                (t.name.clone(), values)
            })
            .collect()
    }

    #[test]
    fn every_ternary_type_holds_the_same_weights() {
        let dir = tempfile::tempdir().unwrap();
        let write = |ty: GgmlType, arch: &str| {
            let path = dir.path().join(format!("{ty:?}.gguf"));
            let spec = SyntheticSpec {
                ternary_type: ty,
                architecture: arch.into(),
                ..SyntheticSpec::tiny()
            };
            write_synthetic_gguf(&path, &spec).unwrap();
            dequantized(&path)
        };
        let i2s = write(GgmlType::I2S, "bitnet-b1.58");
        assert!(i2s.iter().any(|(_, v)| v.iter().any(|&x| x < 0.0)));
        for (ty, arch) in [(GgmlType::TQ2_0, "bitnet"), (GgmlType::TQ1_0, "bitnet")] {
            assert_eq!(write(ty, arch), i2s, "{ty:?}");
        }
    }
}
