//! Batches of several sequences in one forward pass: every row's logits must equal its
//! sequence's solo run bit for bit (rows never mix: per-row activation quantization, exact
//! integer dot products, per-sequence attention).

mod common;

use bitnet_candle::{Batch, Error, HeadType, KvCache, KvDtype, LoadOptions, Logits, Model, SeqId};
use common::{tiny_model, tiny_model_with, tiny_tensor_path_model};

/// Deterministic prompt `i` of `len` tokens.
fn prompt(i: usize, len: usize) -> Vec<u32> {
    (0..len)
        .map(|j| ((i * 97 + j * 31 + 5) % 290) as u32)
        .collect()
}

/// Logits of every token of `tokens` run alone, one row per token, fed as `chunks` calls.
fn solo(model: &Model, tokens: &[u32], chunks: &[usize], kv: KvDtype) -> Vec<Vec<f32>> {
    let mut cache = model.new_cache(tokens.len(), kv).unwrap();
    let mut rows = Vec::new();
    let mut at = 0;
    for &n in chunks {
        let t = model
            .weights()
            .forward(&mut cache, &tokens[at..at + n], at, Logits::All)
            .unwrap();
        rows.extend(t.to_vec2::<f32>().unwrap());
        at += n;
    }
    assert_eq!(at, tokens.len());
    rows
}

/// Runs `batch` and returns the logits of every token, by batch index.
fn run(model: &Model, cache: &mut KvCache, batch: &Batch) -> Vec<Vec<f32>> {
    let out = model.weights().decode(cache, batch).unwrap();
    (0..batch.len())
        .map(|i| out.get(i).expect("every row asked for logits").to_vec())
        .collect()
}

fn all_rows(batch: &mut Batch, seq: SeqId, start: usize, tokens: &[u32]) {
    for (k, &t) in tokens.iter().enumerate() {
        batch.add(t, start + k, seq, true);
    }
}

#[test]
fn prefill_and_decode_of_four_sequences_equal_their_solo_runs() {
    let (_dir, model) = tiny_model();
    // Lengths around the 16-position KV pages; the sequences also stop at different steps.
    let lens = [3usize, 16, 17, 40];
    let gen = [5usize, 2, 7, 4];
    let seqs: Vec<Vec<u32>> = (0..4).map(|i| prompt(i, lens[i] + gen[i])).collect();
    let mut cache = model
        .weights()
        .new_multi_cache(256, 4, KvDtype::F32)
        .unwrap();
    let mut got: Vec<Vec<Vec<f32>>> = vec![Vec::new(); 4];
    let mut batch = Batch::new();
    for (s, tokens) in seqs.iter().enumerate() {
        all_rows(&mut batch, s, 0, &tokens[..lens[s]]);
    }
    let rows = run(&model, &mut cache, &batch);
    for (i, row) in rows.into_iter().enumerate() {
        got[batch.seqs()[i]].push(row);
    }
    for step in 0..*gen.iter().max().unwrap() {
        batch.clear();
        for s in (0..4).filter(|&s| step < gen[s]) {
            let pos = lens[s] + step;
            batch.add(seqs[s][pos], pos, s, true);
        }
        let rows = run(&model, &mut cache, &batch);
        for (i, row) in rows.into_iter().enumerate() {
            got[batch.seqs()[i]].push(row);
        }
    }
    for s in 0..4 {
        let chunks: Vec<usize> = std::iter::once(lens[s])
            .chain(std::iter::repeat_n(1, gen[s]))
            .collect();
        let want = solo(&model, &seqs[s], &chunks, KvDtype::F32);
        assert_eq!(got[s], want, "sequence {s}");
        assert_eq!(cache.seq_len(s), seqs[s].len());
    }
}

