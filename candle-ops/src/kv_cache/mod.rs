//! The key/value cache of one or more sequences, paged.
//!
//! A cache is separate from the shared, immutable model weights (llama.cpp's model / context
//! split), so several caches can run on one model from several threads. One cache holds up to
//! `n_seq_max` sequences that share one budget of `n_ctx` positions, as llama.cpp's unified KV
//! cache does (`-c` shared by `-np` slots). Positions are granted in pages of [`PAGE`] (16): a
//! sequence of `L` positions holds `ceil(L / 16)` pages. The cache has
//! `ceil(n_ctx / 16) + n_seq_max - 1` pages, so sequences holding `n_ctx` positions in all
//! always fit, however the positions are spread (each sequence's last page may be partly used);
//! memory is touched only for the pages in use. A sequence copied from another ([`KvCache::seq_copy_prefix`]) shares its pages
//! until one of them writes into a shared page, which is then copied (copy-on-write), so a long
//! common prompt is stored once however many sequences continue it.
//!
//! Positions of a sequence are always `0..len`: a sequence grows at its end, and may be cut
//! back to any length (which forgets the positions after it).
//!
//! The bookkeeping ([`pages`]: which pages hold which sequence) is separate from the memory
//! ([`store`]: CPU buffers, allocated zeroed up front so that the OS maps memory only as pages
//! are first used; freed pages are reused before untouched ones).
//!
//! A model that runs the device-generic Candle-ops forward (on a GPU) keeps one sequence's keys
//! and values as tensors on its device instead ([`tensors`]); the page table still keeps its
//! length and budget. Such a cache holds exactly one sequence: batching sequences is the CPU
//! path's.

mod pages;
mod store;
mod tensors;

use bitnet_backend::dense::attention::KvHead;
pub use bitnet_backend::dense::attention::PAGE;
use candle_core::{DType, Device, Tensor};

use crate::models::DecodePlan;
use crate::{Error, Result};
use pages::{PageCopy, PageTable};
pub(crate) use store::HeadScratch;
use store::PageStore;
use tensors::LayerTensors;

/// Identifies a sequence of a [`KvCache`]: `0..n_seq_max`.
pub type SeqId = usize;

/// Element type of the cached keys and values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KvDtype {
    /// Exact: matches the f32 reference (default).
    #[default]
    F32,
    /// Half the memory; moves logits slightly (bitnet.cpp's default).
    F16,
}

impl KvDtype {
    fn dtype(self) -> DType {
        match self {
            KvDtype::F32 => DType::F32,
            KvDtype::F16 => DType::F16,
        }
    }

    /// Bytes per cached element.
    pub fn size_in_bytes(self) -> usize {
        self.dtype().size_in_bytes()
    }
}

/// One sequence's share of a forward pass: rows `row0..row0 + n_rows` of the batch (in the
/// order the model runs them) hold positions `start_pos..start_pos + n_rows` of `seq`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Run {
    pub seq: SeqId,
    pub start_pos: usize,
    pub row0: usize,
    pub n_rows: usize,
}

impl Run {
    pub(crate) fn end_pos(&self) -> usize {
        self.start_pos + self.n_rows
    }
}

/// Where the keys and values live.
#[derive(Debug)]
enum Memory {
    /// The tuned CPU path's pages.
    Pages(PageStore),
    /// One sequence's layer tensors on the model's device.
    Tensors(LayerTensors),
}

/// Keys and values of up to `n_seq_max` sequences (layout in the module docs).
#[derive(Debug)]
pub struct KvCache {
    table: PageTable,
    memory: Memory,
    n_ctx: usize,
    seq_capacity: usize,
}

impl KvCache {
    /// A cache for one sequence of up to `n_ctx` positions: CPU pages on the CPU, layer tensors
    /// (f32 only) on any other device.
    pub fn new(
        n_layer: usize,
        n_kv_head: usize,
        head_dim: usize,
        n_ctx: usize,
        dtype: KvDtype,
        device: &Device,
    ) -> Result<Self> {
        Self::with_sequences(n_layer, n_kv_head, head_dim, n_ctx, 1, dtype, device)
    }

