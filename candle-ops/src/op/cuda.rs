//! The CUDA side of the custom ops: the kernels of `kernels/bitnet.cu` (PTX built by build.rs),
//! one launch function per kernel (shared by the Candle ops and the decode graph), the device
//! copy of ternary weights, and `TernaryMatMul`'s forward.
//!
//! Weights go to the device once per GPU, repacked from the CPU matrix into the GPU layout that
//! `bitnet.cu` documents. Activations are quantized on the GPU with the CPU's operations (so the
//! int8 values, and hence the integer sums, are identical); one to eight tokens run the dp4a
//! GEMV, more the int8 tensor-core GEMM (`BITNET_CUDA_GEMM=dp4a` runs the GEMV for those too).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{
    CudaFunction, CudaSlice, CudaStream, DevicePtr, LaunchConfig, PushKernelArg,
};
use candle_core::cuda_backend::{CudaDevice, DeviceId};
use candle_core::{CudaStorage, DType, Layout, Shape, Storage, Tensor};

pub(crate) use super::gpu_layout::perm_stride;
use super::gpu_layout::{repack_rows, ROW_TILE};
use super::TernaryMatMul;

const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/bitnet.ptx"));
const MODULE: &str = "bitnet-rs";
/// Threads of the row kernels (quantize, RMSNorm): the same count everywhere, so a norm fused into
/// the quantizer sums in the same order as the stand-alone norm.
const ROW_THREADS: u32 = 1024;
const WARP_ROWS_THREADS: u32 = 256;
/// Tokens per GEMV launch.
pub(crate) const GEMV_MAX_TOKENS: usize = 8;
const GEMM_TILE: usize = ROW_TILE;

type CResult<T> = candle_core::Result<T>;

fn err(e: impl std::fmt::Display) -> candle_core::Error {
    candle_core::Error::Cuda(Box::new(std::io::Error::other(e.to_string())))
}

/// Every kernel of the module, loaded once per device.
pub(crate) struct Kernels {
    stream: Arc<CudaStream>,
    funcs: HashMap<&'static str, CudaFunction>,
}

const NAMES: &[&str] = &[
    "bitnet_quantize",
    "bitnet_gemv_1",
    "bitnet_gemv_2",
    "bitnet_gemv_3",
    "bitnet_gemv_4",
    "bitnet_gemv_5",
    "bitnet_gemv_6",
    "bitnet_gemv_7",
    "bitnet_gemv_8",
    "bitnet_gemm",
    "bitnet_dense_f16_1",
    "bitnet_dense_f16_2",
    "bitnet_dense_f16_3",
    "bitnet_dense_f16_4",
    "bitnet_dense_f16_5",
    "bitnet_dense_f16_6",
    "bitnet_dense_f16_7",
    "bitnet_dense_f16_8",
    "bitnet_dense_f32_1",
    "bitnet_dense_f32_2",
    "bitnet_dense_f32_3",
    "bitnet_dense_f32_4",
    "bitnet_dense_f32_5",
    "bitnet_dense_f32_6",
    "bitnet_dense_f32_7",
    "bitnet_dense_f32_8",
    "bitnet_embed_f16",
    "bitnet_embed_f32",
    "bitnet_rope_kv",
    "bitnet_attention",
    "bitnet_gated",
    "bitnet_rms_norm",
    "bitnet_copy",
];

static KERNELS: Mutex<Vec<(DeviceId, Arc<Kernels>)>> = Mutex::new(Vec::new());

/// The kernels of `dev` (loaded on first use).
pub(crate) fn kernels(dev: &CudaDevice) -> CResult<Arc<Kernels>> {
    let mut all = KERNELS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, k)) = all.iter().find(|(id, _)| *id == dev.id()) {
        return Ok(k.clone());
    }
    let mut funcs = HashMap::new();
    for &name in NAMES {
        let f = dev.get_or_load_custom_func(name, MODULE, PTX)?;
        funcs.insert(name, f.into_cuda_function());
    }
    let k = Arc::new(Kernels {
        stream: dev.cuda_stream(),
        funcs,
    });
    all.push((dev.id(), k.clone()));
    Ok(k)
}

