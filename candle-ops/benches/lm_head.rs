//! The LM head of BitNet b1.58 2B4T (128256 × 2560) for one token, every way we could run it:
//! the backend's dense GEMV on F16 / Q8_0 bytes (what `bitnet-candle` uses), Candle's
//! `QMatMul` on Q8_0 / Q6_K / Q4_0, and Candle's plain f16 and f32 matmuls (`QMatMul` turns an
//! F16 `QTensor` into the f32 one, doubling the bytes read).
//!
//! `cargo bench -p bitnet-candle --bench lm_head` (threads: `BITNET_NUM_THREADS` for the
//! backend, `RAYON_NUM_THREADS` / `CANDLE_NUM_THREADS` for Candle; set all three alike).

use std::hint::black_box;
use std::time::Duration;

use bitnet_backend::dense::{self, DenseMatrix, DenseType};
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use half::f16;

const VOCAB: usize = 128_256;
const EMBD: usize = 2560;

fn values(n: usize) -> Vec<f32> {
    let mut s = 0x1234_5678_9abc_def0u64;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 0.1 - 0.05
        })
        .collect()
}

fn lm_head(c: &mut Criterion) {
    let w = values(VOCAB * EMBD);
    let x = values(EMBD);
    let f16_bytes: Vec<u8> = w
        .iter()
        .flat_map(|v| f16::from_f32(*v).to_le_bytes())
        .collect();
    let wt = Tensor::from_slice(&w, (VOCAB, EMBD), &Device::Cpu).unwrap();
    let q8 = QTensor::quantize(&wt, GgmlDType::Q8_0).unwrap();
    let q8_bytes = q8.data().unwrap().into_owned();
    let q6 = QTensor::quantize(&wt, GgmlDType::Q6K).unwrap();
    let q4 = QTensor::quantize(&wt, GgmlDType::Q4_0).unwrap();
    let xt = Tensor::from_slice(&x, (1, EMBD), &Device::Cpu).unwrap();

    let mut g = c.benchmark_group("lm_head_128256x2560_1tok");
    g.sample_size(20).measurement_time(Duration::from_secs(4));
    let mut y = vec![0f32; VOCAB];

    let m = DenseMatrix::new(DenseType::F16, &f16_bytes, VOCAB, EMBD).unwrap();
    g.throughput(Throughput::Bytes(f16_bytes.len() as u64));
    g.bench_function("backend_dense_f16", |b| {
        b.iter(|| dense::matmul(&m, black_box(&x), 1, &mut y).unwrap())
    });
    let m = DenseMatrix::new(DenseType::Q8_0, &q8_bytes, VOCAB, EMBD).unwrap();
    g.throughput(Throughput::Bytes(q8_bytes.len() as u64));
    g.bench_function("backend_dense_q8_0", |b| {
        b.iter(|| dense::matmul(&m, black_box(&x), 1, &mut y).unwrap())
    });

    for (name, q) in [
        ("candle_qmatmul_q8_0", q8),
        ("candle_qmatmul_q6k", q6),
        ("candle_qmatmul_q4_0", q4),
    ] {
        g.throughput(Throughput::Bytes(q.storage_size_in_bytes() as u64));
        let mm = QMatMul::from_qtensor(q).unwrap();
        g.bench_function(name, |b| b.iter(|| mm.forward(black_box(&xt)).unwrap()));
    }

    let w16 = wt.to_dtype(DType::F16).unwrap();
    let x16 = xt.to_dtype(DType::F16).unwrap();
    g.throughput(Throughput::Bytes(f16_bytes.len() as u64));
    g.bench_function("candle_matmul_f16", |b| {
        b.iter(|| black_box(&x16).matmul(&w16.t().unwrap()).unwrap())
    });
    g.throughput(Throughput::Bytes((VOCAB * EMBD * 4) as u64));
    g.bench_function("candle_matmul_f32", |b| {
        b.iter(|| black_box(&xt).matmul(&wt.t().unwrap()).unwrap())
    });
    g.finish();
}

criterion_group!(benches, lm_head);
criterion_main!(benches);
