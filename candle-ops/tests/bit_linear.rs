//! `BitLinear` / `TernaryMatMul` as a Candle user sees them.

use std::sync::Arc;

use bitnet_backend::formats::{i2s, tq1_0, tq2_0};
use bitnet_backend::gguf::{GgmlType, TensorInfo};
use bitnet_candle::{BitLinear, ModelWeights, TernaryMatMul};
use candle_core::{DType, Device, Module, Tensor};

fn codes(n: usize, seed: u64) -> Vec<i8> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 33) % 3) as i8 - 1
        })
        .collect()
}

/// BitNet's W1.58A8 product in plain float: per-token absmax int8 fake quantization of `x`
/// (round half to even), times β·T.
fn reference(x: &Tensor, t: &[i8], rows: usize, cols: usize, beta: f32) -> Tensor {
    let xs: Vec<f32> = x
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let n = xs.len() / cols;
    let mut y = vec![0f32; n * rows];
    for tok in 0..n {
        let row = &xs[tok * cols..(tok + 1) * cols];
        let s = 127.0 / row.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-5);
        let q: Vec<f32> = row
            .iter()
            .map(|v| (v * s).round_ties_even().clamp(-128.0, 127.0))
            .collect();
        for r in 0..rows {
            let dot: f32 = (0..cols).map(|c| t[r * cols + c] as f32 * q[c]).sum();
            y[tok * rows + r] = dot * beta / s;
        }
    }
    let mut dims = x.dims().to_vec();
    *dims.last_mut().unwrap() = rows;
    Tensor::from_vec(y, dims, &Device::Cpu).unwrap()
}

fn assert_close(a: &Tensor, b: &Tensor, tol: f32) {
    assert_eq!(a.dims(), b.dims());
    let a: Vec<f32> = a
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let b: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!((x - y).abs() <= tol * scale, "element {i}: {x} vs {y}");
    }
}

#[test]
fn from_ternary_matches_w158a8_reference_for_any_rank() {
    let (rows, cols) = (96, 256);
    let t = codes(rows * cols, 1);
    let values = Tensor::from_vec(
        t.iter().map(|&v| v as f32).collect::<Vec<_>>(),
        (rows, cols),
        &Device::Cpu,
    )
    .unwrap();
    let layer = BitLinear::from_ternary(&values, 0.37).unwrap();
    assert_eq!((layer.out_features(), layer.in_features()), (rows, cols));
    for dims in [vec![5, cols], vec![2, 3, cols], vec![2, 1, 2, cols]] {
        let x = Tensor::randn(0f32, 1.0, dims, &Device::Cpu).unwrap();
        let y = layer.forward(&x).unwrap();
        assert_close(&y, &reference(&x, &t, rows, cols, 0.37), 1e-5);
    }
}

#[test]
fn from_float_ternarizes_with_absmean() {
    let w = Tensor::randn(0f32, 0.02, (64, 128), &Device::Cpu).unwrap();
    let layer = BitLinear::from_float(&w).unwrap();
    let wv: Vec<f32> = w.flatten_all().unwrap().to_vec1().unwrap();
    let beta =
        ((wv.iter().map(|v| v.abs() as f64).sum::<f64>() / wv.len() as f64) as f32).max(1e-5);
    let t: Vec<i8> = wv
        .iter()
        .map(|v| (v * (1.0 / beta)).round_ties_even().clamp(-1.0, 1.0) as i8)
        .collect();
    assert!((layer.effective_scale() - beta).abs() <= 1e-6 * beta);
    let x = Tensor::randn(0f32, 1.0, (3, 128), &Device::Cpu).unwrap();
    assert_close(
        &layer.forward(&x).unwrap(),
        &reference(&x, &t, 64, 128, beta),
        1e-5,
    );
}

#[test]
fn half_precision_activations_are_converted_and_returned_in_kind() {
    let t = codes(32 * 128, 2);
    let values = Tensor::from_vec(
        t.iter().map(|&v| v as f32).collect::<Vec<_>>(),
        (32, 128),
        &Device::Cpu,
    )
    .unwrap();
    let layer = BitLinear::from_ternary(&values, 0.5).unwrap();
    let x = Tensor::randn(0f32, 1.0, (4, 128), &Device::Cpu).unwrap();
    for dtype in [DType::BF16, DType::F16] {
        let xh = x.to_dtype(dtype).unwrap();
        let y = layer.forward(&xh).unwrap();
        assert_eq!(y.dtype(), dtype);
        assert_close(&y, &reference(&xh, &t, 32, 128, 0.5), 1e-2);
    }
}

