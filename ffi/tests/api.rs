//! The C API driven from Rust: results must equal the Rust API's and the transformers reference.

mod common;

use std::ffi::{c_char, CStr, CString};
use std::ptr;

use bitnet::*;
use bitnet_candle::{Model, SamplingParams};

/// A loaded model handle, freed on drop.
struct ModelHandle(*mut bitnet_model);

impl ModelHandle {
    fn load() -> Self {
        Self::load_with(None).unwrap_or_else(|st| panic!("status {st}: {}", last_error()))
    }

    /// Loads the fixture with `params` (NULL when `None`).
    fn load_with(params: Option<&bitnet_model_params>) -> Result<Self, bitnet_status> {
        let path = CString::new(common::gguf().to_str().unwrap()).unwrap();
        let mut m = ptr::null_mut();
        let p = params.map_or(ptr::null(), |p| p as *const _);
        // SAFETY: valid C string, NULL or a whole params struct, writable out pointer.
        let st = unsafe { bitnet_model_load(path.as_ptr(), p, &mut m) };
        match st {
            BITNET_OK => Ok(Self(m)),
            _ => Err(st),
        }
    }

    fn n_vocab(&self) -> usize {
        // SAFETY: live handle.
        unsafe { bitnet_model_n_vocab(self.0) as usize }
    }

    fn tokenize(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<bitnet_token> {
        let mut ids = vec![0; text.len() + 2];
        let mut n = 0;
        // SAFETY: `text.len()` readable bytes, `ids.len()` writable ids.
        let st = unsafe {
            bitnet_tokenize(
                self.0,
                text.as_ptr().cast(),
                text.len() as i32,
                ids.as_mut_ptr(),
                ids.len() as i32,
                add_special,
                parse_special,
                &mut n,
            )
        };
        assert_eq!(st, BITNET_OK, "{}", last_error());
        ids.truncate(n as usize);
        ids
    }

    fn piece(&self, token: bitnet_token, special: bool) -> Vec<u8> {
        let mut buf = [0u8; 64];
        let mut n = 0;
        // SAFETY: live handle, 64 writable bytes.
        let st = unsafe {
            bitnet_token_to_piece(self.0, token, buf.as_mut_ptr().cast(), 64, special, &mut n)
        };
        assert_eq!(st, BITNET_OK, "{}", last_error());
        buf[..n as usize].to_vec()
    }

    fn detokenize(
        &self,
        ids: &[bitnet_token],
        remove_special: bool,
        unparse_special: bool,
    ) -> String {
        let mut n = 0;
        // SAFETY: size query with a NULL buffer of size 0.
        let st = unsafe {
            bitnet_detokenize(
                self.0,
                ids.as_ptr(),
                ids.len() as i32,
                ptr::null_mut(),
                0,
                remove_special,
                unparse_special,
                &mut n,
            )
        };
        assert!(st == BITNET_ERR_BUFFER_TOO_SMALL || st == BITNET_OK);
        let mut buf = vec![0u8; n as usize + 1];
        // SAFETY: n + 1 writable bytes.
        let st = unsafe {
            bitnet_detokenize(
                self.0,
                ids.as_ptr(),
                ids.len() as i32,
                buf.as_mut_ptr().cast(),
                n + 1,
                remove_special,
                unparse_special,
                &mut n,
            )
        };
        assert_eq!(st, BITNET_OK, "{}", last_error());
        buf.truncate(n as usize);
        String::from_utf8(buf).unwrap()
    }
}

impl Drop for ModelHandle {
    fn drop(&mut self) {
        // SAFETY: live handle, freed once.
        unsafe { bitnet_model_free(self.0) }
    }
}

/// A context and a sampler, freed on drop.
struct Run {
    ctx: *mut bitnet_context,
    smpl: *mut bitnet_sampler,
}

impl Run {
    fn new(model: &ModelHandle, n_ctx: u32, sampling: Option<bitnet_sampler_params>) -> Self {
        Self::with_sequences(model, n_ctx, 1, sampling)
    }

