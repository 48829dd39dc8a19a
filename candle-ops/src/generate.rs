//! Sequences and text generation.
//!
//! A [`Session`] is one sequence on a shared [`Model`]: its KV cache and the tokens in it
//! (llama.cpp's "context"; use one per thread). A [`Generator`] samples tokens one at a time,
//! stops at any end-of-generation token, and streams text through a [`TextStreamer`] that
//! never emits half a UTF-8 character.
//!
//! ```no_run
//! use bitnet_candle::{ChatMessage, GenerationParams, LoadOptions, Model, Session};
//!
//! # fn main() -> bitnet_candle::Result<()> {
//! let model = Model::load("ggml-model-i2_s.gguf", &LoadOptions::default())?;
//! let mut session = Session::new(&model, 4096, Default::default())?;
//! let prompt = model.apply_chat_template(&[ChatMessage::new("user", "Hi!")], true)?;
//! let ids = model.tokenizer().encode(&prompt, true)?;
//! let out = session.generate(&ids, &GenerationParams::default(), |piece| {
//!     print!("{piece}");
//!     std::ops::ControlFlow::Continue(())
//! })?;
//! println!("\n{} tokens, stopped by {:?}", out.tokens.len(), out.stop);
//! # Ok(())
//! # }
//! ```

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use crate::kv_cache::{KvCache, KvDtype};
use crate::models::Model;
use crate::sampling::{Sampler, SamplingParams};
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};

/// One sequence: a model handle, its cache and the tokens the cache holds.
#[derive(Debug)]
pub struct Session {
    model: Model,
    cache: KvCache,
    tokens: Vec<u32>,
}

impl Session {
    /// A sequence of up to `n_ctx` tokens with keys/values stored as `kv`.
    pub fn new(model: &Model, n_ctx: usize, kv: KvDtype) -> Result<Self> {
        Ok(Self {
            model: model.clone(),
            cache: model.new_cache(n_ctx, kv)?,
            tokens: Vec::new(),
        })
    }

    /// The model.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Tokens whose keys/values are in the cache, in order.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Maximum number of tokens.
    pub fn n_ctx(&self) -> usize {
        self.cache.capacity()
    }

    /// Forgets the sequence.
    pub fn reset(&mut self) {
        self.cache.reset();
        self.tokens.clear();
    }

    /// Appends `tokens` to the sequence and returns the logits of the last one.
    pub fn eval(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        let start = self.tokens.len();
        let logits = self.model.forward(&mut self.cache, tokens, start)?;
        self.tokens.extend_from_slice(tokens);
        Ok(logits.to_vec1::<f32>()?)
    }

    /// Makes the sequence equal to `prompt` and returns the logits of its last token,
    /// re-using the longest cached prefix (only the rest is computed).
    pub fn prefill(&mut self, prompt: &[u32]) -> Result<Vec<f32>> {
        self.prefill_counted(prompt).map(|(logits, _)| logits)
    }

    /// [`Session::prefill`], also returning how many prompt tokens were computed.
    fn prefill_counted(&mut self, prompt: &[u32]) -> Result<(Vec<f32>, usize)> {
        if prompt.is_empty() {
            return Err(Error::InvalidArgument("the prompt is empty".into()));
        }
        let common = self
            .tokens
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count()
            .min(prompt.len() - 1);
        self.tokens.truncate(common);
        self.cache.seq_truncate(0, common)?;
        Ok((self.eval(&prompt[common..])?, prompt.len() - common))
    }

    /// Generates a continuation of `prompt` (see [`Generator`]), calling `on_text` with each
    /// new piece of text; returning `ControlFlow::Break` from it stops generation.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        params: &GenerationParams,
        mut on_text: impl FnMut(&str) -> ControlFlow<()>,
    ) -> Result<Generation> {
        let mut generator = Generator::new(self, prompt, params)?;
        let mut text = String::new();
        while let Some(step) = generator.next_token()? {
            text.push_str(&step.text);
            if !step.text.is_empty() && on_text(&step.text).is_break() {
                generator.stop = Some(StopReason::Callback);
                break;
            }
        }
        let rest = generator.streamer.flush()?;
        if !rest.is_empty() {
            text.push_str(&rest);
            let _ = on_text(&rest);
        }
        Ok(generator.finish(text))
    }
}

