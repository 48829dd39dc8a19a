//! The byte layouts the CUDA kernels read (documented in `kernels/bitnet.cu`): ternary weights
//! repacked from the CPU matrix, and the GEMV's permuted activation order. Plain functions, so
//! the tests below can replay the kernels' index arithmetic on the CPU, lane by lane, against a
//! plain dot product: a layout bug shows up here, without a GPU.

// Parts of this module serve only the CUDA side (feature `cuda`).
#![cfg_attr(not(feature = "cuda"), allow(dead_code))]

/// Rows of the weight padding (the GEMM's row tile).
pub(crate) const ROW_TILE: usize = 64;

/// CPU strip layout (backend `repack`) → GPU layout, `rows` rows into `out` (row-major,
/// `n_blocks · 32` bytes per row). Stored word `2t + h` of a row's block is the CPU's 4-byte
/// piece of group `4h + t` (I2_S bytes `16h + 4t ..`).
pub(crate) fn repack_rows(cpu: &[u8], rows: usize, n_blocks: usize, out: &mut [u8]) {
    const STRIP: usize = 16;
    const BLOCK_BYTES: usize = 512;
    let row_bytes = n_blocks * 32;
    for r in 0..rows {
        let (strip, lane) = (r / STRIP, r % STRIP);
        let dst = &mut out[r * row_bytes..(r + 1) * row_bytes];
        for blk in 0..n_blocks {
            let src = &cpu[(strip * n_blocks + blk) * BLOCK_BYTES..][..BLOCK_BYTES];
            for t in 0..4 {
                for h in 0..2 {
                    let g = 4 * h + t;
                    let at = blk * 32 + 8 * t + 4 * h;
                    dst[at..at + 4].copy_from_slice(&src[g * 64 + 4 * lane..][..4]);
                }
            }
        }
    }
}

/// Bytes of one PERM activation row for `kp` padded columns.
pub(crate) fn perm_stride(kp: usize) -> usize {
    kp.div_ceil(2048) * 2048
}

