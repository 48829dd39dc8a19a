//! Ternary matmul benchmarks on BitNet b1.58 2B4T shapes (rows × cols = out × in).
//!
//! - `matmul/{1,128}tok/{1,2}t/<shape>`: one matmul. Single-token runs rotate over enough copies
//!   of the matrix (≥ 512 MB) that weights stream from memory, as in real decoding.
//! - `decode_step/{1,2}t[/pool]`: the 210 ternary matmuls of one 2B4T decode step (30 layers of
//!   q, k, v, o, gate, up, down; 521 MB of weights), batch 1, with the pools compared at 2 threads.
//!
//! Criterion reports time and throughput; a summary table (own timing, medians) puts
//! GMAC/s and effective weight GB/s beside the memory read bandwidth and the `vpdpbusd`
//! throughput measured in the same run.
//! Environment: `BITNET_BENCH_QUICK=1` shortens everything (smoke test).

use std::hint::black_box;
use std::time::Duration;

use bitnet_backend::bandwidth::measure_read_bandwidth_with;
use bitnet_backend::compute_peak::measure_int8_dot_peak;
use bitnet_backend::formats::i2s;
use bitnet_backend::matmul::{ternary_matmul, ternary_matmul_multi};
use bitnet_backend::threads::{self, PoolKind};
use bitnet_backend::{kernels, TernaryMatrix};
mod common;

use common::{median_secs, quick};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const HIDDEN: usize = 2560;
const KV: usize = 640;
const FFN: usize = 6912;
const LAYERS: usize = 30;

/// (name, rows, cols)
const SHAPES: [(&str, usize, usize); 4] = [
    ("q_o_2560x2560", HIDDEN, HIDDEN),
    ("k_v_640x2560", KV, HIDDEN),
    ("gate_up_6912x2560", FFN, HIDDEN),
    ("down_2560x6912", HIDDEN, FFN),
];

/// How many matmuls of each of `SHAPES` one decoder layer runs (q+o, k+v, gate+up, down).
const SHAPES_PER_LAYER: [usize; 4] = [2, 2, 2, 1];

/// One decoder layer's ternary matmuls, in execution order.
const LAYER: [(usize, usize); 7] = [
    (HIDDEN, HIDDEN),
    (KV, HIDDEN),
    (KV, HIDDEN),
    (HIDDEN, HIDDEN),
    (FFN, HIDDEN),
    (FFN, HIDDEN),
    (HIDDEN, FFN),
];