#[test]
fn interleaved_rows_mixed_decode_and_prefill_and_f16_equal_solo_runs() {
    let (_dir, model) = tiny_model();
    for kv in [KvDtype::F32, KvDtype::F16] {
        let a = prompt(1, 30);
        let b = prompt(2, 12);
        let mut cache = model.weights().new_multi_cache(128, 2, kv).unwrap();
        // Sequence 0 reads 20 tokens; then one batch holds its next 10 prompt tokens
        // interleaved with all 12 of sequence 1's, then a batch of one decode row each.
        let mut batch = Batch::new();
        all_rows(&mut batch, 0, 0, &a[..20]);
        let first = run(&model, &mut cache, &batch);
        batch.clear();
        for k in 0..12 {
            if k < 10 {
                batch.add(a[20 + k], 20 + k, 0, true);
            }
            batch.add(b[k], k, 1, true);
        }
        let mixed = run(&model, &mut cache, &batch);
        let (mut got_a, mut got_b) = (first, Vec::new());
        for (i, row) in mixed.into_iter().enumerate() {
            match batch.seqs()[i] {
                0 => got_a.push(row),
                _ => got_b.push(row),
            }
        }
        assert_eq!(got_a, solo(&model, &a, &[20, 10], kv), "{kv:?}");
        assert_eq!(got_b, solo(&model, &b, &[12], kv), "{kv:?}");
    }
}

#[test]
fn a_cancelled_sequence_gives_its_cells_to_a_new_one_and_copies_share_a_prompt() {
    let (_dir, model) = tiny_model();
    // Budget for 32 positions of 3 sequences: 2 + 2 pages of 16.
    let mut cache = model
        .weights()
        .new_multi_cache(32, 3, KvDtype::F32)
        .unwrap();
    let long = prompt(3, 40);
    let mut batch = Batch::new();
    batch.add_sequence(0, 0, &long[..24], true);
    batch.add_sequence(1, 0, &prompt(4, 20), true);
    run_last(&model, &mut cache, &batch);
    // Sequence 1 is cancelled; sequence 2 takes its pages.
    cache.seq_clear(1).unwrap();
    let fresh = prompt(5, 30);
    batch.clear();
    all_rows(&mut batch, 2, 0, &fresh[..30]);
    let got = run(&model, &mut cache, &batch);
    assert_eq!(got, solo(&model, &fresh, &[30], KvDtype::F32));

    // The same prompt in two sequences: sequence 1 copies sequence 0's 24 positions (no new
    // pages), then both continue differently, each copying the shared partial page first (the
    // two free pages are exactly enough); each equals its solo run.
    cache.seq_clear(2).unwrap();
    cache.seq_copy_prefix(0, 1, 24).unwrap();
    assert_eq!(cache.pages_in_use(), 2);
    let other: Vec<u32> = long[..24].iter().chain(&[7u32, 8, 9]).copied().collect();
    batch.clear();
    all_rows(&mut batch, 0, 24, &long[24..27]);
    all_rows(&mut batch, 1, 24, &other[24..27]);
    let rows = run(&model, &mut cache, &batch);
    assert_eq!(
        rows[..3],
        solo(&model, &long[..27], &[24, 3], KvDtype::F32)[24..]
    );
    assert_eq!(
        rows[3..],
        solo(&model, &other, &[24, 3], KvDtype::F32)[24..]
    );
}

fn run_last(model: &Model, cache: &mut KvCache, batch: &Batch) {
    model.weights().decode(cache, batch).unwrap();
}

