//! Sessions, generation and streaming on a small synthetic model.

mod common;

use common::tiny_model;
use std::ops::ControlFlow;

use bitnet_candle::{
    GenerationParams, Generator, KvDtype, Model, SamplingParams, Session, StopReason, TextStreamer,
};

fn generate(model: &Model, prompt: &[u32], params: &GenerationParams) -> Vec<u32> {
    let mut s = Session::new(model, 64, KvDtype::F32).unwrap();
    s.generate(prompt, params, |_| ControlFlow::Continue(()))
        .unwrap()
        .tokens
}

#[test]
fn greedy_and_seeded_sampling_are_reproducible() {
    let (_dir, model) = tiny_model();
    let prompt = [model.bos().unwrap(), 10, 20, 30];
    let greedy = GenerationParams {
        max_new_tokens: 12,
        ..Default::default()
    };
    let a = generate(&model, &prompt, &greedy);
    assert_eq!(a.len(), 12);
    assert_eq!(a, generate(&model, &prompt, &greedy));
    let sampled = |seed| GenerationParams {
        max_new_tokens: 12,
        sampling: SamplingParams {
            temperature: 1.5,
            top_k: 50,
            top_p: 0.95,
            repeat_penalty: 1.1,
            seed,
            ..Default::default()
        },
        ..Default::default()
    };
    let s1 = generate(&model, &prompt, &sampled(1));
    assert_eq!(s1, generate(&model, &prompt, &sampled(1)));
    assert_ne!(s1, generate(&model, &prompt, &sampled(2)));
}

#[test]
fn stop_reasons() {
    let (_dir, model) = tiny_model();
    let prompt = [model.bos().unwrap(), 5, 6, 7];
    let params = GenerationParams {
        max_new_tokens: 50,
        ..Default::default()
    };
    // The context holds 6 positions: the prompt, then two generated tokens are evaluated and a
    // third is sampled from the last logits.
    let mut s = Session::new(&model, 6, KvDtype::F32).unwrap();
    let out = s
        .generate(&prompt, &params, |_| ControlFlow::Continue(()))
        .unwrap();
    assert_eq!(out.stop, StopReason::ContextFull);
    assert_eq!(out.tokens.len(), 3);
    assert_eq!(out.n_prompt_eval, 4);

    let mut s = Session::new(&model, 64, KvDtype::F32).unwrap();
    let mut calls = 0;
    let out = s
        .generate(&prompt, &params, |_| {
            calls += 1;
            ControlFlow::Break(())
        })
        .unwrap();
    assert_eq!(out.stop, StopReason::Callback);
    assert!(out.tokens.len() < 50);
    assert!(calls >= 1);

    let out = s
        .generate(
            &prompt,
            &GenerationParams {
                max_new_tokens: 3,
                ..Default::default()
            },
            |_| ControlFlow::Continue(()),
        )
        .unwrap();
    assert_eq!(out.stop, StopReason::MaxTokens);
    assert_eq!(out.tokens.len(), 3);
}

#[test]
fn prefill_reuses_the_cached_prefix_and_matches_a_fresh_session() {
    let (_dir, model) = tiny_model();
    let first = [model.bos().unwrap(), 40, 41, 42, 43];
    let longer = [model.bos().unwrap(), 40, 41, 42, 43, 44, 45];
    let mut s = Session::new(&model, 64, KvDtype::F32).unwrap();
    s.prefill(&first).unwrap();
    let reused = s.prefill(&longer).unwrap();
    assert_eq!(s.tokens(), &longer);
    let mut fresh = Session::new(&model, 64, KvDtype::F32).unwrap();
    let want = fresh.prefill(&longer).unwrap();
    let diff = reused
        .iter()
        .zip(&want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(diff < 1e-4, "{diff}");

    // Generation after a shared prefix only computes the new prompt tokens.
    let mut g = Generator::new(&mut s, &longer, &GenerationParams::default()).unwrap();
    assert!(g.next_token().unwrap().is_some());
    drop(g);
    s.reset();
    assert!(s.tokens().is_empty());
    assert!(Session::new(&model, 64, KvDtype::F32)
        .unwrap()
        .prefill(&[])
        .is_err());
}

#[test]
fn streamer_never_splits_a_character() {
    let (_dir, model) = tiny_model();
    let tok = model.tokenizer();
    // The synthetic vocabulary has no merges, so every byte of "é€" is its own token.
    let ids = tok.encode("aé€b", false).unwrap();
    assert_eq!(ids.len(), 1 + 2 + 3 + 1);
    let mut st = TextStreamer::new(tok.clone(), &[], true);
    let pieces: Vec<String> = ids.iter().map(|&i| st.push(i).unwrap()).collect();
    assert_eq!(pieces, vec!["a", "", "é", "", "", "€", "b"]);
    // A sequence cut inside a character never shows the broken tail.
    let mut st = TextStreamer::new(tok.clone(), &[], true);
    assert_eq!(st.push(ids[0]).unwrap(), "a");
    assert_eq!(st.push(ids[1]).unwrap(), "");
    assert_eq!(st.flush().unwrap(), "");
}

#[test]
fn chat_template_falls_back_to_bitnet_format() {
    let (_dir, model) = tiny_model();
    assert!(model.chat_template().is_none());
    let text = model
        .apply_chat_template(&[bitnet_candle::ChatMessage::new("user", "hi")], true)
        .unwrap();
    assert_eq!(text, "User: hi<|eot_id|>Assistant: ");
    let ids = model.tokenizer().encode(&text, true).unwrap();
    assert_eq!(ids[0], model.bos().unwrap());
    assert!(ids.contains(&model.eot().unwrap()));
    assert!(model.token_is_eog(model.eot().unwrap()));
    assert!(model.token_is_eog(model.eos().unwrap()));
}
