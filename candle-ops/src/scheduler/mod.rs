//! Continuous batching: many generation requests advanced together, one forward pass per step.
//!
//! A [`BatchGenerator`] owns one [`KvCache`] of `n_seq_max` sequences sharing `n_ctx`
//! positions, and a FIFO queue of requests. Each [`BatchGenerator::step`]:
//!
//! 1. **Admits** queued requests, in order, while a sequence is free and the KV budget allows
//!    (see *Memory* below). A request joins at a token boundary: the step that admits it already
//!    computes its prompt.
//! 2. **Builds one batch**: the last sampled token of every request that is generating (one row
//!    each), then prompt tokens of requests still reading their prompt, in admission order, up
//!    to `prefill_chunk` prompt tokens and `n_batch` rows in all. A long prompt is thus read in
//!    chunks between the others' decode steps, and never delays them by more than one chunk.
//! 3. **Runs the model once** over the whole batch ([`crate::ModelWeights::decode`]: every
//!    projection and the LM head over all rows, attention per sequence).
//! 4. **Samples** each request's next token with its own sampler and RNG, streams it to its
//!    callback, and ends requests at an end-of-generation or stop token, `max_new_tokens`, a
//!    full context, or when the callback asks. Ended requests are returned as [`Finished`] and
//!    leave at this token boundary; their sequence becomes free.
//!
//! Every request's tokens equal those of running it alone ([`crate::Session::generate`] with the
//! same prompt and [`crate::GenerationParams`]): rows of a batch do not influence each other's
//! arithmetic.
//!
//! **Prefix reuse.** A free sequence keeps the tokens it last held. A new request takes the
//! free sequence whose cached tokens share the longest prefix with its prompt (llama-server's
//! slot choice with `cache_prompt`), or, when another sequence (free or busy) holds a longer
//! common prefix, gets that prefix copied into a free sequence; a copy shares the cache pages
//! rather than duplicating them. Only the rest of the prompt is computed (at least its last
//! token, whose logits give the first generated token). A request whose prompt shares more than
//! is cached with the prompt another request is still reading waits for that read to finish,
//! so N requests with one long common prompt read it once. [`RequestStats`] reports what was
//! reused.
//!
//! **Memory.** The KV budget is one pool of `n_ctx` positions in pages of [`PAGE`], shared by
//! all sequences (llama-server's `-c` with `-np`). A request is admitted only when the pages it
//! may need (prompt plus `max_new_tokens - 1`, within `n_ctx`: the last token sampled is never
//! decoded) fit beside what the running requests
//! may still need, after evicting the least recently used free sequences' cached tokens;
//! otherwise it waits in the queue. So a running request never fails for lack of memory. A
//! prompt longer than `n_ctx` is refused by [`BatchGenerator::add`] ([`Error::KvBudget`]).
//! [`BatchGenerator::kv_usage`] reports the budget in use.
//!
//! One thread drives a generator (`step` takes `&mut self`); it is `Send`, so it can live on an
//! engine thread fed by a channel. The kernels use the process-wide pool
//! ([`bitnet_backend::threads`]).
//!
//! ```no_run
//! use bitnet_candle::scheduler::{BatchGenerator, Request, SchedulerConfig};
//! use bitnet_candle::{GenerationParams, LoadOptions, Model};
//!
//! # fn main() -> bitnet_candle::Result<()> {
//! let model = Model::load("ggml-model-i2_s.gguf", &LoadOptions::default())?;
//! let config = SchedulerConfig { n_seq_max: 8, n_ctx: 8192, ..Default::default() };
//! let mut generator = BatchGenerator::new(&model, config)?;
//! for prompt in ["Hello", "The capital of France is"] {
//!     let ids = model.tokenizer().encode(prompt, true)?;
//!     let id = generator.add(Request::new(ids, GenerationParams::default()).on_token(|ev| {
//!         print!("[{}] {}", ev.id, ev.text);
//!         std::ops::ControlFlow::Continue(())
//!     }))?;
//!     println!("request {id} queued");
//! }
//! while !generator.is_idle() {
//!     for done in generator.step()? {
//!         println!("\n{}: {:?} after {} tokens", done.id, done.stop, done.tokens.len());
//!     }
//! }
//! # Ok(())
//! # }
//! ```

mod request;
mod slots;

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::time::Instant;

pub use crate::kv_cache::PAGE;
pub use request::{Finished, Request, RequestId, RequestStats, TokenCallback, TokenEvent};

