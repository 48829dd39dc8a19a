//! Ternary × int8 dot-product kernels and their run-time dispatch.
//!
//! Every kernel works on the repacked weight layout of [`crate::repack`] (strips of
//! [`STRIP_ROWS`] rows, [`BLOCK_COLS`]-column blocks of [`STRIP_BLOCK_BYTES`] bytes) and returns
//! the raw integer `Σ code·q` with unsigned codes `w + 1 ∈ {0, 1, 2}`; callers subtract the
//! per-token activation sum to get `Σ w·q` (exact in `i32`).
//!
//! One place decides which kernel runs: [`selected`] (best available, or the `BITNET_KERNEL`
//! override). Entry points taking an explicit [`KernelKind`] let tests run every path the
//! machine supports ([`available`]).

pub mod block_q8k;
pub mod scalar;

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86;

#[cfg(target_arch = "aarch64")]
pub(crate) mod aarch64;

use std::fmt;
use std::sync::OnceLock;

use crate::{Error, Result};

/// Weight rows interleaved into one strip (one 32-bit lane per row in a 512-bit register).
pub const STRIP_ROWS: usize = 16;
/// Columns per block; a row's codes for one block occupy 32 bytes, as in I2_S.
pub const BLOCK_COLS: usize = 128;
/// Bytes per 64-byte group: 16 rows × 4 bytes (each byte holds 4 codes).
pub const GROUP_BYTES: usize = 64;
/// Groups per block (`BLOCK_COLS / 16`).
pub const GROUPS_PER_BLOCK: usize = 8;
/// Bytes of one strip for one block of columns.
pub const STRIP_BLOCK_BYTES: usize = GROUP_BYTES * GROUPS_PER_BLOCK;
/// Largest supported column count: keeps every kernel accumulator (including the
/// plane-scaled ones, which carry a factor of up to 64) inside `i32`.
pub const MAX_COLS: usize = 1 << 18;

/// Environment variable that forces a kernel (`scalar|avx2|avxvnni|avx512vnni|neon|neon-dotprod`).
pub const KERNEL_ENV: &str = "BITNET_KERNEL";

/// One implementation of the ternary dot product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KernelKind {
    /// Portable Rust; the reference every other path must match bit for bit.
    Scalar,
    /// x86-64 AVX2 (`vpmaddubsw` + `vpmaddwd`).
    Avx2,
    /// x86-64 AVX-VNNI (`vpdpbusd` on 256-bit registers).
    AvxVnni,
    /// x86-64 AVX-512 VNNI (`vpdpbusd` on 512-bit registers).
    Avx512Vnni,
    /// aarch64 NEON without the dot-product extension (`smull`/`smlal` + `sadalp`).
    Neon,
    /// aarch64 NEON with the dot-product extension (`sdot`).
    NeonDotprod,
}

impl KernelKind {
    /// Every kind, slowest first.
    pub const ALL: [KernelKind; 6] = [
        KernelKind::Scalar,
        KernelKind::Avx2,
        KernelKind::AvxVnni,
        KernelKind::Avx512Vnni,
        KernelKind::Neon,
        KernelKind::NeonDotprod,
    ];

