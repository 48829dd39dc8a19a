//! The engine: one thread owns the [`BatchGenerator`] and steps it, so every running request
//! advances in the same forward pass (continuous batching: requests join at the next step and
//! long prompts are read in chunks between decode steps). HTTP handlers submit [`Job`]s over a
//! channel; each job's token callback turns tokens into [`Event`]s for its handler, cutting the
//! text at stop strings. A job whose client has gone away is cancelled before the next step.

use super::metrics::{Metrics, Outcome};
use super::openai::{PromptTokensDetails, Usage};
use super::stop::{StopMatcher, StopOutcome};
use bitnet_candle::scheduler::{
    BatchGenerator, Finished, Request, RequestId, SchedulerConfig, TokenEvent, PAGE,
};
use bitnet_candle::{GenerationParams, Model, StopReason};
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;
use tokio::sync::mpsc::UnboundedSender;

/// One generation request.
pub struct Job {
    pub prompt: Vec<u32>,
    pub params: GenerationParams,
    pub stops: Vec<String>,
    /// Unbounded: the engine thread must never wait for one slow client, and a request's
    /// events are bounded by its `max_tokens`.
    pub events: UnboundedSender<Event>,
    /// When the request arrived (time to first token counts from here).
    pub arrived: Instant,
}

/// What the engine reports back to the HTTP handler.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Text(String),
    Done {
        finish_reason: &'static str,
        usage: Usage,
    },
    Error(String),
}

/// The handle the HTTP handlers submit jobs through.
#[derive(Clone)]
pub struct Queue {
    tx: Sender<Job>,
    shared: Arc<Shared>,
}

/// What the engine thread shares with the queue's owners.
struct Shared {
    metrics: Arc<Metrics>,
    /// Set at the drain timeout: every request is stopped before the next step.
    cancel_all: AtomicBool,
    /// Jobs sent but not yet taken from the channel by the engine.
    in_channel: AtomicUsize,
    /// Requests waiting in the generator for a sequence (as of the last step).
    waiting: AtomicUsize,
    /// Most requests waiting (channel and generator together) before new ones get 503.
    capacity: usize,
}

impl Queue {
    /// Starts the engine thread over a generator with `config`'s sequences and KV budget.
    pub fn start(
        model: &Model,
        config: SchedulerConfig,
        capacity: usize,
        metrics: Arc<Metrics>,
    ) -> bitnet_candle::Result<Queue> {
        let generator = BatchGenerator::new(model, config.clone())?;
        metrics.kv_capacity.set(config.n_ctx as i64);
        let shared = Arc::new(Shared {
            metrics,
            cancel_all: AtomicBool::new(false),
            in_channel: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            capacity,
        });
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let engine = Engine {
            model: model.clone(),
            config,
            generator,
            jobs: HashMap::new(),
            shared: Arc::clone(&shared),
        };
        std::thread::Builder::new()
            .name("bitnet-engine".into())
            .spawn(move || engine.run(&rx))
            .map_err(|e| {
                bitnet_candle::Error::InvalidArgument(format!(
                    "cannot start the engine thread: {e}"
                ))
            })?;
        Ok(Queue { tx, shared })
    }