    fn with_sequences(
        model: &ModelHandle,
        n_ctx: u32,
        n_seq_max: u32,
        sampling: Option<bitnet_sampler_params>,
    ) -> Self {
        let mut p = context_params();
        p.n_ctx = n_ctx;
        p.n_seq_max = n_seq_max;
        let mut ctx = ptr::null_mut();
        // SAFETY: live model, valid params, writable out pointer.
        assert_eq!(
            unsafe { bitnet_context_init(model.0, &p, &mut ctx) },
            BITNET_OK,
            "{}",
            last_error()
        );
        let mut smpl = ptr::null_mut();
        let st = match sampling {
            // SAFETY: valid params, writable out pointer.
            Some(sp) => unsafe { bitnet_sampler_init(&sp, &mut smpl) },
            // SAFETY: writable out pointer.
            None => unsafe { bitnet_sampler_init_greedy(&mut smpl) },
        };
        assert_eq!(st, BITNET_OK, "{}", last_error());
        Self { ctx, smpl }
    }

    fn decode(
        &self,
        tokens: &mut [bitnet_token],
        pos: Option<&mut [bitnet_pos]>,
        logits: Option<&mut [i8]>,
    ) -> bitnet_status {
        let batch = bitnet_batch {
            n_tokens: tokens.len() as i32,
            token: tokens.as_mut_ptr(),
            pos: pos.map_or(ptr::null_mut(), |p| p.as_mut_ptr()),
            logits: logits.map_or(ptr::null_mut(), |l| l.as_mut_ptr()),
        };
        // SAFETY: live context; arrays of n_tokens elements.
        unsafe { bitnet_decode(self.ctx, &batch) }
    }

    fn logits(&self, i: i32, n_vocab: usize) -> Vec<f32> {
        let mut p = ptr::null();
        // SAFETY: live context, writable out pointer.
        let st = unsafe { bitnet_get_logits_ith(self.ctx, i, &mut p) };
        assert_eq!(st, BITNET_OK, "{}", last_error());
        // SAFETY: the library returned n_vocab floats, valid until the next decode.
        unsafe { std::slice::from_raw_parts(p, n_vocab) }.to_vec()
    }

    fn sample(&self) -> bitnet_token {
        let mut t = -1;
        // SAFETY: live handles, writable out pointer.
        let st = unsafe { bitnet_sampler_sample(self.smpl, self.ctx, -1, &mut t) };
        assert_eq!(st, BITNET_OK, "{}", last_error());
        t
    }

