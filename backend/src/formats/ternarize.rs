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
    let mut sum = AbsSum::default();
    sum.add(w);
    let beta = sum.beta();
    let mut t = vec![0i8; w.len()];
    ternarize_into(w, beta, &mut t);
    (t, beta)
}

/// The running sum behind [`absmean`]'s β, for tensors read in pieces: add the values in tensor
/// order, in any number of slices, and [`AbsSum::beta`] equals `absmean`'s β bit for bit.
#[derive(Clone, Copy, Debug, Default)]
pub struct AbsSum {
    sum: f64,
    count: u64,
}

impl AbsSum {
    /// Adds the next values of the tensor.
    pub fn add(&mut self, values: &[f32]) {
        for x in values {
            self.sum += x.abs() as f64;
        }
        self.count += values.len() as u64;
    }

    /// `max(mean|W|, MIN_SCALE)` over everything added.
    pub fn beta(&self) -> f32 {
        let mean = match self.count {
            0 => 0.0,
            n => (self.sum / n as f64) as f32,
        };
        mean.max(MIN_SCALE)
    }
}

/// Ternarizes `w` with a known β (from [`AbsSum::beta`]) into `out`: the second pass of
/// [`absmean`] for one slice of the tensor.
pub fn ternarize_into(w: &[f32], beta: f32, out: &mut [i8]) {
    let inv = 1.0 / beta;
    for (t, &x) in out.iter_mut().zip(w) {
        *t = (x * inv).round_ties_even().clamp(-1.0, 1.0) as i8;
    }
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
    fn two_pass_pieces_equal_one_call() {
        let w: Vec<f32> = (0..1000)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        let (want, beta) = absmean(&w);
        let mut sum = AbsSum::default();
        for piece in w.chunks(64) {
            sum.add(piece);
        }
        assert_eq!(sum.beta(), beta);
        let mut got = vec![0i8; w.len()];
        for (piece, out) in w.chunks(100).zip(got.chunks_mut(100)) {
            ternarize_into(piece, sum.beta(), out);
        }
        assert_eq!(got, want);
    }

    #[test]
    fn nan_ternarizes_to_zero() {
        let (t, _) = absmean(&[f32::NAN, 1.0]);
        assert_eq!(t[0], 0);
    }
}
