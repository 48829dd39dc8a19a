//! Property tests of the ternary formats on random shapes and values: round trips, and
//! agreement with straightforward per-element reference decoders written from the specs.

use bitnet_backend::formats::{hf_packed, i2s, ternarize, tq1_0, tq2_0};
use half::f16;
use proptest::prelude::*;

fn ternary(n: usize) -> impl Strategy<Value = Vec<i8>> {
    proptest::collection::vec(-1i8..=1, n)
}

/// `(rows * blocks_per_row * block)` ternary values.
fn ternary_blocks(block: usize, max_blocks: usize) -> impl Strategy<Value = Vec<i8>> {
    (1..=max_blocks).prop_flat_map(move |b| ternary(b * block))
}

fn scale() -> impl Strategy<Value = f32> {
    prop_oneof![(-1e3f32..1e3), Just(0.0f32), (1e-6f32..1e-3)]
}

/// I2_S element `e` straight from the layout description.
fn i2s_ref(bytes: &[u8], e: usize) -> i8 {
    let (block, within) = (e / 128, e % 128);
    let (lane, j) = (within / 32, within % 32);
    ((bytes[32 * block + j] >> (6 - 2 * lane)) & 3) as i8 - 1
}

/// TQ2_0 element `e`: byte 32*half + m holds elements 128*half + 32*l + m at bits 2l.
fn tq2_ref(bytes: &[u8], e: usize) -> i8 {
    let (block, within) = (e / 256, e % 256);
    let (half, r) = (within / 128, within % 128);
    let (l, m) = (r / 32, r % 32);
    ((bytes[66 * block + 32 * half + m] >> (2 * l)) & 3) as i8 - 1
}