/// Settings of one generation.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerationParams {
    /// Maximum number of new tokens.
    pub max_new_tokens: usize,
    /// How tokens are chosen.
    pub sampling: SamplingParams,
    /// Drop special tokens (e.g. headers of a chat format) from the streamed text.
    pub skip_special: bool,
    /// Keep generating past end-of-generation tokens (benchmarks, `--ignore-eos`).
    pub ignore_eos: bool,
}

impl Default for GenerationParams {
    fn default() -> Self {
        Self {
            max_new_tokens: 256,
            sampling: SamplingParams::default(),
            skip_special: true,
            ignore_eos: false,
        }
    }
}

/// Why generation stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The model produced this end-of-generation token (not included in the output).
    EndOfGeneration(u32),
    /// `max_new_tokens` were generated.
    MaxTokens,
    /// The sequence filled the session's context.
    ContextFull,
    /// The text callback asked to stop.
    Callback,
    /// The request was cancelled ([`crate::scheduler::BatchGenerator::cancel`]).
    Cancelled,
    /// Computing the request failed (the error comes with it).
    Failed,
}

/// The result of [`Session::generate`].
#[derive(Clone, Debug)]
pub struct Generation {
    /// New tokens (end-of-generation token excluded).
    pub tokens: Vec<u32>,
    /// Their text.
    pub text: String,
    /// Why it stopped.
    pub stop: StopReason,
    /// Prompt tokens that were actually computed (cached prefixes excluded).
    pub n_prompt_eval: usize,
    /// Time spent on the prompt.
    pub prompt_time: Duration,
    /// Time spent generating (sampling included).
    pub gen_time: Duration,
}

/// One generated token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenStep {
    /// The token id.
    pub token: u32,
    /// Text that became complete with this token (may be empty).
    pub text: String,
}

/// Token-by-token generation on a [`Session`].
pub struct Generator<'s> {
    session: &'s mut Session,
    sampler: Sampler,
    streamer: TextStreamer,
    prompt: Vec<u32>,
    pending: Option<u32>,
    max_new: usize,
    ignore_eos: bool,
    generated: Vec<u32>,
    stop: Option<StopReason>,
    n_prompt_eval: usize,
    prompt_time: Duration,
    gen_time: Duration,
}

impl<'s> Generator<'s> {
    /// Prepares to continue `prompt` (which replaces the session's sequence; a cached common
    /// prefix is re-used). Nothing is computed until the first [`Generator::next_token`].
    pub fn new(
        session: &'s mut Session,
        prompt: &[u32],
        params: &GenerationParams,
    ) -> Result<Self> {
        if prompt.is_empty() {
            return Err(Error::InvalidArgument("the prompt is empty".into()));
        }
        if prompt.len() > session.n_ctx() {
            return Err(Error::InvalidArgument(format!(
                "the prompt has {} tokens but the context holds {}",
                prompt.len(),
                session.n_ctx()
            )));
        }
        let tokenizer = session.model().tokenizer().clone();
        // A few prompt tokens give the first generated piece its correct leading space.
        let context = &prompt[prompt.len().saturating_sub(4)..];
        Ok(Self {
            sampler: Sampler::new(params.sampling.clone())?,
            streamer: TextStreamer::new(tokenizer, context, params.skip_special),
            session,
            prompt: prompt.to_vec(),
            pending: None,
            max_new: params.max_new_tokens,
            ignore_eos: params.ignore_eos,
            generated: Vec::new(),
            stop: None,
            n_prompt_eval: 0,
            prompt_time: Duration::ZERO,
            gen_time: Duration::ZERO,
        })
    }

