//! The sequences of the generator's cache as slots: the tokens each one holds, whether a
//! request owns it, and when it was last used; and the choices made from them (which idle slot
//! a prompt gets, where a cached prefix can be copied from, which cache to evict).

use crate::kv_cache::SeqId;

/// One sequence of the cache.
#[derive(Clone, Debug, Default)]
pub(super) struct Slot {
    /// Tokens whose keys and values the sequence holds, in order.
    pub cached: Vec<u32>,
    /// An active request owns the sequence.
    pub busy: bool,
    /// Generator clock at the last release (0: never used).
    pub last_used: u64,
}

/// Length of the common prefix of `a` and `b`.
pub(super) fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// The idle slot for `prompt`: the longest cached common prefix (when `reuse`), then the least
/// recently used. Returns it and that prefix length.
pub(super) fn choose_idle(slots: &[Slot], prompt: &[u32], reuse: bool) -> Option<(SeqId, usize)> {
    slots
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.busy)
        .map(|(i, s)| {
            let common = if reuse {
                common_prefix(&s.cached, prompt)
            } else {
                0
            };
            (i, common, s.last_used)
        })
        // Longest prefix first, then oldest use, then lowest id.
        .min_by(|a, b| b.1.cmp(&a.1).then(a.2.cmp(&b.2)).then(a.0.cmp(&b.0)))
        .map(|(i, common, _)| (i, common))
}

/// The slot other than `except` whose cached tokens share the longest prefix with `prompt`.
pub(super) fn best_source(slots: &[Slot], prompt: &[u32], except: SeqId) -> Option<(SeqId, usize)> {
    slots
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != except)
        .map(|(i, s)| (i, common_prefix(&s.cached, prompt)))
        .filter(|&(_, common)| common > 0)
        .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
}

/// The least recently used idle slot holding tokens, other than those in `keep`.
pub(super) fn eviction_candidate(slots: &[Slot], keep: &[SeqId]) -> Option<SeqId> {
    slots
        .iter()
        .enumerate()
        .filter(|(i, s)| !s.busy && !s.cached.is_empty() && !keep.contains(i))
        .min_by_key(|(i, s)| (s.last_used, *i))
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(cached: &[u32], busy: bool, last_used: u64) -> Slot {
        Slot {
            cached: cached.to_vec(),
            busy,
            last_used,
        }
    }

    #[test]
    fn idle_choice_prefers_the_longest_prefix_then_the_oldest() {
        let slots = [
            slot(&[1, 2, 3, 4], true, 0),
            slot(&[1, 2], false, 5),
            slot(&[1, 2, 9], false, 3),
            slot(&[], false, 1),
        ];
        assert_eq!(
            choose_idle(&slots, &[1, 2, 3], true),
            Some((2, 2)),
            "tie: the older"
        );
        assert_eq!(choose_idle(&slots, &[1, 2, 9, 9], true), Some((2, 3)));
        assert_eq!(choose_idle(&slots, &[7], true), Some((3, 0)));
        assert_eq!(choose_idle(&slots, &[1, 2, 3], false), Some((3, 0)));
        assert_eq!(best_source(&slots, &[1, 2, 3, 5], 1), Some((0, 3)));
        assert_eq!(best_source(&slots, &[8], 1), None);
        assert_eq!(eviction_candidate(&slots, &[]), Some(2));
        assert_eq!(eviction_candidate(&slots, &[2]), Some(1));
        assert_eq!(common_prefix(&[1, 2, 3], &[1, 2]), 2);
    }
}
