//! Which pages hold which sequence: the bookkeeping half of the paged KV cache, with no data
//! (the same tables serve any storage, CPU buffers today).
//!
//! Every sequence is a list of page ids covering its positions `0..len` in order ([`PAGE`]
//! positions per page). A page may belong to several sequences at once (a copied prefix); it
//! is then read-only, and a sequence about to write into it first gets its own copy
//! (copy-on-write). Free pages are a stack: the most recently freed page is handed out first, so
//! the pages ever touched (and so the resident memory) stay at the peak number in use.

use bitnet_backend::dense::attention::PAGE;

use super::SeqId;

/// One sequence's pages.
#[derive(Clone, Debug, Default)]
struct SeqPages {
    pages: Vec<u32>,
    len: usize,
}

/// A page to duplicate (every layer, keys and values) before its new owner writes into it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PageCopy {
    pub src: u32,
    pub dst: u32,
}

/// The page tables of every sequence, reference counts and the free list.
#[derive(Clone, Debug)]
pub(crate) struct PageTable {
    seqs: Vec<SeqPages>,
    refs: Vec<u32>,
    free: Vec<u32>,
}

impl PageTable {
    pub(crate) fn new(n_pages: usize, n_seq: usize) -> Self {
        Self {
            seqs: vec![SeqPages::default(); n_seq],
            refs: vec![0; n_pages],
            // Reversed: page 0 is on top, so the lowest pages are used first.
            free: (0..n_pages as u32).rev().collect(),
        }
    }

    pub(crate) fn n_seq(&self) -> usize {
        self.seqs.len()
    }

    pub(crate) fn n_pages(&self) -> usize {
        self.refs.len()
    }

    pub(crate) fn free_pages(&self) -> usize {
        self.free.len()
    }

    pub(crate) fn len(&self, seq: SeqId) -> usize {
        self.seqs[seq].len
    }

    pub(crate) fn pages(&self, seq: SeqId) -> &[u32] {
        &self.seqs[seq].pages
    }

    /// Pages sequence `seq` holds that no other sequence shares.
    pub(crate) fn private_pages(&self, seq: SeqId) -> usize {
        let s = &self.seqs[seq];
        s.pages
            .iter()
            .filter(|&&p| self.refs[p as usize] == 1)
            .count()
    }

    /// Keeps positions `0..len` of `seq` (no change when it holds fewer).
    pub(crate) fn truncate(&mut self, seq: SeqId, len: usize) {
        let keep = len.div_ceil(PAGE);
        let s = &mut self.seqs[seq];
        s.len = s.len.min(len);
        for p in s.pages.drain(keep.min(s.pages.len())..) {
            let r = &mut self.refs[p as usize];
            *r -= 1;
            if *r == 0 {
                self.free.push(p);
            }
        }
    }

    /// Makes `dst` hold positions `0..len` of `src` by sharing its pages (`len <= len(src)`,
    /// `src != dst`; nothing is allocated).
    pub(crate) fn share_prefix(&mut self, src: SeqId, dst: SeqId, len: usize) {
        debug_assert!(src != dst && len <= self.seqs[src].len);
        self.truncate(dst, 0);
        let pages = self.seqs[src].pages[..len.div_ceil(PAGE)].to_vec();
        for &p in &pages {
            self.refs[p as usize] += 1;
        }
        self.seqs[dst] = SeqPages { pages, len };
    }

    /// New pages `seq` needs to write positions `start..end`, where `start` is its length.
    pub(crate) fn pages_needed(&self, seq: SeqId, start: usize, end: usize) -> usize {
        let s = &self.seqs[seq];
        debug_assert_eq!(s.len, start);
        let grow = end.div_ceil(PAGE).saturating_sub(s.pages.len());
        grow + usize::from(self.needs_copy(seq, start))
    }

    /// Whether writing at `pos` (inside the last page held) must first copy a shared page.
    fn needs_copy(&self, seq: SeqId, pos: usize) -> bool {
        let s = &self.seqs[seq];
        !pos.is_multiple_of(PAGE)
            && s.pages
                .get(pos / PAGE)
                .is_some_and(|&p| self.refs[p as usize] > 1)
    }