#[test]
fn bad_batches_are_errors_that_change_nothing() {
    let (_dir, model) = tiny_model();
    // 32 positions for 2 sequences: 2 + 1 pages of 16.
    let mut cache = model
        .weights()
        .new_multi_cache(32, 2, KvDtype::F32)
        .unwrap();
    let mut batch = Batch::new();
    batch.add_sequence(0, 0, &prompt(0, 17), true);
    run_last(&model, &mut cache, &batch);
    let err = |b: &Batch, cache: &mut KvCache| model.weights().decode(cache, b).unwrap_err();
    let mut b = Batch::new();
    b.add(1, 0, 2, true);
    assert!(matches!(err(&b, &mut cache), Error::UnknownSequence(_)));
    let mut b = Batch::new();
    b.add(1, 18, 0, true);
    assert!(matches!(err(&b, &mut cache), Error::Position(_)), "gap");
    let mut b = Batch::new();
    b.add_sequence(1, 0, &prompt(1, 30), true);
    let e = err(&b, &mut cache);
    assert!(
        matches!(e, Error::KvBudget(_)),
        "1 free page, 2 needed: {e}"
    );
    let mut b = Batch::new();
    b.add_sequence(1, 0, &prompt(1, 33), true);
    let e = err(&b, &mut cache);
    assert!(matches!(e, Error::KvBudget(_)), "past n_ctx: {e}");
    assert_eq!(cache.seq_len(0), 17, "rejected batches change nothing");
    assert_eq!(cache.seq_len(1), 0);
    // Logits only where asked; none at all is allowed.
    let mut b = Batch::new();
    b.add(3, 17, 0, false);
    let out = model.weights().decode(&mut cache, &b).unwrap();
    assert_eq!((out.n_outputs(), out.get(0)), (0, None));
    assert_eq!(cache.seq_len(0), 18);
}

#[test]
fn a_batch_run_in_several_pieces_equals_solo_runs() {
    // 3 x 200 rows: more than one piece of 512 rows, with sequence 2 split between two.
    let (_dir, model) = tiny_model();
    let mut cache = model
        .weights()
        .new_multi_cache(1024, 3, KvDtype::F32)
        .unwrap();
    let seqs: Vec<Vec<u32>> = (0..3).map(|i| prompt(10 + i, 200)).collect();
    let mut batch = Batch::new();
    for (s, tokens) in seqs.iter().enumerate() {
        batch.add_sequence(s, 0, tokens, true);
    }
    let out = model.weights().decode(&mut cache, &batch).unwrap();
    for (s, tokens) in seqs.iter().enumerate() {
        let want = solo(&model, tokens, &[200], KvDtype::F32);
        assert_eq!(
            out.get(200 * s + 199).unwrap(),
            &want[199][..],
            "sequence {s}"
        );
    }
}

#[test]
fn a_quantized_head_gives_batched_rows_their_solo_results() {
    // Each row's activations are quantized on their own for the integer head kernels, so a
    // quantized head keeps rows independent of their batch too.
    let (_dir, file) = tiny_model();
    let seqs: Vec<Vec<u32>> = (0..3).map(|i| prompt(20 + i, 9 + 4 * i)).collect();
    for head_type in [HeadType::Q8_0, HeadType::Q6K, HeadType::Q4_0] {
        let options = LoadOptions {
            head_type,
            ..Default::default()
        };
        let (_dir, model) = tiny_model_with(&options);
        let mut cache = model
            .weights()
            .new_multi_cache(64, 3, KvDtype::F32)
            .unwrap();
        let mut batch = Batch::new();
        for (s, tokens) in seqs.iter().enumerate() {
            all_rows(&mut batch, s, 0, tokens);
        }
        let got = run(&model, &mut cache, &batch);
        let mut at = 0;
        for tokens in &seqs {
            let want = solo(&model, tokens, &[tokens.len()], KvDtype::F32);
            assert_eq!(got[at..at + tokens.len()], want[..], "head {head_type}");
            let file_rows = solo(&file, tokens, &[tokens.len()], KvDtype::F32);
            assert_ne!(
                want, file_rows,
                "head {head_type}: the head was not quantized"
            );
            at += tokens.len();
        }
    }
}