/// Raw device address of `s[offset..]` (kernel arguments are plain addresses, so the launches
/// below are the same whether they run eagerly or are captured into a graph).
pub(crate) fn addr<T>(s: &CudaSlice<T>, stream: &CudaStream, offset: usize) -> u64 {
    let (p, _sync) = s.device_ptr(stream);
    p + (offset * std::mem::size_of::<T>()) as u64
}

/// Address of a contiguous tensor's first element, plus the guard that keeps its storage.
pub(crate) fn tensor_addr(t: &Tensor, stream: &CudaStream) -> CResult<u64> {
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cuda(cs) = &*storage else {
        candle_core::bail!(
            "expected a CUDA tensor, got one on {:?}",
            t.device().location()
        )
    };
    let start = layout
        .contiguous_offsets()
        .ok_or_else(|| err("expected a contiguous tensor"))?
        .0;
    storage_addr(cs, start, stream)
}

/// Address of element `start` of a CUDA storage (f32, f16, u32 or u8).
pub(crate) fn storage_addr(cs: &CudaStorage, start: usize, stream: &CudaStream) -> CResult<u64> {
    Ok(match cs.dtype() {
        DType::F32 => addr(cs.as_cuda_slice::<f32>()?, stream, start),
        DType::F16 => addr(cs.as_cuda_slice::<half::f16>()?, stream, start),
        DType::U32 => addr(cs.as_cuda_slice::<u32>()?, stream, start),
        DType::U8 => addr(cs.as_cuda_slice::<u8>()?, stream, start),
        other => candle_core::bail!("unsupported CUDA dtype {other:?}"),
    })
}

fn cfg(grid: (u32, u32), block: u32, smem: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (grid.0, grid.1, 1),
        block_dim: (block, 1, 1),
        shared_mem_bytes: smem,
    }
}

fn to_i32(v: usize, what: &str) -> CResult<i32> {
    i32::try_from(v).map_err(|_| {
        err(format!(
            "{what} = {v} does not fit the kernels' 32-bit indices"
        ))
    })
}

/// Arguments of the quantizer (see `bitnet_quantize`).
pub(crate) struct Quantize {
    pub x: u64,
    pub up: u64,
    pub x_stride: usize,
    pub norm_w: u64,
    pub eps: f32,
    /// 0 = relu², 1 = silu (only with `up`).
    pub act: i32,
    pub m: usize,
    pub m_pad: usize,
    pub cols: usize,
    pub kp: usize,
    pub perm: bool,
    pub q: u64,
    pub scales: u64,
    pub sums: u64,
    pub h_out: u64,
}

/// Arguments of a ternary product (see `bitnet_gemv_*` / `bitnet_gemm`).
pub(crate) struct Product<'a> {
    pub w: &'a GpuTernary,
    pub act: u64,
    pub m: usize,
    pub scales: u64,
    pub sums: u64,
    pub y: u64,
    pub y_stride: usize,
    pub add: bool,
}

impl Kernels {
    fn f(&self, name: &str) -> &CudaFunction {
        &self.funcs[name]
    }

    pub(crate) fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    pub(crate) fn quantize(&self, a: &Quantize) -> CResult<()> {
        let (m, cols, kp) = (
            to_i32(a.m, "m")?,
            to_i32(a.cols, "cols")?,
            to_i32(a.kp, "kp")?,
        );
        let (perm, ps) = (i32::from(a.perm), to_i32(perm_stride(a.kp), "perm stride")?);
        let xs = a.x_stride as i64;
        let mut b = self.stream.launch_builder(self.f("bitnet_quantize"));
        b.arg(&a.x)
            .arg(&a.up)
            .arg(&xs)
            .arg(&a.norm_w)
            .arg(&a.eps)
            .arg(&a.act);
        b.arg(&m).arg(&cols).arg(&kp).arg(&perm).arg(&ps);
        b.arg(&a.q).arg(&a.scales).arg(&a.sums).arg(&a.h_out);
        let grid = to_i32(a.m_pad, "rows")? as u32;
        // SAFETY: the argument list matches bitnet_quantize's signature; the caller sized every
        // buffer for m_pad rows of kp (or perm_stride) values.
        unsafe { b.launch(cfg((grid, 1), ROW_THREADS, 0)) }.map_err(err)?;
        Ok(())
    }

