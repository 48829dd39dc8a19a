//! Every kernel path against a plain integer reference, on random shapes (odd row counts, widths
//! that are and are not multiples of 128/256) and extreme activations.
//!
//! Case counts: `PROPTEST_CASES` if set, else a default that is small under aarch64 emulation.

use bitnet_backend::formats::{i2s, tq1_0, tq2_0};
use bitnet_backend::kernels::{self, KernelKind};
use bitnet_backend::matmul::{
    ternary_matmul_i32_with, ternary_matmul_multi_with, ternary_matmul_quantized_with,
    ternary_matmul_with,
};
use bitnet_backend::{threads, QuantizedActivations, TernaryMatrix};
use proptest::prelude::*;

fn cases() -> u32 {
    let default = if cfg!(target_arch = "aarch64") {
        12
    } else {
        48
    };
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn ternary(&mut self, n: usize) -> Vec<i8> {
        (0..n).map(|_| (self.next() % 3) as i8 - 1).collect()
    }
}

/// Σ w·q in i64, straight from the unpacked values.
fn reference(w: &[i8], rows: usize, cols: usize, q: &[i8], n_tokens: usize) -> Vec<i32> {
    let mut out = Vec::with_capacity(n_tokens * rows);
    for t in 0..n_tokens {
        let x = &q[t * cols..(t + 1) * cols];
        for r in 0..rows {
            let row = &w[r * cols..(r + 1) * cols];
            let s: i64 = row
                .iter()
                .zip(x)
                .map(|(&a, &b)| i64::from(a) * i64::from(b))
                .sum();
            out.push(i32::try_from(s).unwrap());
        }
    }
    out
}

#[derive(Debug, Clone, Copy)]
enum IntActs {
    Random,
    AllEqual(i8),
    Zeros,
    /// Alternating -128 / 127: the largest magnitudes, both signs.
    Extremes,
    /// Zeros except one -128 per token.
    OneOutlier,
}

fn int_acts(kind: IntActs, n: usize, cols: usize, rng: &mut Rng) -> Vec<i8> {
    match kind {
        IntActs::Random => (0..n).map(|_| rng.next() as i8).collect(),
        IntActs::AllEqual(v) => vec![v; n],
        IntActs::Zeros => vec![0; n],
        IntActs::Extremes => (0..n)
            .map(|i| if i % 2 == 0 { -128 } else { 127 })
            .collect(),
        IntActs::OneOutlier => {
            let mut v = vec![0i8; n];
            for t in 0..n / cols {
                v[t * cols + (rng.next() as usize % cols)] = -128;
            }
            v
        }
    }
}

fn int_acts_strategy() -> impl Strategy<Value = IntActs> {
    prop_oneof![
        3 => Just(IntActs::Random),
        1 => any::<i8>().prop_map(IntActs::AllEqual),
        1 => Just(IntActs::Zeros),
        1 => Just(IntActs::Extremes),
        1 => Just(IntActs::OneOutlier),
    ]
}