/// The device-generic forward on the CPU keeps a head quantized at load on the CPU's dense
/// kernels: its logits are the tuned path's (a GPU refuses such heads at load).
#[test]
fn a_quantized_head_on_the_tensor_path_equals_the_tuned_path() {
    let tokens = prompt(5, 11);
    for head_type in [HeadType::Q8_0, HeadType::Q6K, HeadType::Q4_0] {
        let load = |tensor_ops_on_cpu| {
            tiny_model_with(&LoadOptions {
                head_type,
                tensor_ops_on_cpu,
                ..Default::default()
            })
        };
        let ((_d1, tuned), (_d2, generic)) = (load(false), load(true));
        let want = solo(&tuned, &tokens, &[7, 1, 3], KvDtype::F32);
        let got = solo(&generic, &tokens, &[7, 1, 3], KvDtype::F32);
        for (r, (g, w)) in got.iter().zip(&want).enumerate() {
            let scale = w.iter().fold(0f32, |m, v| m.max(v.abs()));
            let diff = g.iter().zip(w).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(
                diff <= 1e-5 * scale,
                "head {head_type}: row {r}: max|Δ| {diff} vs max|logit| {scale}"
            );
        }
    }
}

/// A model on the device-generic forward (what a GPU runs; here on the CPU) has one-sequence
/// caches: its batches of sequence 0 decode like forward, anything more is a clear error.
#[test]
fn a_tensor_path_model_decodes_batches_of_its_one_sequence() {
    let (_dir, model) = tiny_tensor_path_model();
    let w = model.weights();
    let tokens = prompt(3, 9);
    let want = solo(&model, &tokens, &[6, 1, 2], KvDtype::F32);
    let mut cache = w.new_cache(32, KvDtype::F32).unwrap();
    let mut batch = Batch::new();
    // Logits of some rows only, then of the last only, then of none and of every row.
    for (k, &t) in tokens[..6].iter().enumerate() {
        batch.add(t, k, 0, k % 2 == 1);
    }
    let out = w.decode(&mut cache, &batch).unwrap();
    assert_eq!(out.n_outputs(), 3);
    for k in [1, 3, 5] {
        assert_eq!(out.get(k).unwrap(), &want[k][..], "prefill row {k}");
    }
    assert!(out.get(0).is_none());
    batch.clear();
    batch.add(tokens[6], 6, 0, true);
    assert_eq!(run(&model, &mut cache, &batch)[0], want[6]);
    batch.clear();
    batch.add(tokens[7], 7, 0, false);
    assert_eq!(w.decode(&mut cache, &batch).unwrap().n_outputs(), 0);
    assert_eq!(cache.seq_len(0), 8);
    // Back to position 7: the same token gives the same logits (positions past it forgotten).
    batch.clear();
    all_rows(&mut batch, 0, 7, &tokens[7..9]);
    assert_eq!(run(&model, &mut cache, &batch), want[7..9].to_vec());

    // A failed pass keeps the positions before it.
    batch.clear();
    batch.add(tokens[0], 9, 0, true);
    batch.add(100_000, 10, 0, true);
    assert!(w.decode(&mut cache, &batch).is_err());
    assert_eq!(cache.seq_len(0), 9);
    // Other sequences do not exist; several sequences per cache are the CPU path's.
    batch.clear();
    batch.add(tokens[0], 0, 1, true);
    assert!(matches!(
        w.decode(&mut cache, &batch),
        Err(Error::UnknownSequence(_))
    ));
    match w.new_multi_cache(64, 2, KvDtype::F32) {
        Err(Error::InvalidArgument(m)) => assert!(m.contains("one sequence"), "{m}"),
        other => panic!("expected a clear error, got {other:?}"),
    }
    // Caches of the two paths do not mix.
    let (_dir2, tuned) = tiny_model();
    let mut paged = tuned.new_cache(32, KvDtype::F32).unwrap();
    assert!(matches!(
        w.forward(&mut paged, &tokens[..1], 0, Logits::Last),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        tuned.weights().decode(&mut cache, &batch),
        Err(Error::InvalidArgument(_))
    ));
}
