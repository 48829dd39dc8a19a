//! The CPU memory of the paged KV cache: one buffer of keys and one of values per layer, each
//! `[n_pages, n_kv_head, head_dim · PAGE]`, laid out as [`KvHead`] reads them (keys transposed
//! within a page, values row-major). Buffers are anonymous memory maps: the OS maps a page of
//! memory only when it is first written, so memory grows with the pages actually used.

use bitnet_backend::dense::attention::{KvHead, PAGE};
use half::f16;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};

use super::pages::PageCopy;
use super::KvDtype;
use crate::{Error, Result};

/// `n` zeroed values in an anonymous memory map of their own.
///
/// Not `vec![0; n]`: once glibc has freed one block this large, it raises its mmap threshold
/// above it and serves the next from the heap, where calloc clears reused memory by writing
/// it, so a new cache would be resident in full from the start (measured: 2.38 GB peak RSS for
/// `bench --batched -npl 1,2,4,8,16` against 2.03 GB for `-npl 16` alone).
struct Zeroed<T> {
    map: memmap2::MmapMut,
    n: usize,
    _values: PhantomData<T>,
}

impl<T: bytemuck::Pod> Zeroed<T> {
    fn new(n: usize) -> Result<Self> {
        let bytes = n
            .checked_mul(std::mem::size_of::<T>())
            .ok_or_else(|| Error::InvalidArgument("KV cache size overflows".into()))?;
        // A map of at least one byte: a zero-length map is an error.
        let map = memmap2::MmapMut::map_anon(bytes.max(1)).map_err(|e| {
            Error::InvalidArgument(format!("cannot map {bytes} bytes for the KV cache: {e}"))
        })?;
        Ok(Self {
            map,
            n,
            _values: PhantomData,
        })
    }

    /// Maps every page of the buffer in now (by writing a zero to each), instead of at its first
    /// use.
    fn make_resident(&mut self) {
        for page in self.map.chunks_mut(4096) {
            page[0] = 0;
        }
    }
}

impl<T: bytemuck::Pod> Deref for Zeroed<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // Page-aligned, so the cast cannot fail on alignment.
        bytemuck::cast_slice(&self.map[..self.n * std::mem::size_of::<T>()])
    }
}

impl<T: bytemuck::Pod> DerefMut for Zeroed<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        bytemuck::cast_slice_mut(&mut self.map[..self.n * std::mem::size_of::<T>()])
    }
}

impl<T> std::fmt::Debug for Zeroed<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Zeroed({} values)", self.n)
    }
}

/// One layer's keys or values.
#[derive(Debug)]
enum Buf {
    F32(Zeroed<f32>),
    /// Raw `f16` bits.
    F16(Zeroed<u16>),
}

impl Buf {
    fn zeroed(dtype: KvDtype, n: usize) -> Result<Self> {
        Ok(match dtype {
            KvDtype::F32 => Buf::F32(Zeroed::new(n)?),
            KvDtype::F16 => Buf::F16(Zeroed::new(n)?),
        })
    }

    fn make_resident(&mut self) {
        match self {
            Buf::F32(b) => b.make_resident(),
            Buf::F16(b) => b.make_resident(),
        }
    }

    fn set(&mut self, i: usize, v: f32) {
        match self {
            Buf::F32(b) => b[i] = v,
            Buf::F16(b) => b[i] = f16::from_f32(v).to_bits(),
        }
    }

    fn copy_within(&mut self, src: usize, dst: usize, n: usize) {
        match self {
            Buf::F32(b) => b.copy_within(src..src + n, dst),
            Buf::F16(b) => b.copy_within(src..src + n, dst),
        }
    }

    /// Elements `at..at + n` as f32, appended to `out`.
    fn widen_into(&self, at: usize, n: usize, out: &mut Vec<f32>) {
        match self {
            Buf::F32(b) => out.extend_from_slice(&b[at..at + n]),
            Buf::F16(b) => out.extend(b[at..at + n].iter().map(|&x| f16::from_bits(x).to_f32())),
        }
    }
}

/// Scratch for the f32 copy of an F16 cache's head (one per attention task).
#[derive(Default)]
pub(crate) struct HeadScratch {
    keys: Vec<f32>,
    values: Vec<f32>,
    pages: Vec<u32>,
}

/// Keys and values of every layer, in pages.
#[derive(Debug)]
pub(crate) struct PageStore {
    keys: Vec<Buf>,
    values: Vec<Buf>,
    n_kv_head: usize,
    head_dim: usize,
    dtype: KvDtype,
}