    /// A cache for up to `n_seq_max` sequences sharing `n_ctx` positions (several sequences on
    /// the CPU only). Any one sequence may use the whole budget (see
    /// [`KvCache::with_seq_capacity`]).
    pub fn with_sequences(
        n_layer: usize,
        n_kv_head: usize,
        head_dim: usize,
        n_ctx: usize,
        n_seq_max: usize,
        dtype: KvDtype,
        device: &Device,
    ) -> Result<Self> {
        if n_ctx == 0 {
            return Err(Error::InvalidArgument("context length must be > 0".into()));
        }
        if n_seq_max == 0 {
            return Err(Error::InvalidArgument(
                "a KV cache needs at least one sequence (n_seq_max > 0)".into(),
            ));
        }
        if !device.is_cpu() {
            if n_seq_max > 1 {
                return Err(Error::InvalidArgument(format!(
                    "a KV cache on {:?} holds one sequence; caches of several sequences \
                     (n_seq_max {n_seq_max}) run on the CPU",
                    device.location()
                )));
            }
            return Self::on_device(n_layer, n_kv_head, head_dim, n_ctx, dtype, device);
        }
        let n_pages = Self::n_pages_for(n_ctx, n_seq_max)?;
        Ok(Self {
            table: PageTable::new(n_pages, n_seq_max),
            memory: Memory::Pages(PageStore::new(
                n_layer, n_kv_head, head_dim, n_pages, dtype,
            )?),
            n_ctx,
            seq_capacity: n_ctx,
        })
    }

    /// A one-sequence cache of layer tensors on `device` (any device, the CPU included), for the
    /// device-generic forward.
    pub(crate) fn on_device(
        n_layer: usize,
        n_kv_head: usize,
        head_dim: usize,
        n_ctx: usize,
        dtype: KvDtype,
        device: &Device,
    ) -> Result<Self> {
        if n_ctx == 0 {
            return Err(Error::InvalidArgument("context length must be > 0".into()));
        }
        let n_pages = Self::n_pages_for(n_ctx, 1)?;
        Ok(Self {
            table: PageTable::new(n_pages, 1),
            memory: Memory::Tensors(LayerTensors::new(
                n_layer, n_kv_head, head_dim, n_ctx, dtype, device,
            )?),
            n_ctx,
            seq_capacity: n_ctx,
        })
    }

    /// Pages for `n_seq_max` sequences sharing `n_ctx` positions: one partly used last page per
    /// sequence on top of the budget (see the module docs).
    fn n_pages_for(n_ctx: usize, n_seq_max: usize) -> Result<usize> {
        let n_pages = n_ctx.div_ceil(PAGE) + n_seq_max - 1;
        if u32::try_from(n_pages).is_err() {
            return Err(Error::InvalidArgument(format!(
                "a context of {n_ctx} positions is too large"
            )));
        }
        Ok(n_pages)
    }

    /// Limits every sequence to `max_len` positions (e.g. the model's rope tables), below the
    /// shared budget.
    pub fn with_seq_capacity(mut self, max_len: usize) -> Self {
        self.seq_capacity = max_len.min(self.n_ctx);
        self
    }

    /// Makes the whole budget resident now, as llama.cpp's cache is from its creation, so that
    /// memory use stays flat as sequences grow (a server then fails at start, not under load,
    /// when the budget does not fit in memory). Otherwise a CPU page's memory is mapped in when
    /// it is first written. Does nothing for a cache on another device.
    pub fn make_resident(&mut self) {
        if let Memory::Pages(store) = &mut self.memory {
            store.make_resident();
        }
    }

    /// The position budget shared by all sequences.
    pub fn capacity(&self) -> usize {
        self.n_ctx
    }

    /// The most positions one sequence may hold (the budget, unless limited).
    pub fn seq_capacity(&self) -> usize {
        self.seq_capacity
    }