/// A random ternary matrix, built through I2_S bytes (codes 0..=2) as a model load would.
fn random_matrix(rows: usize, cols: usize, rng: &mut StdRng) -> TernaryMatrix {
    let n = rows * cols;
    let mut bytes = vec![0u8; i2s::packed_size(n)];
    for chunk in bytes[..n / 4].chunks_mut(8) {
        let x: u64 = rng.random();
        // Turn code 3 into code 1 (zero) so every field is a valid ternary code.
        let x = x & !((x & (x >> 1) & 0x5555_5555_5555_5555) << 1);
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    bytes[n / 4..n / 4 + 4].copy_from_slice(&0.0123f32.to_le_bytes());
    TernaryMatrix::from_i2s(&bytes, rows, cols).expect("valid I2_S")
}

fn random_x(n: usize, rng: &mut StdRng) -> Vec<f32> {
    (0..n)
        .map(|_| (rng.random_range(0..20_001u32)) as f32 / 10_000.0 - 1.0)
        .collect()
}

struct Row {
    what: String,
    threads: usize,
    secs: f64,
    macs: f64,
    weight_bytes: f64,
}

fn print_summary(rows: &[Row], bw: &[f64; 2], peak: &[Option<f64>; 2]) {
    println!();
    println!(
        "kernel {} | measured read bandwidth: 1 thread {:.1} GB/s, 2 threads {:.1} GB/s",
        kernels::selected(),
        bw[0],
        bw[1]
    );
    let show = |p: Option<f64>| p.map_or("n/a".to_string(), |g| format!("{g:.0} G MAC/s"));
    println!(
        "measured vpdpbusd peak: 1 thread {}, 2 threads {}",
        show(peak[0]),
        show(peak[1])
    );
    println!(
        "{:<40} {:>3} {:>11} {:>9} {:>9} {:>10} {:>8}",
        "benchmark", "thr", "median µs", "GMAC/s", "% of peak", "weight GB/s", "% of BW"
    );
    for r in rows {
        let gbs = r.weight_bytes / r.secs / 1e9;
        let gmacs = r.macs / r.secs / 1e9;
        let of_peak = peak[r.threads.clamp(1, 2) - 1]
            .map_or("n/a".to_string(), |p| format!("{:.1}%", 100.0 * gmacs / p));
        println!(
            "{:<40} {:>3} {:>11.1} {:>9.1} {:>9} {:>10.1} {:>7.1}%",
            r.what,
            r.threads,
            r.secs * 1e6,
            gmacs,
            of_peak,
            gbs,
            100.0 * gbs / bw[r.threads.clamp(1, 2) - 1]
        );
    }
    println!();
}

fn benches(c: &mut Criterion) {
    let quick = quick();
    let mut rng = StdRng::seed_from_u64(0x9E37_79B9_7F4A_7C15);
    let bw_bytes = if quick { 64 << 20 } else { 1 << 30 };
    let bw = [
        measure_read_bandwidth_with(1, bw_bytes, 5).median_gb_s(),
        measure_read_bandwidth_with(2, bw_bytes, 5).median_gb_s(),
    ];
    println!("read bandwidth (median of 5 passes over {} MiB): 1 thread {:.1} GB/s, 2 threads {:.1} GB/s", bw_bytes >> 20, bw[0], bw[1]);
    let peak = [measure_int8_dot_peak(1, 5), measure_int8_dot_peak(2, 5)];
    let budget = Duration::from_millis(if quick { 100 } else { 1500 });
    let stream_bytes: usize = if quick { 32 << 20 } else { 512 << 20 };
    let mut summary = Vec::new();

    for (name, rows, cols) in SHAPES {
        let w = random_matrix(rows, cols, &mut rng);
        let copies: Vec<TernaryMatrix> = (0..stream_bytes.div_ceil(w.packed_bytes()))
            .map(|_| random_matrix(rows, cols, &mut rng))
            .collect();
        for tokens in [1usize, 128] {
            let x = random_x(tokens * cols, &mut rng);
            let mut y = vec![0f32; tokens * rows];
            let macs = (tokens * rows * cols) as f64;
            for nth in [1usize, 2] {
                threads::set_num_threads(nth);
                let id = format!("matmul/{tokens}tok/{nth}t/{name}");
                let mut g = c.benchmark_group(format!("matmul/{tokens}tok/{nth}t"));
                g.throughput(Throughput::Elements(macs as u64));
                if tokens == 1 {
                    let mut i = 0;
                    g.bench_function(name, |b| {
                        b.iter(|| {
                            i = (i + 1) % copies.len();
                            ternary_matmul(&copies[i], &x, 1, &mut y).unwrap();
                            black_box(&y);
                        })
                    });
                    let mut i = 0;
                    let secs = median_secs(budget, || {
                        i = (i + 1) % copies.len();
                        ternary_matmul(&copies[i], &x, 1, &mut y).unwrap();
                    });
                    summary.push(Row {
                        what: id,
                        threads: nth,
                        secs,
                        macs,
                        weight_bytes: w.packed_bytes() as f64,
                    });
                } else {
                    g.bench_function(name, |b| {
                        b.iter(|| {
                            ternary_matmul(&w, &x, tokens, &mut y).unwrap();
                            black_box(&y);
                        })
                    });
                    let secs =
                        median_secs(budget, || ternary_matmul(&w, &x, tokens, &mut y).unwrap());
                    summary.push(Row {
                        what: id,
                        threads: nth,
                        secs,
                        macs,
                        weight_bytes: w.packed_bytes() as f64,
                    });
                }
                g.finish();
            }
        }
    }

    // The GEMM bar is about a whole prompt: weigh the shapes as one layer runs them.
    for nth in [1usize, 2] {
        let (mut secs, mut macs) = (0.0, 0.0);
        for ((name, _, _), count) in SHAPES.iter().zip(SHAPES_PER_LAYER) {
            let id = format!("matmul/128tok/{nth}t/{name}");
            let row = summary.iter().find(|r: &&Row| r.what == id).expect("row");
            secs += row.secs * count as f64;
            macs += row.macs * count as f64;
        }
        summary.push(Row {
            what: "matmul/128tok/layer_mix (7 matmuls)".into(),
            threads: nth,
            secs,
            macs,
            weight_bytes: 0.0,
        });
    }

    // Load-time repacking, from I2_S bytes and from i8 values (weights per second).
    {
        let (rows, cols) = (FFN, HIDDEN);
        let n = rows * cols;
        let mut i2 = vec![0u8; i2s::packed_size(n)];
        for chunk in i2[..n / 4].chunks_mut(8) {
            let x: u64 = rng.random();
            let x = x & !((x & (x >> 1) & 0x5555_5555_5555_5555) << 1);
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        let values: Vec<i8> = (0..n)
            .map(|_| (rng.random_range(0..3u8)) as i8 - 1)
            .collect();
        let mut g = c.benchmark_group("repack");
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function("from_i2s_6912x2560", |b| {
            b.iter(|| black_box(TernaryMatrix::from_i2s(&i2, rows, cols).unwrap()))
        });
        g.bench_function("from_ternary_6912x2560", |b| {
            b.iter(|| black_box(TernaryMatrix::from_ternary(&values, rows, cols, 1.0).unwrap()))
        });
        g.finish();
        for (what, secs) in [
            (
                "from_i2s",
                median_secs(budget, || {
                    drop(TernaryMatrix::from_i2s(&i2, rows, cols).unwrap())
                }),
            ),
            (
                "from_ternary",
                median_secs(budget, || {
                    drop(TernaryMatrix::from_ternary(&values, rows, cols, 1.0).unwrap())
                }),
            ),
        ] {
            let per_s = n as f64 / secs;
            println!(
                "repack {what}: {:.2} G weights/s on one thread -> 2B4T's 2.08 G ternary weights in {:.2} s",
                per_s / 1e9,
                2.08e9 / per_s
            );
        }
    }

    // One decode step: 210 distinct matrices, 521 MB.
    let layers = if quick { 2 } else { LAYERS };
    let model: Vec<TernaryMatrix> = (0..layers)
        .flat_map(|_| LAYER)
        .map(|(r, k)| random_matrix(r, k, &mut rng))
        .collect();
    let weight_bytes: usize = model.iter().map(|m| m.packed_bytes()).sum();
    let macs: usize = model.iter().map(|m| m.rows() * m.cols()).sum();
    let xs: Vec<Vec<f32>> = [HIDDEN, FFN]
        .iter()
        .map(|&n| random_x(n, &mut rng))
        .collect();
    // Per layer: q, k, v share one input and gate, up another; `fused` runs each such group
    // as one multi-matmul (one quantization, one pool dispatch): 120 dispatches instead of 210.
    let mut y = vec![0f32; 3 * FFN];
    let mut step = |fused: bool| {
        for layer in model.chunks_exact(LAYER.len()) {
            if fused {
                let (a, rest) = y.split_at_mut(HIDDEN);
                let (b, c) = rest.split_at_mut(KV);
                let c = &mut c[..KV];
                ternary_matmul_multi(
                    &[&layer[0], &layer[1], &layer[2]],
                    &xs[0],
                    1,
                    &mut [a, b, c],
                )
                .unwrap();
                ternary_matmul(&layer[3], &xs[0], 1, &mut y[..HIDDEN]).unwrap();
                let (a, rest) = y.split_at_mut(FFN);
                ternary_matmul_multi(
                    &[&layer[4], &layer[5]],
                    &xs[0],
                    1,
                    &mut [a, &mut rest[..FFN]],
                )
                .unwrap();
                ternary_matmul(&layer[6], &xs[1], 1, &mut y[..HIDDEN]).unwrap();
            } else {
                for m in layer {
                    let x = if m.cols() == FFN { &xs[1] } else { &xs[0] };
                    ternary_matmul(m, x, 1, &mut y[..m.rows()]).unwrap();
                }
            }
        }
        black_box(&y);
    };
    let configs: [(&str, usize, PoolKind, Option<Duration>, bool); 6] = [
        ("1t", 1, PoolKind::Spin, None, false),
        ("2t", 2, PoolKind::Spin, None, false),
        ("2t/fused_qkv_gate_up", 2, PoolKind::Spin, None, true),
        (
            "2t/spin_pool_no_spin",
            2,
            PoolKind::Spin,
            Some(Duration::ZERO),
            false,
        ),
        (
            "2t/spin_pool_spin_2ms",
            2,
            PoolKind::Spin,
            Some(Duration::from_millis(2)),
            false,
        ),
        ("2t/rayon", 2, PoolKind::Rayon, None, false),
    ];
    let mut g = c.benchmark_group("decode_step");
    g.throughput(Throughput::Bytes(weight_bytes as u64));
    g.sample_size(10);
    for (name, nth, kind, spin, fused) in configs {
        threads::set_num_threads(nth);
        threads::set_pool_kind(kind);
        threads::set_spin_duration(spin.unwrap_or(Duration::from_micros(200)));
        g.bench_function(name, |b| b.iter(|| step(fused)));
        let secs = median_secs(budget * 2, || step(fused));
        summary.push(Row {
            what: format!("decode_step/{name} ({} matmuls)", model.len()),
            threads: nth,
            secs,
            macs: macs as f64,
            weight_bytes: weight_bytes as f64,
        });
    }
    g.finish();
    threads::set_pool_kind(PoolKind::Spin);
    threads::set_spin_duration(Duration::from_micros(200));
    print_summary(&summary, &bw, &peak);
}

fn config() -> Criterion {
    let quick = quick();
    Criterion::default()
        .sample_size(if quick { 10 } else { 20 })
        .warm_up_time(Duration::from_millis(if quick { 100 } else { 700 }))
        .measurement_time(Duration::from_millis(if quick { 300 } else { 2500 }))
}

criterion_group! {
    name = ternary;
    config = config();
    targets = benches
}
criterion_main!(ternary);