    /// simple.c's loop.
    fn generate(
        &self,
        model: &ModelHandle,
        prompt: &[bitnet_token],
        n_predict: usize,
    ) -> Vec<bitnet_token> {
        let mut batch = prompt.to_vec();
        let mut out = Vec::new();
        for _ in 0..n_predict {
            assert_eq!(
                self.decode(&mut batch, None, None),
                BITNET_OK,
                "{}",
                last_error()
            );
            let t = self.sample();
            // SAFETY: live handle.
            if unsafe { bitnet_token_is_eog(model.0, t) } {
                break;
            }
            out.push(t);
            batch = vec![t];
        }
        out
    }
}

/// The default context parameters.
fn context_params() -> bitnet_context_params {
    let mut p = bitnet_context_params {
        struct_size: 0,
        n_ctx: 0,
        n_threads: 0,
        seed: 0,
        type_kv: 0,
        n_seq_max: 0,
        n_batch: 0,
    };
    // SAFETY: a whole params struct.
    assert_eq!(
        unsafe { bitnet_context_params_init(&mut p, std::mem::size_of_val(&p)) },
        BITNET_OK
    );
    p
}

impl Drop for Run {
    fn drop(&mut self) {
        // SAFETY: live handles, freed once.
        unsafe {
            bitnet_sampler_free(self.smpl);
            bitnet_free(self.ctx);
        }
    }
}

fn last_error() -> String {
    // SAFETY: always a valid C string.
    unsafe { CStr::from_ptr(bitnet_last_error()) }
        .to_string_lossy()
        .into_owned()
}

fn c_text(p: *const c_char) -> String {
    assert!(!p.is_null());
    // SAFETY: a C string owned by the model.
    unsafe { CStr::from_ptr(p) }.to_str().unwrap().to_owned()
}

fn to_u32(ids: &[bitnet_token]) -> Vec<u32> {
    ids.iter().map(|&t| t as u32).collect()
}

#[test]
fn greedy_generation_matches_transformers_and_the_rust_api() {
    let reference = common::reference();
    let m = ModelHandle::load();
    let prompt = m.tokenize(&reference.prompt, true, true);
    assert_eq!(
        to_u32(&prompt),
        reference.prompt_ids,
        "tokenizer vs transformers"
    );
    let n = reference.new_ids.len();
    let run = Run::new(&m, (prompt.len() + n) as u32, None);
    let got = run.generate(&m, &prompt, n);
    assert_eq!(
        to_u32(&got),
        reference.new_ids,
        "greedy continuation vs transformers"
    );
    let (rust, text) = common::rust_generate(&reference.prompt, n, SamplingParams::default());
    assert_eq!(to_u32(&got), rust);
    assert_eq!(m.detokenize(&got, false, false), text);
}

#[test]
fn seeded_sampling_matches_the_rust_generator() {
    let reference = common::reference();
    let m = ModelHandle::load();
    let prompt = m.tokenize(&reference.prompt, true, true);
    let mut sp = bitnet_sampler_params {
        struct_size: 0,
        temperature: 0.0,
        top_k: 0,
        top_p: 0.0,
        repeat_penalty: 0.0,
        repeat_last_n: 0,
        seed: 0,
    };
    // SAFETY: a whole params struct.
    assert_eq!(
        unsafe { bitnet_sampler_params_init(&mut sp, std::mem::size_of_val(&sp)) },
        BITNET_OK
    );
    (
        sp.temperature,
        sp.top_k,
        sp.top_p,
        sp.repeat_penalty,
        sp.repeat_last_n,
        sp.seed,
    ) = (0.9, 50, 0.95, 1.1, 16, 1234);
    let run = Run::new(&m, (prompt.len() + 32) as u32, Some(sp));
    let got = run.generate(&m, &prompt, 32);
    let sampling = SamplingParams {
        temperature: 0.9,
        top_k: 50,
        top_p: 0.95,
        repeat_penalty: 1.1,
        repeat_last_n: 16,
        seed: 1234,
    };
    let (rust, _) = common::rust_generate(&reference.prompt, 32, sampling);
    assert_eq!(to_u32(&got), rust);
    let (greedy, _) = common::rust_generate(&reference.prompt, 32, SamplingParams::default());
    assert_ne!(
        rust, greedy,
        "the sampler settings must matter for this test to mean anything"
    );
}

#[test]
fn logits_of_every_batch_token_equal_the_model_forward() {
    let reference = common::reference();
    let m = ModelHandle::load();
    let n_vocab = m.n_vocab();
    let mut prompt = m.tokenize(&reference.prompt, true, true);
    let n = prompt.len();
    let run = Run::new(&m, 64, None);
    let mut all = vec![1i8; n];
    assert_eq!(run.decode(&mut prompt, None, Some(&mut all)), BITNET_OK);
    let rows: Vec<Vec<f32>> = (0..n as i32).map(|i| run.logits(i, n_vocab)).collect();

    let model = Model::load(common::gguf(), &Default::default()).unwrap();
    let mut cache = model.new_cache(64, Default::default()).unwrap();
    let expect = model
        .forward_all(&mut cache, &to_u32(&prompt), 0)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    assert_eq!(rows, expect);
    assert_eq!(run.logits(-1, n_vocab), expect[n - 1]);

    // Decoding the tail again at its own positions (a rewind) reproduces its logits.
    let mut tail = prompt[n - 3..].to_vec();
    let mut pos: Vec<bitnet_pos> = (n as i32 - 3..n as i32).collect();
    assert_eq!(run.decode(&mut tail, Some(&mut pos), None), BITNET_OK);
    // SAFETY: live context.
    assert_eq!(unsafe { bitnet_kv_cache_n_tokens(run.ctx) }, n as i32);
    let mut cache = model.new_cache(64, Default::default()).unwrap();
    let last = model
        .forward(&mut cache, &to_u32(&prompt), 0)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(run.logits(-1, n_vocab), last);
}

#[test]
fn head_type_param_quantizes_the_head_as_the_rust_api_does() {
    let reference = common::reference();
    // SAFETY: a whole params struct.
    let mut p = unsafe { std::mem::zeroed::<bitnet_model_params>() };
    // SAFETY: `p` is a whole, writable params struct.
    let st = unsafe { bitnet_model_params_init(&mut p, std::mem::size_of_val(&p)) };
    assert_eq!(st, BITNET_OK);
    assert_eq!(p.head_type, BITNET_HEAD_FILE as i32);
    for (c, rust) in [
        (BITNET_HEAD_Q8_0, bitnet_candle::HeadType::Q8_0),
        (BITNET_HEAD_Q6_K, bitnet_candle::HeadType::Q6K),
        (BITNET_HEAD_Q4_0, bitnet_candle::HeadType::Q4_0),
    ] {
        p.head_type = c as i32;
        let m = ModelHandle::load_with(Some(&p)).unwrap_or_else(|_| panic!("{}", last_error()));
        let mut prompt = m.tokenize(&reference.prompt, true, true);
        let run = Run::new(&m, 64, None);
        assert_eq!(run.decode(&mut prompt, None, None), BITNET_OK);
        let options = bitnet_candle::LoadOptions {
            head_type: rust,
            ..Default::default()
        };
        let model = Model::load(common::gguf(), &options).unwrap();
        let mut cache = model.new_cache(64, Default::default()).unwrap();
        let expect = model
            .forward(&mut cache, &to_u32(&prompt), 0)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let file_head = Model::load(common::gguf(), &Default::default()).unwrap();
        let mut cache = file_head.new_cache(64, Default::default()).unwrap();
        let unquantized = file_head
            .forward(&mut cache, &to_u32(&prompt), 0)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let got = run.logits(-1, m.n_vocab());
        assert_eq!(got, expect, "{rust}");
        assert_ne!(got, unquantized, "{rust}: the head was not quantized");
    }
    p.head_type = 4;
    assert_eq!(
        ModelHandle::load_with(Some(&p)).err(),
        Some(BITNET_ERR_INVALID_ARG)
    );
    assert!(last_error().contains("head_type 4"), "{}", last_error());
}

#[test]
fn pieces_concatenate_to_the_exact_text() {
    let m = ModelHandle::load();
    let text = "Grüße, naïve café: 3€ per 🙂!\n\tok";
    let ids = m.tokenize(text, false, true);
    assert!(ids.len() > 10);
    let bytes: Vec<u8> = ids.iter().flat_map(|&t| m.piece(t, false)).collect();
    assert_eq!(String::from_utf8(bytes).unwrap(), text);
    assert_eq!(m.detokenize(&ids, false, false), text);
    let model = Model::load(common::gguf(), &Default::default()).unwrap();
    assert_eq!(to_u32(&ids), model.tokenizer().encode(text, false).unwrap());
    // A multi-byte character split across tokens: no piece alone is valid UTF-8 text of it.
    let emoji = m.tokenize("🙂", false, true);
    if emoji.len() > 1 {
        assert!(emoji
            .iter()
            .any(|&t| std::str::from_utf8(&m.piece(t, false)).is_err()));
    }
}

#[test]
fn special_tokens_bos_and_flags() {
    let m = ModelHandle::load();
    // SAFETY: live handle (all getters below).
    let (bos, eos, eot) = unsafe {
        (
            bitnet_token_bos(m.0),
            bitnet_token_eos(m.0),
            bitnet_token_eot(m.0),
        )
    };
    assert!(bos >= 0 && eos >= 0 && eot >= 0, "{bos} {eos} {eot}");
    // SAFETY: live handle.
    unsafe {
        assert!(bitnet_model_add_bos(m.0));
        assert!(bitnet_token_is_eog(m.0, eos) && bitnet_token_is_eog(m.0, eot));
        assert!(!bitnet_token_is_eog(m.0, bos));
    }
    let with_bos = m.tokenize("hello", true, true);
    assert_eq!(with_bos[0], bos);
    assert_eq!(&with_bos[1..], m.tokenize("hello", false, true).as_slice());

    let parsed = m.tokenize("hi<|eot_id|>", false, true);
    assert_eq!(parsed.last(), Some(&eot));
    let plain = m.tokenize("hi<|eot_id|>", false, false);
    assert!(!plain.contains(&eot) && plain.len() > parsed.len());
    assert_eq!(m.detokenize(&plain, false, false), "hi<|eot_id|>");
    assert_eq!(m.detokenize(&parsed, false, false), "hi");
    assert_eq!(m.detokenize(&parsed, false, true), "hi<|eot_id|>");
    assert_eq!(m.piece(eot, true), b"<|eot_id|>");
    assert_eq!(m.piece(eot, false), b"");

    let mut ids = vec![bos];
    ids.extend(m.tokenize("hello", false, true));
    assert_eq!(m.detokenize(&ids, true, true), "hello");
    assert_eq!(m.detokenize(&ids, false, true), "<|begin_of_text|>hello");
}

#[test]
fn metadata_getters_describe_the_fixture() {
    let m = ModelHandle::load();
    let model = Model::load(common::gguf(), &Default::default()).unwrap();
    // SAFETY: live handle (all getters below).
    unsafe {
        assert_eq!(c_text(bitnet_model_architecture(m.0)), model.architecture());
        assert_eq!(c_text(bitnet_model_desc(m.0)), model.description());
        assert!(c_text(bitnet_model_desc(m.0)).contains("I2_S"));
        assert_eq!(bitnet_model_n_vocab(m.0), 383);
        assert_eq!(bitnet_model_n_embd(m.0), 256);
        assert_eq!(bitnet_model_n_layer(m.0), 3);
        assert_eq!(bitnet_model_n_head(m.0), 8);
        assert_eq!(bitnet_model_n_head_kv(m.0), 2);
        assert_eq!(bitnet_model_n_ctx_train(m.0), 256);
        assert_eq!(bitnet_model_n_params(m.0), model.weights().n_params());
        assert_eq!(
            bitnet_model_size(m.0),
            std::fs::metadata(common::gguf()).unwrap().len()
        );
        match model.name() {
            Some(name) => assert_eq!(c_text(bitnet_model_name(m.0)), name),
            None => assert!(bitnet_model_name(m.0).is_null()),
        }
        match model.chat_template() {
            Some(t) => assert_eq!(c_text(bitnet_model_chat_template(m.0)), t),
            None => assert!(bitnet_model_chat_template(m.0).is_null()),
        }
    }
}

#[test]
fn chat_template_matches_the_rust_api() {
    let m = ModelHandle::load();
    let model = Model::load(common::gguf(), &Default::default()).unwrap();
    let (role, content) = (
        CString::new("user").unwrap(),
        CString::new("How do I make bread?").unwrap(),
    );
    let msgs = [bitnet_chat_message {
        role: role.as_ptr(),
        content: content.as_ptr(),
    }];
    let mut buf = vec![0u8; 512];
    let mut n = 0;
    // SAFETY: one valid message, 512 writable bytes.
    let st = unsafe {
        bitnet_chat_apply_template(
            m.0,
            msgs.as_ptr(),
            1,
            true,
            buf.as_mut_ptr().cast(),
            512,
            &mut n,
        )
    };
    assert_eq!(st, BITNET_OK, "{}", last_error());
    let expect = model
        .apply_chat_template(
            &[bitnet_candle::ChatMessage::new(
                "user",
                "How do I make bread?",
            )],
            true,
        )
        .unwrap();
    assert_eq!(&buf[..n as usize], expect.as_bytes());
    assert!(expect.contains("User: How do I make bread?"));
}

#[test]
fn system_info_names_the_selected_kernel() {
    let info = c_text(bitnet_system_info());
    let kernel = bitnet_backend::kernels::selected().name();
    assert!(info.starts_with(&format!("kernel = {kernel} |")), "{info}");
    assert_eq!(c_text(bitnet_version()), env!("CARGO_PKG_VERSION"));
    assert_eq!(bitnet_api_version(), BITNET_API_VERSION);
}

#[test]
fn a_context_used_from_two_threads_at_once_is_busy_not_racy() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let m = ModelHandle::load();
    let run = Run::new(&m, 256, None);
    let ctx = run.ctx as usize;
    let (stop, busy) = (AtomicBool::new(false), AtomicUsize::new(0));
    let started = std::sync::Barrier::new(2);
    std::thread::scope(|s| {
        s.spawn(|| {
            started.wait();
            while !stop.load(Ordering::Relaxed) {
                // SAFETY: the context outlives the scope; entering it concurrently is the point.
                match unsafe { bitnet_kv_cache_clear(ctx as *mut bitnet_context) } {
                    BITNET_ERR_BUSY => {
                        busy.fetch_add(1, Ordering::Relaxed);
                    }
                    st => assert_eq!(st, BITNET_OK),
                }
            }
        });
        let mut tokens: Vec<bitnet_token> = (1..=200).collect();
        let mut pos: Vec<bitnet_pos> = (0..200).collect();
        // Decode until the poller has met this thread inside the context. On a loaded machine
        // the poller may get little CPU, so the bound is generous wall time, not a loop count.
        started.wait();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            let st = run.decode(&mut tokens, Some(&mut pos), None);
            assert!(
                st == BITNET_OK || st == BITNET_ERR_BUSY,
                "{st}: {}",
                last_error()
            );
            if busy.load(Ordering::Relaxed) > 0 {
                break;
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    assert!(
        busy.load(Ordering::Relaxed) > 0,
        "the threads never met inside the context"
    );
}

/// A batch of any sequences, its arrays owned here.
#[derive(Default)]
struct SeqBatch {
    token: Vec<bitnet_token>,
    pos: Vec<bitnet_pos>,
    seq_id: Vec<bitnet_seq_id>,
    logits: Vec<i8>,
}

impl SeqBatch {
    fn add(&mut self, token: bitnet_token, pos: usize, seq: i32, logits: bool) {
        self.token.push(token);
        self.pos.push(pos as bitnet_pos);
        self.seq_id.push(seq);
        self.logits.push(i8::from(logits));
    }

    fn decode(&mut self, run: &Run) -> bitnet_status {
        let b = bitnet_seq_batch {
            n_tokens: self.token.len() as i32,
            token: self.token.as_mut_ptr(),
            pos: self.pos.as_mut_ptr(),
            seq_id: self.seq_id.as_mut_ptr(),
            logits: self.logits.as_mut_ptr(),
        };
        // SAFETY: live context; arrays of n_tokens elements.
        unsafe { bitnet_decode_seqs(run.ctx, &b) }
    }
}

#[test]
fn sequences_decoded_together_equal_their_solo_runs() {
    let m = ModelHandle::load();
    let n_vocab = m.n_vocab();
    let texts = [
        "In 2025 the team measured",
        "Hi",
        "The quick brown fox jumps over the lazy dog, twice, and then",
    ];
    let prompts: Vec<Vec<bitnet_token>> = texts.iter().map(|t| m.tokenize(t, true, true)).collect();
    let together = Run::with_sequences(&m, 256, 3, None);
    // Every prompt token with logits, the sequences interleaved token by token.
    let mut batch = SeqBatch::default();
    let longest = prompts.iter().map(Vec::len).max().unwrap();
    for j in 0..longest {
        for (s, p) in prompts.iter().enumerate() {
            if let Some(&t) = p.get(j) {
                batch.add(t, j, s as i32, true);
            }
        }
    }
    assert_eq!(batch.decode(&together), BITNET_OK, "{}", last_error());
    for (s, p) in prompts.iter().enumerate() {
        let alone = Run::new(&m, 64, None);
        let mut tokens = p.clone();
        let mut all = vec![1i8; p.len()];
        assert_eq!(alone.decode(&mut tokens, None, Some(&mut all)), BITNET_OK);
        for j in 0..p.len() {
            let i = batch
                .seq_id
                .iter()
                .zip(&batch.pos)
                .position(|(&q, &pos)| q == s as i32 && pos == j as i32);
            assert_eq!(
                together.logits(i.unwrap() as i32, n_vocab),
                alone.logits(j as i32, n_vocab),
                "sequence {s}, position {j}"
            );
        }
    }
    // Greedy generation, one sequence-batch per step, each sequence sampled from its row;
    // sequence s stops after 8 - 2s tokens.
    let mut samplers = Vec::new();
    for _ in 0..3 {
        let mut smpl = ptr::null_mut();
        // SAFETY: writable out pointer.
        assert_eq!(unsafe { bitnet_sampler_init_greedy(&mut smpl) }, BITNET_OK);
        samplers.push(smpl);
    }
    let mut out: Vec<Vec<bitnet_token>> = vec![Vec::new(); 3];
    let mut rows: Vec<(usize, i32)> = prompts
        .iter()
        .enumerate()
        .map(|(s, p)| {
            let last = batch
                .seq_id
                .iter()
                .zip(&batch.pos)
                .position(|(&q, &pos)| q == s as i32 && pos == p.len() as i32 - 1);
            (s, last.unwrap() as i32)
        })
        .collect();
    while !rows.is_empty() {
        let mut next = SeqBatch::default();
        for &(s, row) in &rows {
            let mut t = -1;
            // SAFETY: live handles, writable out pointer.
            let st = unsafe { bitnet_sampler_sample(samplers[s], together.ctx, row, &mut t) };
            assert_eq!(st, BITNET_OK, "{}", last_error());
            // SAFETY: live handle.
            if unsafe { bitnet_token_is_eog(m.0, t) } || out[s].len() == 8 - 2 * s {
                continue;
            }
            out[s].push(t);
            next.add(t, prompts[s].len() + out[s].len() - 1, s as i32, true);
        }
        rows = next
            .seq_id
            .iter()
            .enumerate()
            .map(|(k, &s)| (s as usize, k as i32))
            .collect();
        if !rows.is_empty() {
            assert_eq!(next.decode(&together), BITNET_OK, "{}", last_error());
        }
    }
    for (s, p) in prompts.iter().enumerate() {
        let alone = Run::new(&m, 64, None);
        assert_eq!(out[s], alone.generate(&m, p, 8 - 2 * s), "sequence {s}");
    }
    for smpl in samplers {
        // SAFETY: live handle, freed once.
        unsafe { bitnet_sampler_free(smpl) };
    }
}

#[test]
fn an_api1_sized_params_struct_gets_one_sequence_and_no_batch_limit() {
    let m = ModelHandle::load();
    let mut p = context_params();
    // What a host built against bitnet.h API 1 sends: the struct up to type_kv.
    p.struct_size = std::mem::offset_of!(bitnet_context_params, type_kv) + 4;
    p.n_ctx = 40;
    p.n_seq_max = 9; // bytes past the API 1 struct: must be ignored
    let mut ctx = ptr::null_mut();
    // SAFETY: a params struct of at least struct_size bytes; writable out pointer.
    assert_eq!(unsafe { bitnet_context_init(m.0, &p, &mut ctx) }, BITNET_OK);
    // SAFETY: live context (every call below), freed once at the end.
    unsafe {
        assert_eq!((bitnet_n_seq_max(ctx), bitnet_n_batch(ctx)), (1, 40));
        bitnet_free(ctx);
    }
}

#[test]
fn cuda_device_without_cuda_support_is_an_invalid_argument() {
    if cfg!(feature = "cuda") {
        return;
    }
    let path = CString::new(common::gguf().to_str().unwrap()).unwrap();
    let mut p = bitnet_model_default_params_for_test();
    assert_eq!(p.device, BITNET_DEVICE_CPU, "the default is the CPU");
    p.device = 1; // BITNET_DEVICE_CUDA(0)
    let mut m = ptr::null_mut();
    // SAFETY: valid C string and params, writable out pointer.
    let st = unsafe { bitnet_model_load(path.as_ptr(), &p, &mut m) };
    assert_eq!(st, BITNET_ERR_INVALID_ARG);
    assert!(m.is_null());
    assert!(last_error().contains("no CUDA support"), "{}", last_error());
}

#[test]
fn an_api1_sized_model_params_struct_loads_on_the_cpu() {
    let path = CString::new(common::gguf().to_str().unwrap()).unwrap();
    let mut p = bitnet_model_default_params_for_test();
    // What a host built against bitnet.h API 1 sends: the struct up to tokenizer_json.
    p.struct_size = std::mem::offset_of!(bitnet_model_params, device);
    p.device = 1; // bytes past the API 1 struct: must be ignored
    let mut m = ptr::null_mut();
    // SAFETY: a params struct of at least struct_size bytes; writable out pointer.
    let st = unsafe { bitnet_model_load(path.as_ptr(), &p, &mut m) };
    assert_eq!(st, BITNET_OK, "{}", last_error());
    // SAFETY: live handle, freed once.
    unsafe { bitnet_model_free(m) };
}

fn bitnet_model_default_params_for_test() -> bitnet_model_params {
    let mut p = std::mem::MaybeUninit::<bitnet_model_params>::zeroed();
    // SAFETY: writable storage of the struct's size.
    let st = unsafe {
        bitnet_model_params_init(p.as_mut_ptr(), std::mem::size_of::<bitnet_model_params>())
    };
    assert_eq!(st, BITNET_OK);
    // SAFETY: initialised by bitnet_model_params_init.
    unsafe { p.assume_init() }
}
