//! Choosing the next token from logits: greedy, temperature, top-k, top-p, repeat penalty.
//!
//! Order of operations (as llama.cpp and transformers apply them): repeat penalty on the raw
//! logits, then top-k, then temperature and softmax, then top-p, then a draw from a seeded RNG.
//! A temperature of 0 means greedy (argmax, lowest id on ties).

use std::collections::HashSet;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::{Error, Result};

/// Sampling settings.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// Softmax temperature; `<= 0` selects greedy decoding.
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens; 0 disables.
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches `top_p`; 1.0 disables.
    pub top_p: f32,
    /// Penalty for tokens seen in the last `repeat_last_n` tokens (CTRL rule: positive logits
    /// are divided, negative ones multiplied); 1.0 disables.
    pub repeat_penalty: f32,
    /// How many recent tokens the repeat penalty looks at.
    pub repeat_last_n: usize,
    /// RNG seed; the same seed, logits and history give the same tokens.
    pub seed: u64,
}

impl Default for SamplingParams {
    /// Greedy decoding.
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: 0,
        }
    }
}

impl SamplingParams {
    /// Checks the settings are meaningful.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(Error::InvalidArgument(what));
        if !self.temperature.is_finite() {
            return bad(format!(
                "temperature must be finite, got {}",
                self.temperature
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("top_p must be in (0, 1], got {}", self.top_p));
        }
        if !(self.repeat_penalty.is_finite() && self.repeat_penalty > 0.0) {
            return bad(format!(
                "repeat_penalty must be positive, got {}",
                self.repeat_penalty
            ));
        }
        Ok(())
    }

    /// True when the choice is deterministic argmax.
    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0 || self.top_k == 1
    }
}

/// Logits this far below the maximum (in units of the temperature) get weight below
/// e^-46 ≈ 1e-20 of the best token's; even all 128k of them together stay under 1e-15 of the
/// total, below what a 53-bit uniform draw resolves, so they are skipped without an `exp`.
const NEGLIGIBLE: f32 = 46.0;

/// Histogram bins the top-p search sorts the weights into (see [`nucleus`]).
const NUCLEUS_BINS: usize = 1024;

/// A token that may be drawn and its unnormalized probability.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Candidate {
    id: u32,
    logit: f32,
    weight: f32,
}

/// A stateful sampler (owns the RNG and the buffers each draw reuses).
#[derive(Clone, Debug)]
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
    penalized: Vec<f32>,
    /// The draw's distribution: per-token weights of the whole vocabulary, or candidates.
    dense: Dense,
    candidates: Vec<Candidate>,
}

/// Weights of every vocabulary entry (0 for those that cannot be drawn) and the sums of
/// [`CHUNK`]-token runs of them, so that a draw skips whole runs.
#[derive(Clone, Debug, Default)]
struct Dense {
    weights: Vec<f32>,
    chunk_sums: Vec<f64>,
    /// Whether the last fill used these (else `candidates`).
    active: bool,
}

/// Tokens per run of [`Dense::chunk_sums`].
const CHUNK: usize = 1024;

impl Sampler {
    /// A sampler with its RNG seeded from `params.seed`.
    pub fn new(params: SamplingParams) -> Result<Self> {
        params.validate()?;
        let rng = StdRng::seed_from_u64(params.seed);
        Ok(Self {
            params,
            rng,
            penalized: Vec::new(),
            dense: Dense::default(),
            candidates: Vec::new(),
        })
    }

    /// The settings.
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Picks a token from `logits` (one per vocabulary entry); `history` is the sequence so far
    /// (prompt and generated tokens), used by the repeat penalty.
    ///
    /// Cost: one pass for the maximum, one for the weights, and for top-p one histogram pass;
    /// nothing sorts the vocabulary (only top-k's survivors or one histogram bin are sorted).
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> Result<u32> {
        if logits.is_empty() {
            return Err(Error::InvalidArgument("sampling from empty logits".into()));
        }
        let mut penalized = std::mem::take(&mut self.penalized);
        let logits = if self.penalize_into(logits, history, &mut penalized) {
            &penalized[..]
        } else {
            logits
        };
        let choice = if self.params.is_greedy() {
            argmax(logits)
        } else {
            self.draw(logits)
        };
        self.penalized = penalized;
        choice
    }