    /// The name used by `BITNET_KERNEL` and in reports.
    pub fn name(self) -> &'static str {
        match self {
            KernelKind::Scalar => "scalar",
            KernelKind::Avx2 => "avx2",
            KernelKind::AvxVnni => "avxvnni",
            KernelKind::Avx512Vnni => "avx512vnni",
            KernelKind::Neon => "neon",
            KernelKind::NeonDotprod => "neon-dotprod",
        }
    }

    /// Parses a name as accepted by `BITNET_KERNEL` (case-insensitive).
    pub fn parse(name: &str) -> Option<KernelKind> {
        let name = name.trim();
        KernelKind::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(name))
    }

    /// Whether this build, on this CPU, can run the kernel.
    pub fn is_available(self) -> bool {
        match self {
            KernelKind::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            KernelKind::Avx2 => x86::has_avx2(),
            #[cfg(target_arch = "x86_64")]
            KernelKind::AvxVnni => x86::has_avx_vnni(),
            #[cfg(target_arch = "x86_64")]
            KernelKind::Avx512Vnni => x86::has_avx512_vnni(),
            #[cfg(target_arch = "aarch64")]
            KernelKind::Neon => aarch64::has_neon(),
            #[cfg(target_arch = "aarch64")]
            KernelKind::NeonDotprod => aarch64::has_dotprod(),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Token-tile sizes of the multi-token kernel, largest first; the last is always 1.
    pub(crate) fn tile_sizes(self) -> &'static [usize] {
        match self {
            KernelKind::Avx512Vnni => &[16, 8, 4, 2, 1],
            KernelKind::Scalar => &[4, 2, 1],
            _ => &[4, 2, 1],
        }
    }

    fn ensure_available(self) -> Result<()> {
        if self.is_available() {
            Ok(())
        } else {
            Err(Error::KernelUnavailable {
                name: self.name().to_string(),
                reason: "not supported by this CPU or build target".to_string(),
            })
        }
    }
}

impl fmt::Display for KernelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Kernels this machine can run, slowest (scalar) first.
pub fn available() -> Vec<KernelKind> {
    KernelKind::ALL
        .into_iter()
        .filter(|k| k.is_available())
        .collect()
}

/// The fastest kernel this machine can run.
pub fn best() -> KernelKind {
    // Later entries of ALL are faster within an architecture.
    available().pop().unwrap_or(KernelKind::Scalar)
}

/// The kernel that `BITNET_KERNEL` asks for, or [`best`] when it is unset or empty.
///
/// Errors name the variable when its value is not a kernel name or names a kernel this
/// machine cannot run.
pub fn try_selected() -> Result<KernelKind> {
    match std::env::var(KERNEL_ENV) {
        Ok(v) if !v.trim().is_empty() => {
            let kind = KernelKind::parse(&v).ok_or_else(|| Error::KernelUnavailable {
                name: v.clone(),
                reason: format!(
                    "{KERNEL_ENV} must be one of scalar, avx2, avxvnni, avx512vnni, neon, neon-dotprod"
                ),
            })?;
            kind.ensure_available()?;
            Ok(kind)
        }
        _ => Ok(best()),
    }
}

/// The kernel used by the entry points that do not take a [`KernelKind`].
///
/// Read once per process. An invalid or unsupported `BITNET_KERNEL` does not fail: it falls
/// back to [`best`] and prints one warning line to stderr (use [`try_selected`] for an error).
pub fn selected() -> KernelKind {
    static SELECTED: OnceLock<KernelKind> = OnceLock::new();
    *SELECTED.get_or_init(|| match try_selected() {
        Ok(kind) => kind,
        Err(e) => {
            let kind = best();
            eprintln!("bitnet-backend: {e}; using the `{kind}` kernel instead");
            kind
        }
    })
}

pub(crate) fn check_available(kind: KernelKind) -> Result<()> {
    kind.ensure_available()
}