    /// GEMV for 1..=8 tokens (PERM activations).
    pub(crate) fn gemv(&self, p: &Product<'_>) -> CResult<()> {
        debug_assert!((1..=GEMV_MAX_TOKENS).contains(&p.m));
        let name = [
            "bitnet_gemv_1",
            "bitnet_gemv_2",
            "bitnet_gemv_3",
            "bitnet_gemv_4",
            "bitnet_gemv_5",
            "bitnet_gemv_6",
            "bitnet_gemv_7",
            "bitnet_gemv_8",
        ][p.m - 1];
        let w = p.w;
        let (kp, rows) = (to_i32(w.kp, "kp")?, to_i32(w.rows, "rows")?);
        let ps = to_i32(perm_stride(w.kp), "perm stride")?;
        let (ys, add) = (p.y_stride as i64, i32::from(p.add));
        let (wd, rs, ro) = (w.data_addr, w.scale_addr, w.oscale_addr);
        let mut b = self.stream.launch_builder(self.f(name));
        b.arg(&wd)
            .arg(&kp)
            .arg(&rows)
            .arg(&p.act)
            .arg(&ps)
            .arg(&p.scales)
            .arg(&p.sums);
        b.arg(&rs).arg(&ro).arg(&p.y).arg(&ys).arg(&add);
        let warps = WARP_ROWS_THREADS / 32;
        let grid = (w.rows as u32).div_ceil(warps);
        // SAFETY: matches bitnet_gemv_N; act holds m PERM rows, y m rows of y_stride.
        unsafe { b.launch(cfg((grid, 1), WARP_ROWS_THREADS, 0)) }.map_err(err)?;
        Ok(())
    }

    /// Tensor-core GEMM (ROWS activations padded to a multiple of 64 rows).
    pub(crate) fn gemm(&self, p: &Product<'_>) -> CResult<()> {
        let w = p.w;
        let (kp, rows, m) = (
            to_i32(w.kp, "kp")?,
            to_i32(w.rows, "rows")?,
            to_i32(p.m, "m")?,
        );
        let (ys, add) = (p.y_stride as i64, i32::from(p.add));
        let (wd, rs, ro) = (w.data_addr, w.scale_addr, w.oscale_addr);
        let mut b = self.stream.launch_builder(self.f("bitnet_gemm"));
        b.arg(&wd)
            .arg(&kp)
            .arg(&rows)
            .arg(&p.act)
            .arg(&m)
            .arg(&p.scales)
            .arg(&p.sums);
        b.arg(&rs).arg(&ro).arg(&p.y).arg(&ys).arg(&add);
        let grid = (
            (w.rows_pad / GEMM_TILE) as u32,
            p.m.div_ceil(GEMM_TILE) as u32,
        );
        // SAFETY: matches bitnet_gemm; act has m rounded up to 64 rows of kp bytes, the weights
        // rows_pad (a multiple of 64) rows.
        unsafe { b.launch(cfg(grid, 128, 0)) }.map_err(err)?;
        Ok(())
    }

