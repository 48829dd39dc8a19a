//! What a caller hands the [`super::BatchGenerator`] and what it gets back.

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use crate::generate::{GenerationParams, StopReason, TextStreamer};
use crate::kv_cache::SeqId;
use crate::sampling::Sampler;

/// Identifies a request for as long as the generator lives (never reused).
pub type RequestId = u64;

/// Called with every generated token, on the thread that calls
/// [`super::BatchGenerator::step`]. Returning `ControlFlow::Break` ends the request after this
/// token ([`StopReason::Callback`]).
pub type TokenCallback = Box<dyn FnMut(&TokenEvent<'_>) -> ControlFlow<()> + Send>;

/// One generation request.
pub struct Request {
    /// Prompt token ids (at least one; BOS included if the model wants it).
    pub prompt: Vec<u32>,
    /// Maximum new tokens, sampling (with its own seeded RNG), special-token text and
    /// `ignore_eos`, as for [`crate::Session::generate`].
    pub params: GenerationParams,
    /// Tokens that end generation besides the model's end-of-generation tokens (not included in
    /// the output, reported as [`StopReason::EndOfGeneration`]); they apply even with
    /// `ignore_eos`.
    pub stop_tokens: Vec<u32>,
    /// Receives each generated token and its text.
    pub on_token: TokenCallback,
}

impl Request {
    /// A request that streams nowhere (read the result from [`Finished`]).
    pub fn new(prompt: Vec<u32>, params: GenerationParams) -> Self {
        Self {
            prompt,
            params,
            stop_tokens: Vec::new(),
            on_token: Box::new(|_| ControlFlow::Continue(())),
        }
    }

    /// Sets the token callback.
    pub fn on_token(
        mut self,
        f: impl FnMut(&TokenEvent<'_>) -> ControlFlow<()> + Send + 'static,
    ) -> Self {
        self.on_token = Box::new(f);
        self
    }
}

/// A generated token, as the callback sees it.
#[derive(Debug)]
pub struct TokenEvent<'a> {
    /// The request.
    pub id: RequestId,
    /// The token id.
    pub token: u32,
    /// Text this token completes (may be empty while a multi-byte character is incomplete).
    pub text: &'a str,
    /// Tokens generated so far, this one included (1 for the first).
    pub n_generated: usize,
}

/// Counts and timings of one request.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RequestStats {
    /// Prompt tokens.
    pub n_prompt: usize,
    /// Prompt tokens whose keys and values came from the cache (prefix reuse).
    pub n_prompt_reused: usize,
    /// Prompt tokens computed (`n_prompt - n_prompt_reused`).
    pub n_prompt_computed: usize,
    /// Generated tokens (an end-of-generation or stop token excluded).
    pub n_generated: usize,
    /// From [`super::BatchGenerator::add`] until the request got a sequence.
    pub queued: Duration,
    /// From getting a sequence until the first token was sampled (the prompt's computation).
    pub prompt: Duration,
    /// From the first token until the end.
    pub generation: Duration,
}

impl RequestStats {
    /// Time to first token: queueing plus the prompt.
    pub fn time_to_first_token(&self) -> Duration {
        self.queued + self.prompt
    }
}

/// A request that has ended.
#[derive(Clone, Debug)]
pub struct Finished {
    /// The request.
    pub id: RequestId,
    /// Generated tokens (end-of-generation or stop token excluded).
    pub tokens: Vec<u32>,
    /// Their text.
    pub text: String,
    /// Text the callbacks did not see: what the streamer held back at the end (the rest of
    /// `text` came through [`TokenEvent::text`]).
    pub tail: String,
    /// Why it ended.
    pub stop: StopReason,
    /// What went wrong, when `stop` is [`StopReason::Failed`].
    pub error: Option<String>,
    /// Counts and timings.
    pub stats: RequestStats,
}

/// A request waiting for a sequence.
pub(super) struct Queued {
    pub id: RequestId,
    pub request: Request,
    pub added: Instant,
}

/// A request that owns a sequence.
pub(super) struct Active {
    pub id: RequestId,
    pub seq: SeqId,
    pub prompt: Vec<u32>,
    /// Prompt tokens already in the cache (reused or computed).
    pub prompt_done: usize,
    pub params: GenerationParams,
    pub stop_tokens: Vec<u32>,
    pub on_token: TokenCallback,
    pub sampler: Sampler,
    pub streamer: TextStreamer,
    pub text: String,
    pub generated: Vec<u32>,
    /// The last sampled token, to be decoded in the next step.
    pub pending: Option<u32>,
    /// Positions the sequence may reach: prompt plus new tokens, within the context.
    pub final_len: usize,
    pub stats: RequestStats,
    pub added: Instant,
    pub admitted: Instant,
    pub first_token: Option<Instant>,
    /// Why sampling or detokenizing failed, if it did.
    pub failure: Option<String>,
}

impl Active {
    /// Whether the prompt still has tokens to compute.
    pub fn prefilling(&self) -> bool {
        self.prompt_done < self.prompt.len()
    }

    /// Ends the request.
    pub fn finish(mut self, stop: StopReason, error: Option<String>) -> Finished {
        let now = Instant::now();
        let tail = self.streamer.flush().unwrap_or_default();
        self.text.push_str(&tail);
        let mut stats = self.stats;
        stats.queued = self.admitted - self.added;
        match self.first_token {
            Some(t) => {
                stats.prompt = t - self.admitted;
                stats.generation = now - t;
            }
            None => stats.prompt = now - self.admitted,
        }
        stats.n_generated = self.generated.len();
        Finished {
            id: self.id,
            tokens: self.generated,
            text: self.text,
            tail,
            stop,
            error,
            stats,
        }
    }
}