    /// Number of sequences (ids `0..n_seq_max`).
    pub fn n_seq_max(&self) -> usize {
        self.table.n_seq()
    }

    /// Element type of the cache.
    pub fn dtype(&self) -> KvDtype {
        match &self.memory {
            Memory::Pages(store) => store.dtype(),
            Memory::Tensors(_) => KvDtype::F32,
        }
    }

    /// Where the keys and values live: `Device::Cpu` for CPU pages, else the layer tensors'
    /// device.
    pub fn device(&self) -> Device {
        match &self.memory {
            Memory::Pages(_) => Device::Cpu,
            Memory::Tensors(t) => t.device(),
        }
    }

    /// Whether this cache holds CPU pages (the tuned path's), else layer tensors.
    pub(crate) fn is_paged(&self) -> bool {
        matches!(self.memory, Memory::Pages(_))
    }

    /// Pages in the cache ([`PAGE`] positions each): `ceil(n_ctx / PAGE) + n_seq_max - 1`.
    pub fn n_pages(&self) -> usize {
        self.table.n_pages()
    }

    /// Pages held by at least one sequence (a shared page counts once).
    pub fn pages_in_use(&self) -> usize {
        self.table.n_pages() - self.table.free_pages()
    }

    /// Pages no sequence holds.
    pub fn free_pages(&self) -> usize {
        self.table.free_pages()
    }

    /// Pages `seq` holds that no other sequence shares (what clearing it gives back).
    pub fn private_pages(&self, seq: SeqId) -> usize {
        match seq < self.n_seq_max() {
            true => self.table.private_pages(seq),
            false => 0,
        }
    }

    /// New pages `seq` needs to grow from its length to `end` positions (a shared page it would
    /// write into first counts as one).
    pub fn pages_to_grow(&self, seq: SeqId, end: usize) -> usize {
        let len = self.seq_len(seq);
        match seq < self.n_seq_max() && end > len {
            true => self.table.pages_needed(seq, len, end),
            false => 0,
        }
    }

    /// Positions held by `seq` (0 for an id outside `0..n_seq_max`).
    pub fn seq_len(&self, seq: SeqId) -> usize {
        match seq < self.n_seq_max() {
            true => self.table.len(seq),
            false => 0,
        }
    }

    /// Checks a sequence id.
    pub fn check_seq(&self, seq: SeqId) -> Result<()> {
        if seq < self.n_seq_max() {
            return Ok(());
        }
        Err(Error::UnknownSequence(format!(
            "sequence {seq} does not exist: the cache has sequences 0..{}",
            self.n_seq_max()
        )))
    }

    /// Keeps positions `0..len` of `seq` and forgets the rest (no change when it holds fewer).
    pub fn seq_truncate(&mut self, seq: SeqId, len: usize) -> Result<()> {
        self.check_seq(seq)?;
        self.table.truncate(seq, len);
        Ok(())
    }

    /// Forgets every position of `seq`.
    pub fn seq_clear(&mut self, seq: SeqId) -> Result<()> {
        self.seq_truncate(seq, 0)
    }

    /// Makes `dst` hold positions `0..len` of `src` (what it held before is forgotten). The
    /// pages are shared, not copied: no budget is used until one of the two writes into a
    /// shared page. `src == dst` cuts the sequence back to `len`.
    pub fn seq_copy_prefix(&mut self, src: SeqId, dst: SeqId, len: usize) -> Result<()> {
        self.check_seq(src)?;
        self.check_seq(dst)?;
        let have = self.table.len(src);
        if len > have {
            return Err(Error::Position(format!(
                "cannot copy {len} positions of sequence {src}: it holds {have}"
            )));
        }
        match src == dst {
            true => self.table.truncate(dst, len),
            false => self.table.share_prefix(src, dst, len),
        }
        Ok(())
    }