    /// Dense head `y[t] = W · x[t]` for 1..=8 tokens; `f16` selects the weight type.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn dense(
        &self,
        f16: bool,
        w: u64,
        rows: usize,
        cols: usize,
        x: u64,
        m: usize,
        y: u64,
        y_stride: usize,
    ) -> CResult<()> {
        let kind = if f16 { "f16" } else { "f32" };
        let name = format!("bitnet_dense_{kind}_{m}");
        let f = self
            .funcs
            .iter()
            .find(|(n, _)| **n == name)
            .map(|(_, f)| f)
            .ok_or_else(|| err(format!("no kernel {name}")))?;
        let (r, c, ys) = (
            to_i32(rows, "rows")?,
            to_i32(cols, "cols")?,
            y_stride as i64,
        );
        let mut b = self.stream.launch_builder(f);
        b.arg(&w).arg(&r).arg(&c).arg(&x).arg(&y).arg(&ys);
        let grid = (rows as u32).div_ceil(WARP_ROWS_THREADS / 32);
        // SAFETY: matches bitnet_dense_*; x holds m rows of cols, y m rows of y_stride.
        unsafe { b.launch(cfg((grid, 1), WARP_ROWS_THREADS, 0)) }.map_err(err)?;
        Ok(())
    }

    pub(crate) fn embed(
        &self,
        f16: bool,
        table: u64,
        ids: u64,
        n: usize,
        cols: usize,
        out: u64,
    ) -> CResult<()> {
        let name = if f16 {
            "bitnet_embed_f16"
        } else {
            "bitnet_embed_f32"
        };
        let c = to_i32(cols, "cols")?;
        let mut b = self.stream.launch_builder(self.f(name));
        b.arg(&table).arg(&ids).arg(&c).arg(&out);
        // SAFETY: matches bitnet_embed_*; ids holds n valid row indices, out n rows of cols.
        unsafe { b.launch(cfg((n as u32, 1), 256, 0)) }.map_err(err)?;
        Ok(())
    }

    pub(crate) fn rope_kv(&self, a: &RopeKv) -> CResult<()> {
        let (nh, nkv, d) = (
            to_i32(a.n_head, "heads")?,
            to_i32(a.n_kv, "kv heads")?,
            to_i32(a.d, "head_dim")?,
        );
        let (ko, vo) = (to_i32(a.k_off, "k offset")?, to_i32(a.v_off, "v offset")?);
        let (sv, neox, rot) = (
            to_i32(a.start_val, "start")?,
            i32::from(a.neox),
            i32::from(a.rotate),
        );
        let (rs, nctx) = (a.row_stride as i64, to_i32(a.n_ctx, "n_ctx")?);
        let mut b = self.stream.launch_builder(self.f("bitnet_rope_kv"));
        b.arg(&a.rows)
            .arg(&rs)
            .arg(&nh)
            .arg(&nkv)
            .arg(&d)
            .arg(&ko)
            .arg(&vo);
        b.arg(&a.cos)
            .arg(&a.sin)
            .arg(&a.start_ptr)
            .arg(&sv)
            .arg(&neox)
            .arg(&rot);
        b.arg(&a.cache).arg(&nctx);
        // SAFETY: matches bitnet_rope_kv; rows holds n_tokens rows, the cache n_ctx positions,
        // and the positions start..start + n_tokens are inside the rope tables and the cache.
        unsafe { b.launch(cfg((a.n_tokens as u32, 1), 128, 0)) }.map_err(err)?;
        Ok(())
    }

    pub(crate) fn attention(&self, a: &Attention) -> CResult<()> {
        let (nh, nkv, d) = (
            to_i32(a.n_head, "heads")?,
            to_i32(a.n_kv, "kv heads")?,
            to_i32(a.d, "head_dim")?,
        );
        if a.d > 1024 || !a.d.is_multiple_of(4) || a.n_kv == 0 || !a.n_head.is_multiple_of(a.n_kv) {
            candle_core::bail!("CUDA attention: head_dim {} (a multiple of 4, at most 1024), {} heads over {} kv heads", a.d, a.n_head, a.n_kv)
        }
        let (nctx, sv, ss) = (
            to_i32(a.n_ctx, "n_ctx")?,
            to_i32(a.start_val, "start")?,
            to_i32(a.score_stride, "scores")?,
        );
        let (qs, os) = (a.q_stride as i64, a.out_stride as i64);
        let mut b = self.stream.launch_builder(self.f("bitnet_attention"));
        b.arg(&a.q)
            .arg(&qs)
            .arg(&a.cache)
            .arg(&nctx)
            .arg(&nh)
            .arg(&nkv)
            .arg(&d);
        b.arg(&a.start_ptr)
            .arg(&sv)
            .arg(&a.scale)
            .arg(&a.scores)
            .arg(&ss)
            .arg(&a.out)
            .arg(&os);
        let smem = ((a.d + 1024) * 4) as u32;
        // SAFETY: matches bitnet_attention; scores has n_tokens · n_head rows of score_stride
        // floats, at least start + n_tokens.
        unsafe { b.launch(cfg((a.n_head as u32, a.n_tokens as u32), 256, smem)) }.map_err(err)?;
        Ok(())
    }

    pub(crate) fn gated(&self, gu: u64, ff: usize, n: usize, act: i32, out: u64) -> CResult<()> {
        let (f, nt) = (to_i32(ff, "ff")?, to_i32(n, "tokens")?);
        let mut b = self.stream.launch_builder(self.f("bitnet_gated"));
        b.arg(&gu).arg(&f).arg(&nt).arg(&act).arg(&out);
        let grid = ((n * ff).div_ceil(256) as u32).clamp(1, 4096);
        // SAFETY: matches bitnet_gated; gu holds n rows of 2·ff, out n rows of ff.
        unsafe { b.launch(cfg((grid, 1), 256, 0)) }.map_err(err)?;
        Ok(())
    }

    pub(crate) fn rms_norm(
        &self,
        x: u64,
        w: u64,
        eps: f32,
        rows: usize,
        cols: usize,
        out: u64,
    ) -> CResult<()> {
        let c = to_i32(cols, "cols")?;
        let mut b = self.stream.launch_builder(self.f("bitnet_rms_norm"));
        b.arg(&x).arg(&w).arg(&eps).arg(&c).arg(&out);
        // SAFETY: matches bitnet_rms_norm; x and out hold rows rows of cols, w cols floats.
        unsafe { b.launch(cfg((rows as u32, 1), ROW_THREADS, 0)) }.map_err(err)?;
        Ok(())
    }

    /// Copies `n16` 16-byte words (the bandwidth anchor of the benchmarks).
    pub(crate) fn copy(&self, src: u64, dst: u64, n16: usize) -> CResult<()> {
        let n = n16 as i64;
        let mut b = self.stream.launch_builder(self.f("bitnet_copy"));
        b.arg(&src).arg(&dst).arg(&n);
        // SAFETY: matches bitnet_copy; both buffers hold n16 · 16 bytes.
        unsafe { b.launch(cfg((132 * 16, 1), 256, 0)) }.map_err(err)?;
        Ok(())
    }
}

