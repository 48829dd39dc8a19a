//! Slots: each owns a session (its own KV cache) on its own thread and runs one request at a
//! time, taken from a bounded FIFO queue. A request whose client has gone away is skipped,
//! and generation stops at the first token that can no longer be delivered.

use super::metrics::{Metrics, Outcome};
use super::openai::Usage;
use super::stop::{StopMatcher, StopOutcome};
use bitnet_candle::{GenerationParams, Generator, KvDtype, Model, Session, StopReason};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::mpsc::Sender;

/// One generation request.
pub struct Job {
    pub prompt: Vec<u32>,
    pub params: GenerationParams,
    pub stops: Vec<String>,
    pub events: Sender<Event>,
    /// When the request arrived (time to first token counts from here).
    pub arrived: Instant,
}

/// What a slot reports back to the HTTP handler.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Text(String),
    Done {
        finish_reason: &'static str,
        usage: Usage,
    },
    Error(String),
}

/// The queue in front of the slots.
#[derive(Clone)]
pub struct Queue {
    tx: SyncSender<Job>,
    shared: Arc<Shared>,
}

/// What the slots share with the queue's owner.
struct Shared {
    metrics: Arc<Metrics>,
    /// Set at the drain timeout: every generation stops at its next token.
    cancel_all: AtomicBool,
}

impl Queue {
    /// Starts `n_slots` slot threads with contexts of `n_ctx` tokens each.
    pub fn start(
        model: &Model,
        n_slots: usize,
        n_ctx: usize,
        kv: KvDtype,
        capacity: usize,
        metrics: Arc<Metrics>,
    ) -> bitnet_candle::Result<Queue> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(capacity);
        let rx = Arc::new(Mutex::new(rx));
        let shared = Arc::new(Shared {
            metrics,
            cancel_all: AtomicBool::new(false),
        });
        shared.metrics.kv_capacity.set((n_slots * n_ctx) as i64);
        for slot in 0..n_slots {
            let session = Session::new(model, n_ctx, kv)?;
            let rx = Arc::clone(&rx);
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(format!("bitnet-slot-{slot}"))
                .spawn(move || slot_loop(session, rx, &shared))
                .map_err(|e| {
                    bitnet_candle::Error::InvalidArgument(format!("cannot start slot thread: {e}"))
                })?;
        }
        Ok(Queue { tx, shared })
    }

    /// Enqueues a job; `false` when the queue is full (the caller answers 503).
    pub fn submit(&self, job: Job) -> bool {
        // Counted before the send so that a slot taking it at once never sees -1.
        self.shared.metrics.queued.inc();
        match self.tx.try_send(job) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.shared.metrics.queued.dec();
                false
            }
        }
    }

    /// Stops every generation at its next token (the drain timeout).
    pub fn cancel_all(&self) {
        self.shared.cancel_all.store(true, Ordering::SeqCst);
    }
}

fn slot_loop(mut session: Session, rx: Arc<Mutex<Receiver<Job>>>, shared: &Shared) {
    let metrics = &shared.metrics;
    loop {
        let job = {
            let Ok(guard) = rx.lock() else { return };
            match guard.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        metrics.queued.dec();
        if job.events.is_closed() {
            eprintln!(
                "request cancelled: client disconnected after 0 generated tokens (while queued)"
            );
            metrics.finished(Outcome::Cancelled);
            continue;
        }
        metrics.running.inc();
        let events = job.events.clone();
        let cached_before = session.tokens().len();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_job(&mut session, job, shared)
        }));
        let outcome = match outcome {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(e)) => {
                let _ = events.blocking_send(Event::Error(e.to_string()));
                Outcome::Error
            }
            Err(_) => {
                session.reset();
                let _ =
                    events.blocking_send(Event::Error("internal error while generating".into()));
                Outcome::Error
            }
        };
        let cached_after = session.tokens().len();
        metrics
            .kv_used
            .inc_by(cached_after as i64 - cached_before as i64);
        metrics.running.dec();
        metrics.finished(outcome);
    }
}

fn run_job(session: &mut Session, job: Job, shared: &Shared) -> bitnet_candle::Result<Outcome> {
    let metrics = &shared.metrics;
    let mut matcher = StopMatcher::new(job.stops);
    let mut hit_stop = false;
    let mut gone = false;
    let mut shutting_down = false;
    let mut generator = Generator::new(session, &job.prompt, &job.params)?;
    let mut last_token = None;
    while let Some(step) = generator.next_token()? {
        let now = Instant::now();
        match last_token {
            None => {
                metrics.prompt_tokens.inc_by(job.prompt.len() as u64);
                metrics
                    .prompt_tokens_computed
                    .inc_by(generator.n_prompt_eval() as u64);
                metrics
                    .time_to_first_token
                    .observe(now.duration_since(job.arrived).as_secs_f64());
            }
            Some(t) => metrics
                .time_per_output_token
                .observe(now.duration_since(t).as_secs_f64()),
        }
        last_token = Some(now);
        metrics.generated_tokens.inc();
        let (text, stop) = match matcher.push(&step.text) {
            StopOutcome::Text(t) => (t, false),
            StopOutcome::Stopped(t) => (t, true),
        };
        if job.events.is_closed()
            || (!text.is_empty() && job.events.blocking_send(Event::Text(text)).is_err())
        {
            gone = true;
            break;
        }
        if stop {
            hit_stop = true;
            break;
        }
        if shared.cancel_all.load(Ordering::SeqCst) {
            shutting_down = true;
            break;
        }
    }
    let n_generated = generator.tokens().len();
    if gone {
        eprintln!("request cancelled: client disconnected after {n_generated} generated tokens");
        return Ok(Outcome::Cancelled);
    }
    if shutting_down {
        eprintln!("request cancelled: drain timeout after {n_generated} generated tokens");
        let _ = job.events.blocking_send(Event::Error(
            "the server is shutting down: generation stopped at the drain timeout".into(),
        ));
        return Ok(Outcome::Cancelled);
    }
    if !hit_stop {
        let held = generator.flush_text()?;
        let rest = match matcher.push(&held) {
            StopOutcome::Text(t) => t + &matcher.finish(),
            StopOutcome::Stopped(t) => {
                hit_stop = true;
                t
            }
        };
        if !rest.is_empty() && job.events.blocking_send(Event::Text(rest)).is_err() {
            return Ok(Outcome::Cancelled);
        }
    }
    let (finish_reason, outcome) = match generator.stop_reason() {
        _ if hit_stop => ("stop", Outcome::Stop),
        Some(StopReason::MaxTokens | StopReason::ContextFull) | None => ("length", Outcome::Length),
        Some(
            StopReason::EndOfGeneration(_)
            | StopReason::Callback
            | StopReason::Cancelled
            | StopReason::Failed,
        ) => ("stop", Outcome::Stop),
    };
    eprintln!(
        "request done: {} prompt tokens, {n_generated} generated, finish_reason {finish_reason}",
        job.prompt.len()
    );
    let _ = job.events.blocking_send(Event::Done {
        finish_reason,
        usage: Usage {
            prompt_tokens: job.prompt.len(),
            completion_tokens: n_generated,
            total_tokens: job.prompt.len() + n_generated,
        },
    });
    Ok(outcome)
}
