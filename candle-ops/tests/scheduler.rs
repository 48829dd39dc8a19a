//! Continuous batching: every request's tokens equal its solo run, whatever joins, leaves or
//! shares a prompt around it.

mod common;

use common::{tiny_model, tiny_tensor_path_model};
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};

use bitnet_candle::scheduler::{BatchGenerator, Finished, Request, SchedulerConfig};
use bitnet_candle::{Error, GenerationParams, KvDtype, Model, SamplingParams, Session, StopReason};

fn prompt(model: &Model, i: usize, len: usize) -> Vec<u32> {
    let mut p = vec![model.bos().unwrap()];
    p.extend((1..len).map(|j| ((i * 89 + j * 37 + 11) % 250 + 20) as u32));
    p
}

fn greedy(max_new_tokens: usize) -> GenerationParams {
    GenerationParams {
        max_new_tokens,
        ..Default::default()
    }
}

/// Greedy, exactly `max_new_tokens` tokens (the random model may otherwise stop early).
fn exactly(max_new_tokens: usize) -> GenerationParams {
    GenerationParams {
        ignore_eos: true,
        ..greedy(max_new_tokens)
    }
}

/// What `Session::generate` produces alone: tokens, stop reason, text.
fn solo(
    model: &Model,
    prompt: &[u32],
    params: &GenerationParams,
) -> (Vec<u32>, StopReason, String) {
    let mut s = Session::new(model, 256, KvDtype::F32).unwrap();
    let g = s
        .generate(prompt, params, |_| ControlFlow::Continue(()))
        .unwrap();
    (g.tokens, g.stop, g.text)
}

fn config(n_seq_max: usize, n_ctx: usize) -> SchedulerConfig {
    SchedulerConfig {
        n_seq_max,
        n_ctx,
        n_batch: 64,
        prefill_chunk: 32,
        kv_dtype: KvDtype::F32,
        prefix_reuse: true,
        resident_kv: false,
    }
}

/// Steps until idle; finished requests by id.
fn drain(g: &mut BatchGenerator) -> Vec<Finished> {
    let mut done = Vec::new();
    let mut steps = 0;
    while !g.is_idle() {
        done.extend(g.step().unwrap());
        steps += 1;
        assert!(steps < 10_000, "the generator does not finish");
    }
    done.sort_by_key(|f| f.id);
    done
}

#[test]
fn greedy_and_sampled_requests_equal_their_solo_runs() {
    let (_dir, model) = tiny_model();
    let mut g = BatchGenerator::new(&model, config(4, 512)).unwrap();
    let sampled = |seed| GenerationParams {
        max_new_tokens: 9,
        sampling: SamplingParams {
            temperature: 1.2,
            top_k: 40,
            top_p: 0.9,
            repeat_penalty: 1.1,
            seed,
            ..Default::default()
        },
        ..Default::default()
    };
    // Five requests for four sequences: one waits and joins when the first one leaves.
    let cases = vec![
        (prompt(&model, 0, 5), greedy(3)),
        (prompt(&model, 1, 50), greedy(12)),
        (prompt(&model, 2, 17), sampled(7)),
        (prompt(&model, 3, 9), sampled(8)),
        (prompt(&model, 4, 30), greedy(6)),
    ];
    for (p, params) in &cases {
        g.add(Request::new(p.clone(), params.clone())).unwrap();
    }
    let done = drain(&mut g);
    assert_eq!(done.len(), cases.len());
    for (f, (p, params)) in done.iter().zip(&cases) {
        let (tokens, stop, text) = solo(&model, p, params);
        assert_eq!(f.tokens, tokens, "request {}", f.id);
        assert_eq!(f.stop, stop, "request {}", f.id);
        assert_eq!(f.text, text, "request {}", f.id);
        assert_eq!(f.stats.n_generated, tokens.len());
        assert_eq!(f.stats.n_prompt, p.len());
    }
    assert!(done[4].stats.queued > std::time::Duration::ZERO);
}

