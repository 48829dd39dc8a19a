//! x86-64 kernels, one file per instruction-set level. Detection results are cached by std.

pub(crate) mod avx2;
pub(crate) mod avx512_vnni;
pub(crate) mod avx_vnni;

/// Asks for the cache lines of `len` bytes from `start` (a hint: the address need not be
/// valid, a prefetch never faults, so it is formed with wrapping arithmetic and unchecked).
#[inline(always)]
pub(crate) fn prefetch_lines(start: *const u8, len: usize) {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
    for off in (0..len).step_by(64) {
        // SAFETY: prefetching has no architectural effect and never faults, whatever the
        // address.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(off) as *const i8) };
    }
}

/// As [`prefetch_lines`], into the L2 cache only (`prefetcht1`). For a stream that a kernel
/// decodes slowly this keeps more lines in flight than L1 prefetches, whose fill buffers are
/// few: on the Zen 4 guest it took the single-token Q8_K kernel from ~11 to ~18 GB/s.
#[inline(always)]
pub(crate) fn prefetch_lines_l2(start: *const u8, len: usize) {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
    for off in (0..len).step_by(64) {
        // SAFETY: prefetching has no architectural effect and never faults, whatever the
        // address.
        unsafe { _mm_prefetch::<_MM_HINT_T1>(start.wrapping_add(off) as *const i8) };
    }
}

pub(crate) fn has_avx2() -> bool {
    is_x86_feature_detected!("avx2")
}

pub(crate) fn has_avx_vnni() -> bool {
    has_avx2() && is_x86_feature_detected!("avxvnni")
}

pub(crate) fn has_avx512_vnni() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vnni")
}