    /// Computes and samples the next token; `None` once generation has stopped.
    pub fn next_token(&mut self) -> Result<Option<TokenStep>> {
        if self.stop.is_some() {
            return Ok(None);
        }
        if self.generated.len() >= self.max_new {
            self.stop = Some(StopReason::MaxTokens);
            return Ok(None);
        }
        let logits = match self.pending.take() {
            None => {
                let t = Instant::now();
                let (logits, n_eval) = self.session.prefill_counted(&self.prompt)?;
                self.n_prompt_eval = n_eval;
                self.prompt_time = t.elapsed();
                logits
            }
            Some(last) => {
                if self.session.tokens().len() >= self.session.n_ctx() {
                    self.stop = Some(StopReason::ContextFull);
                    return Ok(None);
                }
                let t = Instant::now();
                let logits = self.session.eval(&[last])?;
                self.gen_time += t.elapsed();
                logits
            }
        };
        let t = Instant::now();
        let token = self.sampler.sample(&logits, self.session.tokens())?;
        self.gen_time += t.elapsed();
        if !self.ignore_eos && self.session.model().token_is_eog(token) {
            self.stop = Some(StopReason::EndOfGeneration(token));
            return Ok(None);
        }
        self.generated.push(token);
        self.pending = Some(token);
        let text = self.streamer.push(token)?;
        Ok(Some(TokenStep { token, text }))
    }

    /// Why generation stopped, once it has.
    pub fn stop_reason(&self) -> Option<StopReason> {
        self.stop
    }

    /// Tokens generated so far.
    pub fn tokens(&self) -> &[u32] {
        &self.generated
    }

    /// Prompt tokens the first step computed (a cached prefix excluded).
    pub fn n_prompt_eval(&self) -> usize {
        self.n_prompt_eval
    }

    /// Text the streamer still holds back (call once generation has stopped).
    pub fn flush_text(&mut self) -> Result<String> {
        self.streamer.flush()
    }

    fn finish(self, text: String) -> Generation {
        Generation {
            tokens: self.generated,
            text,
            stop: self.stop.unwrap_or(StopReason::MaxTokens),
            n_prompt_eval: self.n_prompt_eval,
            prompt_time: self.prompt_time,
            gen_time: self.gen_time,
        }
    }
}

/// Incremental detokenization.
///
/// Decoding token by token breaks multi-byte characters (byte-level and byte-fallback tokens
/// each hold part of one) and loses SentencePiece's leading spaces. The streamer re-decodes a
/// short window of recent tokens and emits only the new text, holding it back while it ends in
/// an incomplete character (U+FFFD).
pub struct TextStreamer {
    tokenizer: Tokenizer,
    ids: Vec<u32>,
    prefix: usize,
    read: usize,
    skip_special: bool,
}

impl TextStreamer {
    /// A streamer whose output continues after `context` (tokens already shown, not re-emitted).
    pub fn new(tokenizer: Tokenizer, context: &[u32], skip_special: bool) -> Self {
        Self {
            tokenizer,
            ids: context.to_vec(),
            prefix: 0,
            read: context.len(),
            skip_special,
        }
    }

    /// Adds a token; returns the text it completes (possibly empty).
    pub fn push(&mut self, token: u32) -> Result<String> {
        self.ids.push(token);
        let before = self
            .tokenizer
            .decode(&self.ids[self.prefix..self.read], self.skip_special)?;
        let now = self
            .tokenizer
            .decode(&self.ids[self.prefix..], self.skip_special)?;
        if now.len() > before.len() && !now.ends_with('\u{FFFD}') {
            if let Some(new) = now.get(before.len()..) {
                let new = new.to_owned();
                self.prefix = self.read;
                self.read = self.ids.len();
                return Ok(new);
            }
        }
        Ok(String::new())
    }

    /// Text still held back, if any; an incomplete character at the very end is dropped.
    pub fn flush(&mut self) -> Result<String> {
        let before = self
            .tokenizer
            .decode(&self.ids[self.prefix..self.read], self.skip_special)?;
        let now = self
            .tokenizer
            .decode(&self.ids[self.prefix..], self.skip_special)?;
        self.prefix = self.ids.len();
        self.read = self.ids.len();
        let rest = now.get(before.len()..).unwrap_or_default();
        Ok(rest.trim_end_matches('\u{FFFD}').to_owned())
    }
}
