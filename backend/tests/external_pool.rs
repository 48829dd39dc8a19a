//! An application-owned pool installed with `threads::set_external_pool` runs the matmuls, and
//! the results stay bit-identical to the backend's own pool. (Own test binary: the pool choice
//! is process-wide.)

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bitnet_backend::matmul::ternary_matmul;
use bitnet_backend::threads::{self, PoolKind};
use bitnet_backend::TernaryMatrix;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn matrix(rows: usize, cols: usize) -> TernaryMatrix {
    let mut rng = StdRng::seed_from_u64(0x2545_F491_4F6C_DD1D);
    let values: Vec<i8> = (0..rows * cols)
        .map(|_| rng.random_range(-1i8..=1))
        .collect();
    TernaryMatrix::from_ternary(&values, rows, cols, 0.75).unwrap()
}

#[test]
fn an_external_pool_runs_every_task_and_matches_the_own_pool() {
    let (rows, cols) = (2560, 2560);
    let w = matrix(rows, cols);
    let x: Vec<f32> = (0..4 * cols)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
        .collect();
    threads::set_num_threads(2);
    let run = |n_tokens: usize| {
        let mut y = vec![0f32; n_tokens * rows];
        ternary_matmul(&w, &x[..n_tokens * cols], n_tokens, &mut y).unwrap();
        y
    };
    let own = [run(1), run(4)];

    // A deliberately different schedule: every task on a fresh thread of a scope.
    let jobs = Arc::new(AtomicUsize::new(0));
    let tasks = Arc::new(AtomicUsize::new(0));
    let (j, t) = (Arc::clone(&jobs), Arc::clone(&tasks));
    threads::set_external_pool(Arc::new(move |n, task| {
        j.fetch_add(1, Ordering::SeqCst);
        std::thread::scope(|s| {
            for i in (0..n).rev() {
                let t = &t;
                s.spawn(move || {
                    t.fetch_add(1, Ordering::SeqCst);
                    task(i)
                });
            }
        });
    }));
    assert_eq!(threads::pool_kind(), PoolKind::External);
    let external = [run(1), run(4)];
    assert!(
        jobs.load(Ordering::SeqCst) >= 2,
        "the external pool was not used"
    );
    assert!(tasks.load(Ordering::SeqCst) >= 4);
    assert_eq!(own[0], external[0]);
    assert_eq!(own[1], external[1]);

    threads::set_pool_kind(PoolKind::Spin);
    assert_eq!(run(4), own[1]);
}
