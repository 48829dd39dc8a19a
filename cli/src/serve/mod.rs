//! `bitnet serve -m MODEL`: an OpenAI-compatible HTTP server.
//!
//! Endpoints: `POST /v1/completions`, `POST /v1/chat/completions` (both streaming with SSE or
//! not), `GET /v1/models`, llama-server's `POST /tokenize` and `POST /detokenize`, `GET /health`
//! (503 while the model loads and while draining) and `GET /metrics` (OpenMetrics text).
//! Binds 127.0.0.1 by default, before the model is loaded, so that health checks see it load.
//!
//! Concurrency: continuous batching (see [`engine`]). Up to `--parallel N` requests (default 1)
//! generate together, every one advancing in each batched forward pass; `-c` is the KV budget
//! in positions shared by all of them (llama-server's `-c` with `-np`), and also the most one
//! request may hold. A request joins at the next step; prompts are read in chunks of
//! `--prefill-chunk` tokens between decode steps, so streams in progress keep receiving tokens.
//! A request is admitted only when its prompt plus `max_tokens` fits beside what the running
//! ones may still need; a request without `max_tokens` stops at its share of the budget
//! (`-c` / `--parallel` positions, llama-server's per-slot context), or, when its prompt alone
//! fills that share, may use the whole context and so runs alone. Others wait in a FIFO queue
//! of `--queue` places (default 64), and a request that finds it full gets 503. A finished request's tokens stay cached: a new request reuses the
//! longest cached prefix of its prompt (a chat that resends its history computes only the new
//! turn; requests with one long system prompt share its pages), reported as
//! `usage.prompt_tokens_details.cached_tokens`. A client that disconnects cancels its request
//! before the next step.
//!
//! Shutdown: SIGTERM or SIGINT starts a drain: `/health` and new generation requests answer
//! 503, the requests in flight finish (for at most `--drain-timeout` seconds, after which they
//! are stopped), then the server exits with status 0. A second signal ends the drain at once.
//!
//! Validation: bodies over `--max-body` bytes get 413; malformed JSON, wrong field types,
//! unsupported values and prompts that do not fit the context get 400, all with OpenAI's JSON
//! error body.

mod engine;
mod lifecycle;
mod metrics;
mod openai;
mod routes;
mod stop;
mod tokenize;

use crate::args::ModelArgs;
use crate::error::{CliError, CliResult};
use crate::model_source;
use bitnet_candle::scheduler::SchedulerConfig;
use clap::Args;
use lifecycle::Lifecycle;
use metrics::Metrics;
use routes::{AppState, Ready};
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0 = any free port; the chosen one is printed).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Most requests generated together (sequences in one batch); they share the -c budget.
    #[arg(long = "parallel", short = 'P', default_value_t = 1)]
    pub parallel: usize,
    /// Most tokens in one forward pass (decode rows plus prompt chunks).
    #[arg(short = 'b', long = "batch-size", default_value_t = 512)]
    pub batch_size: usize,
    /// Most prompt tokens read in one step, between the decode steps of running requests.
    #[arg(long = "prefill-chunk", default_value_t = 256)]
    pub prefill_chunk: usize,
    /// Requests that may wait for a sequence before new ones get 503.
    #[arg(long = "queue", default_value_t = 64)]
    pub queue: usize,
    /// Largest accepted request body, in bytes.
    #[arg(long = "max-body", default_value_t = 1 << 20)]
    pub max_body: usize,
    /// Model name reported by /v1/models [default: the file name].
    #[arg(long = "alias")]
    pub alias: Option<String>,
    /// Seconds a drain (SIGTERM, SIGINT) waits for the requests in flight before stopping them.
    #[arg(long = "drain-timeout", default_value_t = 30.0)]
    pub drain_timeout: f64,
}

pub fn run(args: &ServeArgs) -> CliResult {
    if args.parallel == 0 || args.queue == 0 || args.prefill_chunk == 0 {
        return Err(CliError::Usage(
            "--parallel, --queue and --prefill-chunk must be at least 1".into(),
        ));
    }
    if args.batch_size < args.parallel {
        return Err(CliError::Usage(format!(
            "--batch-size ({}) must hold one token of each of the --parallel {} requests",
            args.batch_size, args.parallel
        )));
    }
    if !(args.drain_timeout.is_finite() && args.drain_timeout >= 0.0) {
        return Err(CliError::Usage(format!(
            "--drain-timeout must be a number of seconds >= 0, got {}",
            args.drain_timeout
        )));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| CliError::Usage(format!("cannot start the async runtime: {e}")))?;
    let outcome = runtime.block_on(serve(args));
    // The model loader may still be running (a signal during loading): do not wait for it.
    runtime.shutdown_background();
    outcome
}