    /// Gives `seq` its own copy of its last page when that page is partial and shared, so that
    /// no other sequence has to copy it when it writes there (uses one free page).
    pub fn seq_own_tail(&mut self, seq: SeqId) -> Result<()> {
        self.check_seq(seq)?;
        let len = self.table.len(seq);
        let need = self.table.pages_needed(seq, len, len);
        if need > self.table.free_pages() {
            return Err(Error::KvBudget(format!(
                "no free page to copy sequence {seq}'s last page into"
            )));
        }
        if let Some(copy) = self.table.allocate(seq, len, len) {
            self.copy_page(copy);
        }
        Ok(())
    }

    fn copy_page(&mut self, copy: PageCopy) {
        match &mut self.memory {
            Memory::Pages(store) => store.copy_page(copy),
            // A one-sequence cache never shares a page, so it never copies one.
            Memory::Tensors(_) => {}
        }
    }

    /// Forgets every sequence but `seq`.
    pub fn seq_keep(&mut self, seq: SeqId) -> Result<()> {
        self.check_seq(seq)?;
        for s in (0..self.n_seq_max()).filter(|&s| s != seq) {
            self.table.truncate(s, 0);
        }
        Ok(())
    }

    /// Forgets every position of every sequence.
    pub fn reset(&mut self) {
        for s in 0..self.n_seq_max() {
            self.table.truncate(s, 0);
        }
    }

    /// Makes room for a forward pass: each run's sequence is cut back to the run's start (as
    /// documented for a failed pass too), then given private pages for the run's positions.
    /// Fails, allocating nothing, when the free pages do not cover every run.
    pub(crate) fn prepare(&mut self, runs: &[Run]) -> Result<()> {
        for r in runs {
            self.table.truncate(r.seq, r.start_pos);
        }
        let needed: usize = runs
            .iter()
            .map(|r| self.table.pages_needed(r.seq, r.start_pos, r.end_pos()))
            .sum();
        let free = self.table.free_pages();
        if needed > free {
            return Err(Error::KvBudget(format!(
                "the batch needs {needed} more KV pages of {PAGE} positions but {free} of {} are \
                 free (the n_ctx of {} positions is shared by all sequences)",
                self.n_pages(),
                self.n_ctx
            )));
        }
        for r in runs {
            if let Some(copy) = self.table.allocate(r.seq, r.start_pos, r.end_pos()) {
                self.copy_page(copy);
            }
        }
        Ok(())
    }

    /// Records that every run's positions are now in the cache.
    pub(crate) fn commit(&mut self, runs: &[Run]) {
        for r in runs {
            self.table.set_len(r.seq, r.end_pos());
        }
    }

    /// Forgets the runs' positions after a failed pass (and their pages).
    pub(crate) fn rollback(&mut self, runs: &[Run]) {
        for r in runs {
            self.table.truncate(r.seq, r.start_pos);
        }
    }

    /// Writes the keys and values of `run` for `layer` (`k`, `v`: `[n_rows, n_kv_head · head_dim]`).
    pub(crate) fn write(&mut self, layer: usize, run: &Run, k: &[f32], v: &[f32]) -> Result<()> {
        let Memory::Pages(store) = &mut self.memory else {
            return Err(wrong_kind());
        };
        store.write(layer, self.table.pages(run.seq), run.start_pos, k, v)
    }

    /// Read access to the CPU pages (the tuned path's attention).
    pub(crate) fn paged(&self) -> Result<Paged<'_>> {
        match &self.memory {
            Memory::Pages(store) => Ok(Paged {
                table: &self.table,
                store,
            }),
            Memory::Tensors(_) => Err(wrong_kind()),
        }
    }

    /// The layer tensors and the decode plan slot of a device cache.
    pub(crate) fn tensor_parts(&mut self) -> Result<(&[Tensor], &mut Option<Box<DecodePlan>>)> {
        match &mut self.memory {
            Memory::Tensors(t) => Ok(t.parts()),
            Memory::Pages(_) => Err(wrong_kind()),
        }
    }

    /// Why single-token steps on this cache run without a CUDA graph, if they do.
    pub(crate) fn cuda_graph_error(&self) -> Option<&str> {
        match &self.memory {
            Memory::Tensors(t) => t.plan()?.graph_error(),
            Memory::Pages(_) => None,
        }
    }

    /// Number of layers.
    pub(crate) fn n_layer(&self) -> usize {
        match &self.memory {
            Memory::Pages(store) => store.n_layer(),
            Memory::Tensors(t) => t.n_layer(),
        }
    }
}