    /// Writes the penalized logits into `out` when the repeat penalty is enabled; `false` when
    /// it is not (the logits are used as they are).
    fn penalize_into(&self, logits: &[f32], history: &[u32], out: &mut Vec<f32>) -> bool {
        let p = self.params.repeat_penalty;
        if p == 1.0 || self.params.repeat_last_n == 0 || history.is_empty() {
            return false;
        }
        let recent = &history[history.len().saturating_sub(self.params.repeat_last_n)..];
        out.clear();
        out.extend_from_slice(logits);
        let unique: HashSet<u32> = recent.iter().copied().collect();
        for id in unique {
            if let Some(l) = out.get_mut(id as usize) {
                *l = if *l > 0.0 { *l / p } else { *l * p };
            }
        }
        true
    }

    /// A draw from the distribution [`Sampler::distribution`] describes.
    fn draw(&mut self, logits: &[f32]) -> Result<u32> {
        let total = self.fill(logits)?;
        let r = self.rng.random::<f64>() * total;
        Ok(if self.dense.active {
            self.dense.pick(r)
        } else {
            pick(self.candidates.iter().map(|c| (c.id, c.weight)), r)
        })
    }

    /// The tokens a non-greedy draw can return, with their probabilities (testing and
    /// diagnostics; [`Sampler::sample`] draws from exactly this).
    pub fn distribution(&mut self, logits: &[f32], history: &[u32]) -> Result<Vec<(u32, f64)>> {
        let mut penalized = Vec::new();
        let logits = if self.penalize_into(logits, history, &mut penalized) {
            &penalized[..]
        } else {
            logits
        };
        let total = self.fill(logits)?;
        let as_prob = |(id, w): (u32, f32)| (id, w as f64 / total);
        Ok(if self.dense.active {
            (0u32..)
                .zip(self.dense.weights.iter().copied())
                .filter(|&(_, w)| w > 0.0)
                .map(as_prob)
                .collect()
        } else {
            self.candidates
                .iter()
                .map(|c| as_prob((c.id, c.weight)))
                .collect()
        })
    }

    /// Prepares the distribution of the next draw, weighted by `exp((logit - max) /
    /// temperature)` (top-k applies to the logits, top-p to the probabilities after top-k and
    /// temperature): the whole vocabulary as dense weights when neither cuts it, else the
    /// survivors as candidates. Returns the sum of the weights. NaN and -inf logits are never
    /// chosen; if some logits are +inf, the first of them is.
    fn fill(&mut self, logits: &[f32]) -> Result<f64> {
        let max = max_ignoring_nan(logits);
        self.candidates.clear();
        self.dense.active = false;
        if max == f32::NEG_INFINITY {
            return Err(Error::InvalidArgument(
                "every logit is NaN or -inf: nothing to sample".into(),
            ));
        }
        if max == f32::INFINITY {
            let id = argmax(logits)?;
            self.candidates.push(Candidate {
                id,
                logit: max,
                weight: 1.0,
            });
            return Ok(1.0);
        }
        let t = self.params.temperature;
        let inv_t = 1.0 / t;
        let floor = max - NEGLIGIBLE * t;
        let k = self.params.top_k;
        if k > 0 && k < logits.len() {
            top_k(logits, k, floor, &mut self.candidates);
            for c in &mut self.candidates {
                c.weight = exp_neg((c.logit - max) * inv_t);
            }
        } else {
            let total = self.dense.fill(logits, max, inv_t, floor);
            if self.params.top_p >= 1.0 {
                self.dense.active = true;
                return Ok(total);
            }
            self.candidates.extend(
                (0u32..)
                    .zip(logits.iter().zip(&self.dense.weights))
                    .filter(|(_, (_, &w))| w > 0.0)
                    .map(|(id, (&logit, &weight))| Candidate { id, logit, weight }),
            );
        }
        let mut total: f64 = self.candidates.iter().map(|c| c.weight as f64).sum();
        if self.params.top_p < 1.0 {
            total = nucleus(
                &mut self.candidates,
                max,
                inv_t,
                self.params.top_p as f64 * total,
            );
        }
        Ok(total)
    }
}