/// Arguments of `bitnet_rope_kv`.
pub(crate) struct RopeKv {
    pub rows: u64,
    pub row_stride: usize,
    pub n_tokens: usize,
    pub n_head: usize,
    pub n_kv: usize,
    pub d: usize,
    pub k_off: usize,
    pub v_off: usize,
    pub cos: u64,
    pub sin: u64,
    pub start_ptr: u64,
    pub start_val: usize,
    pub neox: bool,
    pub rotate: bool,
    pub cache: u64,
    pub n_ctx: usize,
}

/// Arguments of `bitnet_attention`.
pub(crate) struct Attention {
    pub q: u64,
    pub q_stride: usize,
    pub cache: u64,
    pub n_ctx: usize,
    pub n_head: usize,
    pub n_kv: usize,
    pub d: usize,
    pub n_tokens: usize,
    pub start_ptr: u64,
    pub start_val: usize,
    pub scale: f32,
    pub scores: u64,
    pub score_stride: usize,
    pub out: u64,
    pub out_stride: usize,
}

/// Ternary weights on one GPU: the GPU layout (rows padded to 64), each row's weight scale and
/// optional output factor (concatenated ops keep one per matrix).
pub(crate) struct GpuTernary {
    _data: CudaSlice<u8>,
    _scale: CudaSlice<f32>,
    _oscale: Option<CudaSlice<f32>>,
    data_addr: u64,
    scale_addr: u64,
    oscale_addr: u64,
    pub(crate) rows: usize,
    rows_pad: usize,
    pub(crate) cols: usize,
    pub(crate) kp: usize,
}

