//! Batches of tokens from several sequences (llama.cpp's `llama_batch`), checked and grouped
//! for one forward pass.
//!
//! Every token of a [`Batch`] names its sequence and position, and whether its logits are
//! wanted. Tokens of different sequences may be interleaved in any order; those of one sequence,
//! in batch order, must hold consecutive positions starting at most at the sequence's current
//! length (starting earlier first forgets the positions from there on). The model runs each
//! sequence's tokens as one contiguous [`Run`] of rows; [`BatchLogits`] gives the logits back
//! by batch index.
//!
//! This module is pure bookkeeping (which row belongs to which sequence at which position); the
//! forward pass that consumes it is in [`crate::models`].

use crate::kv_cache::{KvCache, Run, SeqId};
use crate::{Error, Result};

/// Tokens of one forward pass (see the module docs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    tokens: Vec<u32>,
    positions: Vec<usize>,
    seqs: Vec<SeqId>,
    logits: Vec<bool>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one token of `seq` at position `pos`; `logits`: return its logits.
    pub fn add(&mut self, token: u32, pos: usize, seq: SeqId, logits: bool) {
        self.tokens.push(token);
        self.positions.push(pos);
        self.seqs.push(seq);
        self.logits.push(logits);
    }

    /// Adds `tokens` of `seq` at positions `start_pos..`, with logits for the last one only
    /// when `logits_last`.
    pub fn add_sequence(
        &mut self,
        seq: SeqId,
        start_pos: usize,
        tokens: &[u32],
        logits_last: bool,
    ) {
        for (i, &t) in tokens.iter().enumerate() {
            self.add(t, start_pos + i, seq, logits_last && i + 1 == tokens.len());
        }
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// True when the batch holds no token.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Number of tokens whose logits are wanted.
    pub fn n_outputs(&self) -> usize {
        self.logits.iter().filter(|&&l| l).count()
    }

    /// Removes every token.
    pub fn clear(&mut self) {
        self.tokens.clear();
        self.positions.clear();
        self.seqs.clear();
        self.logits.clear();
    }

    /// Token ids, in batch order.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Sequence of each token.
    pub fn seqs(&self) -> &[SeqId] {
        &self.seqs
    }

    /// Position of each token.
    pub fn positions(&self) -> &[usize] {
        &self.positions
    }

    /// Whether each token's logits are wanted.
    pub fn logits(&self) -> &[bool] {
        &self.logits
    }

    /// Checks the batch against `cache` (sequence ids, positions, context) and `n_vocab`, and
    /// groups its rows by sequence.
    pub(crate) fn plan(&self, cache: &KvCache, n_vocab: usize) -> Result<Plan> {
        if self.is_empty() {
            return Err(Error::InvalidArgument(
                "a batch needs at least one token".into(),
            ));
        }
        if let Some(i) = self.tokens.iter().position(|&t| t as usize >= n_vocab) {
            return Err(Error::InvalidArgument(format!(
                "token {} (batch index {i}) is outside the vocabulary of {n_vocab} tokens",
                self.tokens[i]
            )));
        }
        // Sequences in order of first appearance, each with its batch indices in order.
        let mut groups: Vec<(SeqId, Vec<usize>)> = Vec::new();
        for (i, &seq) in self.seqs.iter().enumerate() {
            cache.check_seq(seq)?;
            match groups.iter_mut().find(|(s, _)| *s == seq) {
                Some((_, rows)) => rows.push(i),
                None => groups.push((seq, vec![i])),
            }
        }
        let mut runs = Vec::with_capacity(groups.len());
        let mut order = Vec::with_capacity(self.len());
        for (seq, rows) in groups {
            let start = self.positions[rows[0]];
            let held = cache.seq_len(seq);
            if start > held {
                return Err(Error::Position(format!(
                    "sequence {seq} holds {held} positions but batch index {} puts a token at \
                     position {start} (positions must continue the sequence without a gap)",
                    rows[0]
                )));
            }
            for (k, &i) in rows.iter().enumerate() {
                if self.positions[i] != start + k {
                    return Err(Error::Position(format!(
                        "batch index {i}: sequence {seq} is at position {} there, but its tokens \
                         must have consecutive positions from {start} (expected {})",
                        self.positions[i],
                        start + k
                    )));
                }
            }
            let end = start + rows.len();
            if end > cache.seq_capacity() {
                return Err(Error::KvBudget(format!(
                    "sequence {seq} would reach {end} positions, past the context of {}",
                    cache.seq_capacity()
                )));
            }
            runs.push(Run {
                seq,
                start_pos: start,
                row0: order.len(),
                n_rows: rows.len(),
            });
            order.extend(rows);
        }
        Ok(Plan { runs, order })
    }
}

/// A checked batch: its rows grouped by sequence.
#[derive(Debug)]
pub(crate) struct Plan {
    /// One run per sequence, rows contiguous.
    pub runs: Vec<Run>,
    /// `order[row]` is the batch index of the model's row `row`.
    pub order: Vec<usize>,
}