/// Raw `Σ code·q` of `out.len()` consecutive strips against one token's padded activations.
///
/// `strips` holds exactly those strips (`out.len() · n_blocks · STRIP_BLOCK_BYTES` bytes);
/// `act` holds `n_blocks · BLOCK_COLS` int8 values. The caller has checked `kind` is available.
pub(crate) fn dot_strips(
    kind: KernelKind,
    strips: &[u8],
    n_blocks: usize,
    act: &[i8],
    out: &mut [[i32; STRIP_ROWS]],
) {
    assert_eq!(strips.len(), out.len() * n_blocks * STRIP_BLOCK_BYTES);
    assert_eq!(act.len(), n_blocks * BLOCK_COLS);
    assert!(n_blocks * BLOCK_COLS <= MAX_COLS);
    debug_assert!(kind.is_available());
    match kind {
        #[cfg(target_arch = "x86_64")]
        KernelKind::Avx512Vnni => {
            // SAFETY: callers only pass kinds that passed `check_available`, so the CPU has
            // AVX-512 F/BW/VNNI; slice lengths were asserted above.
            unsafe { x86::avx512_vnni::dot_strips(strips, n_blocks, act, out) }
        }
        #[cfg(target_arch = "x86_64")]
        KernelKind::AvxVnni => {
            // SAFETY: as above, the CPU has AVX2 and AVX-VNNI; lengths asserted above.
            unsafe { x86::avx_vnni::dot_strips(strips, n_blocks, act, out) }
        }
        #[cfg(target_arch = "x86_64")]
        KernelKind::Avx2 => {
            // SAFETY: as above, the CPU has AVX2; lengths asserted above.
            unsafe { x86::avx2::dot_strips(strips, n_blocks, act, out) }
        }
        #[cfg(target_arch = "aarch64")]
        KernelKind::NeonDotprod => {
            // SAFETY: as above, the CPU has NEON and the dot-product extension.
            unsafe { aarch64::neon::dot_strips_dotprod(strips, n_blocks, act, out) }
        }
        #[cfg(target_arch = "aarch64")]
        KernelKind::Neon => {
            // SAFETY: as above, the CPU has NEON; lengths asserted above.
            unsafe { aarch64::neon::dot_strips(strips, n_blocks, act, out) }
        }
        _ => scalar::dot_strips(strips, n_blocks, act, out),
    }
}

/// Raw `Σ code·q` of one strip against a tile of `out.len()` tokens.
///
/// `acts` is the tile in the token-interleaved layout: for every 4-column group `kq`, the
/// 4 int8 values of each of the tile's tokens in turn (`(kq · n + t) · 4` is token `t`'s
/// group `kq`). `out.len()` must be one of `kind.tile_sizes()`.
pub(crate) fn dot_strip_tile(
    kind: KernelKind,
    strip: &[u8],
    n_blocks: usize,
    acts: &[i8],
    out: &mut [[i32; STRIP_ROWS]],
) {
    let n = out.len();
    assert!(kind.tile_sizes().contains(&n), "unsupported tile size {n}");
    assert_eq!(strip.len(), n_blocks * STRIP_BLOCK_BYTES);
    assert_eq!(acts.len(), n * n_blocks * BLOCK_COLS);
    assert!(n_blocks * BLOCK_COLS <= MAX_COLS);
    debug_assert!(kind.is_available());
    match kind {
        #[cfg(target_arch = "x86_64")]
        KernelKind::Avx512Vnni => {
            // SAFETY: the CPU has AVX-512 F/BW/VNNI (checked by the caller); lengths asserted.
            unsafe {
                match n {
                    16 => x86::avx512_vnni::dot_strip_tile::<16>(strip, n_blocks, acts, out),
                    8 => x86::avx512_vnni::dot_strip_tile::<8>(strip, n_blocks, acts, out),
                    4 => x86::avx512_vnni::dot_strip_tile::<4>(strip, n_blocks, acts, out),
                    2 => x86::avx512_vnni::dot_strip_tile::<2>(strip, n_blocks, acts, out),
                    _ => x86::avx512_vnni::dot_strip_tile::<1>(strip, n_blocks, acts, out),
                }
            }
        }
        #[cfg(target_arch = "x86_64")]
        KernelKind::AvxVnni => {
            // SAFETY: the CPU has AVX2 and AVX-VNNI (checked by the caller); lengths asserted.
            unsafe {
                match n {
                    4 => x86::avx_vnni::dot_strip_tile::<4>(strip, n_blocks, acts, out),
                    2 => x86::avx_vnni::dot_strip_tile::<2>(strip, n_blocks, acts, out),
                    _ => x86::avx_vnni::dot_strip_tile::<1>(strip, n_blocks, acts, out),
                }
            }
        }
        #[cfg(target_arch = "x86_64")]
        KernelKind::Avx2 => {
            // SAFETY: the CPU has AVX2 (checked by the caller); lengths asserted.
            unsafe {
                match n {
                    4 => x86::avx2::dot_strip_tile::<4>(strip, n_blocks, acts, out),
                    2 => x86::avx2::dot_strip_tile::<2>(strip, n_blocks, acts, out),
                    _ => x86::avx2::dot_strip_tile::<1>(strip, n_blocks, acts, out),
                }
            }
        }
        #[cfg(target_arch = "aarch64")]
        KernelKind::NeonDotprod => {
            // SAFETY: the CPU has NEON + dotprod (checked by the caller); lengths asserted.
            unsafe {
                match n {
                    4 => aarch64::neon::dot_strip_tile_dotprod::<4>(strip, n_blocks, acts, out),
                    2 => aarch64::neon::dot_strip_tile_dotprod::<2>(strip, n_blocks, acts, out),
                    _ => aarch64::neon::dot_strip_tile_dotprod::<1>(strip, n_blocks, acts, out),
                }
            }
        }
        #[cfg(target_arch = "aarch64")]
        KernelKind::Neon => {
            // SAFETY: the CPU has NEON (checked by the caller); lengths asserted.
            unsafe {
                match n {
                    4 => aarch64::neon::dot_strip_tile::<4>(strip, n_blocks, acts, out),
                    2 => aarch64::neon::dot_strip_tile::<2>(strip, n_blocks, acts, out),
                    _ => aarch64::neon::dot_strip_tile::<1>(strip, n_blocks, acts, out),
                }
            }
        }
        _ => scalar::dot_strip_tile(strip, n_blocks, acts, out),
    }
}