/// TQ1_0 element `e`: find its byte and base-3 digit, then decode the fixed-point fraction.
fn tq1_ref(bytes: &[u8], e: usize) -> i8 {
    let (block, i) = (e / 256, e % 256);
    let (byte, digit) = if i < 160 {
        (i % 32, i / 32)
    } else if i < 240 {
        (32 + (i - 160) % 16, (i - 160) / 16)
    } else {
        (48 + (i - 240) % 4, (i - 240) / 4)
    };
    let b = bytes[54 * block + byte] as u32;
    let q = (b * 3u32.pow(digit as u32)) % 256;
    ((q * 3) >> 8) as i8 - 1
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn i2s_round_trip(v in ternary_blocks(128, 24), s in scale()) {
        let bytes = i2s::pack(&v, s).unwrap();
        prop_assert_eq!(bytes.len(), i2s::packed_size(v.len()));
        prop_assert_eq!(bytes.len(), v.len() / 4 + 32);
        for (e, &x) in v.iter().enumerate() {
            prop_assert_eq!(i2s_ref(&bytes, e), x);
        }
        prop_assert!(bytes[v.len() / 4 + 4..].iter().all(|&b| b == 0));
        let (back, s2) = i2s::unpack(&bytes, v.len()).unwrap();
        prop_assert_eq!(back, v);
        prop_assert_eq!(s2.to_bits(), s.to_bits());
    }

    #[test]
    fn i2s_pack_into_matches_pack(v in ternary_blocks(128, 8), s in scale()) {
        let mut out = vec![0xEEu8; i2s::packed_size(v.len())];
        i2s::pack_into(&v, s, &mut out).unwrap();
        prop_assert_eq!(out, i2s::pack(&v, s).unwrap());
    }

    #[test]
    fn tq2_0_round_trip(v in ternary_blocks(256, 12), s in 1e-4f32..100.0) {
        let bytes = tq2_0::pack_ternary(&v, s).unwrap();
        prop_assert_eq!(bytes.len(), v.len() / 256 * 66);
        for (e, &x) in v.iter().enumerate() {
            prop_assert_eq!(tq2_ref(&bytes, e), x);
        }
        let (back, d) = tq2_0::unpack_ternary(&bytes, v.len()).unwrap();
        prop_assert_eq!(&back, &v);
        prop_assert!(d.iter().all(|&d| d == f16::from_f32(s)));
        let deq = tq2_0::dequantize(&bytes, v.len()).unwrap();
        let ds = f16::from_f32(s).to_f32();
        for (y, &x) in deq.iter().zip(&v) {
            prop_assert_eq!(*y, x as f32 * ds);
        }
    }

    #[test]
    fn tq1_0_round_trip(v in ternary_blocks(256, 12), s in 1e-4f32..100.0) {
        let bytes = tq1_0::pack_ternary(&v, s).unwrap();
        prop_assert_eq!(bytes.len(), v.len() / 256 * 54);
        for (e, &x) in v.iter().enumerate() {
            prop_assert_eq!(tq1_ref(&bytes, e), x);
        }
        let (back, d) = tq1_0::unpack_ternary(&bytes, v.len()).unwrap();
        prop_assert_eq!(&back, &v);
        prop_assert!(d.iter().all(|&d| d == f16::from_f32(s)));
    }

    /// Decoding arbitrary bytes agrees with the reference decoder (every byte is decodable).
    #[test]
    fn tq1_0_decodes_any_bytes(raw in proptest::collection::vec(any::<u8>(), 54 * 3)) {
        let (v, _) = tq1_0::unpack_ternary(&raw, 768).unwrap();
        for (e, &x) in v.iter().enumerate() {
            prop_assert_eq!(tq1_ref(&raw, e), x);
        }
    }

    /// Quantizing dequantized ternary blocks gives back the same bytes (when a block has a
    /// non-zero value to carry its scale).
    #[test]
    fn tq_quantize_inverts_dequantize(v in ternary_blocks(256, 4), s in 1e-3f32..100.0) {
        prop_assume!(v.chunks(256).all(|b| b.iter().any(|&x| x != 0)));
        let p2 = tq2_0::pack_ternary(&v, s).unwrap();
        let x2 = tq2_0::dequantize(&p2, v.len()).unwrap();
        prop_assert_eq!(tq2_0::quantize(&x2).unwrap(), p2);
        let p1 = tq1_0::pack_ternary(&v, s).unwrap();
        let x1 = tq1_0::dequantize(&p1, v.len()).unwrap();
        prop_assert_eq!(tq1_0::quantize(&x1).unwrap(), p1);
    }

    #[test]
    fn hf_packed_round_trip(p in 0usize..8, cols in 0usize..40, seed in any::<u64>()) {
        let rows = 4 * p;
        let v: Vec<i8> = (0..rows * cols)
            .map(|i| ((seed.wrapping_mul(i as u64 + 1) >> 17) % 3) as i8 - 1)
            .collect();
        let bytes = hf_packed::pack(&v, rows, cols).unwrap();
        prop_assert_eq!(bytes.len(), p * cols);
        for r in 0..rows {
            for c in 0..cols {
                let (i, q) = (r / p.max(1), r % p.max(1));
                let code = (bytes[q * cols + c] >> (2 * i)) & 3;
                prop_assert_eq!(code as i8 - 1, v[r * cols + c]);
            }
        }
        prop_assert_eq!(hf_packed::unpack(&bytes, rows, cols).unwrap(), v);
    }

    #[test]
    fn absmean_is_ternary_and_scale_invariant(w in proptest::collection::vec(-10f32..10.0, 1..300)) {
        let (t, beta) = ternarize::absmean(&w);
        prop_assert!(t.iter().all(|x| (-1..=1).contains(x)));
        prop_assert!(beta >= ternarize::MIN_SCALE);
        let doubled: Vec<f32> = w.iter().map(|x| x * 2.0).collect();
        let (t2, beta2) = ternarize::absmean(&doubled);
        if beta > ternarize::MIN_SCALE {
            prop_assert_eq!(t2, t);
            prop_assert_eq!(beta2, beta * 2.0);
        }
    }
}
