//! Absmean ternarization of float weights (BitNet b1.58 `weight_quant`).
//!
//! `beta = max(mean|W|, 1e-5)` and `T = clamp(round(W * (1/beta)), -1, 1)` with round half to
//! even, as torch.round does. Like transformers and bitnet.cpp's converters we multiply by the
//! f32 reciprocal rather than divide, so ties land exactly where the reference puts them.

/// Smallest scale allowed, as in the reference `clamp(min=1e-5)`.
pub const MIN_SCALE: f32 = 1e-5;

/// Ternarizes `w` and returns the codes and `beta` (the per-tensor scale that dequantizes them:
/// `W ≈ T * beta`). The mean is accumulated in f64, so it is the correctly rounded mean rather
/// than one particular f32 summation order. Empty input gives `beta = MIN_SCALE`.
/// Input is expected to be finite; a NaN weight ternarizes to 0.
pub fn absmean(w: &[f32]) -> (Vec<i8>, f32) {
    let beta = mean_abs(w).max(MIN_SCALE);
    let inv = 1.0 / beta;
    let t = w
        .iter()
        .map(|&x| (x * inv).round_ties_even().clamp(-1.0, 1.0) as i8)
        .collect();
    (t, beta)
}

fn mean_abs(w: &[f32]) -> f32 {
    if w.is_empty() {
        return 0.0;
    }
    let sum: f64 = w.iter().map(|x| x.abs() as f64).sum();
    (sum / w.len() as f64) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed() {
        // mean|w| = (2 + 2 + 1 + 0.5 + 0.5 + 0) / 6 = 1.0, so T = round_half_even(w).
        let w = [2.0, -2.0, 1.0, 0.5, -0.5, 0.0];
        let (t, beta) = absmean(&w);
        assert_eq!(beta, 1.0);
        // 0.5 and -0.5 round to even (0), unlike f32::round.
        assert_eq!(t, vec![1, -1, 1, 0, 0, 0]);
    }

    #[test]
    fn ties_to_even_at_one_and_a_half() {
        // mean = 1; 1.5 -> 2 -> clamped to 1; 2.5 would also clamp.
        let w = [1.5, -1.5, 0.0, 1.0];
        let (t, beta) = absmean(&w);
        assert_eq!(beta, 1.0);
        assert_eq!(t, vec![1, -1, 0, 1]);
    }

    #[test]
    fn scale_is_clamped() {
        let (t, beta) = absmean(&[0.0, 0.0, 1e-7, -1e-7]);
        assert_eq!(beta, MIN_SCALE);
        assert_eq!(t, vec![0, 0, 0, 0]);
        assert_eq!(absmean(&[]), (vec![], MIN_SCALE));
    }

    #[test]
    fn nan_ternarizes_to_zero() {
        let (t, _) = absmean(&[f32::NAN, 1.0]);
        assert_eq!(t[0], 0);
    }
}