#[test]
fn bad_inputs_are_clear_errors() {
    let layer =
        BitLinear::from_float(&Tensor::randn(0f32, 1.0, (16, 128), &Device::Cpu).unwrap()).unwrap();
    let err = |x: Tensor| layer.forward(&x).unwrap_err().to_string();
    let e = err(Tensor::zeros(128, DType::F32, &Device::Cpu).unwrap());
    assert!(e.contains("rank >= 2"), "{e}");
    let e = err(Tensor::zeros((2, 64), DType::F32, &Device::Cpu).unwrap());
    assert!(e.contains("in_features = 128"), "{e}");
    let e = err(Tensor::zeros((128, 2), DType::F32, &Device::Cpu)
        .unwrap()
        .t()
        .unwrap());
    assert!(e.contains("contiguous"), "{e}");
    let e = err(Tensor::zeros((2, 128), DType::U32, &Device::Cpu).unwrap());
    assert!(e.contains("f32, bf16 or f16"), "{e}");
    let not_ternary = Tensor::new(&[[1f32, 0.0], [2.0, -1.0]], &Device::Cpu).unwrap();
    let e = BitLinear::from_ternary(&not_ternary, 1.0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("row 1, column 0"), "{e}");
}

fn info(name: &str, ty: GgmlType, rows: usize, cols: usize, n_bytes: usize) -> TensorInfo {
    TensorInfo {
        name: name.into(),
        dims: vec![cols as u64, rows as u64],
        raw_type: 0,
        ggml_type: ty,
        offset: 0,
        n_bytes: n_bytes as u64,
    }
}

#[test]
fn gguf_formats_give_the_same_layer() {
    let (rows, cols, scale) = (8, 512, 0.25f32);
    let t = codes(rows * cols, 3);
    let x = Tensor::randn(0f32, 1.0, (3, cols), &Device::Cpu).unwrap();
    let want = reference(&x, &t, rows, cols, scale);
    let f16_bytes: Vec<u8> = t
        .iter()
        .flat_map(|&v| half::f16::from_f32(v as f32 * scale).to_le_bytes())
        .collect();
    for (ty, bytes) in [
        (GgmlType::I2S, i2s::pack(&t, scale).unwrap()),
        (GgmlType::TQ2_0, tq2_0::pack_ternary(&t, scale).unwrap()),
        (GgmlType::TQ1_0, tq1_0::pack_ternary(&t, scale).unwrap()),
        (GgmlType::F16, f16_bytes),
    ] {
        let layer = BitLinear::from_gguf(&info("w", ty, rows, cols, bytes.len()), &bytes).unwrap();
        assert_close(&layer.forward(&x).unwrap(), &want, 1e-5);
    }
    let e = BitLinear::from_gguf(&info("blk.0.w", GgmlType::Q4_0, rows, cols, 0), &[]).unwrap_err();
    assert!(e.to_string().contains("blk.0.w"), "{e}");
    let short = i2s::pack(&t, scale).unwrap();
    let e = BitLinear::from_gguf(
        &info("blk.1.w", GgmlType::I2S, rows, cols, 10),
        &short[..10],
    )
    .unwrap_err();
    assert!(e.to_string().contains("blk.1.w"), "{e}");
}

#[test]
fn clones_share_weights_and_types_are_thread_safe() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<BitLinear>();
    send_sync::<TernaryMatMul>();
    send_sync::<ModelWeights>();
    let layer =
        BitLinear::from_float(&Tensor::randn(0f32, 1.0, (4, 128), &Device::Cpu).unwrap()).unwrap();
    let copy = layer.clone();
    assert!(Arc::ptr_eq(layer.weights(), copy.weights()));
    let scaled = copy.with_output_scale(2.0);
    let x = Tensor::randn(0f32, 1.0, (1, 128), &Device::Cpu).unwrap();
    let (a, b) = (layer.forward(&x).unwrap(), scaled.forward(&x).unwrap());
    assert_close(&b, &(a * 2.0).unwrap(), 1e-6);
}