impl GpuTernary {
    fn upload(op: &TernaryMatMul, dev: &CudaDevice) -> CResult<Self> {
        let stream = dev.cuda_stream();
        let parts = op.parts();
        let n_blocks = parts[0].weights.n_blocks();
        let (rows, cols, kp) = (op.out_features(), op.in_features(), n_blocks * 128);
        let rows_pad = rows.div_ceil(GEMM_TILE) * GEMM_TILE;
        let row_bytes = kp / 4;
        // Zero weights (code 1 in every field) for the padding rows.
        let mut host = vec![0x55u8; rows_pad * row_bytes];
        let mut scale = Vec::with_capacity(rows);
        let mut oscale = Vec::with_capacity(rows);
        let mut row0 = 0;
        for p in parts {
            let m = &p.weights;
            repack_rows(
                m.packed(),
                m.rows(),
                n_blocks,
                &mut host[row0 * row_bytes..],
            );
            scale.extend(std::iter::repeat_n(m.scale(), m.rows()));
            oscale.extend(std::iter::repeat_n(p.output_scale.unwrap_or(1.0), m.rows()));
            row0 += m.rows();
        }
        let data = stream.clone_htod(&host).map_err(err)?;
        let scale_d = stream.clone_htod(&scale).map_err(err)?;
        let oscale_d = match parts.iter().any(|p| p.output_scale.is_some()) {
            true => Some(stream.clone_htod(&oscale).map_err(err)?),
            false => None,
        };
        let data_addr = addr(&data, &stream, 0);
        let scale_addr = addr(&scale_d, &stream, 0);
        let oscale_addr = oscale_d.as_ref().map_or(0, |s| addr(s, &stream, 0));
        Ok(Self {
            _data: data,
            _scale: scale_d,
            _oscale: oscale_d,
            data_addr,
            scale_addr,
            oscale_addr,
            rows,
            rows_pad,
            cols,
            kp,
        })
    }

    /// Bytes of weights one product reads.
    pub(crate) fn bytes(&self) -> usize {
        self.rows * self.kp / 4
    }
}

/// One GPU's copy of an op's weights.
type DeviceCopy = (DeviceId, Arc<GpuTernary>);

/// Device copies of one op's weights, per GPU.
#[derive(Clone, Default)]
pub(crate) struct DeviceCopies(Arc<Mutex<Vec<DeviceCopy>>>);

/// The op's weights on `dev`, uploading them on first use.
pub(crate) fn upload(op: &TernaryMatMul, dev: &CudaDevice) -> CResult<Arc<GpuTernary>> {
    let mut copies = op
        .device_copies()
        .0
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some((_, g)) = copies.iter().find(|(id, _)| *id == dev.id()) {
        return Ok(g.clone());
    }
    let g = Arc::new(GpuTernary::upload(op, dev)?);
    copies.push((dev.id(), g.clone()));
    Ok(g)
}

/// `BITNET_CUDA_GEMM=dp4a`: run every product on the GEMV kernels (a fallback that checks and
/// measures the rest of the model without the tensor-core path).
pub(crate) fn gemm_disabled() -> bool {
    static OFF: OnceLock<bool> = OnceLock::new();
    *OFF.get_or_init(|| std::env::var("BITNET_CUDA_GEMM").is_ok_and(|v| v == "dp4a"))
}

/// Scratch for one product: quantized activations, then the scales and sums, in one allocation
/// (each allocation costs the op a few microseconds of host time).
pub(crate) struct ActBuffers {
    buf: CudaSlice<u8>,
    /// Bytes of quantized activations (the scales start there, the sums after them).
    q_bytes: usize,
    pub perm: bool,
    pub m_pad: usize,
}