#[test]
fn a_long_prompt_is_read_in_chunks_between_decode_steps() {
    let (_dir, model) = tiny_model();
    let mut g = BatchGenerator::new(
        &model,
        SchedulerConfig {
            prefill_chunk: 8,
            ..config(2, 256)
        },
    )
    .unwrap();
    let tokens = Arc::new(Mutex::new(0usize));
    let seen = Arc::clone(&tokens);
    let short = prompt(&model, 5, 4);
    g.add(Request::new(short.clone(), exactly(20)).on_token(move |_| {
        *seen.lock().unwrap() += 1;
        ControlFlow::Continue(())
    }))
    .unwrap();
    g.step().unwrap();
    assert_eq!(*tokens.lock().unwrap(), 1);
    let long = prompt(&model, 6, 60);
    g.add(Request::new(long.clone(), greedy(4))).unwrap();
    // 60 prompt tokens in chunks of 8 take 8 steps; the first request gets a token in each.
    for step in 2..=9 {
        g.step().unwrap();
        assert_eq!(*tokens.lock().unwrap(), step, "the decode never waits");
    }
    let done = drain(&mut g);
    assert_eq!(done[0].tokens, solo(&model, &short, &exactly(20)).0);
    assert_eq!(done[1].tokens, solo(&model, &long, &greedy(4)).0);
}

#[test]
fn cancelled_requests_free_their_sequence_for_the_next() {
    let (_dir, model) = tiny_model();
    let mut g = BatchGenerator::new(&model, config(2, 256)).unwrap();
    let a = g
        .add(Request::new(prompt(&model, 7, 10), exactly(30)))
        .unwrap();
    let b = g
        .add(Request::new(prompt(&model, 8, 12), greedy(10)))
        .unwrap();
    let c = g
        .add(Request::new(prompt(&model, 9, 14), greedy(8)))
        .unwrap();
    for _ in 0..3 {
        g.step().unwrap();
    }
    assert_eq!((g.n_active(), g.n_queued()), (2, 1));
    let cancelled = g.cancel(a).unwrap();
    assert_eq!(cancelled.stop, StopReason::Cancelled);
    assert_eq!(cancelled.tokens.len(), 3);
    assert!(g.cancel(a).is_none(), "already gone");
    let done = drain(&mut g);
    assert_eq!(done.iter().map(|f| f.id).collect::<Vec<_>>(), vec![b, c]);
    assert_eq!(
        done[0].tokens,
        solo(&model, &prompt(&model, 8, 12), &greedy(10)).0
    );
    assert_eq!(
        done[1].tokens,
        solo(&model, &prompt(&model, 9, 14), &greedy(8)).0
    );
    // A queued request can be cancelled too.
    let d = g
        .add(Request::new(prompt(&model, 1, 5), greedy(2)))
        .unwrap();
    assert_eq!(g.cancel(d).unwrap().stop, StopReason::Cancelled);
    assert!(g.is_idle());
}

#[test]
fn prefixes_are_reused_and_a_shared_prompt_is_read_once() {
    let (_dir, model) = tiny_model();
    let mut g = BatchGenerator::new(&model, config(4, 512)).unwrap();
    let system = prompt(&model, 10, 40);
    let first = g.add(Request::new(system.clone(), greedy(5))).unwrap();
    let done = drain(&mut g);
    assert_eq!(done[0].stats.n_prompt_reused, 0);
    // A chat that resends the history plus a new turn reuses the cached history.
    let mut turn = system.clone();
    turn.extend(&done[0].tokens);
    turn.extend([40, 41, 42]);
    g.add(Request::new(turn.clone(), greedy(4))).unwrap();
    let again = drain(&mut g);
    // Cached: the prompt and every generated token but a last one that hit max_new_tokens.
    let decoded = done[0].tokens.len() - usize::from(done[0].stop == StopReason::MaxTokens);
    assert_eq!(again[0].stats.n_prompt_reused, system.len() + decoded);
    assert_eq!(again[0].tokens, solo(&model, &turn, &greedy(4)).0);

    // Three requests with one 40-token prompt (plus different tails) arriving together: the
    // prompt is read once, by the first; the others copy it.
    g.clear_idle_cache();
    let mut cases = Vec::new();
    for tail in [[50u32, 51], [60, 61], [70, 71]] {
        let mut p = prompt(&model, 11, 40);
        p.extend(tail);
        g.add(Request::new(p.clone(), greedy(6))).unwrap();
        cases.push(p);
    }
    let done = drain(&mut g);
    let reused: Vec<usize> = done.iter().map(|f| f.stats.n_prompt_reused).collect();
    assert_eq!(reused, vec![0, 40, 40]);
    for (f, p) in done.iter().zip(&cases) {
        assert_eq!(f.tokens, solo(&model, p, &greedy(6)).0, "request {}", f.id);
    }
    assert!(first < done[0].id);
}

