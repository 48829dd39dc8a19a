//! GPU measurements for the device check (`examples/cuda_check.rs`, feature `cuda`): the
//! device-to-device copy bandwidth anchor and the ternary products alone over many distinct
//! weight matrices (so the weights stream from HBM, not from the ~50 MB L2), eagerly or replayed
//! as one CUDA graph, timed with CUDA events.

use candle_core::cuda_backend::cudarc::driver::sys::{
    CUevent_flags, CUgraphInstantiate_flags, CUstreamCaptureMode,
};
use candle_core::cuda_backend::cudarc::driver::CudaStream;
use candle_core::Device;

use crate::op::cuda::{addr, kernels, product, upload, ActBuffers, GpuTernary, Kernels, Quantize};
use crate::{Error, Result, TernaryMatMul};

fn err(e: impl std::fmt::Display) -> Error {
    Error::InvalidArgument(format!("CUDA: {e}"))
}

fn cuda(device: &Device) -> Result<&candle_core::CudaDevice> {
    match device {
        Device::Cuda(d) => Ok(d),
        _ => Err(Error::InvalidArgument("a CUDA device is needed".into())),
    }
}

/// Milliseconds of `reps` runs of `f` on the stream (after one warm-up run), from CUDA events.
fn time_ms(stream: &CudaStream, reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let flags = Some(CUevent_flags::CU_EVENT_DEFAULT);
    let start = stream.record_event(flags).map_err(err)?;
    for _ in 0..reps {
        f()?;
    }
    let end = stream.record_event(flags).map_err(err)?;
    end.synchronize().map_err(err)?;
    Ok(start.elapsed_ms(&end).map_err(err)? as f64 / reps as f64)
}

/// Device-to-device copy of `bytes` (16-byte accesses): GB/s counting bytes read plus written.
pub fn copy_gb_s(device: &Device, bytes: usize, reps: usize) -> Result<f64> {
    let k = kernels(cuda(device)?)?;
    let st = k.stream().clone();
    let n16 = bytes / 16;
    let src = st.alloc_zeros::<u8>(n16 * 16).map_err(err)?;
    let dst = st.alloc_zeros::<u8>(n16 * 16).map_err(err)?;
    let (s, d) = (addr(&src, &st, 0), addr(&dst, &st, 0));
    let ms = time_ms(&st, reps, || Ok(k.copy(s, d, n16)?))?;
    Ok(2.0 * (n16 * 16) as f64 / (ms * 1e-3) / 1e9)
}

/// Timing of the ternary products of `ops` (each on its own weights) for `tokens` tokens.
#[derive(Clone, Debug)]
pub struct ProductTiming {
    /// Milliseconds for one pass over every op.
    pub ms: f64,
    /// Weight bytes one pass reads.
    pub weight_bytes: usize,
    /// Multiply-adds of one pass.
    pub macs: f64,
    /// Whether the pass was replayed as one CUDA graph.
    pub graph: bool,
}

impl ProductTiming {
    pub fn weight_gb_s(&self) -> f64 {
        self.weight_bytes as f64 / (self.ms * 1e-3) / 1e9
    }

    pub fn tera_ops(&self) -> f64 {
        2.0 * self.macs / (self.ms * 1e-3) / 1e12
    }
}

/// The products alone (activations quantized once beforehand): one pass over `ops`, launched
/// eagerly or captured once into a graph and replayed. GEMV up to 8 tokens, GEMM above.
pub fn ternary_products(
    device: &Device,
    ops: &[&TernaryMatMul],
    tokens: usize,
    reps: usize,
    graph: bool,
) -> Result<ProductTiming> {
    let dev = cuda(device)?;
    let k = kernels(dev)?;
    let st = k.stream().clone();
    let ws: Vec<std::sync::Arc<GpuTernary>> = ops
        .iter()
        .map(|o| upload(o, dev))
        .collect::<candle_core::Result<_>>()?;
    let max_kp = ws.iter().map(|w| w.kp).max().unwrap_or(128);
    let max_rows = ws.iter().map(|w| w.rows).max().unwrap_or(1);
    // Random activations in [-4, 4), quantized once for the widest input.
    let x: Vec<f32> = (0..tokens * max_kp)
        .map(|i| {
            ((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as f32 / (1u64 << 21) as f32
                - 4.0
        })
        .collect();
    let xd = st.clone_htod(&x).map_err(err)?;
    let acts = ActBuffers::new(&st, tokens, max_kp)?;
    let y = st.alloc_zeros::<f32>(tokens * max_rows).map_err(err)?;
    let quantized: Vec<(usize, ActBuffers)> = {
        let mut v = Vec::new();
        let mut kps: Vec<usize> = ws.iter().map(|w| w.kp).collect();
        kps.sort_unstable();
        kps.dedup();
        for kp in kps {
            let a = ActBuffers::new(&st, tokens, kp)?;
            quantize(&k, &st, addr(&xd, &st, 0), tokens, kp, &a)?;
            v.push((kp, a));
        }
        v
    };
    drop(acts);
    let pass = |k: &Kernels| -> Result<()> {
        for w in &ws {
            let a = &quantized
                .iter()
                .find(|(kp, _)| *kp == w.kp)
                .expect("quantized above")
                .1;
            product(k, w, a, tokens, addr(&y, &st, 0), w.rows, false)?;
        }
        Ok(())
    };
    let ms = if graph {
        pass(&k)?;
        st.begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(err)?;
        let recorded = pass(&k);
        let g = st.end_capture(CUgraphInstantiate_flags(0)).map_err(err)?;
        recorded?;
        let g = g.ok_or_else(|| err("empty graph"))?;
        time_ms(&st, reps, || g.launch().map_err(err))?
    } else {
        time_ms(&st, reps, || pass(&k))?
    };
    Ok(ProductTiming {
        ms,
        weight_bytes: ws.iter().map(|w| w.bytes()).sum(),
        macs: ws.iter().map(|w| (w.rows * w.cols * tokens) as f64).sum(),
        graph,
    })
}

fn quantize(
    k: &Kernels,
    st: &std::sync::Arc<CudaStream>,
    x: u64,
    m: usize,
    kp: usize,
    a: &ActBuffers,
) -> Result<()> {
    k.quantize(&Quantize {
        x,
        up: 0,
        x_stride: kp,
        norm_w: 0,
        eps: 0.0,
        act: 0,
        m,
        m_pad: a.m_pad,
        cols: kp,
        kp,
        perm: a.perm,
        q: a.q(st, 0, 0),
        scales: a.scales(st, 0),
        sums: a.sums(st, 0),
        h_out: 0,
    })?;
    Ok(())
}
