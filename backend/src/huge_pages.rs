//! Large weight buffers on 2 MiB pages where the kernel allows it.
//!
//! A decode step streams every weight byte once. With 4 KiB pages that is a TLB miss (and,
//! in a VM, a two-level page walk) every 4 KiB of every stream; with transparent huge pages it
//! is one every 2 MiB. Linux is commonly configured with THP in `madvise` mode (this project's
//! machines are), where only ranges marked `MADV_HUGEPAGE` get them: this buffer is an
//! anonymous mapping whose start is aligned to 2 MiB and which is so marked. Elsewhere (no THP,
//! other systems) it is an ordinary zeroed anonymous mapping.

use std::ops::{Deref, DerefMut};

use memmap2::{MmapMut, MmapOptions};

/// Transparent huge page size on x86-64 and most aarch64 kernels.
pub const HUGE_PAGE: usize = 2 << 20;

/// A zero-initialised, 2 MiB-aligned byte buffer marked for transparent huge pages.
pub struct HugePageBuffer {
    map: MmapMut,
    start: usize,
    len: usize,
}

impl std::fmt::Debug for HugePageBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HugePageBuffer")
            .field("len", &self.len)
            .finish()
    }
}

impl HugePageBuffer {
    /// `len` zero bytes. Only the pages written or read count towards resident memory.
    pub fn zeroed(len: usize) -> std::io::Result<Self> {
        // One extra huge page of address space (never touched) lets the start be aligned.
        let map = MmapOptions::new().len(len + HUGE_PAGE).map_anon()?;
        let addr = map.as_ptr() as usize;
        let start = addr.next_multiple_of(HUGE_PAGE) - addr;
        #[cfg(target_os = "linux")]
        if len > 0 {
            // A kernel without THP refuses the advice: the buffer then simply keeps 4 KiB pages.
            let _ = map.advise_range(memmap2::Advice::HugePage, start, len);
        }
        Ok(Self { map, start, len })
    }
}

impl Deref for HugePageBuffer {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.map[self.start..self.start + self.len]
    }
}

impl DerefMut for HugePageBuffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.map[self.start..self.start + self.len]
    }
}

impl AsRef<[u8]> for HugePageBuffer {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_zeroed_and_writable() {
        for len in [0usize, 1, 4096, 3 << 20] {
            let mut b = HugePageBuffer::zeroed(len).unwrap();
            assert_eq!(b.len(), len);
            assert!(b.iter().all(|&x| x == 0));
            if len > 0 {
                assert_eq!(b.as_ptr() as usize % HUGE_PAGE, 0);
                b[len - 1] = 7;
                assert_eq!(b.as_ref()[len - 1], 7);
            }
        }
    }
}