impl PageStore {
    pub(crate) fn new(
        n_layer: usize,
        n_kv_head: usize,
        head_dim: usize,
        n_pages: usize,
        dtype: KvDtype,
    ) -> Result<Self> {
        let n = n_kv_head
            .checked_mul(head_dim)
            .and_then(|x| x.checked_mul(PAGE))
            .and_then(|x| x.checked_mul(n_pages))
            .ok_or_else(|| Error::InvalidArgument("KV cache size overflows".into()))?;
        let alloc = || {
            (0..n_layer)
                .map(|_| Buf::zeroed(dtype, n))
                .collect::<Result<_>>()
        };
        Ok(Self {
            keys: alloc()?,
            values: alloc()?,
            n_kv_head,
            head_dim,
            dtype,
        })
    }

    pub(crate) fn dtype(&self) -> KvDtype {
        self.dtype
    }

    /// Maps the memory of every page in now (see [`super::KvCache::make_resident`]).
    pub(crate) fn make_resident(&mut self) {
        for b in self.keys.iter_mut().chain(&mut self.values) {
            b.make_resident();
        }
    }

    pub(crate) fn n_layer(&self) -> usize {
        self.keys.len()
    }

    /// Elements of one page (every key/value head) in one layer's buffer.
    fn page_stride(&self) -> usize {
        self.n_kv_head * self.head_dim * PAGE
    }

    /// Writes the keys and values of `n_tokens` tokens of `layer` at positions `start_pos..`
    /// of the sequence whose pages are `pages`; `k` and `v` are token-major
    /// `[n_tokens, n_kv_head · head_dim]`.
    pub(crate) fn write(
        &mut self,
        layer: usize,
        pages: &[u32],
        start_pos: usize,
        k: &[f32],
        v: &[f32],
    ) -> Result<()> {
        let (h, d) = (self.n_kv_head, self.head_dim);
        let width = h * d;
        let n_tokens = k.len() / width.max(1);
        let covered = pages.len() * PAGE;
        if layer >= self.keys.len()
            || k.len() != n_tokens * width
            || v.len() != k.len()
            || start_pos + n_tokens > covered
        {
            return Err(Error::InvalidArgument(format!(
                "KV write: layer {layer} of {}, {} keys and {} values of {h} heads x {d} at \
                 position {start_pos}, pages for {covered} positions",
                self.keys.len(),
                k.len(),
                v.len()
            )));
        }
        let stride = self.page_stride();
        let (kb, vb) = (&mut self.keys[layer], &mut self.values[layer]);
        for t in 0..n_tokens {
            let pos = start_pos + t;
            let (page, j) = (pages[pos / PAGE] as usize, pos % PAGE);
            for g in 0..h {
                let src = (t * h + g) * d;
                let block = page * stride + g * d * PAGE;
                for c in 0..d {
                    kb.set(block + c * PAGE + j, k[src + c]);
                }
                let at = block + j * d;
                match &mut *vb {
                    Buf::F32(dst) => dst[at..at + d].copy_from_slice(&v[src..src + d]),
                    Buf::F16(dst) => {
                        for (o, &x) in dst[at..at + d].iter_mut().zip(&v[src..src + d]) {
                            *o = f16::from_f32(x).to_bits();
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Copies a whole page (every layer, keys and values).
    pub(crate) fn copy_page(&mut self, copy: PageCopy) {
        let stride = self.page_stride();
        let (src, dst) = (copy.src as usize * stride, copy.dst as usize * stride);
        for b in self.keys.iter_mut().chain(self.values.iter_mut()) {
            b.copy_within(src, dst, stride);
        }
    }

    /// f32 keys and values of key/value head `g` of `layer` for the sequence whose pages are
    /// `pages`, positions `0..len`. F32 caches are read in place; F16 pages are widened into
    /// `scratch`.
    pub(crate) fn head<'a>(
        &'a self,
        layer: usize,
        g: usize,
        pages: &'a [u32],
        len: usize,
        scratch: &'a mut HeadScratch,
    ) -> KvHead<'a> {
        let d = self.head_dim;
        let (stride, block) = (self.page_stride(), d * PAGE);
        let pages = &pages[..len.div_ceil(PAGE)];
        match (&self.keys[layer], &self.values[layer]) {
            (Buf::F32(k), Buf::F32(v)) => KvHead {
                keys: &k[..],
                values: &v[..],
                pages,
                page_stride: stride,
                head_offset: g * block,
                len,
            },
            (k, v) => {
                let HeadScratch {
                    keys,
                    values,
                    pages: ids,
                } = scratch;
                keys.clear();
                values.clear();
                for &p in pages {
                    let at = p as usize * stride + g * block;
                    k.widen_into(at, block, keys);
                    v.widen_into(at, block, values);
                }
                ids.clear();
                ids.extend(0..pages.len() as u32);
                KvHead {
                    keys,
                    values,
                    pages: ids,
                    page_stride: block,
                    head_offset: 0,
                    len,
                }
            }
        }
    }
}