    /// Hands a job to the engine; `false` when `capacity` requests already wait for a sequence
    /// (the caller answers 503).
    pub fn submit(&self, job: Job) -> bool {
        let s = &self.shared;
        let before = s.in_channel.fetch_add(1, Ordering::SeqCst);
        if before + s.waiting.load(Ordering::SeqCst) >= s.capacity || self.tx.send(job).is_err() {
            s.in_channel.fetch_sub(1, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// Stops every request before the next step (the drain timeout).
    pub fn cancel_all(&self) {
        self.shared.cancel_all.store(true, Ordering::SeqCst);
    }
}

/// Why a request ended early, as its stream records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cut {
    /// A stop string appeared.
    StopString,
    /// The client went away.
    ClientGone,
    /// The drain timeout stopped it.
    Drain,
}

/// One request's delivery state, shared by its token callback and the engine.
struct Stream {
    events: UnboundedSender<Event>,
    matcher: StopMatcher,
    arrived: Instant,
    last_token: Option<Instant>,
    cut: Option<Cut>,
}

impl Stream {
    /// Records a generated token and forwards its text; `Break` ends the request.
    fn on_token(&mut self, ev: &TokenEvent<'_>, metrics: &Metrics) -> ControlFlow<()> {
        let now = Instant::now();
        match self.last_token {
            None => metrics
                .time_to_first_token
                .observe(now.duration_since(self.arrived).as_secs_f64()),
            Some(t) => metrics
                .time_per_output_token
                .observe(now.duration_since(t).as_secs_f64()),
        }
        self.last_token = Some(now);
        metrics.generated_tokens.inc();
        let (text, stop) = match self.matcher.push(ev.text) {
            StopOutcome::Text(t) => (t, false),
            StopOutcome::Stopped(t) => (t, true),
        };
        if self.events.is_closed()
            || (!text.is_empty() && self.events.send(Event::Text(text)).is_err())
        {
            self.cut = Some(Cut::ClientGone);
            return ControlFlow::Break(());
        }
        if stop {
            self.cut = Some(Cut::StopString);
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }

    /// Sends the text the streamer and the stop matcher held back; true if it held a stop.
    fn flush(&mut self, tail: &str) -> bool {
        let (rest, stopped) = match self.matcher.push(tail) {
            StopOutcome::Text(t) => (t + &self.matcher.finish(), false),
            StopOutcome::Stopped(t) => (t, true),
        };
        if !rest.is_empty() {
            let _ = self.events.send(Event::Text(rest));
        }
        stopped
    }
}

fn lock(stream: &Mutex<Stream>) -> MutexGuard<'_, Stream> {
    // A panic while holding the lock leaves the stream usable for the error report.
    stream.lock().unwrap_or_else(|e| e.into_inner())
}

/// The engine thread's state.
struct Engine {
    model: Model,
    config: SchedulerConfig,
    generator: BatchGenerator,
    jobs: HashMap<RequestId, Arc<Mutex<Stream>>>,
    shared: Arc<Shared>,
}

impl Engine {
    fn run(mut self, rx: &Receiver<Job>) {
        loop {
            if !self.receive(rx) {
                return;
            }
            self.cancel_departed();
            if self.shared.cancel_all.load(Ordering::SeqCst) {
                self.cancel_everything();
            }
            let step =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.generator.step()));
            match step {
                Ok(Ok(finished)) => {
                    // Gauges first: a client that reads /metrics right after its response must
                    // not see itself still running.
                    self.publish_gauges();
                    for f in finished {
                        self.finish(f);
                    }
                }
                Ok(Err(e)) => self.fail_everything(&e.to_string()),
                Err(_) => self.fail_everything("internal error while generating"),
            }
            self.publish_gauges();
        }
    }

    /// Takes the jobs sent so far, blocking while there is nothing to do. False when every
    /// sender is gone and nothing is left to generate.
    fn receive(&mut self, rx: &Receiver<Job>) -> bool {
        if self.generator.is_idle() {
            match rx.recv() {
                Ok(job) => self.accept(job),
                Err(_) => return false,
            }
        }
        loop {
            match rx.try_recv() {
                Ok(job) => self.accept(job),
                Err(TryRecvError::Empty) => return true,
                Err(TryRecvError::Disconnected) => return !self.generator.is_idle(),
            }
        }
    }

    fn accept(&mut self, job: Job) {
        self.shared.in_channel.fetch_sub(1, Ordering::SeqCst);
        let metrics = &self.shared.metrics;
        if job.events.is_closed() {
            eprintln!(
                "request cancelled: client disconnected after 0 generated tokens (while queued)"
            );
            metrics.finished(Outcome::Cancelled);
            return;
        }
        let stream = Arc::new(Mutex::new(Stream {
            events: job.events.clone(),
            matcher: StopMatcher::new(job.stops),
            arrived: job.arrived,
            last_token: None,
            cut: None,
        }));
        let callback = {
            let stream = Arc::clone(&stream);
            let metrics = Arc::clone(metrics);
            move |ev: &TokenEvent<'_>| lock(&stream).on_token(ev, &metrics)
        };
        let request = Request::new(job.prompt, job.params).on_token(callback);
        match self.generator.add(request) {
            Ok(id) => {
                self.jobs.insert(id, stream);
            }
            Err(e) => {
                let _ = job.events.send(Event::Error(e.to_string()));
                metrics.finished(Outcome::Error);
            }
        }
    }