/// The parts of `runs` that fall in rows `r0..r0 + n`, renumbered from `r0` (a sequence's rows
/// split between two pieces continue at the position where the first piece stopped).
pub(crate) fn runs_in(runs: &[Run], r0: usize, n: usize) -> Vec<Run> {
    runs.iter()
        .filter_map(|r| {
            let lo = r.row0.max(r0);
            let hi = (r.row0 + r.n_rows).min(r0 + n);
            (lo < hi).then(|| Run {
                seq: r.seq,
                start_pos: r.start_pos + (lo - r.row0),
                row0: lo - r0,
                n_rows: hi - lo,
            })
        })
        .collect()
}

/// Logits of the tokens of a batch that asked for them.
#[derive(Clone, Debug, Default)]
pub struct BatchLogits {
    values: Vec<f32>,
    n_vocab: usize,
    /// Batch index → row of `values`, for tokens with logits.
    rows: Vec<Option<usize>>,
}

impl BatchLogits {
    /// `values`: `[n_outputs, n_vocab]`, rows in batch order of the tokens with `wanted` set.
    pub(crate) fn new(values: Vec<f32>, n_vocab: usize, wanted: &[bool]) -> Self {
        let mut next = 0;
        let rows = wanted
            .iter()
            .map(|&w| {
                w.then(|| {
                    next += 1;
                    next - 1
                })
            })
            .collect();
        debug_assert_eq!(values.len(), next * n_vocab);
        Self {
            values,
            n_vocab,
            rows,
        }
    }

    /// Logits `[n_vocab]` of batch index `i`, if that token asked for them.
    pub fn get(&self, i: usize) -> Option<&[f32]> {
        let r = (*self.rows.get(i)?)?;
        Some(&self.values[r * self.n_vocab..(r + 1) * self.n_vocab])
    }

    /// Number of tokens with logits.
    pub fn n_outputs(&self) -> usize {
        self.values.len().checked_div(self.n_vocab).unwrap_or(0)
    }

    /// Vocabulary size (length of each row).
    pub fn n_vocab(&self) -> usize {
        self.n_vocab
    }

    /// Every row, `[n_outputs, n_vocab]`, in batch order.
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// Takes the rows, `[n_outputs, n_vocab]`.
    pub fn into_values(self) -> Vec<f32> {
        self.values
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv_cache::KvDtype;
    use candle_core::Device;

    fn cache() -> KvCache {
        KvCache::with_sequences(1, 1, 2, 32, 3, KvDtype::F32, &Device::Cpu).unwrap()
    }

    #[test]
    fn rows_are_grouped_by_sequence_in_order_of_appearance() -> Result<()> {
        let mut b = Batch::new();
        b.add(1, 0, 2, false);
        b.add(2, 0, 0, false);
        b.add(3, 1, 2, true);
        b.add(4, 1, 0, true);
        b.add(5, 2, 2, false);
        let plan = b.plan(&cache(), 10)?;
        assert_eq!(plan.order, vec![0, 2, 4, 1, 3]);
        let runs: Vec<_> = plan
            .runs
            .iter()
            .map(|r| (r.seq, r.start_pos, r.row0, r.n_rows))
            .collect();
        assert_eq!(runs, vec![(2, 0, 0, 3), (0, 0, 3, 2)]);
        assert_eq!(b.n_outputs(), 2);
        Ok(())
    }

    #[test]
    fn runs_split_at_piece_boundaries_continue_their_positions() {
        let run = |seq, start_pos, row0, n_rows| Run {
            seq,
            start_pos,
            row0,
            n_rows,
        };
        let runs = [run(4, 10, 0, 5), run(1, 0, 5, 3)];
        assert_eq!(runs_in(&runs, 0, 4), vec![run(4, 10, 0, 4)]);
        assert_eq!(
            runs_in(&runs, 4, 4),
            vec![run(4, 14, 0, 1), run(1, 0, 1, 3)]
        );
        assert_eq!(runs_in(&runs, 8, 4), vec![]);
    }

    #[test]
    fn bad_batches_name_the_problem() {
        let c = cache();
        let check = |b: &Batch| b.plan(&c, 10).map(|_| ()).unwrap_err();
        assert!(matches!(check(&Batch::new()), Error::InvalidArgument(_)));
        let mut b = Batch::new();
        b.add(10, 0, 0, true);
        assert!(matches!(check(&b), Error::InvalidArgument(_)), "token");
        let mut b = Batch::new();
        b.add(1, 0, 3, true);
        assert!(matches!(check(&b), Error::UnknownSequence(_)));
        let mut b = Batch::new();
        b.add(1, 1, 0, true);
        assert!(matches!(check(&b), Error::Position(_)), "gap");
        let mut b = Batch::new();
        b.add_sequence(0, 0, &[1, 2], true);
        b.add(3, 3, 0, true);
        assert!(matches!(check(&b), Error::Position(_)), "not consecutive");
        let mut b = Batch::new();
        b.add_sequence(1, 0, &[1; 33], true);
        assert!(matches!(check(&b), Error::KvBudget(_)), "past the context");
    }

    #[test]
    fn logits_come_back_by_batch_index() {
        let l = BatchLogits::new(vec![1.0, 2.0, 3.0, 4.0], 2, &[false, true, false, true]);
        assert_eq!(l.get(0), None);
        assert_eq!(l.get(1), Some(&[1.0, 2.0][..]));
        assert_eq!(l.get(3), Some(&[3.0, 4.0][..]));
        assert_eq!(l.get(4), None);
        assert_eq!(l.n_outputs(), 2);
    }
}