impl Dense {
    /// Weighs every token (0 below `floor` and for NaN) and returns the total.
    fn fill(&mut self, logits: &[f32], max: f32, inv_t: f32, floor: f32) -> f64 {
        self.weights.resize(logits.len(), 0.0);
        // A branch-free loop over plain slices: the compiler vectorizes it, `exp_neg` included.
        for (w, &l) in self.weights.iter_mut().zip(logits) {
            let e = exp_neg((l - max) * inv_t);
            *w = if l >= floor { e } else { 0.0 };
        }
        self.chunk_sums.clear();
        self.chunk_sums
            .extend(self.weights.chunks(CHUNK).map(sum_f64));
        self.chunk_sums.iter().sum()
    }

    /// The token where the running sum of the weights passes `r`.
    fn pick(&self, mut r: f64) -> u32 {
        for (i, &sum) in self.chunk_sums.iter().enumerate() {
            if r < sum {
                let start = i * CHUNK;
                let run = &self.weights[start..(start + CHUNK).min(self.weights.len())];
                return pick((start as u32..).zip(run.iter().copied()), r);
            }
            r -= sum;
        }
        // Rounding left `r` just above the total: the last token that can be drawn.
        self.weights.iter().rposition(|&w| w > 0.0).unwrap_or(0) as u32
    }
}

/// The token of `(id, weight)` pairs where the running sum passes `r`; the last one with a
/// weight when rounding leaves `r` just above their total.
fn pick(weights: impl Iterator<Item = (u32, f32)>, mut r: f64) -> u32 {
    let mut last = 0;
    for (id, w) in weights {
        if w <= 0.0 {
            continue;
        }
        if r < w as f64 {
            return id;
        }
        r -= w as f64;
        last = id;
    }
    last
}

/// The largest logit, NaN ignored (`f32::max` returns the other operand), in eight lanes so
/// that the loop vectorizes.
fn max_ignoring_nan(logits: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let mut chunks = logits.chunks_exact(8);
    for c in &mut chunks {
        for (m, &l) in lanes.iter_mut().zip(c) {
            *m = m.max(l);
        }
    }
    chunks
        .remainder()
        .iter()
        .chain(&lanes)
        .copied()
        .fold(f32::NEG_INFINITY, f32::max)
}

/// The sum in f64, in eight lanes so that the loop vectorizes.
fn sum_f64(values: &[f32]) -> f64 {
    let mut lanes = [0.0f64; 8];
    let mut chunks = values.chunks_exact(8);
    for c in &mut chunks {
        for (s, &v) in lanes.iter_mut().zip(c) {
            *s += v as f64;
        }
    }
    chunks.remainder().iter().map(|&v| v as f64).sum::<f64>() + lanes.iter().sum::<f64>()
}