#[test]
fn the_kv_budget_is_shared_and_a_request_waits_until_it_fits() {
    let (_dir, model) = tiny_model();
    // 64 positions for 3 sequences = 4 + 2 pages; each request needs 40 + 9 positions = 4.
    let mut g = BatchGenerator::new(
        &model,
        SchedulerConfig {
            prefill_chunk: 64,
            ..config(3, 64)
        },
    )
    .unwrap();
    let too_long = g.add(Request::new(prompt(&model, 0, 65), greedy(1)));
    assert!(matches!(too_long, Err(Error::KvBudget(_))), "{too_long:?}");
    let ps: Vec<Vec<u32>> = (0..3).map(|i| prompt(&model, 20 + i, 40)).collect();
    for p in &ps {
        g.add(Request::new(p.clone(), exactly(10))).unwrap();
    }
    g.step().unwrap();
    assert_eq!((g.n_active(), g.n_queued()), (1, 2), "one at a time fits");
    let usage = g.kv_usage();
    assert_eq!((usage.pages_total, usage.pages_in_use), (6, 3));
    assert_eq!(usage.pages_reserved, 1);
    let done = drain(&mut g);
    for (f, p) in done.iter().zip(&ps) {
        assert_eq!(
            f.tokens,
            solo(&model, p, &exactly(10)).0,
            "{:?} {:?}",
            f.stop,
            f.error
        );
    }
    assert!(g.add(Request::new(Vec::new(), greedy(1))).is_err(), "empty");
    assert!(
        g.add(Request::new(vec![300], greedy(1))).is_err(),
        "outside the vocabulary"
    );
}

#[test]
fn callbacks_stop_tokens_and_zero_tokens_end_requests() {
    let (_dir, model) = tiny_model();
    let mut g = BatchGenerator::new(&model, config(3, 256)).unwrap();
    let p = prompt(&model, 30, 8);
    let params = exactly(10);
    let (want, _, _) = solo(&model, &p, &params);
    let stop_at = g
        .add(
            Request::new(p.clone(), params.clone()).on_token(|ev| match ev.n_generated {
                3 => ControlFlow::Break(()),
                _ => ControlFlow::Continue(()),
            }),
        )
        .unwrap();
    let mut with_stop = Request::new(p.clone(), params);
    with_stop.stop_tokens = vec![want[4]];
    g.add(with_stop).unwrap();
    g.add(Request::new(p.clone(), greedy(0))).unwrap();
    let done = drain(&mut g);
    assert_eq!((done[0].id, done[0].stop), (stop_at, StopReason::Callback));
    assert_eq!(done[0].tokens, want[..3]);
    let first = want.iter().position(|&t| t == want[4]).unwrap();
    assert_eq!(done[1].stop, StopReason::EndOfGeneration(want[4]));
    assert_eq!(done[1].tokens, want[..first]);
    assert_eq!(
        (done[2].stop, done[2].tokens.len()),
        (StopReason::MaxTokens, 0)
    );
}

#[test]
fn a_generator_can_move_to_an_engine_thread() {
    fn send<T: Send>() {}
    send::<BatchGenerator>();
}

/// On the device-generic forward (what a GPU runs; here on the CPU) a generator has one
/// sequence: it serves requests one after another as a Session would, and asking for more
/// sequences is a clear error.
#[test]
fn a_tensor_path_generator_serves_one_sequence() {
    let (_dir, model) = tiny_tensor_path_model();
    match BatchGenerator::new(&model, config(2, 256)) {
        Err(Error::InvalidArgument(m)) => assert!(m.contains("one sequence"), "{m}"),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a tensor-path generator of two sequences"),
    }
    let mut g = BatchGenerator::new(&model, config(1, 256)).unwrap();
    let prompts: Vec<Vec<u32>> = (0..2).map(|i| prompt(&model, i, 10)).collect();
    for p in &prompts {
        g.add(Request::new(p.clone(), exactly(6))).unwrap();
    }
    let done = drain(&mut g);
    assert_eq!(done.len(), 2);
    for (f, p) in done.iter().zip(&prompts) {
        assert_eq!(f.tokens, solo(&model, p, &exactly(6)).0);
    }
}