use crate::batch::{Batch, BatchLogits};
use crate::generate::{StopReason, TextStreamer};
use crate::kv_cache::{KvCache, KvDtype, SeqId};
use crate::models::Model;
use crate::sampling::Sampler;
use crate::{Error, Result};
use request::{Active, Queued};
use slots::Slot;

/// Settings of a [`BatchGenerator`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Most requests generating at once: the number of sequences (llama-server's `--parallel`).
    pub n_seq_max: usize,
    /// KV budget in positions, shared by all sequences (llama-server's `-c`). One sequence
    /// holds at most this many, and at most the model's context
    /// ([`crate::ModelWeights::max_context`]).
    pub n_ctx: usize,
    /// Most rows (tokens) in one forward pass.
    pub n_batch: usize,
    /// Most prompt tokens one step reads (chunked prefill); at most `n_batch`.
    pub prefill_chunk: usize,
    /// Element type of the cached keys and values.
    pub kv_dtype: KvDtype,
    /// Reuse cached prompt prefixes (see the module docs); `false` computes every prompt in full.
    pub prefix_reuse: bool,
    /// Map the whole KV budget's memory in at creation ([`KvCache::make_resident`]), as a server
    /// wants; `false` maps pages in as they are first used.
    pub resident_kv: bool,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            n_seq_max: 4,
            n_ctx: 4096,
            n_batch: 512,
            prefill_chunk: 256,
            kv_dtype: KvDtype::F32,
            prefix_reuse: true,
            resident_kv: false,
        }
    }
}

/// The KV budget in use (positions are in pages of [`PAGE`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvUsage {
    /// The budget, in positions (`SchedulerConfig::n_ctx`).
    pub n_ctx: usize,
    /// Pages in the budget.
    pub pages_total: usize,
    /// Pages held by some sequence (a shared page counts once), busy or free.
    pub pages_in_use: usize,
    /// Pages the running requests may still need (kept free for them).
    pub pages_reserved: usize,
    /// Pages held only by free sequences' cached tokens (given back on demand).
    pub pages_cached_idle: usize,
}

/// Continuous batching over one model (see the module docs).
pub struct BatchGenerator {
    model: Model,
    config: SchedulerConfig,
    cache: KvCache,
    slots: Vec<Slot>,
    queue: VecDeque<Queued>,
    active: Vec<Active>,
    next_id: RequestId,
    clock: u64,
    batch: Batch,
}

/// One request's rows in the step's batch.
struct Share {
    /// Index into `active`.
    active: usize,
    first_row: usize,
    n_rows: usize,
    /// The rows are the pending token (else prompt tokens).
    decode: bool,
    logits: bool,
}

impl BatchGenerator {
    /// A generator with a fresh cache of `config.n_seq_max` sequences.
    pub fn new(model: &Model, config: SchedulerConfig) -> Result<Self> {
        if config.n_batch == 0 || config.prefill_chunk == 0 {
            return Err(Error::InvalidArgument(
                "n_batch and prefill_chunk must be at least 1".into(),
            ));
        }
        if config.n_batch < config.n_seq_max {
            return Err(Error::InvalidArgument(format!(
                "n_batch ({}) must hold one token of each of the {} sequences",
                config.n_batch, config.n_seq_max
            )));
        }
        let mut cache =
            model
                .weights()
                .new_multi_cache(config.n_ctx, config.n_seq_max, config.kv_dtype)?;
        if config.resident_kv {
            cache.make_resident();
        }
        Ok(Self {
            model: model.clone(),
            slots: vec![Slot::default(); config.n_seq_max],
            config,
            cache,
            queue: VecDeque::new(),
            active: Vec::new(),
            next_id: 0,
            clock: 0,
            batch: Batch::new(),
        })
    }

