//! Single-token (decode) speed of the ggml plugin's TQ2_0 × Q8_K kernel alone: one token
//! through the seven ternary mat-muls of `LAYERS` 2B4T-shaped decoder layers (more than the
//! last-level cache holds, as in a real decode step), reported in GB/s of weights read.
//!
//! `cargo run --release -p bitnet-backend --example q8k_decode -- [threads] [layers] [reps]`
//! (defaults 1, 8, 20; medians). `layers` 0 runs one 640 × 2560 matrix instead, which stays in
//! L2: the kernel's compute speed. With `Q8K_DECODE_PROBES=1` it also prints the machine's read
//! bandwidth and `vpdpbusd` peak with the same threads.

use std::time::Instant;

use bitnet_backend::matmul_q8k::{ternary_matmul_q8k, TqMatrix, TqType};
use bitnet_backend::threads;

/// (rows, cols) of one decoder layer's mat-muls: q, k, v, o, gate, up, down.
const LAYER: [(usize, usize); 7] = [
    (2560, 2560),
    (640, 2560),
    (640, 2560),
    (2560, 2560),
    (6912, 2560),
    (6912, 2560),
    (2560, 6912),
];

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Random TQ2_0 bytes: codes 0..=2 (ternary −1..=1), block scales 0.5 or 0.25.
fn random_tq2(rows: usize, cols: usize, rng: &mut XorShift) -> Vec<u8> {
    let mut out = Vec::with_capacity(rows * cols / 256 * 66);
    for i in 0..rows * cols / 256 {
        for _ in 0..64 {
            let r = rng.next();
            let byte = (0..4).fold(0u8, |b, k| b | ((((r >> (16 * k)) % 3) as u8) << (2 * k)));
            out.push(byte);
        }
        let d = half::f16::from_f32(if i % 2 == 0 { 0.5 } else { 0.25 });
        out.extend(d.to_le_bytes());
    }
    out
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numbers"))
        .collect();
    let n_threads = args.first().copied().unwrap_or(1);
    let layers = args.get(1).copied().unwrap_or(8);
    let reps = args.get(2).copied().unwrap_or(20);
    threads::set_num_threads(n_threads);
    if std::env::var_os("Q8K_DECODE_PROBES").is_some() {
        let r = bitnet_backend::bandwidth::measure_read_bandwidth_with(n_threads, 256 << 20, 5);
        println!(
            "read bandwidth {n_threads} threads: {:.2} GB/s",
            r.median_gb_s()
        );
        let peak = bitnet_backend::compute_peak::measure_int8_dot_peak(n_threads, 5);
        println!("vpdpbusd peak: {peak:?} G MAC/s (one weight byte = 4 MACs)");
    }
    let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
    // 0 layers: one 640 × 2560 matrix, which the L2 cache holds (the kernel's compute speed).
    let shapes: Vec<(usize, usize)> = if layers == 0 {
        vec![LAYER[1]]
    } else {
        (0..layers).flat_map(|_| LAYER).collect()
    };
    let mats: Vec<TqMatrix> = shapes
        .into_iter()
        .map(|(r, c)| TqMatrix::new(TqType::Tq2_0, &random_tq2(r, c, &mut rng), r, c).unwrap())
        .collect();
    let bytes: usize = mats.iter().map(TqMatrix::heap_bytes).sum();
    let x: Vec<f32> = (0..6912)
        .map(|_| (rng.next() % 2001) as f32 / 1000.0 - 1.0)
        .collect();
    let mut y = vec![0f32; 6912];
    let mut times = Vec::with_capacity(reps);
    let mut check = 0f64;
    for _ in 0..reps + 2 {
        let t = Instant::now();
        for w in &mats {
            let (rows, cols) = (w.rows(), w.cols());
            ternary_matmul_q8k(w, &x[..cols], 1, &mut y[..rows]).unwrap();
            check += f64::from(y[rows / 2]);
        }
        times.push(t.elapsed().as_secs_f64());
    }
    times.drain(..2);
    times.sort_by(f64::total_cmp);
    let med = times[times.len() / 2];
    println!(
        "threads {n_threads} layers {layers}: {:.1} MB, median {:.3} ms, {:.2} GB/s (min {:.3} ms) [check {check:.3}]",
        bytes as f64 / 1e6,
        med * 1e3,
        bytes as f64 / med / 1e9,
        times[0] * 1e3
    );
}