fn cols_strategy() -> impl Strategy<Value = usize> {
    prop_oneof![
        1usize..700,
        (1usize..8).prop_map(|k| 128 * k),
        (1usize..5).prop_map(|k| 256 * k),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn every_kernel_gives_the_exact_integers(
        rows in 1usize..70,
        cols in cols_strategy(),
        n_tokens in 1usize..41,
        acts in int_acts_strategy(),
        seed in any::<u64>(),
    ) {
        let mut rng = Rng::new(seed);
        let w = rng.ternary(rows * cols);
        let m = TernaryMatrix::from_ternary(&w, rows, cols, 0.5).unwrap();
        let q = int_acts(acts, n_tokens * cols, cols, &mut rng);
        let qa = QuantizedActivations::from_int8(&q, n_tokens, cols, &vec![1.0; n_tokens]).unwrap();
        let want = reference(&w, rows, cols, &q, n_tokens);
        for kind in kernels::available() {
            let mut got = vec![0i32; n_tokens * rows];
            ternary_matmul_i32_with(kind, &m, &qa, &mut got).unwrap();
            prop_assert_eq!(&got, &want, "kernel {}", kind);
        }
    }

    #[test]
    fn float_path_is_bit_identical_across_kernels_and_close_to_float_math(
        rows in 1usize..40,
        cols in cols_strategy(),
        n_tokens in 1usize..6,
        pattern in 0u8..5,
        seed in any::<u64>(),
    ) {
        let mut rng = Rng::new(seed);
        let w = rng.ternary(rows * cols);
        let scale = 0.37f32;
        let m = TernaryMatrix::from_ternary(&w, rows, cols, scale).unwrap();
        let n = n_tokens * cols;
        let x: Vec<f32> = match pattern {
            0 => (0..n).map(|_| (rng.next() % 2001) as f32 / 1000.0 - 1.0).collect(),
            1 => vec![-2.75; n],
            2 => vec![0.0; n],
            // One huge outlier per token: everything else quantizes to 0.
            3 => (0..n).map(|i| if i % cols == cols / 2 { 3.0e6 } else { 1.0 + (i % 7) as f32 }).collect(),
            // Below the 1e-5 absmax floor.
            _ => (0..n).map(|i| if i % 3 == 0 { 1e-7 } else { -3e-6 }).collect(),
        };
        let mut want = vec![0f32; n_tokens * rows];
        ternary_matmul_with(KernelKind::Scalar, &m, &x, n_tokens, &mut want).unwrap();
        // Quantization error: |q/s - x| <= 0.5/s per element, s = 127/max(absmax, 1e-5).
        for t in 0..n_tokens {
            let xt = &x[t * cols..(t + 1) * cols];
            let absmax = xt.iter().fold(0f32, |a, v| a.max(v.abs())).max(1e-5);
            for r in 0..rows {
                let wr = &w[r * cols..(r + 1) * cols];
                let exact: f64 = wr.iter().zip(xt).map(|(&a, &b)| f64::from(a) * f64::from(b)).sum::<f64>() * f64::from(scale);
                let nnz = wr.iter().filter(|&&v| v != 0).count() as f64;
                let tol = f64::from(scale) * nnz * 0.5 * f64::from(absmax) / 127.0 * 1.0001 + exact.abs() * 1e-5 + 1e-30;
                let got = f64::from(want[t * rows + r]);
                prop_assert!((got - exact).abs() <= tol, "token {} row {}: {} vs {} (tol {})", t, r, got, exact, tol);
            }
        }
        for kind in kernels::available() {
            let mut y = vec![0f32; n_tokens * rows];
            ternary_matmul_with(kind, &m, &x, n_tokens, &mut y).unwrap();
            let same = y.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
            prop_assert!(same, "kernel {}: {:?} vs {:?}", kind, &y[..rows.min(4)], &want[..rows.min(4)]);
            let qa = QuantizedActivations::quantize_with(kind, &x, n_tokens, cols).unwrap();
            let mut y2 = vec![0f32; n_tokens * rows];
            ternary_matmul_quantized_with(kind, &m, &qa, &mut y2).unwrap();
            prop_assert!(y2.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()));
        }
    }

    #[test]
    fn repacking_from_every_format_gives_the_same_matrix(
        rows in 1usize..40,
        blocks in 1usize..5,
        seed in any::<u64>(),
    ) {
        let cols = 256 * blocks;
        let mut rng = Rng::new(seed);
        let w = rng.ternary(rows * cols);
        let from_values = TernaryMatrix::from_ternary(&w, rows, cols, 1.5).unwrap();
        prop_assert_eq!(from_values.to_ternary(), w.clone());
        let mats = [
            TernaryMatrix::from_i2s(&i2s::pack(&w, 1.5).unwrap(), rows, cols).unwrap(),
            TernaryMatrix::from_tq2_0(&tq2_0::pack_ternary(&w, 1.5).unwrap(), rows, cols).unwrap(),
            TernaryMatrix::from_tq1_0(&tq1_0::pack_ternary(&w, 1.5).unwrap(), rows, cols).unwrap(),
        ];
        for m in &mats {
            prop_assert_eq!(m.to_ternary(), w.clone());
            prop_assert_eq!(m.scale(), 1.5);
        }
    }
}