    /// Gives `seq` private pages for positions `start..end` (`start` = its length). The caller
    /// checked [`PageTable::pages_needed`] against [`PageTable::free_pages`]. Returns the copy
    /// to make first when the page holding `start` was shared.
    pub(crate) fn allocate(&mut self, seq: SeqId, start: usize, end: usize) -> Option<PageCopy> {
        let copy = self.needs_copy(seq, start).then(|| {
            let i = start / PAGE;
            let src = self.seqs[seq].pages[i];
            let dst = self.take_free();
            self.refs[src as usize] -= 1;
            self.seqs[seq].pages[i] = dst;
            PageCopy { src, dst }
        });
        while self.seqs[seq].pages.len() < end.div_ceil(PAGE) {
            let p = self.take_free();
            self.seqs[seq].pages.push(p);
        }
        copy
    }

    fn take_free(&mut self) -> u32 {
        let p = self
            .free
            .pop()
            .expect("pages_needed was checked against free_pages");
        self.refs[p as usize] = 1;
        p
    }

    /// Records that `seq` now holds positions `0..len` (its pages cover them).
    pub(crate) fn set_len(&mut self, seq: SeqId, len: usize) {
        debug_assert!(self.seqs[seq].pages.len() >= len.div_ceil(PAGE));
        self.seqs[seq].len = len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grow(t: &mut PageTable, seq: SeqId, n: usize) -> Option<PageCopy> {
        let start = t.len(seq);
        assert!(t.pages_needed(seq, start, start + n) <= t.free_pages());
        let copy = t.allocate(seq, start, start + n);
        t.set_len(seq, start + n);
        copy
    }

    #[test]
    fn pages_follow_lengths_and_come_back() {
        let mut t = PageTable::new(8, 2);
        assert_eq!(t.pages_needed(0, 0, 1), 1);
        grow(&mut t, 0, PAGE + 1);
        assert_eq!(t.pages(0), &[0, 1]);
        assert_eq!(t.free_pages(), 6);
        assert_eq!(
            t.pages_needed(0, PAGE + 1, 2 * PAGE),
            0,
            "fills its last page"
        );
        t.truncate(0, PAGE);
        assert_eq!((t.len(0), t.pages(0)), (PAGE, &[0u32][..]));
        grow(&mut t, 1, 1);
        assert_eq!(t.pages(1), &[1], "the page freed last is reused first");
        t.truncate(0, 0);
        t.truncate(1, 0);
        assert_eq!(t.free_pages(), 8);
    }

    #[test]
    fn shared_prefix_pages_are_copied_before_a_write() {
        let mut t = PageTable::new(8, 3);
        grow(&mut t, 0, 2 * PAGE + 3);
        t.share_prefix(0, 1, 2 * PAGE + 3);
        assert_eq!(t.pages(1), t.pages(0));
        assert_eq!(t.free_pages(), 5, "sharing allocates nothing");
        assert_eq!(t.private_pages(0), 0);
        // Sequence 1 continues inside the shared partial page: copy it, share the full ones.
        assert_eq!(t.pages_needed(1, 2 * PAGE + 3, 2 * PAGE + 4), 1);
        assert_eq!(grow(&mut t, 1, 1), Some(PageCopy { src: 2, dst: 3 }));
        assert_eq!(&t.pages(1)[..2], &t.pages(0)[..2]);
        // Sequence 0 now owns its last page alone: no copy.
        assert_eq!(grow(&mut t, 0, 1), None);
        // A prefix ending on a page boundary starts a fresh page.
        t.share_prefix(0, 2, 2 * PAGE);
        assert_eq!(t.pages_needed(2, 2 * PAGE, 2 * PAGE + 1), 1);
        assert_eq!(grow(&mut t, 2, 1), None);
        for s in 0..3 {
            t.truncate(s, 0);
        }
        assert_eq!(t.free_pages(), 8, "every reference released");
    }
}