async fn serve(args: &ServeArgs) -> CliResult {
    let mut signals = Signals::install()?;
    let addr = format!("{}:{}", args.host, args.port);
    let listen_error = |e| CliError::Io {
        what: "listen on",
        path: addr.clone().into(),
        source: e,
    };
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(listen_error)?;
    let local = listener.local_addr().map_err(listen_error)?;
    let life = Lifecycle::new();
    let metrics = Metrics::new();
    let state = AppState::loading(life.clone(), metrics.clone());
    let app = routes::router(state.clone(), args.max_body);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stop_rx.await;
            })
            .await
    });
    eprintln!("listening on http://{local}");
    tokio::spawn(refresh_rate(metrics.clone()));

    let model_args = ServeModel::from(args);
    let load = tokio::task::spawn_blocking({
        let metrics = metrics.clone();
        move || model_args.load(metrics)
    });
    tokio::select! {
        loaded = load => {
            let ready = loaded.map_err(|e| CliError::Usage(format!("model loading failed: {e}")))??;
            state.set_ready(ready);
            eprintln!("model loaded: ready for requests");
        }
        signal = signals.next() => {
            eprintln!("{signal} while loading the model: exiting");
            let _ = stop_tx.send(());
            return Ok(());
        }
    }

    let signal = signals.next().await;
    let timeout = Duration::from_secs_f64(args.drain_timeout);
    life.start_drain();
    eprintln!(
        "{signal}: draining {} requests in flight (at most {} s); new requests get 503",
        life.in_flight(),
        timeout.as_secs_f64()
    );
    let started = Instant::now();
    let idle = tokio::select! {
        idle = life.wait_idle(timeout) => idle,
        signal = signals.next() => {
            eprintln!("{signal} again: stopping the requests in flight now");
            false
        }
    };
    if !idle {
        if let Some(ready) = state.ready() {
            ready.queue().cancel_all();
        }
        // Stopped generations end their responses at the next token.
        life.wait_idle(Duration::from_secs(5)).await;
    }
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    eprintln!(
        "drained in {:.1} s ({} requests left unfinished): exiting",
        started.elapsed().as_secs_f64(),
        life.in_flight()
    );
    Ok(())
}

/// What loading needs from the arguments (owned, for the loader thread).
struct ServeModel {
    model: ModelArgs,
    parallel: usize,
    batch_size: usize,
    prefill_chunk: usize,
    queue: usize,
    alias: Option<String>,
}

impl From<&ServeArgs> for ServeModel {
    fn from(args: &ServeArgs) -> Self {
        ServeModel {
            model: args.model.clone(),
            parallel: args.parallel,
            batch_size: args.batch_size,
            prefill_chunk: args.prefill_chunk,
            queue: args.queue,
            alias: args.alias.clone(),
        }
    }
}

impl ServeModel {
    fn load(self, metrics: std::sync::Arc<Metrics>) -> CliResult<Ready> {
        let loaded = model_source::load(&self.model)?;
        let n_ctx = self.model.ctx_size.unwrap_or(loaded.model.n_ctx_train());
        let config = SchedulerConfig {
            n_seq_max: self.parallel,
            n_ctx,
            n_batch: self.batch_size,
            prefill_chunk: self.prefill_chunk.min(self.batch_size),
            kv_dtype: self.model.cache_type.into(),
            prefix_reuse: true,
            // The whole -c budget is taken at start, as llama-server does: memory use stays
            // flat under load, and a budget that does not fit fails here, not mid-stream.
            resident_kv: true,
        };
        let queue = engine::Queue::start(&loaded.model, config, self.queue, metrics)?;
        // The most one request may hold: the budget, within the model's context.
        let n_ctx = n_ctx.min(loaded.model.weights().max_context());
        let model_id = self.alias.unwrap_or_else(|| {
            loaded
                .path
                .file_name()
                .map_or_else(|| "model".into(), |n| n.to_string_lossy().into_owned())
        });
        Ok(Ready::new(
            loaded.model,
            model_id,
            n_ctx,
            self.parallel,
            queue,
        ))
    }
}

/// Updates the tokens/s gauge every second.
async fn refresh_rate(metrics: std::sync::Arc<Metrics>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        metrics.update_rate(Instant::now());
    }
}

/// SIGTERM and SIGINT, installed before the model loads so that neither kills the process.
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> CliResult<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let install = |kind| {
                signal(kind).map_err(|e| {
                    CliError::Usage(format!("cannot install the signal handlers: {e}"))
                })
            };
            Ok(Signals {
                term: install(SignalKind::terminate())?,
                int: install(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    /// Waits for the next signal and names it.
    async fn next(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => "SIGTERM",
                _ = self.int.recv() => "SIGINT",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}
