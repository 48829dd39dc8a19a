//! Ternary matmuls routed onto candle's `barrier_pool()` give the same results as on the
//! backend's own pool. (Own test binary: the pool choice is process-wide.)

use bitnet_backend::threads::{self, PoolKind};
use bitnet_candle::pool::{use_backend_pool, use_candle_barrier_pool};
use bitnet_candle::BitLinear;
use candle_core::{Device, Module, Tensor};

#[test]
fn bit_linear_on_candles_barrier_pool_equals_the_backend_pool() {
    let dev = Device::Cpu;
    let w = Tensor::randn(0f32, 1.0, (2560, 2560), &dev).unwrap();
    let layer = BitLinear::from_float(&w).unwrap();
    let one = Tensor::randn(0f32, 1.0, (1, 2560), &dev).unwrap();
    let many = Tensor::randn(0f32, 1.0, (2, 9, 2560), &dev).unwrap();
    let run = |x: &Tensor| {
        layer
            .forward(x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    let own = (run(&one), run(&many));
    use_candle_barrier_pool();
    assert_eq!(threads::pool_kind(), PoolKind::External);
    assert_eq!(
        threads::num_threads(),
        candle_core::utils::barrier_pool().n_workers() + 1
    );
    assert_eq!((run(&one), run(&many)), own);
    use_backend_pool();
    assert_eq!(threads::pool_kind(), PoolKind::Spin);
    assert_eq!((run(&one), run(&many)), own);
}
