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

/// Candidate `(token, logit)` pairs, best first, and their probabilities.
type Candidates = (Vec<(u32, f32)>, Vec<f64>);

/// A stateful sampler (owns the RNG).
#[derive(Clone, Debug)]
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
}

impl Sampler {
    /// A sampler with its RNG seeded from `params.seed`.
    pub fn new(params: SamplingParams) -> Result<Self> {
        params.validate()?;
        let rng = StdRng::seed_from_u64(params.seed);
        Ok(Self { params, rng })
    }

    /// The settings.
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Picks a token from `logits` (one per vocabulary entry); `history` is the sequence so far
    /// (prompt and generated tokens), used by the repeat penalty.
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> Result<u32> {
        if logits.is_empty() {
            return Err(Error::InvalidArgument("sampling from empty logits".into()));
        }
        let penalized = self.penalize(logits, history);
        let logits = penalized.as_deref().unwrap_or(logits);
        if self.params.is_greedy() {
            return argmax(logits);
        }
        let (candidates, probs) = self.top_candidates(logits)?;
        let kept = nucleus(&probs, self.params.top_p);
        let total: f64 = probs[..kept].iter().sum();
        let mut r = self.rng.random::<f64>() * total;
        for (i, p) in probs[..kept].iter().enumerate() {
            if r < *p {
                return Ok(candidates[i].0);
            }
            r -= p;
        }
        Ok(candidates[kept - 1].0)
    }

    /// Applies the repeat penalty to a copy of the logits, if it is enabled.
    fn penalize(&self, logits: &[f32], history: &[u32]) -> Option<Vec<f32>> {
        let p = self.params.repeat_penalty;
        if p == 1.0 || self.params.repeat_last_n == 0 || history.is_empty() {
            return None;
        }
        let recent = &history[history.len().saturating_sub(self.params.repeat_last_n)..];
        let mut out = logits.to_vec();
        let unique: HashSet<u32> = recent.iter().copied().collect();
        for id in unique {
            if let Some(l) = out.get_mut(id as usize) {
                *l = if *l > 0.0 { *l / p } else { *l * p };
            }
        }
        Some(out)
    }

    /// The tokens that survive top-k (all of them, or for top-p enough of the head of the
    /// distribution), sorted by descending logit, with their probabilities after top-k and
    /// temperature. NaN and -inf logits are never chosen.
    fn top_candidates(&self, logits: &[f32]) -> Result<Candidates> {
        let mut all: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .filter(|(_, l)| !l.is_nan() && **l != f32::NEG_INFINITY)
            .map(|(i, &l)| (i as u32, l))
            .collect();
        if all.is_empty() {
            return Err(Error::InvalidArgument(
                "every logit is NaN or -inf: nothing to sample".into(),
            ));
        }
        if self.params.top_k > 0 && self.params.top_k < all.len() {
            all.select_nth_unstable_by(self.params.top_k, descending);
            all.truncate(self.params.top_k);
        }
        let max = all.iter().map(|c| c.1).fold(f32::NEG_INFINITY, f32::max);
        let t = self.params.temperature as f64;
        let weight = |l: f32| ((l - max) as f64 / t).exp();
        let z: f64 = all.iter().map(|c| weight(c.1)).sum();
        let with_probs = |cand: Vec<(u32, f32)>| {
            let probs = cand.iter().map(|c| weight(c.1) / z).collect();
            (cand, probs)
        };
        if self.params.top_p >= 1.0 {
            let n = all.len();
            return Ok(with_probs(sorted_head(all, n)));
        }
        // Top-p: sort only as much of the head as the nucleus needs, doubling until it holds
        // top_p of the mass (exact, and avoids sorting a 128k vocabulary every step).
        let mut head = 256.min(all.len());
        loop {
            let (cand, probs) = with_probs(sorted_head(all.clone(), head));
            if probs.iter().sum::<f64>() >= self.params.top_p as f64 || head == all.len() {
                return Ok((cand, probs));
            }
            head = (head * 2).min(all.len());
        }
    }
}

fn descending(a: &(u32, f32), b: &(u32, f32)) -> std::cmp::Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

/// The `k` largest entries, sorted descending (ties by lower id).
fn sorted_head(mut all: Vec<(u32, f32)>, k: usize) -> Vec<(u32, f32)> {
    if k < all.len() {
        all.select_nth_unstable_by(k, descending);
        all.truncate(k);
    }
    all.sort_unstable_by(descending);
    all
}

/// How many of the (descending) probabilities form the top-p nucleus; at least one.
fn nucleus(probs: &[f64], top_p: f32) -> usize {
    if top_p >= 1.0 {
        return probs.len();
    }
    let mut cum = 0.0;
    for (i, p) in probs.iter().enumerate() {
        cum += p;
        if cum >= top_p as f64 {
            return i + 1;
        }
    }
    probs.len()
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
        let out = s.penalize(&[4.0, -1.0, 3.0], &[0, 1, 1]).unwrap();
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
    fn top_p_keeps_the_smallest_sufficient_set() -> Result<()> {
        // Probabilities ≈ [0.665, 0.245, 0.090]: top_p 0.6 keeps only the first.
        let logits = [2.0f32, 1.0, 0.0];
        let mut s = Sampler::new(SamplingParams {
            top_p: 0.6,
            seed: 3,
            ..params(1.0)
        })?;
        for _ in 0..100 {
            assert_eq!(s.sample(&logits, &[])?, 0);
        }
        assert_eq!(nucleus(&[0.5, 0.3, 0.2], 0.75), 2);
        assert_eq!(nucleus(&[0.5, 0.3, 0.2], 0.85), 3);
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
    fn large_vocab_top_p_matches_full_sort() -> Result<()> {
        let logits: Vec<f32> = (0..5000)
            .map(|i| ((i * 7919) % 1000) as f32 / 100.0)
            .collect();
        let s = Sampler::new(SamplingParams {
            top_p: 0.9,
            ..params(0.7)
        })?;
        let (fast, probs) = s.top_candidates(&logits)?;
        let kept = nucleus(&probs, 0.9);
        // Reference: full sort, full softmax.
        let full = sorted_head(
            logits
                .iter()
                .enumerate()
                .map(|(i, &l)| (i as u32, l))
                .collect(),
            logits.len(),
        );
        let e: Vec<f64> = full
            .iter()
            .map(|c| ((c.1 as f64 - 9.99) / 0.7).exp())
            .collect();
        let z: f64 = e.iter().sum();
        let full_probs: Vec<f64> = e.iter().map(|x| x / z).collect();
        let full_kept = nucleus(&full_probs, 0.9);
        assert!(
            fast.len() < logits.len(),
            "the head search should not sort everything"
        );
        assert_eq!(kept, full_kept);
        assert_eq!(&fast[..kept], &full[..kept]);
        Ok(())
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