    /// The model.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The settings.
    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// Queues a request; it starts at a following [`BatchGenerator::step`]. Fails, queueing
    /// nothing, for an empty prompt, a token outside the vocabulary, bad sampling settings, or a
    /// prompt longer than the KV budget ([`Error::KvBudget`]).
    pub fn add(&mut self, request: Request) -> Result<RequestId> {
        let prompt = &request.prompt;
        if prompt.is_empty() {
            return Err(Error::InvalidArgument("the prompt is empty".into()));
        }
        let n_vocab = self.model.n_vocab();
        if let Some(t) = prompt.iter().find(|&&t| t as usize >= n_vocab) {
            return Err(Error::InvalidArgument(format!(
                "prompt token {t} is outside the vocabulary of {n_vocab} tokens"
            )));
        }
        let room = self.cache.seq_capacity();
        if prompt.len() > room {
            return Err(Error::KvBudget(format!(
                "the prompt has {} tokens but a sequence holds at most {room} positions (the KV \
                 budget of {}, within the model's context)",
                prompt.len(),
                self.config.n_ctx
            )));
        }
        request.params.sampling.validate()?;
        let id = self.next_id;
        self.next_id += 1;
        self.queue.push_back(Queued {
            id,
            request,
            added: Instant::now(),
        });
        Ok(id)
    }

    /// Ends a request, queued or running, at once; its sequence becomes free and keeps the
    /// tokens computed so far for prefix reuse. `None` when no such request is waiting or running.
    pub fn cancel(&mut self, id: RequestId) -> Option<Finished> {
        if let Some(i) = self.queue.iter().position(|q| q.id == id) {
            let q = self.queue.remove(i)?;
            let stats = RequestStats {
                n_prompt: q.request.prompt.len(),
                queued: q.added.elapsed(),
                ..Default::default()
            };
            return Some(Finished {
                id,
                tokens: Vec::new(),
                text: String::new(),
                tail: String::new(),
                stop: StopReason::Cancelled,
                error: None,
                stats,
            });
        }
        let i = self.active.iter().position(|a| a.id == id)?;
        Some(self.release(i, StopReason::Cancelled, None))
    }

    /// Requests waiting for a sequence.
    pub fn n_queued(&self) -> usize {
        self.queue.len()
    }

    /// Requests running (reading their prompt or generating).
    pub fn n_active(&self) -> usize {
        self.active.len()
    }