/// Position of column `k` in a PERM activation row (the kernels' `perm_index`).
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn perm_index(k: usize) -> usize {
    let (blk, r) = (k >> 7, k & 127);
    let (p, u) = (r >> 5, r & 31);
    let (h, v) = (u >> 4, u & 15);
    let (t, b) = (v >> 2, v & 3);
    let s = 8 * t + 4 * h + b;
    let (q, o) = (2 * blk + (s >> 4), s & 15);
    (q >> 5) * 2048 + p * 512 + (q & 31) * 16 + o
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitnet_backend::TernaryMatrix;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    struct Case {
        cols: usize,
        kp: usize,
        w: Vec<i8>,
        gpu: Vec<u8>,
    }

    fn case(rows: usize, cols: usize, rng: &mut StdRng) -> Case {
        let w: Vec<i8> = (0..rows * cols).map(|_| rng.random_range(-1..=1)).collect();
        let m = TernaryMatrix::from_ternary(&w, rows, cols, 1.0).unwrap();
        let kp = m.n_blocks() * 128;
        let rows_pad = rows.div_ceil(ROW_TILE) * ROW_TILE;
        let mut gpu = vec![0x55u8; rows_pad * kp / 4];
        repack_rows(m.packed(), rows, m.n_blocks(), &mut gpu);
        Case { cols, kp, w, gpu }
    }

    fn word(bytes: &[u8], at: usize) -> u32 {
        u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
    }

    fn dp4a(a: u32, b: u32, acc: i32) -> i32 {
        let (a, b) = (a.to_le_bytes(), b.to_le_bytes());
        acc + (0..4)
            .map(|i| i32::from(a[i] as i8) * i32::from(b[i] as i8))
            .sum::<i32>()
    }

    fn codes(w: u32, p: usize) -> u32 {
        (w >> (6 - 2 * p)) & 0x0303_0303
    }

    fn reference(c: &Case, q: &[i8], t: usize, row: usize) -> i32 {
        (0..c.cols)
            .map(|k| i32::from(c.w[row * c.cols + k]) * i32::from(q[t * c.kp + k]))
            .sum()
    }

    fn activations(c: &Case, m: usize, rng: &mut StdRng) -> Vec<i8> {
        let mut q = vec![0i8; m * c.kp];
        for t in 0..m {
            for k in 0..c.cols {
                q[t * c.kp + k] = rng.random_range(-128..=127);
            }
        }
        q
    }

    /// `bitnet_gemv_*`, lane by lane.
    #[test]
    fn gemv_lanes_compute_the_dot_products() {
        let mut rng = StdRng::seed_from_u64(19);
        for (rows, cols) in [(3, 128), (20, 384), (5, 2560), (4, 6912), (2, 1000)] {
            let c = case(rows, cols, &mut rng);
            let m = 3;
            let q = activations(&c, m, &mut rng);
            let ps = perm_stride(c.kp);
            let mut perm = vec![0i8; m * ps];
            for t in 0..m {
                for k in 0..c.kp {
                    perm[t * ps + perm_index(k)] = q[t * c.kp + k];
                }
            }
            let sums: Vec<i32> = (0..m)
                .map(|t| {
                    q[t * c.kp..(t + 1) * c.kp]
                        .iter()
                        .map(|&v| i32::from(v))
                        .sum()
                })
                .collect();
            let (rb, nch) = (c.kp / 4, c.kp / 64);
            for row in 0..rows {
                for (t, &sum) in sums.iter().enumerate() {
                    let mut acc = 0;
                    for lane in 0..32 {
                        for chunk in (lane..nch).step_by(32) {
                            let it = chunk / 32;
                            for j in 0..4 {
                                let w = word(&c.gpu, row * rb + chunk * 16 + 4 * j);
                                for p in 0..4 {
                                    let at = t * ps + it * 2048 + p * 512 + lane * 16 + 4 * j;
                                    let a: Vec<u8> =
                                        perm[at..at + 4].iter().map(|&v| v as u8).collect();
                                    acc = dp4a(codes(w, p), word(&a, 0), acc);
                                }
                            }
                        }
                    }
                    assert_eq!(
                        acc - sum,
                        reference(&c, &q, t, row),
                        "{rows}x{cols} row {row} token {t}"
                    );
                }
            }
        }
    }

    /// `bitnet_gemm`: the fragments each lane loads, assembled as mma.m16n8k32 defines them.
    #[test]
    fn gemm_fragments_compute_the_dot_products() {
        let mut rng = StdRng::seed_from_u64(7);
        for (rows, cols) in [(64, 128), (70, 384), (64, 2560)] {
            let c = case(rows, cols, &mut rng);
            let m = 64;
            let q = activations(&c, m, &mut rng);
            let sums: Vec<i32> = (0..m)
                .map(|t| {
                    q[t * c.kp..(t + 1) * c.kp]
                        .iter()
                        .map(|&v| i32::from(v))
                        .sum()
                })
                .collect();
            let rb = c.kp / 4;
            // One warp's 16 x 8 tile at tokens m0.., rows n0.. (i = 0, j = 0 of warp (0, 0)).
            for (m0, n0) in [(0, 0), (16, 8), (48, 56)] {
                let mut d = [[0i32; 8]; 16];
                for blk in 0..c.kp / 128 {
                    for p in 0..4 {
                        let mut a = [[0i8; 32]; 16];
                        let mut b = [[0i8; 8]; 32];
                        for lane in 0..32 {
                            let (g, t) = (lane / 4, lane % 4);
                            let col = blk * 128 + p * 32 + 4 * t;
                            let arow =
                                |r: usize, off: usize| &q[(m0 + r) * c.kp + col + off..][..4];
                            // a0 = A[g][4t..], a1 = A[g+8][4t..], a2 = A[g][16+4t..], a3 = A[g+8][16+4t..]
                            a[g][4 * t..4 * t + 4].copy_from_slice(arow(g, 0));
                            a[g + 8][4 * t..4 * t + 4].copy_from_slice(arow(g + 8, 0));
                            a[g][16 + 4 * t..20 + 4 * t].copy_from_slice(arow(g, 16));
                            a[g + 8][16 + 4 * t..20 + 4 * t].copy_from_slice(arow(g + 8, 16));
                            let at = (n0 + g) * rb + blk * 32 + 8 * t;
                            let (x, y) = (word(&c.gpu, at), word(&c.gpu, at + 4));
                            // b0 = B[4t..][g], b1 = B[16+4t..][g]
                            for (e, byte) in codes(x, p).to_le_bytes().iter().enumerate() {
                                b[4 * t + e][g] = *byte as i8;
                            }
                            for (e, byte) in codes(y, p).to_le_bytes().iter().enumerate() {
                                b[16 + 4 * t + e][g] = *byte as i8;
                            }
                        }
                        for (r, dr) in d.iter_mut().enumerate() {
                            for (n, dv) in dr.iter_mut().enumerate() {
                                *dv += (0..32)
                                    .map(|k| i32::from(a[r][k]) * i32::from(b[k][n]))
                                    .sum::<i32>();
                            }
                        }
                    }
                }
                for (r, dr) in d.iter().enumerate() {
                    for (n, &dv) in dr.iter().enumerate() {
                        if n0 + n < rows {
                            assert_eq!(
                                dv - sums[m0 + r],
                                reference(&c, &q, m0 + r, n0 + n),
                                "{rows}x{cols} token {} row {}",
                                m0 + r,
                                n0 + n
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn perm_index_is_a_permutation_of_each_iteration() {
        for kp in [128, 640, 2560, 6912] {
            let mut seen = vec![false; perm_stride(kp)];
            for k in 0..kp {
                let i = perm_index(k);
                assert!(!seen[i], "kp {kp}: column {k} collides");
                seen[i] = true;
            }
        }
    }
}
