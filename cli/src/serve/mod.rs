//! `bitnet serve -m MODEL`: an OpenAI-compatible HTTP server.
//!
//! Endpoints: `POST /v1/completions`, `POST /v1/chat/completions` (both streaming with SSE or
//! not), `GET /v1/models`, `GET /health`. Binds 127.0.0.1 by default.
//!
//! Concurrency: `--parallel N` slots (default 1), each with its own KV cache, run one request
//! at a time; further requests wait in a FIFO queue of `--queue` places (default 64), and a
//! request that finds it full gets 503. A slot keeps its cache between requests, so a chat
//! whose history is a prefix of the previous request only computes the new part. A client that
//! disconnects cancels its generation at the next token.
//!
//! Validation: bodies over `--max-body` bytes get 413; malformed JSON, wrong field types,
//! unsupported values and prompts that do not fit the context get 400, all with OpenAI's JSON
//! error body.

mod openai;
mod routes;
mod stop;
mod worker;

use crate::args::{CacheType, ModelArgs};
use crate::error::{CliError, CliResult};
use crate::model_source;
use clap::Args;

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
    /// Requests generated at the same time, each with its own KV cache.
    #[arg(long = "parallel", short = 'P', default_value_t = 1)]
    pub parallel: usize,
    /// Requests that may wait for a free slot before new ones get 503.
    #[arg(long = "queue", default_value_t = 64)]
    pub queue: usize,
    /// Largest accepted request body, in bytes.
    #[arg(long = "max-body", default_value_t = 1 << 20)]
    pub max_body: usize,
    /// Model name reported by /v1/models [default: the file name].
    #[arg(long = "alias")]
    pub alias: Option<String>,
}

pub fn run(args: &ServeArgs) -> CliResult {
    if args.parallel == 0 || args.queue == 0 {
        return Err(CliError::Usage(
            "--parallel and --queue must be at least 1".into(),
        ));
    }
    let loaded = model_source::load(&args.model)?;
    let n_ctx = args.model.ctx_size.unwrap_or(loaded.model.n_ctx_train());
    let kv = match args.model.cache_type {
        CacheType::F32 => bitnet_candle::KvDtype::F32,
        CacheType::F16 => bitnet_candle::KvDtype::F16,
    };
    let queue = worker::Queue::start(&loaded.model, args.parallel, n_ctx, kv, args.queue)?;
    let model_id = args.alias.clone().unwrap_or_else(|| {
        loaded
            .path
            .file_name()
            .map_or_else(|| "model".into(), |n| n.to_string_lossy().into_owned())
    });
    let state = routes::AppState::new(loaded.model, model_id, n_ctx, queue);
    let app = routes::router(state, args.max_body);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| CliError::Usage(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(async move {
        let addr = format!("{}:{}", args.host, args.port);
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .map_err(|e| CliError::Io {
                what: "listen on",
                path: addr.clone().into(),
                source: e,
            })?;
        let local = listener.local_addr().map_err(|e| CliError::Io {
            what: "listen on",
            path: addr.clone().into(),
            source: e,
        })?;
        eprintln!("listening on http://{local}");
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
            .map_err(|e| CliError::Io {
                what: "serve on",
                path: local.to_string().into(),
                source: e,
            })
    })
}