impl ActBuffers {
    /// Buffers for `m` tokens of `kp` padded columns (the layout the product for `m` reads).
    pub(crate) fn new(stream: &Arc<CudaStream>, m: usize, kp: usize) -> CResult<Self> {
        let perm = m <= GEMV_MAX_TOKENS || gemm_disabled();
        let (m_pad, row) = match perm {
            true => (m, perm_stride(kp)),
            false => (m.div_ceil(GEMM_TILE) * GEMM_TILE, kp),
        };
        let q_bytes = m_pad * row;
        // SAFETY: every byte is written by bitnet_quantize before it is read.
        let buf = unsafe { stream.alloc::<u8>(q_bytes + 8 * m_pad) }.map_err(err)?;
        Ok(Self {
            buf,
            q_bytes,
            perm,
            m_pad,
        })
    }

    /// Address of the int8 activations of token `t`.
    pub(crate) fn q(&self, s: &CudaStream, t: usize, row_bytes: usize) -> u64 {
        addr(&self.buf, s, t * row_bytes)
    }

    /// Address of token `t`'s scale (f32).
    pub(crate) fn scales(&self, s: &CudaStream, t: usize) -> u64 {
        addr(&self.buf, s, self.q_bytes + 4 * t)
    }

    /// Address of token `t`'s sum (i32).
    pub(crate) fn sums(&self, s: &CudaStream, t: usize) -> u64 {
        addr(&self.buf, s, self.q_bytes + 4 * (self.m_pad + t))
    }

    pub(crate) fn q_bytes(&self) -> usize {
        self.q_bytes
    }
}

/// Runs the product of `w` on quantized activations of `m` tokens into `y`, choosing the kernel
/// as [`ActBuffers::new`] chose the layout.
pub(crate) fn product(
    k: &Kernels,
    w: &GpuTernary,
    acts: &ActBuffers,
    m: usize,
    y: u64,
    y_stride: usize,
    add: bool,
) -> CResult<()> {
    let s = k.stream();
    if !acts.perm {
        return k.gemm(&Product {
            w,
            act: acts.q(s, 0, 0),
            m,
            scales: acts.scales(s, 0),
            sums: acts.sums(s, 0),
            y,
            y_stride,
            add,
        });
    }
    let ps = perm_stride(w.kp);
    for t0 in (0..m).step_by(GEMV_MAX_TOKENS) {
        let n = GEMV_MAX_TOKENS.min(m - t0);
        k.gemv(&Product {
            w,
            act: acts.q(s, t0, ps),
            m: n,
            scales: acts.scales(s, t0),
            sums: acts.sums(s, t0),
            y: y + (t0 * y_stride * 4) as u64,
            y_stride,
            add,
        })?;
    }
    Ok(())
}

/// `TernaryMatMul::cuda_fwd`: quantize, multiply, rescale on the input's GPU.
pub(crate) fn forward(
    op: &TernaryMatMul,
    storage: &CudaStorage,
    layout: &Layout,
) -> CResult<(CudaStorage, Shape)> {
    let out_dims = op.output_shape(layout.dims())?;
    let (start, end) = op.contiguous_range(layout)?;
    if storage.dtype() != DType::F32 {
        candle_core::bail!(
            "bitnet-ternary-matmul: CUDA activations must be f32, got {:?}",
            storage.dtype()
        )
    }
    let dev = storage.device().clone();
    let w = upload(op, &dev)?;
    let k = kernels(&dev)?;
    let s = k.stream().clone();
    let m = (end - start) / op.in_features();
    let acts = ActBuffers::new(&s, m, w.kp)?;
    k.quantize(&Quantize {
        x: storage_addr(storage, start, &s)?,
        up: 0,
        x_stride: w.cols,
        norm_w: 0,
        eps: 0.0,
        act: 0,
        m,
        m_pad: acts.m_pad,
        cols: w.cols,
        kp: w.kp,
        perm: acts.perm,
        q: acts.q(&s, 0, 0),
        scales: acts.scales(&s, 0),
        sums: acts.sums(&s, 0),
        h_out: 0,
    })?;
    // SAFETY: every element is written by the product below.
    let y = unsafe { s.alloc::<f32>(m * w.rows) }.map_err(err)?;
    product(&k, &w, &acts, m, addr(&y, &s, 0), w.rows, false)?;
    Ok((CudaStorage::wrap_cuda_slice(y, dev), Shape::from(out_dims)))
}
