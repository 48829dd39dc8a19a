//! Slots: each owns a session (its own KV cache) on its own thread and runs one request at a
//! time, taken from a bounded FIFO queue. A request whose client has gone away is skipped,
//! and generation stops at the first token that can no longer be delivered.

use super::openai::Usage;
use super::stop::{StopMatcher, StopOutcome};
use bitnet_candle::{GenerationParams, KvDtype, Model, Session, StopReason};
use std::ops::ControlFlow;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc::Sender;

/// One generation request.
pub struct Job {
    pub prompt: Vec<u32>,
    pub params: GenerationParams,
    pub stops: Vec<String>,
    pub events: Sender<Event>,
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
}

impl Queue {
    /// Starts `n_slots` slot threads with contexts of `n_ctx` tokens.
    pub fn start(
        model: &Model,
        n_slots: usize,
        n_ctx: usize,
        kv: KvDtype,
        capacity: usize,
    ) -> bitnet_candle::Result<Queue> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(capacity);
        let rx = Arc::new(Mutex::new(rx));
        for slot in 0..n_slots {
            let session = Session::new(model, n_ctx, kv)?;
            let rx = Arc::clone(&rx);
            std::thread::Builder::new()
                .name(format!("bitnet-slot-{slot}"))
                .spawn(move || slot_loop(session, rx))
                .map_err(|e| {
                    bitnet_candle::Error::InvalidArgument(format!("cannot start slot thread: {e}"))
                })?;
        }
        Ok(Queue { tx })
    }

    /// Enqueues a job; `false` when the queue is full (the caller answers 503).
    pub fn submit(&self, job: Job) -> bool {
        match self.tx.try_send(job) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => false,
        }
    }
}

fn slot_loop(mut session: Session, rx: Arc<Mutex<Receiver<Job>>>) {
    loop {
        let job = {
            let Ok(guard) = rx.lock() else { return };
            match guard.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        if job.events.is_closed() {
            eprintln!(
                "request cancelled: client disconnected after 0 generated tokens (while queued)"
            );
            continue;
        }
        let events = job.events.clone();
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_job(&mut session, job)));
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = events.blocking_send(Event::Error(e.to_string()));
            }
            Err(_) => {
                session.reset();
                let _ =
                    events.blocking_send(Event::Error("internal error while generating".into()));
            }
        }
    }
}

fn run_job(session: &mut Session, job: Job) -> bitnet_candle::Result<()> {
    let mut matcher = StopMatcher::new(job.stops);
    let mut hit_stop = false;
    let mut gone = false;
    let generation = session.generate(&job.prompt, &job.params, |piece| {
        let (text, stop) = match matcher.push(piece) {
            StopOutcome::Text(t) => (t, false),
            StopOutcome::Stopped(t) => (t, true),
        };
        if !text.is_empty() && job.events.blocking_send(Event::Text(text)).is_err() {
            gone = true;
            return ControlFlow::Break(());
        }
        if stop {
            hit_stop = true;
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    })?;
    if gone {
        eprintln!(
            "request cancelled: client disconnected after {} generated tokens",
            generation.tokens.len()
        );
        return Ok(());
    }
    if !hit_stop {
        let rest = matcher.finish();
        if !rest.is_empty() && job.events.blocking_send(Event::Text(rest)).is_err() {
            return Ok(());
        }
    }
    let finish_reason = match generation.stop {
        _ if hit_stop => "stop",
        StopReason::EndOfGeneration(_) => "stop",
        StopReason::MaxTokens | StopReason::ContextFull => "length",
        StopReason::Callback | StopReason::Cancelled | StopReason::Failed => "stop",
    };
    let completion_tokens = generation.tokens.len();
    eprintln!(
        "request done: {} prompt tokens, {completion_tokens} generated, finish_reason {finish_reason}",
        job.prompt.len()
    );
    let _ = job.events.blocking_send(Event::Done {
        finish_reason,
        usage: Usage {
            prompt_tokens: job.prompt.len(),
            completion_tokens,
            total_tokens: job.prompt.len() + completion_tokens,
        },
    });
    Ok(())
}