    /// Cancels the requests whose clients have gone away (while queued or reading the prompt;
    /// a generating one also notices at its next token).
    fn cancel_departed(&mut self) {
        let gone: Vec<RequestId> = self
            .jobs
            .iter()
            .filter(|(_, s)| lock(s).events.is_closed())
            .map(|(&id, _)| id)
            .collect();
        self.cancel(&gone, Cut::ClientGone);
    }

    fn cancel_everything(&mut self) {
        let all: Vec<RequestId> = self.jobs.keys().copied().collect();
        self.cancel(&all, Cut::Drain);
    }

    fn cancel(&mut self, ids: &[RequestId], cut: Cut) {
        for &id in ids {
            if let Some(stream) = self.jobs.get(&id) {
                lock(stream).cut = Some(cut);
            }
            if let Some(f) = self.generator.cancel(id) {
                self.publish_gauges();
                self.finish(f);
            }
        }
    }

    /// Reports a request's end to its handler and the metrics.
    fn finish(&mut self, f: Finished) {
        let Some(stream) = self.jobs.remove(&f.id) else {
            return;
        };
        let metrics = &self.shared.metrics;
        let stats = &f.stats;
        metrics.prompt_tokens.inc_by(stats.n_prompt as u64);
        metrics
            .prompt_tokens_computed
            .inc_by(stats.n_prompt_computed as u64);
        let n_generated = f.tokens.len();
        let mut s = lock(&stream);
        let finish_reason = match (s.cut, f.stop) {
            (Some(Cut::ClientGone), _) => {
                eprintln!(
                    "request cancelled: client disconnected after {n_generated} generated tokens"
                );
                metrics.finished(Outcome::Cancelled);
                return;
            }
            (Some(Cut::Drain), _) => {
                eprintln!("request cancelled: drain timeout after {n_generated} generated tokens");
                let _ = s.events.send(Event::Error(
                    "the server is shutting down: generation stopped at the drain timeout".into(),
                ));
                metrics.finished(Outcome::Cancelled);
                return;
            }
            (_, StopReason::Failed) => {
                let message = f.error.as_deref().unwrap_or("generation failed");
                eprintln!("request failed after {n_generated} generated tokens: {message}");
                let _ = s.events.send(Event::Error(message.to_string()));
                metrics.finished(Outcome::Error);
                return;
            }
            (Some(Cut::StopString), _) => "stop",
            (None, stop) => match (s.flush(&f.tail), stop) {
                (true, _) => "stop",
                (false, StopReason::MaxTokens | StopReason::ContextFull) => "length",
                (false, _) => "stop",
            },
        };
        metrics.finished(match finish_reason {
            "length" => Outcome::Length,
            _ => Outcome::Stop,
        });
        eprintln!(
            "request done: {} prompt tokens ({} cached), {n_generated} generated, finish_reason {finish_reason}",
            stats.n_prompt, stats.n_prompt_reused
        );
        let _ = s.events.send(Event::Done {
            finish_reason,
            usage: Usage {
                prompt_tokens: stats.n_prompt,
                completion_tokens: n_generated,
                total_tokens: stats.n_prompt + n_generated,
                prompt_tokens_details: PromptTokensDetails {
                    cached_tokens: stats.n_prompt_reused,
                },
            },
        });
    }

    /// Ends every request with an error and starts over with a fresh generator (after a failed
    /// or panicked step, whose state cannot be trusted).
    fn fail_everything(&mut self, message: &str) {
        eprintln!(
            "generation step failed: {message}; ending {} requests",
            self.jobs.len()
        );
        for (id, stream) in std::mem::take(&mut self.jobs) {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.generator.cancel(id)
            }));
            let _ = lock(&stream).events.send(Event::Error(message.to_string()));
            self.shared.metrics.finished(Outcome::Error);
        }
        // Without memory for a second cache, keep the old generator (now without requests).
        if let Ok(g) = BatchGenerator::new(&self.model, self.config.clone()) {
            self.generator = g;
        }
    }

    fn publish_gauges(&self) {
        let g = &self.generator;
        let waiting = g.n_queued();
        self.shared.waiting.store(waiting, Ordering::SeqCst);
        let m = &self.shared.metrics;
        let in_channel = self.shared.in_channel.load(Ordering::SeqCst);
        m.queued.set((waiting + in_channel) as i64);
        m.running.set(g.n_active() as i64);
        m.kv_used.set((g.kv_usage().pages_in_use * PAGE) as i64);
    }
}