fn wrong_kind() -> Error {
    Error::InvalidArgument(
        "this KV cache was made for a model on another device or path; create it with that \
         model's new_cache"
            .into(),
    )
}

/// The CPU pages of a cache, read by the tuned path's attention.
pub(crate) struct Paged<'a> {
    table: &'a PageTable,
    store: &'a PageStore,
}

impl<'a> Paged<'a> {
    /// f32 keys and values of key/value head `g` of `layer` for `seq`, positions `0..len`
    /// (`len` may run past the committed length into the pages of the pass in progress).
    pub(crate) fn head(
        &self,
        layer: usize,
        seq: SeqId,
        g: usize,
        len: usize,
        scratch: &'a mut HeadScratch,
    ) -> KvHead<'a> {
        self.store
            .head(layer, g, self.table.pages(seq), len, scratch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Resident memory of this process, from /proc (Linux).
    #[cfg(target_os = "linux")]
    fn rss_bytes() -> usize {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
        let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
        pages * 4096
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_resident_cache_maps_its_whole_budget_in_at_once() -> Result<()> {
        // 2 layers x (keys + values) x 4 heads x 64 dims x 4096 positions x 4 bytes = 16 MiB.
        let mut cache = KvCache::with_sequences(2, 4, 64, 4096, 2, KvDtype::F32, &Device::Cpu)?;
        let before = rss_bytes();
        cache.make_resident();
        let grown = rss_bytes().saturating_sub(before);
        assert!(
            grown >= 15 << 20,
            "RSS grew by {grown} bytes, expected 16 MiB"
        );
        assert_eq!(cache.pages_in_use(), 0, "no page is taken by a sequence");
        Ok(())
    }

    fn key(view: &KvHead<'_>, pos: usize, c: usize) -> f32 {
        let at = view.pages[pos / PAGE] as usize * view.page_stride + view.head_offset;
        view.keys[at + c * PAGE + pos % PAGE]
    }

    fn value(view: &KvHead<'_>, pos: usize, c: usize, d: usize) -> f32 {
        let at = view.pages[pos / PAGE] as usize * view.page_stride + view.head_offset;
        view.values[at + (pos % PAGE) * d + c]
    }

    /// Token-major `[n, heads · dims]` rows: value = sign · (100·pos + 10·head + dim).
    fn rows(start: usize, n: usize, sign: f32) -> Vec<f32> {
        (0..n * 6)
            .map(|i| {
                let (t, g, c) = (i / 6, (i / 3) % 2, i % 3);
                sign * (100 * (start + t) + 10 * g + c) as f32
            })
            .collect()
    }

    fn rows_of(seq: SeqId, start_pos: usize, n_rows: usize) -> Run {
        Run {
            seq,
            start_pos,
            row0: 0,
            n_rows,
        }
    }

    fn run(cache: &mut KvCache, seq: SeqId, start: usize, n: usize) -> Result<()> {
        let r = rows_of(seq, start, n);
        cache.prepare(&[r])?;
        cache.write(0, &r, &rows(start, n, 1.0), &rows(start, n, -1.0))?;
        cache.commit(&[r]);
        Ok(())
    }

    fn check_positions(cache: &KvCache, seq: SeqId, len: usize) {
        let mut scratch = HeadScratch::default();
        for g in 0..2 {
            let view = cache.paged().unwrap().head(0, seq, g, len, &mut scratch);
            for pos in 0..len {
                for c in 0..3 {
                    let want = (100 * pos + 10 * g + c) as f32;
                    assert_eq!(key(&view, pos, c), want, "seq {seq} pos {pos}");
                    assert_eq!(value(&view, pos, c, 3), -want);
                }
            }
        }
    }

    #[test]
    fn write_then_read_every_position_of_every_head() -> Result<()> {
        // 2 heads of 3 dims, 40 positions (3 pages).
        let mut cache = KvCache::new(1, 2, 3, 40, KvDtype::F32, &Device::Cpu)?;
        run(&mut cache, 0, 0, 2)?;
        run(&mut cache, 0, 2, 20)?;
        assert_eq!(cache.seq_len(0), 22);
        check_positions(&cache, 0, 22);
        assert!(cache.check_seq(1).is_err());
        assert!(matches!(
            run(&mut cache, 0, 22, 30),
            Err(Error::KvBudget(_))
        ));
        assert_eq!(
            cache.seq_len(0),
            22,
            "a rejected pass keeps what came before"
        );
        cache.reset();
        assert_eq!(cache.seq_len(0), 0);
        assert_eq!(cache.free_pages(), 3);
        Ok(())
    }

    #[test]
    fn sequences_share_the_budget_and_copied_prefixes() -> Result<()> {
        // 32 positions for 3 sequences: 2 + 2 pages.
        let mut cache = KvCache::with_sequences(1, 2, 3, 32, 3, KvDtype::F32, &Device::Cpu)?;
        run(&mut cache, 0, 0, 20)?;
        cache.seq_copy_prefix(0, 1, 18)?;
        assert_eq!((cache.seq_len(1), cache.pages_in_use()), (18, 2));
        // Sequence 1 diverges at 18, sequence 0 keeps its own positions 18 and 19.
        let r = rows_of(1, 18, 1);
        cache.prepare(&[r])?;
        cache.write(0, &r, &rows(500, 1, 1.0), &rows(500, 1, -1.0))?;
        cache.commit(&[r]);
        assert_eq!(
            cache.pages_in_use(),
            3,
            "the shared partial page was copied"
        );
        check_positions(&cache, 0, 20);
        check_positions(&cache, 1, 18);
        assert!(
            cache.seq_copy_prefix(0, 2, 21).is_err(),
            "longer than the source"
        );
        // A copy that owns its partial last page at once: the source writes without a copy.
        cache.seq_copy_prefix(0, 2, 20)?;
        cache.seq_own_tail(2)?;
        assert_eq!(cache.pages_in_use(), 4);
        assert_eq!(cache.pages_to_grow(0, 21), 0);
        check_positions(&cache, 2, 20);
        cache.seq_clear(2)?;
        // Two more sequences' worth of pages do not fit: 4 pages in all.
        run(&mut cache, 2, 0, 16)?;
        assert!(matches!(run(&mut cache, 2, 16, 1), Err(Error::KvBudget(_))));
        cache.seq_keep(2)?;
        assert_eq!((cache.seq_len(0), cache.seq_len(1)), (0, 0));
        assert_eq!(cache.pages_in_use(), 1);
        Ok(())
    }

    #[test]
    fn f16_cache_round_trips_within_half_precision() -> Result<()> {
        let mut cache = KvCache::new(1, 1, 4, 4, KvDtype::F16, &Device::Cpu)?;
        let x = [0.1f32, -2.5, 3.0, 1e-3];
        let r = rows_of(0, 0, 1);
        cache.prepare(&[r])?;
        cache.write(0, &r, &x, &x)?;
        let mut scratch = HeadScratch::default();
        let paged = cache.paged()?;
        let view = paged.head(0, 0, 0, 1, &mut scratch);
        for (c, want) in x.iter().enumerate() {
            for got in [key(&view, 0, c), value(&view, 0, c, 4)] {
                assert!((got - want).abs() <= want.abs() * 1e-3, "{got} vs {want}");
            }
        }
        Ok(())
    }
}