/// One token tile as the multi-tile kernel reads it: `n` tokens in the interleaved layout of
/// [`dot_strip_tile`].
#[derive(Clone, Copy)]
pub(crate) struct TileActs<'a> {
    pub n: usize,
    pub acts: &'a [i8],
}

/// A 64-byte-aligned cache line of scratch memory.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(crate) struct Line(#[allow(dead_code)] [u8; 64]);

/// Reusable scratch for [`dot_strip_tiles`] (one strip's unpacked codes; only the AVX-512
/// kernel uses it).
#[derive(Default)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) struct TileScratch(Vec<Line>);

impl TileScratch {
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    fn lines(&mut self, n: usize) -> &mut [Line] {
        if self.0.len() < n {
            self.0.resize(n, Line([0; 64]));
        }
        &mut self.0[..n]
    }
}

/// Raw `Σ code·q` of one strip against several token tiles; `out` holds one entry per token,
/// tile after tile. AVX-512 unpacks the strip's codes once into `scratch` and reuses them for
/// every tile; other kernels run [`dot_strip_tile`] per tile.
pub(crate) fn dot_strip_tiles(
    kind: KernelKind,
    strip: &[u8],
    n_blocks: usize,
    tiles: &[TileActs<'_>],
    scratch: &mut TileScratch,
    out: &mut [[i32; STRIP_ROWS]],
) {
    let n_tokens: usize = tiles.iter().map(|t| t.n).sum();
    assert_eq!(out.len(), n_tokens);
    assert_eq!(strip.len(), n_blocks * STRIP_BLOCK_BYTES);
    assert!(n_blocks * BLOCK_COLS <= MAX_COLS);
    for t in tiles {
        assert!(
            kind.tile_sizes().contains(&t.n),
            "unsupported tile size {}",
            t.n
        );
        assert_eq!(t.acts.len(), t.n * n_blocks * BLOCK_COLS);
    }
    #[cfg(target_arch = "x86_64")]
    if kind == KernelKind::Avx512Vnni && n_tokens >= x86::avx512_vnni::UNPACK_MIN_TOKENS {
        let buf = scratch.lines(n_blocks * GROUPS_PER_BLOCK * 4);
        // SAFETY: the caller checked the CPU has AVX-512 F/BW/VNNI (Avx512Vnni is available);
        // strip, tile and output lengths were asserted above, and `buf` holds 4 lines per group.
        unsafe { x86::avx512_vnni::dot_strip_tiles(strip, n_blocks, tiles, buf, out) };
        return;
    }
    let _ = &scratch;
    let mut rest = out;
    for t in tiles {
        let (mine, tail) = std::mem::take(&mut rest).split_at_mut(t.n);
        dot_strip_tile(kind, strip, n_blocks, t.acts, mine);
        rest = tail;
    }
}

/// Quantizes one activation row: writes `q` (same length as `x`) and returns
/// `(s, Σq)` with `s = 127 / max(|x|, 1e-5)`, or `None` when `x` holds a NaN or infinity.
///
/// Every kind rounds half to even and gives bit-identical results.
pub(crate) fn quantize_row(kind: KernelKind, x: &[f32], q: &mut [i8]) -> Option<(f32, i32)> {
    assert_eq!(x.len(), q.len());
    debug_assert!(kind.is_available());
    match kind {
        #[cfg(target_arch = "x86_64")]
        KernelKind::Avx512Vnni => {
            // SAFETY: the Avx512Vnni kind implies AVX-512 F/BW (checked by the caller);
            // lengths asserted equal above.
            unsafe { x86::avx512_vnni::quantize_row(x, q) }
        }
        #[cfg(target_arch = "x86_64")]
        KernelKind::Avx2 | KernelKind::AvxVnni => {
            // SAFETY: both kinds imply AVX2 (checked by the caller); lengths asserted above.
            unsafe { x86::avx2::quantize_row(x, q) }
        }
        #[cfg(target_arch = "aarch64")]
        KernelKind::Neon | KernelKind::NeonDotprod => {
            // SAFETY: both kinds imply NEON (checked by the caller); lengths asserted above.
            unsafe { aarch64::neon::quantize_row(x, q) }
        }
        _ => scalar::quantize_row(x, q),
    }
}

/// Reads every byte of `bytes` and returns a checksum, as fast as the CPU allows
/// (the memory-bandwidth probe).
pub(crate) fn read_checksum(bytes: &[u8]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        if x86::has_avx512_vnni() {
            // SAFETY: AVX-512 F is present (implied by the check above).
            return unsafe { x86::avx512_vnni::read_checksum(bytes) };
        }
        if x86::has_avx2() {
            // SAFETY: AVX2 is present (checked above).
            return unsafe { x86::avx2::read_checksum(bytes) };
        }
    }
    scalar::read_checksum(bytes)
}

/// Multiply-adds per [`dot_peak_rounds`] round (16 × 64-byte `vpdpbusd`).
pub(crate) const DOT_PEAK_MACS_PER_ROUND: usize = 16 * 64;

/// Runs `rounds` rounds of independent int8 dot-product instructions (AVX-512 VNNI only; `None`
/// elsewhere) and returns their checksum, `1024 · rounds` (wrapping): the compute probe.
pub(crate) fn dot_peak_rounds(rounds: usize) -> Option<i32> {
    #[cfg(target_arch = "x86_64")]
    if x86::has_avx512_vnni() {
        // SAFETY: AVX-512 F/BW/VNNI is present (checked above).
        return Some(unsafe { x86::avx512_vnni::dpbusd_rounds(rounds) });
    }
    let _ = rounds;
    None
}

/// `127 / max(absmax, 1e-5)`: the per-token activation scale, shared by every kernel so all
/// paths produce the same float.
#[inline]
pub(crate) fn act_scale(absmax: f32) -> f32 {
    127.0 / absmax.max(1e-5)
}

/// Bit pattern of the largest finite `f32` magnitude plus one: an absmax at or above it
/// means the row held an infinity or a NaN.
pub(crate) const NON_FINITE_BITS: u32 = 0x7F80_0000;
