//! Encodes a SentencePiece `ModelProto` (`tokenizer.model`) with the fields the converter reads:
//! pieces (text, score, type), trainer spec (BPE model type, unk/bos/eos/pad ids) and the
//! normalizer's dummy-prefix flag. Shared by the converter's unit tests and the integration
//! tests' synthetic checkpoints.

fn varint(mut v: u64, out: &mut Vec<u8>) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn bytes_field(n: u64, b: &[u8], out: &mut Vec<u8>) {
    varint(n << 3 | 2, out);
    varint(b.len() as u64, out);
    out.extend_from_slice(b);
}

/// A BPE model whose pieces are `(text, score, type)`; a negative special id is "none".
pub fn encode(
    pieces: &[(&str, f32, i32)],
    bos: i32,
    eos: i32,
    unk: i32,
    pad: i32,
    dummy_prefix: bool,
) -> Vec<u8> {
    const MODEL_TYPE_BPE: u64 = 2;
    let mut out = Vec::new();
    for (p, s, t) in pieces {
        let mut m = Vec::new();
        bytes_field(1, p.as_bytes(), &mut m);
        varint(2 << 3 | 5, &mut m);
        m.extend(s.to_le_bytes());
        varint(3 << 3, &mut m);
        varint(*t as u64, &mut m);
        bytes_field(1, &m, &mut out);
    }
    let mut t = Vec::new();
    varint(3 << 3, &mut t);
    varint(MODEL_TYPE_BPE, &mut t);
    for (n, v) in [(40u64, unk), (41, bos), (42, eos), (43, pad)] {
        varint(n << 3, &mut t);
        varint(v as i64 as u64, &mut t);
    }
    bytes_field(2, &t, &mut out);
    let mut n = Vec::new();
    varint(3 << 3, &mut n);
    varint(dummy_prefix as u64, &mut n);
    bytes_field(3, &n, &mut out);
    out
}