/// `e^x` for `x <= 0`, within 2 units in the last place, as plain arithmetic that the
/// compiler vectorizes (libm's `expf` is one call per element, most of a 128k-vocabulary
/// draw). `x = n ln2 + r` with `|r| <= ln2 / 2` (ln2 in two parts, so `r` is exact enough),
/// `e^r` by its Taylor series to degree 7 (truncation below 6e-9), `2^n` built in the
/// exponent bits. Results below `e^-87` are clamped there.
fn exp_neg(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Adding and removing 1.5 * 2^23 rounds to the nearest integer without a call.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 0.0);
    let n = (x * std::f32::consts::LOG2_E + ROUND) - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (1.0 / 2.0
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// Orders candidates best first: higher logit, then lower id.
fn better(a: &Candidate, b: &Candidate) -> std::cmp::Ordering {
    b.logit.total_cmp(&a.logit).then(a.id.cmp(&b.id))
}

/// The `k` best logits at or above `floor` (ties to the lower id), in vocabulary order, through
/// a min-heap of the best so far: one comparison for almost every token, no sort.
fn top_k(logits: &[f32], k: usize, floor: f32, out: &mut Vec<Candidate>) {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    /// Heap key: greater means better.
    #[derive(PartialEq)]
    struct Key(Candidate);
    impl Eq for Key {}
    impl PartialOrd for Key {
        fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
            Some(self.cmp(other))
        }
    }
    impl Ord for Key {
        fn cmp(&self, other: &Self) -> std::cmp::Ordering {
            better(&other.0, &self.0)
        }
    }
    let mut heap: BinaryHeap<Reverse<Key>> = BinaryHeap::with_capacity(k + 1);
    for (i, &l) in logits.iter().enumerate() {
        if l.is_nan() || l < floor {
            continue;
        }
        if heap.len() == k {
            // Strictly greater only: an equal logit has a higher id, so it ranks below.
            match heap.peek() {
                Some(Reverse(worst)) if l > worst.0.logit => {}
                _ => continue,
            }
        }
        heap.push(Reverse(Key(Candidate {
            id: i as u32,
            logit: l,
            weight: 0.0,
        })));
        if heap.len() > k {
            heap.pop();
        }
    }
    out.extend(heap.into_iter().map(|Reverse(Key(c))| c));
    out.sort_unstable_by_key(|c| c.id);
}

/// Keeps the top-p nucleus: the fewest best candidates whose weights reach `target`; returns
/// their total weight. The order of the survivors stays deterministic (vocabulary order for
/// all but the boundary bin).
///
/// Instead of sorting, the weights go into [`NUCLEUS_BINS`] bins by `(max - logit) / t` (bin
/// order is weight order): the bins whose cumulative weight stays below `target` are kept
/// whole, and only the boundary bin's few candidates are sorted to find where it ends.
fn nucleus(candidates: &mut Vec<Candidate>, max: f32, inv_t: f32, target: f64) -> f64 {
    let scale = NUCLEUS_BINS as f32 / NEGLIGIBLE;
    let bin = |c: &Candidate| (((max - c.logit) * inv_t * scale) as usize).min(NUCLEUS_BINS - 1);
    let mut mass = [0.0f64; NUCLEUS_BINS];
    for c in candidates.iter() {
        mass[bin(c)] += c.weight as f64;
    }
    let mut below = 0.0;
    let mut boundary = NUCLEUS_BINS - 1;
    for (b, m) in mass.iter().enumerate() {
        if below + m >= target {
            boundary = b;
            break;
        }
        below += m;
    }
    // Whole bins first (in vocabulary order), then the boundary bin best first.
    let mut edge: Vec<Candidate> = candidates
        .iter()
        .filter(|c| bin(c) == boundary)
        .copied()
        .collect();
    candidates.retain(|c| bin(c) < boundary);
    edge.sort_unstable_by(better);
    let mut total = below;
    for c in edge {
        candidates.push(c);
        total += c.weight as f64;
        if total >= target {
            break;
        }
    }
    total
}