#[test]
fn multi_matmul_equals_separate_matmuls() {
    let cols = 640;
    let mut rng = Rng::new(11);
    let shapes = [(160usize, 0.5f32), (33, 1.25), (400, 2.0)];
    let mats: Vec<TernaryMatrix> = shapes
        .iter()
        .map(|&(rows, scale)| {
            TernaryMatrix::from_ternary(&rng.ternary(rows * cols), rows, cols, scale).unwrap()
        })
        .collect();
    let refs: Vec<&TernaryMatrix> = mats.iter().collect();
    for n_tokens in [1usize, 7, 20] {
        let x: Vec<f32> = (0..n_tokens * cols)
            .map(|_| (rng.next() % 4001) as f32 / 1000.0 - 2.0)
            .collect();
        for kind in kernels::available() {
            let mut ys: Vec<Vec<f32>> = mats
                .iter()
                .map(|m| vec![0f32; n_tokens * m.rows()])
                .collect();
            let mut outs: Vec<&mut [f32]> = ys.iter_mut().map(|y| &mut y[..]).collect();
            ternary_matmul_multi_with(kind, &refs, &x, n_tokens, &mut outs).unwrap();
            for (m, y) in mats.iter().zip(&ys) {
                let mut want = vec![0f32; n_tokens * m.rows()];
                ternary_matmul_with(kind, m, &x, n_tokens, &mut want).unwrap();
                assert!(
                    want.iter().zip(y).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{kind}, {n_tokens} tokens, {} rows",
                    m.rows()
                );
            }
        }
    }
    let other = TernaryMatrix::from_ternary(&[1; 8], 2, 4, 1.0).unwrap();
    let mut a = vec![0f32; 160];
    let mut b = vec![0f32; 2];
    let err = ternary_matmul_multi_with(
        KernelKind::Scalar,
        &[&mats[0], &other],
        &[0.5; 640],
        1,
        &mut [&mut a, &mut b],
    );
    assert!(err
        .unwrap_err()
        .to_string()
        .contains("matrix 1 has 4 columns"));
    let err = ternary_matmul_multi_with(KernelKind::Scalar, &[&mats[0]], &[0.5; 640], 1, &mut []);
    assert!(err.is_err());
}

/// Large enough to be split over threads; runs the pool with 1, 2 and 3 threads.
#[test]
fn threaded_results_match_single_threaded() {
    let (rows, cols) = (301, 1024);
    let mut rng = Rng::new(5);
    let w = rng.ternary(rows * cols);
    let m = TernaryMatrix::from_ternary(&w, rows, cols, 1.0).unwrap();
    for n_tokens in [1usize, 3, 37] {
        let q: Vec<i8> = (0..n_tokens * cols).map(|_| rng.next() as i8).collect();
        let qa = QuantizedActivations::from_int8(&q, n_tokens, cols, &vec![1.0; n_tokens]).unwrap();
        let want = reference(&w, rows, cols, &q, n_tokens);
        for nth in [1usize, 2, 3] {
            threads::set_num_threads(nth);
            for kind in kernels::available() {
                let mut got = vec![0i32; n_tokens * rows];
                ternary_matmul_i32_with(kind, &m, &qa, &mut got).unwrap();
                assert_eq!(got, want, "{kind}, {nth} threads, {n_tokens} tokens");
            }
        }
    }
    threads::set_num_threads(0);
}

#[test]
fn kernel_override_is_honoured() {
    // Run e.g. `BITNET_KERNEL=neon cargo test` to check a forced path is really the one used.
    match std::env::var(kernels::KERNEL_ENV) {
        Ok(v) if !v.trim().is_empty() => {
            let want = KernelKind::parse(&v).expect("BITNET_KERNEL names a kernel");
            assert!(want.is_available(), "{want} is not available here");
            assert_eq!(kernels::try_selected().unwrap(), want);
            assert_eq!(kernels::selected(), want);
        }
        _ => assert_eq!(kernels::selected(), kernels::best()),
    }
    assert!(kernels::available().contains(&KernelKind::Scalar));
    for k in KernelKind::ALL {
        assert_eq!(KernelKind::parse(k.name()), Some(k));
    }
    assert_eq!(
        KernelKind::parse("AVX512VNNI"),
        Some(KernelKind::Avx512Vnni)
    );
    assert_eq!(KernelKind::parse("sse9"), None);
}

#[test]
fn unavailable_kernel_is_an_error_not_a_crash() {
    let m = TernaryMatrix::from_ternary(&[1, 0, -1, 1], 1, 4, 1.0).unwrap();
    let qa = QuantizedActivations::from_int8(&[1, 2, 3, 4], 1, 4, &[1.0]).unwrap();
    for kind in KernelKind::ALL.into_iter().filter(|k| !k.is_available()) {
        let mut out = [0i32; 1];
        let err = ternary_matmul_i32_with(kind, &m, &qa, &mut out).unwrap_err();
        assert!(err.to_string().contains(kind.name()), "{err}");
    }
}