    /// True when nothing is queued or running.
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.active.is_empty()
    }

    /// The KV budget in use.
    pub fn kv_usage(&self) -> KvUsage {
        let pages_cached_idle = (0..self.slots.len())
            .filter(|&s| !self.slots[s].busy)
            .map(|s| self.cache.private_pages(s))
            .sum();
        KvUsage {
            n_ctx: self.config.n_ctx,
            pages_total: self.cache.n_pages(),
            pages_in_use: self.cache.pages_in_use(),
            pages_reserved: self.reserved_pages(),
            pages_cached_idle,
        }
    }

    /// Forgets the cached tokens of every free sequence.
    pub fn clear_idle_cache(&mut self) {
        for s in 0..self.slots.len() {
            if !self.slots[s].busy {
                self.forget(s);
            }
        }
    }

    /// Runs one step (see the module docs) and returns the requests that ended in it. A step
    /// with nothing to do returns at once. If the forward pass fails, the requests in that batch
    /// end with [`StopReason::Failed`] and the error message; the others continue.
    pub fn step(&mut self) -> Result<Vec<Finished>> {
        let mut finished = Vec::new();
        self.admit(&mut finished);
        let shares = self.build_batch();
        if self.batch.is_empty() {
            return Ok(finished);
        }
        let logits = self.model.weights().decode(&mut self.cache, &self.batch);
        let logits = match logits {
            Ok(l) => l,
            Err(e) => {
                let message = e.to_string();
                let mut failed: Vec<usize> = shares.iter().map(|s| s.active).collect();
                failed.sort_unstable();
                failed.dedup();
                for &i in failed.iter().rev() {
                    let seq = self.active[i].seq;
                    // The failed pass cut the sequence back to its position before the batch.
                    self.slots[seq].cached.truncate(self.cache.seq_len(seq));
                    finished.push(self.release(i, StopReason::Failed, Some(message.clone())));
                }
                return Ok(finished);
            }
        };
        let mut ended: Vec<(usize, StopReason)> = Vec::new();
        for share in &shares {
            if let Some(stop) = self.absorb(share, &logits) {
                ended.push((share.active, stop));
            }
        }
        ended.sort_unstable_by_key(|&(i, _)| std::cmp::Reverse(i));
        for (i, stop) in ended {
            finished.push(self.release(i, stop, None));
        }
        Ok(finished)
    }

    /// Pages the running requests may still allocate.
    fn reserved_pages(&self) -> usize {
        self.active
            .iter()
            .map(|a| self.cache.pages_to_grow(a.seq, a.final_len))
            .sum()
    }

    /// Admits queued requests while a sequence is free and the budget allows.
    fn admit(&mut self, finished: &mut Vec<Finished>) {
        let reuse = self.config.prefix_reuse;
        while let Some(front) = self.queue.front() {
            let prompt = &front.request.prompt;
            let Some((seq, own)) = slots::choose_idle(&self.slots, prompt, reuse) else {
                break;
            };
            let limit = prompt.len() - 1;
            let source = match reuse {
                true => slots::best_source(&self.slots, prompt, seq)
                    .filter(|&(_, common)| common.min(limit) > own.min(limit)),
                false => None,
            };
            let kept = source.map_or(own, |(_, common)| common).min(limit);
            if reuse && self.waits_for_prefill(prompt, kept) {
                break;
            }
            let max_new = front.request.params.max_new_tokens;
            // The last token sampled is never decoded.
            let final_len =
                (prompt.len() + max_new.saturating_sub(1)).min(self.cache.seq_capacity());
            let admitted = match source {
                Some((src, _)) => self.take_copy(src, seq, kept, final_len),
                None => self.take_own(seq, kept, final_len),
            };
            if !admitted {
                break;
            }
            let q = self.queue.pop_front().expect("front exists");
            let active = self.activate(q, seq, kept, final_len);
            if max_new == 0 {
                finished.push(active.finish(StopReason::MaxTokens, None));
                self.slots[seq].last_used = self.tick();
                continue;
            }
            self.slots[seq].busy = true;
            self.active.push(active);
        }
    }

    /// Whether a prompt should wait for another request to finish reading a prompt it shares
    /// beyond the `kept` positions already cached (it then copies them instead).
    fn waits_for_prefill(&self, prompt: &[u32], kept: usize) -> bool {
        self.active.iter().any(|a| {
            a.prefilling() && slots::common_prefix(&a.prompt, prompt).min(prompt.len() - 1) > kept
        })
    }

    /// Gives free sequence `seq` its own cached prefix of `kept` tokens, if the pages for
    /// positions up to `final_len` fit. The rest of its cache is forgotten either way.
    fn take_own(&mut self, seq: SeqId, kept: usize, final_len: usize) -> bool {
        self.cache
            .seq_truncate(seq, kept)
            .expect("seq is a valid id");
        self.slots[seq].cached.truncate(kept);
        let need = self.cache.pages_to_grow(seq, final_len);
        self.make_room(need, &[seq])
    }

    /// Gives free sequence `seq` the first `kept` tokens of sequence `src`, if the pages for
    /// positions up to `final_len` fit. The full pages are shared; a partial last page is copied
    /// at once, so `src` (which may be running) never has to copy a page it writes into, and
    /// the running requests' reservations stay as they were.
    fn take_copy(&mut self, src: SeqId, seq: SeqId, kept: usize, final_len: usize) -> bool {
        self.forget(seq);
        let need = final_len.div_ceil(PAGE) - kept / PAGE;
        if !self.make_room(need, &[seq, src]) {
            return false;
        }
        self.cache
            .seq_copy_prefix(src, seq, kept)
            .expect("kept <= the source's cached tokens");
        self.cache
            .seq_own_tail(seq)
            .expect("make_room kept a page free for the copy");
        let prefix = self.slots[src].cached[..kept].to_vec();
        self.slots[seq].cached = prefix;
        true
    }

    /// Frees pages (evicting free sequences' caches, least recently used first, except
    /// `keep`) until `need` pages fit beside the running requests' reservations.
    fn make_room(&mut self, need: usize, keep: &[SeqId]) -> bool {
        loop {
            let available = self
                .cache
                .free_pages()
                .saturating_sub(self.reserved_pages());
            if need <= available {
                return true;
            }
            match slots::eviction_candidate(&self.slots, keep) {
                Some(s) => self.forget(s),
                None => return false,
            }
        }
    }

    fn forget(&mut self, seq: SeqId) {
        self.cache.seq_clear(seq).expect("seq is a valid id");
        self.slots[seq].cached.clear();
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    fn activate(&self, q: Queued, seq: SeqId, kept: usize, final_len: usize) -> Active {
        let Request {
            prompt,
            params,
            stop_tokens,
            on_token,
        } = q.request;
        let tokenizer = self.model.tokenizer().clone();
        // A few prompt tokens give the first generated piece its correct leading space.
        let context = &prompt[prompt.len().saturating_sub(4)..];
        let streamer = TextStreamer::new(tokenizer, context, params.skip_special);
        let sampler = Sampler::new(params.sampling.clone()).expect("validated by add");
        let stats = RequestStats {
            n_prompt: prompt.len(),
            n_prompt_reused: kept,
            n_prompt_computed: prompt.len() - kept,
            ..Default::default()
        };
        Active {
            id: q.id,
            seq,
            prompt_done: kept,
            prompt,
            params,
            stop_tokens,
            on_token,
            sampler,
            streamer,
            text: String::new(),
            generated: Vec::new(),
            pending: None,
            final_len,
            stats,
            added: q.added,
            admitted: Instant::now(),
            first_token: None,
            failure: None,
        }
    }

    /// Fills `self.batch`: every pending token, then prompt chunks.
    fn build_batch(&mut self) -> Vec<Share> {
        self.batch.clear();
        let mut shares = Vec::new();
        for (i, a) in self.active.iter().enumerate() {
            if let Some(token) = a.pending {
                let pos = self.slots[a.seq].cached.len();
                shares.push(Share {
                    active: i,
                    first_row: self.batch.len(),
                    n_rows: 1,
                    decode: true,
                    logits: true,
                });
                self.batch.add(token, pos, a.seq, true);
            }
        }
        let mut budget = self
            .config
            .prefill_chunk
            .min(self.config.n_batch - self.batch.len());
        for (i, a) in self.active.iter().enumerate() {
            if budget == 0 {
                break;
            }
            if !a.prefilling() {
                continue;
            }
            let n = (a.prompt.len() - a.prompt_done).min(budget);
            let completes = a.prompt_done + n == a.prompt.len();
            shares.push(Share {
                active: i,
                first_row: self.batch.len(),
                n_rows: n,
                decode: false,
                logits: completes,
            });
            let chunk = &a.prompt[a.prompt_done..a.prompt_done + n];
            self.batch
                .add_sequence(a.seq, a.prompt_done, chunk, completes);
            budget -= n;
        }
        shares
    }

    /// Records a share's rows as cached and, if it has logits, samples and delivers the next
    /// token. Returns why the request ends, if it does.
    fn absorb(&mut self, share: &Share, logits: &BatchLogits) -> Option<StopReason> {
        let a = &mut self.active[share.active];
        let slot = &mut self.slots[a.seq];
        if share.decode {
            slot.cached.extend(a.pending.take());
        } else {
            let chunk = &a.prompt[a.prompt_done..a.prompt_done + share.n_rows];
            slot.cached.extend_from_slice(chunk);
            a.prompt_done += share.n_rows;
        }
        if !share.logits {
            return None;
        }
        let row = logits
            .get(share.first_row + share.n_rows - 1)
            .expect("the batch asked for this row's logits");
        let token = match a.sampler.sample(row, &slot.cached) {
            Ok(t) => t,
            Err(e) => return Some(fail(a, e)),
        };
        let eog = !a.params.ignore_eos && self.model.token_is_eog(token);
        if eog || a.stop_tokens.contains(&token) {
            return Some(StopReason::EndOfGeneration(token));
        }
        if a.first_token.is_none() {
            a.first_token = Some(Instant::now());
        }
        a.generated.push(token);
        let text = match a.streamer.push(token) {
            Ok(t) => t,
            Err(e) => return Some(fail(a, e)),
        };
        a.text.push_str(&text);
        let event = TokenEvent {
            id: a.id,
            token,
            text: &text,
            n_generated: a.generated.len(),
        };
        if (a.on_token)(&event) == ControlFlow::Break(()) {
            return Some(StopReason::Callback);
        }
        if a.generated.len() >= a.params.max_new_tokens {
            return Some(StopReason::MaxTokens);
        }
        if slot.cached.len() >= self.cache.seq_capacity() {
            return Some(StopReason::ContextFull);
        }
        a.pending = Some(token);
        None
    }

    /// Ends `active[i]` and frees its sequence (which keeps its cached tokens).
    fn release(&mut self, i: usize, stop: StopReason, error: Option<String>) -> Finished {
        let a = self.active.remove(i);
        let seq = a.seq;
        let error = error.or_else(|| a.failure.clone());
        let f = a.finish(stop, error);
        let now = self.tick();
        let slot = &mut self.slots[seq];
        slot.busy = false;
        slot.last_used = now;
        f
    }
}

/// Records a failure of sampling or detokenizing on the request.
fn fail(a: &mut Active, e: Error) -> StopReason {
    a.failure = Some(e.to_string());
    StopReason::Failed
}