/// Index of the largest logit (lowest index on ties); NaN never wins.
pub fn argmax(logits: &[f32]) -> Result<u32> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &l) in logits.iter().enumerate() {
        if l.is_nan() {
            continue;
        }
        if best.is_none_or(|(_, b)| l > b) {
            best = Some((i, l));
        }
    }
    best.map(|(i, _)| i as u32)
        .ok_or_else(|| Error::InvalidArgument("every logit is NaN".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32) -> SamplingParams {
        SamplingParams {
            temperature,
            ..Default::default()
        }
    }

    #[test]
    fn greedy_takes_first_maximum_and_ignores_nan() -> Result<()> {
        let mut s = Sampler::new(params(0.0))?;
        assert_eq!(s.sample(&[0.1, 3.0, f32::NAN, 3.0], &[])?, 1);
        assert!(s.sample(&[f32::NAN], &[]).is_err());
        Ok(())
    }

    #[test]
    fn repeat_penalty_follows_ctrl_rule() -> Result<()> {
        let s = Sampler::new(SamplingParams {
            repeat_penalty: 2.0,
            ..params(0.0)
        })?;
        let mut out = Vec::new();
        assert!(s.penalize_into(&[4.0, -1.0, 3.0], &[0, 1, 1], &mut out));
        assert_eq!(out, vec![2.0, -2.0, 3.0]);
        // Greedy choice moves from token 0 to token 2.
        let mut s = s;
        assert_eq!(s.sample(&[4.0, -1.0, 3.0], &[0])?, 2);
        Ok(())
    }

    #[test]
    fn top_k_one_is_greedy_and_top_k_limits_support() -> Result<()> {
        let logits = [1.0f32, 2.0, 3.0, 2.5];
        let mut s = Sampler::new(SamplingParams {
            top_k: 2,
            seed: 7,
            ..params(5.0)
        })?;
        for _ in 0..200 {
            let t = s.sample(&logits, &[])?;
            assert!(t == 2 || t == 3, "token {t} outside the top 2");
        }
        Ok(())
    }

    #[test]
    fn top_k_ties_go_to_the_lower_id() -> Result<()> {
        let mut s = Sampler::new(SamplingParams {
            top_k: 2,
            ..params(1.0)
        })?;
        let ids: Vec<u32> = s
            .distribution(&[1.0, 5.0, 1.0, 5.0, 5.0, 0.0], &[])?
            .iter()
            .map(|d| d.0)
            .collect();
        assert_eq!(ids, vec![1, 3]);
        Ok(())
    }

    #[test]
    fn top_p_keeps_the_smallest_sufficient_set() -> Result<()> {
        // Probabilities ≈ [0.665, 0.245, 0.090]: top_p 0.6 keeps only the first, 0.9 two.
        let logits = [2.0f32, 1.0, 0.0];
        let mut s = Sampler::new(SamplingParams {
            top_p: 0.6,
            seed: 3,
            ..params(1.0)
        })?;
        for _ in 0..100 {
            assert_eq!(s.sample(&logits, &[])?, 0);
        }
        let mut s = Sampler::new(SamplingParams {
            top_p: 0.9,
            ..params(1.0)
        })?;
        let d = s.distribution(&logits, &[])?;
        assert_eq!(d.len(), 2);
        assert!((d[0].1 - 0.665 / 0.910).abs() < 1e-3, "{d:?}");
        Ok(())
    }

    #[test]
    fn same_seed_same_tokens_and_frequencies_follow_softmax() -> Result<()> {
        let logits: Vec<f32> = vec![0.0, (2.0f32).ln(), (5.0f32).ln()]; // probs 1/8, 2/8, 5/8
        let draw = |seed| -> Result<Vec<u32>> {
            let mut s = Sampler::new(SamplingParams {
                seed,
                ..params(1.0)
            })?;
            (0..4000).map(|_| s.sample(&logits, &[])).collect()
        };
        let a = draw(11)?;
        assert_eq!(a, draw(11)?);
        assert_ne!(a, draw(12)?);
        let count = |t| a.iter().filter(|&&x| x == t).count() as f64 / a.len() as f64;
        assert!((count(2) - 0.625).abs() < 0.03, "{}", count(2));
        assert!((count(0) - 0.125).abs() < 0.03, "{}", count(0));
        Ok(())
    }

    #[test]
    fn nan_and_infinite_logits() -> Result<()> {
        let mut s = Sampler::new(params(1.0))?;
        assert_eq!(
            s.distribution(&[f32::NAN, 1.0, f32::NEG_INFINITY], &[])?,
            vec![(1, 1.0)]
        );
        assert_eq!(s.sample(&[0.0, f32::INFINITY, f32::INFINITY], &[])?, 1);
        assert!(s.sample(&[f32::NAN, f32::NEG_INFINITY], &[]).is_err());
        Ok(())
    }

    /// The textbook definition: sort everything, softmax, cut at top-k and top-p.
    fn reference(logits: &[f32], t: f32, k: usize, p: f32) -> Vec<(u32, f64)> {
        let mut all: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .filter(|(_, l)| !l.is_nan())
            .map(|(i, &l)| (i as u32, l))
            .collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        if k > 0 {
            all.truncate(k);
        }
        let max = all[0].1 as f64;
        let w: Vec<f64> = all
            .iter()
            .map(|c| ((c.1 as f64 - max) / t as f64).exp())
            .collect();
        let z: f64 = w.iter().sum();
        let mut kept = all.len();
        if p < 1.0 {
            let mut cum = 0.0;
            for (i, x) in w.iter().enumerate() {
                cum += x / z;
                if cum >= p as f64 {
                    kept = i + 1;
                    break;
                }
            }
        }
        let zk: f64 = w[..kept].iter().sum();
        let mut out: Vec<(u32, f64)> = (0..kept).map(|i| (all[i].0, w[i] / zk)).collect();
        out.sort_by_key(|c| c.0);
        out
    }

    #[test]
    fn distribution_matches_a_full_sort_on_a_large_vocabulary() -> Result<()> {
        use rand::Rng;
        let mut rng = StdRng::seed_from_u64(5);
        // Logits shaped like a language model's: a wide bulk and a few strong candidates.
        let logits: Vec<f32> = (0..50_000)
            .map(|i| {
                let base = rng.random::<f32>() * 12.0 - 6.0;
                if i % 997 == 0 {
                    base + 12.0
                } else {
                    base
                }
            })
            .collect();
        for (t, k, p) in [
            (0.7, 0, 1.0),
            (0.7, 0, 0.9),
            (1.0, 40, 0.95),
            (2.0, 0, 0.95),
            (0.2, 0, 0.5),
            (1.3, 1000, 1.0),
            (0.2, 0, 1.0),
        ] {
            let mut s = Sampler::new(SamplingParams {
                top_k: k,
                top_p: p,
                ..params(t)
            })?;
            let ours: std::collections::HashMap<u32, f64> =
                s.distribution(&logits, &[])?.into_iter().collect();
            let want = reference(&logits, t, k, p);
            assert!(ours.len() <= want.len(), "t {t} k {k} p {p}");
            for (id, prob) in want {
                match ours.get(&id) {
                    Some(&got) => assert!(
                        (got - prob).abs() <= 1e-6 * prob + 1e-12,
                        "t {t} k {k} p {p}: token {id} {got} vs {prob}"
                    ),
                    // Only the negligible tail may be skipped.
                    None => assert!(
                        prob < 1e-15,
                        "t {t} k {k} p {p}: token {id} ({prob}) missing"
                    ),
                }
            }
        }
        Ok(())
    }

    #[test]
    fn exp_neg_is_within_two_ulps_of_exp() {
        for i in 0..=870_000 {
            let x = -(i as f32) * 1e-4;
            let want = (x as f64).exp();
            let got = exp_neg(x) as f64;
            assert!(
                (got - want).abs() <= 2.5e-7 * want,
                "exp({x}) = {got}, want {want}"
            );
        }
        assert_eq!(exp_neg(0.0), 1.0);
        assert_eq!(exp_neg(f32::NEG_INFINITY), exp_neg(-87.0));
    }

    #[test]
    fn rejects_bad_settings() {
        assert!(Sampler::new(SamplingParams {
            top_p: 0.0,
            ..Default::default()
        })
        .is_err());
        assert!(Sampler::new(SamplingParams {
            repeat_penalty: -1.0,
            ..Default::default()
        })
        .is_err());
    }
}
