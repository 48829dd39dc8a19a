//! ggml-numerics (Q8_K) ternary mat-mul benchmarks, the ggml plugin's kernels, on BitNet b1.58
//! 2B4T shapes with TQ2_0 weights.
//!
//! - `q8k/{1,8,128}tok/{1,2}t/<shape>`: one mat-mul (1 token: decode; 8: a batched decode step
//!   of 8 sequences, as llama-server's parallel slots run it; 128: a prompt).
//! - The summary (own timing, medians) prints G MAC/s and the share of the `vpdpbusd` peak
//!   measured in the same run, the 7-mat-mul layer mix per token count, and beside it the
//!   layer mix of our own I2_S GEMM (`matmul::ternary_matmul`, BitNet numerics) on the same
//!   shapes: the ratio the plugin's many-token path is judged by.
//!
//! Environment: `BITNET_BENCH_QUICK=1` shortens everything (smoke test).

use std::hint::black_box;
use std::time::Duration;

use bitnet_backend::compute_peak::measure_int8_dot_peak;
use bitnet_backend::formats::tq2_0;
use bitnet_backend::matmul::ternary_matmul;
use bitnet_backend::matmul_q8k::{ternary_matmul_q8k, TqMatrix, TqType};
use bitnet_backend::{threads, TernaryMatrix};
mod common;

use common::{median_secs, quick};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// (name, rows, cols, mat-muls of this shape per decoder layer: q+o, k+v, gate+up, down)
const SHAPES: [(&str, usize, usize, usize); 4] = [
    ("q_o_2560x2560", 2560, 2560, 2),
    ("k_v_640x2560", 640, 2560, 2),
    ("gate_up_6912x2560", 6912, 2560, 2),
    ("down_2560x6912", 2560, 6912, 1),
];

const TOKENS: [usize; 3] = [1, 8, 128];

/// Random ternary values with a few distinct block scales, as TQ2_0 bytes and as the I2_S
/// engine's matrix (same values).
fn random_pair(rows: usize, cols: usize, rng: &mut StdRng) -> (TqMatrix, TernaryMatrix) {
    let values: Vec<i8> = (0..rows * cols)
        .map(|_| rng.random_range(0..3u8) as i8 - 1)
        .collect();
    let mut bytes = Vec::with_capacity(tq2_0::packed_size(rows * cols));
    for (i, block) in values.chunks_exact(256).enumerate() {
        let d = [0.0125f32, 0.5, 1.75][i % 3];
        bytes.extend(tq2_0::pack_ternary(block, d).expect("valid block"));
    }
    (
        TqMatrix::new(TqType::Tq2_0, &bytes, rows, cols).expect("valid TQ2_0"),
        TernaryMatrix::from_ternary(&values, rows, cols, 0.5).expect("valid values"),
    )
}

fn random_x(n: usize, rng: &mut StdRng) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

struct Row {
    engine: &'static str,
    tokens: usize,
    threads: usize,
    shape: &'static str,
    secs: f64,
    macs: f64,
}

fn benches(c: &mut Criterion) {
    let quick = quick();
    let mut rng = StdRng::seed_from_u64(0x5151_2B4D_0000_0015);
    let peak = [measure_int8_dot_peak(1, 5), measure_int8_dot_peak(2, 5)];
    let budget = Duration::from_millis(if quick { 100 } else { 1000 });
    let mut rows = Vec::new();
    for (name, r, k, _) in SHAPES {
        let (tq, i2s) = random_pair(r, k, &mut rng);
        for tokens in TOKENS {
            let x = random_x(tokens * k, &mut rng);
            let mut y = vec![0f32; tokens * r];
            let macs = (tokens * r * k) as f64;
            for nth in [1usize, 2] {
                threads::set_num_threads(nth);
                let mut g = c.benchmark_group(format!("q8k/{tokens}tok/{nth}t"));
                g.throughput(Throughput::Elements(macs as u64));
                g.bench_function(name, |b| {
                    b.iter(|| {
                        ternary_matmul_q8k(&tq, &x, tokens, &mut y).unwrap();
                        black_box(&y);
                    })
                });
                g.finish();
                let mut run = |engine: &'static str, f: &mut dyn FnMut()| {
                    rows.push(Row {
                        engine,
                        tokens,
                        threads: nth,
                        shape: name,
                        secs: median_secs(budget, f),
                        macs,
                    })
                };
                run("q8k", &mut || {
                    ternary_matmul_q8k(&tq, &x, tokens, &mut y).unwrap()
                });
                run("i2s", &mut || {
                    ternary_matmul(&i2s, &x, tokens, &mut y).unwrap()
                });
            }
        }
    }
    print_summary(&rows, &peak);
}

fn print_summary(rows: &[Row], peak: &[Option<f64>; 2]) {
    let show = |p: Option<f64>| p.map_or("n/a".to_string(), |g| format!("{g:.0} G MAC/s"));
    println!(
        "\nmeasured vpdpbusd peak: 1 thread {}, 2 threads {}",
        show(peak[0]),
        show(peak[1])
    );
    println!(
        "{:<5} {:>6} {:>3} {:<20} {:>11} {:>8} {:>9}",
        "path", "tokens", "thr", "shape", "median µs", "GMAC/s", "% of peak"
    );
    let of_peak = |gmacs: f64, nth: usize| {
        peak[nth - 1].map_or("n/a".to_string(), |p| format!("{:.1}%", 100.0 * gmacs / p))
    };
    for r in rows {
        let gmacs = r.macs / r.secs / 1e9;
        println!(
            "{:<5} {:>6} {:>3} {:<20} {:>11.1} {:>8.1} {:>9}",
            r.engine,
            r.tokens,
            r.threads,
            r.shape,
            r.secs * 1e6,
            gmacs,
            of_peak(gmacs, r.threads)
        );
    }
    println!("\nlayer mix (q, k, v, o, gate, up, down), G MAC/s:");
    println!(
        "{:>6} {:>3} {:>8} {:>8} {:>10}",
        "tokens", "thr", "q8k", "i2s", "q8k / i2s"
    );
    for tokens in TOKENS {
        for nth in [1usize, 2] {
            let mix = |engine: &str| {
                let (mut secs, mut macs) = (0.0, 0.0);
                for (name, _, _, count) in SHAPES {
                    let r = rows
                        .iter()
                        .find(|r| {
                            r.engine == engine
                                && r.tokens == tokens
                                && r.threads == nth
                                && r.shape == name
                        })
                        .expect("row");
                    secs += r.secs * count as f64;
                    macs += r.macs * count as f64;
                }
                macs / secs / 1e9
            };
            let (q, i) = (mix("q8k"), mix("i2s"));
            println!("{tokens:>6} {nth:>3} {q:>8.1} {i:>8.1} {:>9.2}x", q / i);
        }
    }
    println!();
}

criterion_group! {
    name = q8k;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(if quick() { 50 } else { 300 }))
        .measurement_time(Duration::from_millis(if quick() { 100 } else { 1000 }));
    targets = benches
}
criterion_main!(q8k);
