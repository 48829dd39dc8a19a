//! HTTP handlers: request validation, prompt building, and the JSON / SSE response shapes.

use super::engine::{Event, Job, Queue};
use super::lifecycle::{InFlight, Lifecycle, Phase};
use super::metrics::{self, Metrics, Outcome};
use super::openai::{
    ChatRequest, CompletionRequest, Content, ErrorBody, ErrorDetail, Prompt, SamplingFields, Usage,
};
use super::tokenize;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bitnet_candle::{ChatMessage, GenerationParams, Model, Pieces, SamplingParams};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;
use tokio_stream::wrappers::ReceiverStream;

/// What every handler shares: the phase, the metrics, and once loaded, the model and queue.
#[derive(Clone)]
pub struct AppState {
    life: Arc<Lifecycle>,
    metrics: Arc<Metrics>,
    ready: Arc<OnceLock<Ready>>,
}

/// The loaded model and the queue in front of its sequences.
pub struct Ready {
    model: Model,
    pieces: Pieces,
    model_id: String,
    n_ctx: usize,
    /// Positions a request without `max_tokens` may fill (llama-server's per-slot context).
    seq_ctx: usize,
    queue: Queue,
    created: u64,
    next_id: AtomicU64,
}

impl Ready {
    /// `n_ctx`: the most one request may hold; `n_seq`: the sequences sharing it (`--parallel`).
    pub fn new(model: Model, model_id: String, n_ctx: usize, n_seq: usize, queue: Queue) -> Self {
        Ready {
            pieces: Pieces::new(model.tokenizer()),
            model,
            model_id,
            n_ctx,
            seq_ctx: (n_ctx / n_seq.max(1)).max(1),
            queue,
            created: unix_time(),
            next_id: AtomicU64::new(1),
        }
    }

    pub fn queue(&self) -> &Queue {
        &self.queue
    }
}

impl AppState {
    /// A server whose model is still loading.
    pub fn loading(life: Arc<Lifecycle>, metrics: Arc<Metrics>) -> Self {
        AppState {
            life,
            metrics,
            ready: Arc::new(OnceLock::new()),
        }
    }

    /// Installs the loaded model and opens the server for requests (unless it is draining).
    pub fn set_ready(&self, ready: Ready) {
        let _ = self.ready.set(ready);
        self.life.set_ready();
    }

    pub fn ready(&self) -> Option<&Ready> {
        self.ready.get()
    }

    /// The loaded model, or 503 while it loads.
    fn loaded(&self) -> Result<&Ready, ApiError> {
        self.ready
            .get()
            .ok_or_else(|| ApiError::unavailable("Loading model"))
    }
}

pub fn router(state: AppState, max_body: usize) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize))
        .route("/v1/models", get(models))
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat_completions))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// An error answered with OpenAI's JSON error body.
pub(super) struct ApiError {
    status: StatusCode,
    message: String,
    code: Option<&'static str>,
}

impl ApiError {
    pub(super) fn bad_request(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            code: None,
        }
    }

    /// 503: loading, draining, or a full queue; clients and balancers retry elsewhere.
    fn unavailable(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: message.into(),
            code: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let kind = match self.status {
            StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE | StatusCode::NOT_FOUND => {
                "invalid_request_error"
            }
            StatusCode::SERVICE_UNAVAILABLE => "unavailable_error",
            _ => "server_error",
        };
        let body = ErrorBody {
            error: ErrorDetail {
                message: self.message,
                kind,
                param: None,
                code: self.code,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

/// 200 when ready; 503 while loading and while draining (llama-server's shapes).
async fn health(State(state): State<AppState>) -> Response {
    match state.life.phase() {
        Phase::Ready => Json(json!({ "status": "ok" })).into_response(),
        Phase::Loading => ApiError::unavailable("Loading model").into_response(),
        Phase::Draining => ApiError::unavailable("Shutting down").into_response(),
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        state.metrics.render(),
    )
        .into_response()
}

async fn tokenize(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let s = state.loaded()?;
    tokenize::tokenize(&s.model, &s.pieces, parse_body(body)?).map(Json)
}

async fn detokenize(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let s = state.loaded()?;
    tokenize::detokenize(&s.model, parse_body(body)?).map(Json)
}

async fn not_found() -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        message: "no such endpoint; see /v1/models, /v1/completions, /v1/chat/completions, \
                  /tokenize, /detokenize, /health, /metrics"
            .into(),
        code: None,
    }
}

async fn models(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let s = state.loaded()?;
    Ok(Json(json!({
        "object": "list",
        "data": [{
            "id": s.model_id,
            "object": "model",
            "created": s.created,
            "owned_by": "bitnet-rs",
            "meta": {
                "description": s.model.description(),
                "n_ctx": s.n_ctx,
                "n_ctx_train": s.model.n_ctx_train(),
                "n_vocab": s.model.n_vocab(),
            }
        }]
    })))
}

pub(super) fn parse_body<T: DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let body = body.map_err(|rejection| ApiError {
        status: rejection.status(),
        message: if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            "request body is larger than the server's --max-body limit".into()
        } else {
            rejection.body_text()
        },
        code: None,
    })?;
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))
}

/// Which endpoint a request came to (response shapes differ).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Completion,
    Chat,
}

async fn completions(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let arrived = Instant::now();
    let req: CompletionRequest = parse_body(body)?;
    let s = state.loaded()?;
    let tokenizer = s.model.tokenizer();
    let (ids, text) = match req.prompt {
        Prompt::One(p) => (tokenizer.encode(&p, true), p),
        Prompt::Many(mut v) if v.len() == 1 => {
            let p = v.remove(0);
            (tokenizer.encode(&p, true), p)
        }
        Prompt::Tokens(ids) => {
            if let Some(bad) = ids.iter().find(|&&id| id as usize >= s.model.n_vocab()) {
                return Err(ApiError::bad_request(format!(
                    "prompt token {bad} is outside the vocabulary of {} tokens",
                    s.model.n_vocab()
                )));
            }
            let text = if req.echo {
                tokenizer
                    .decode(&ids, false)
                    .map_err(|e| ApiError::bad_request(e.to_string()))?
            } else {
                String::new()
            };
            (Ok(ids), text)
        }
        Prompt::Many(_) => {
            return Err(ApiError::bad_request(
                "`prompt` must be one string or one array of token ids (batches of prompts are not supported)",
            ))
        }
    };
    let ids = ids.map_err(|e| ApiError::bad_request(e.to_string()))?;
    let echo = req.echo.then_some(text);
    let request = Request {
        endpoint: Endpoint::Completion,
        prompt: ids,
        fields: req.sampling,
        default_max_tokens: Some(16),
        echo,
        arrived,
    };
    start(state, request).await
}

async fn chat_completions(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let arrived = Instant::now();
    let mut req: ChatRequest = parse_body(body)?;
    if req.messages.is_empty() {
        return Err(ApiError::bad_request(
            "`messages` must hold at least one message",
        ));
    }
    let mut messages = Vec::with_capacity(req.messages.len());
    for m in &req.messages {
        if !matches!(
            m.role.as_str(),
            "system" | "user" | "assistant" | "developer"
        ) {
            return Err(ApiError::bad_request(format!(
                "unsupported message role `{}`",
                m.role
            )));
        }
        let role = if m.role == "developer" {
            "system"
        } else {
            m.role.as_str()
        };
        let text = match &m.content {
            Content::Text(t) => t.clone(),
            Content::Parts(parts) => {
                let mut text = String::new();
                for p in parts {
                    match (p.kind.as_str(), &p.text) {
                        ("text", Some(t)) => text.push_str(t),
                        (kind, _) => {
                            return Err(ApiError::bad_request(format!(
                                "unsupported content part `{kind}` (only text)"
                            )))
                        }
                    }
                }
                text
            }
        };
        messages.push(ChatMessage::new(role, text));
    }
    let model = &state.loaded()?.model;
    let prompt = model
        .apply_chat_template(&messages, true)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let ids = model
        .tokenizer()
        .encode(&prompt, true)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    if req.max_completion_tokens.is_some() {
        req.sampling.max_tokens = req.max_completion_tokens;
    }
    let request = Request {
        endpoint: Endpoint::Chat,
        prompt: ids,
        fields: req.sampling,
        default_max_tokens: None,
        echo: None,
        arrived,
    };
    start(state, request).await
}

/// A parsed generation request.
struct Request {
    endpoint: Endpoint,
    prompt: Vec<u32>,
    fields: SamplingFields,
    default_max_tokens: Option<u64>,
    echo: Option<String>,
    arrived: Instant,
}

/// Validates the sampling fields against the prompt and context, enqueues the job, and answers.
async fn start(state: AppState, req: Request) -> Result<Response, ApiError> {
    let s = state.loaded()?;
    let params = generation_params(
        &req.fields,
        req.prompt.len(),
        Context {
            n_ctx: s.n_ctx,
            seq_ctx: s.seq_ctx,
        },
        req.default_max_tokens,
    )?;
    let stops = req
        .fields
        .stop
        .clone()
        .map(|s| s.into_vec())
        .unwrap_or_default();
    if stops.len() > 4 {
        return Err(ApiError::bad_request("`stop` takes at most 4 sequences"));
    }
    let Some(in_flight) = state.life.admit() else {
        state.metrics.finished(Outcome::Rejected);
        return Err(ApiError::unavailable(
            "the server is shutting down; retry on another replica",
        ));
    };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Event>();
    let job = Job {
        prompt: req.prompt,
        params,
        stops,
        events: tx,
        arrived: req.arrived,
    };
    if !s.queue.submit(job) {
        state.metrics.finished(Outcome::Rejected);
        return Err(ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "the server's request queue is full; retry later".into(),
            code: None,
        });
    }
    let endpoint = req.endpoint;
    let id = format!(
        "{}-{}",
        if endpoint == Endpoint::Chat {
            "chatcmpl"
        } else {
            "cmpl"
        },
        s.next_id.fetch_add(1, Ordering::Relaxed)
    );
    let meta = ResponseMeta {
        id,
        created: unix_time(),
        model: s.model_id.clone(),
        endpoint,
    };
    if req.fields.stream {
        let include_usage = req
            .fields
            .stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage);
        Ok(stream_response(meta, rx, req.echo, include_usage, in_flight).into_response())
    } else {
        let response = collect_response(meta, rx, req.echo).await;
        drop(in_flight);
        response
    }
}

/// The context a request may use.
#[derive(Clone, Copy)]
struct Context {
    /// The most one request may hold.
    n_ctx: usize,
    /// Where a request without `max_tokens` stops: the budget's share of one sequence, as in
    /// llama-server (`-c` / `-np`), so that such requests still run side by side; a prompt that
    /// already fills its share may use the rest of `n_ctx` (and then runs alone).
    seq_ctx: usize,
}

fn generation_params(
    f: &SamplingFields,
    n_prompt: usize,
    ctx: Context,
    default_max_tokens: Option<u64>,
) -> Result<GenerationParams, ApiError> {
    let n_ctx = ctx.n_ctx;
    if f.n.is_some_and(|n| n != 1) {
        return Err(ApiError::bad_request("only `n` = 1 is supported"));
    }
    let temperature = f.temperature.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::bad_request(format!(
            "`temperature` must be in [0, 2], got {temperature}"
        )));
    }
    let top_p = f.top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::bad_request(format!(
            "`top_p` must be in (0, 1], got {top_p}"
        )));
    }
    let repeat_penalty = f.repeat_penalty.unwrap_or(1.0);
    if !(repeat_penalty.is_finite() && repeat_penalty > 0.0) {
        return Err(ApiError::bad_request(format!(
            "`repeat_penalty` must be positive, got {repeat_penalty}"
        )));
    }
    let room = n_ctx.saturating_sub(n_prompt);
    let max_tokens = match f.max_tokens.or(default_max_tokens) {
        Some(0) => return Err(ApiError::bad_request("`max_tokens` must be at least 1")),
        Some(m) => usize::try_from(m).unwrap_or(usize::MAX),
        None if n_prompt < ctx.seq_ctx => ctx.seq_ctx.min(n_ctx) - n_prompt,
        None => room,
    };
    if n_prompt >= n_ctx || max_tokens > room {
        return Err(ApiError {
            status: StatusCode::BAD_REQUEST,
            message: format!(
                "this model's context holds {n_ctx} tokens, but {} were requested ({n_prompt} in the prompt, {max_tokens} for the completion); shorten the prompt or lower max_tokens",
                n_prompt + max_tokens
            ),
            code: Some("context_length_exceeded"),
        });
    }
    Ok(GenerationParams {
        max_new_tokens: max_tokens,
        sampling: SamplingParams {
            temperature,
            top_k: f.top_k.unwrap_or(0) as usize,
            top_p,
            repeat_penalty,
            repeat_last_n: 64,
            seed: f.seed.unwrap_or_else(|| unix_time() ^ 0x5DEE_CE66),
        },
        ignore_eos: f.ignore_eos,
        ..GenerationParams::default()
    })
}

struct ResponseMeta {
    id: String,
    created: u64,
    model: String,
    endpoint: Endpoint,
}

async fn collect_response(
    meta: ResponseMeta,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Event>,
    echo: Option<String>,
) -> Result<Response, ApiError> {
    let mut text = echo.unwrap_or_default();
    while let Some(event) = rx.recv().await {
        match event {
            Event::Text(t) => text.push_str(&t),
            Event::Error(message) => {
                return Err(ApiError {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    message,
                    code: None,
                })
            }
            Event::Done {
                finish_reason,
                usage,
            } => {
                return Ok(Json(final_body(&meta, text, finish_reason, &usage)).into_response());
            }
        }
    }
    Err(ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        message: "generation ended without a result".into(),
        code: None,
    })
}

fn final_body(meta: &ResponseMeta, text: String, finish_reason: &str, usage: &Usage) -> Value {
    match meta.endpoint {
        Endpoint::Completion => json!({
            "id": meta.id, "object": "text_completion", "created": meta.created, "model": meta.model,
            "choices": [{ "index": 0, "text": text, "logprobs": null, "finish_reason": finish_reason }],
            "usage": usage,
        }),
        Endpoint::Chat => json!({
            "id": meta.id, "object": "chat.completion", "created": meta.created, "model": meta.model,
            "choices": [{
                "index": 0,
                "message": { "role": "assistant", "content": text },
                "logprobs": null,
                "finish_reason": finish_reason
            }],
            "usage": usage,
        }),
    }
}

/// One streamed chunk: `text` and/or `finish_reason`.
fn chunk(
    meta: &ResponseMeta,
    text: Option<&str>,
    finish_reason: Option<&str>,
    first: bool,
) -> Value {
    match meta.endpoint {
        Endpoint::Completion => json!({
            "id": meta.id, "object": "text_completion", "created": meta.created, "model": meta.model,
            "choices": [{ "index": 0, "text": text.unwrap_or(""), "logprobs": null, "finish_reason": finish_reason }],
        }),
        Endpoint::Chat => {
            let mut delta = serde_json::Map::new();
            if first {
                delta.insert("role".into(), json!("assistant"));
            }
            if let Some(t) = text {
                delta.insert("content".into(), json!(t));
            }
            json!({
                "id": meta.id, "object": "chat.completion.chunk", "created": meta.created, "model": meta.model,
                "choices": [{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason }],
            })
        }
    }
}

/// The SSE response: a task forwards the generation's events as chunks, so that it can add
/// the final usage chunk (`stream_options.include_usage`) and notice at once when the client
/// leaves (dropping the events receiver cancels the generation at its next token).
fn stream_response(
    meta: ResponseMeta,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Event>,
    echo: Option<String>,
    include_usage: bool,
    in_flight: InFlight,
) -> Sse<impl tokio_stream::Stream<Item = Result<SseEvent, Infallible>>> {
    let (out, body) = tokio::sync::mpsc::channel::<Result<SseEvent, Infallible>>(64);
    let data = |v: Value| Ok(SseEvent::default().data(v.to_string()));
    tokio::spawn(async move {
        // The request stays in flight (a drain waits) until its last chunk is handed over.
        let _in_flight = in_flight;
        let with_usage = |mut v: Value| {
            if include_usage {
                v["usage"] = Value::Null;
            }
            v
        };
        let opening = match (meta.endpoint, echo) {
            (Endpoint::Chat, _) => Some(chunk(&meta, Some(""), None, true)),
            (Endpoint::Completion, Some(e)) => Some(chunk(&meta, Some(&e), None, false)),
            (Endpoint::Completion, None) => None,
        };
        if let Some(v) = opening {
            if out.send(data(with_usage(v))).await.is_err() {
                return;
            }
        }
        loop {
            let event = tokio::select! {
                event = rx.recv() => event,
                () = out.closed() => return,
            };
            let mut chunks = Vec::with_capacity(2);
            match event {
                Some(Event::Text(t)) => {
                    chunks.push(with_usage(chunk(&meta, Some(&t), None, false)))
                }
                Some(Event::Done {
                    finish_reason,
                    usage,
                }) => {
                    chunks.push(with_usage(chunk(&meta, None, Some(finish_reason), false)));
                    if include_usage {
                        let mut last = chunk(&meta, None, None, false);
                        last["choices"] = json!([]);
                        last["usage"] = json!(usage);
                        chunks.push(last);
                    }
                }
                Some(Event::Error(message)) => {
                    chunks.push(json!({ "error": { "message": message, "type": "server_error" } }))
                }
                None => break,
            }
            for v in chunks {
                if out.send(data(v)).await.is_err() {
                    return;
                }
            }
        }
        let _ = out.send(Ok(SseEvent::default().data("[DONE]"))).await;
    });
    Sse::new(ReceiverStream::new(body))
}

fn unix_time() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::engine::Queue;
    use bitnet_candle::scheduler::SchedulerConfig;
    use bitnet_candle::synthetic::{write_synthetic_gguf, SyntheticSpec};
    use bitnet_candle::LoadOptions;

    /// Fits every POST endpoint (each ignores the others' fields).
    const BODY: &str = r#"{"prompt": "hi", "content": "hi", "max_tokens": 1,
        "messages": [{"role": "user", "content": "hi"}]}"#;

    fn call(agent: &ureq::Agent, method: &str, url: &str) -> (u16, Value) {
        let resp = match method {
            "GET" => agent.get(url).call(),
            _ => agent
                .post(url)
                .header("Content-Type", "application/json")
                .send(BODY),
        };
        let mut resp = resp.expect("request");
        let status = resp.status().as_u16();
        let body = resp.body_mut().read_to_string().expect("body");
        (
            status,
            serde_json::from_str(&body).unwrap_or(Value::String(body)),
        )
    }

    /// The real router on a loopback port through its three phases.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn health_and_generation_follow_the_phase() {
        let life = Lifecycle::new();
        let metrics = Metrics::new();
        let state = AppState::loading(life.clone(), metrics.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = router(state.clone(), 1 << 20);
        tokio::spawn(async move { axum::serve(listener, app).await });
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let run = |method: &'static str, path: &'static str| {
            let (agent, url) = (agent.clone(), format!("{base}{path}"));
            tokio::task::spawn_blocking(move || call(&agent, method, &url))
        };

        let (status, body) = run("GET", "/health").await.unwrap();
        assert_eq!(
            (status, &body["error"]["message"]),
            (503, &json!("Loading model"))
        );
        for path in ["/v1/completions", "/v1/chat/completions", "/tokenize"] {
            let (status, body) = run("POST", path).await.unwrap();
            assert_eq!(status, 503, "{path}: {body}");
            assert_eq!(body["error"]["type"], "unavailable_error", "{path}");
        }
        assert_eq!(run("GET", "/metrics").await.unwrap().0, 200);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny.gguf");
        write_synthetic_gguf(&path, &SyntheticSpec::tiny()).unwrap();
        let model = Model::load(&path, &LoadOptions::default()).unwrap();
        let config = SchedulerConfig {
            n_seq_max: 1,
            n_ctx: 64,
            ..SchedulerConfig::default()
        };
        let queue = Queue::start(&model, config, 4, metrics).unwrap();
        state.set_ready(Ready::new(model, "tiny".into(), 64, 1, queue));
        let (status, body) = run("GET", "/health").await.unwrap();
        assert_eq!((status, &body["status"]), (200, &json!("ok")));
        let (status, body) = run("POST", "/v1/completions").await.unwrap();
        assert_eq!(status, 200, "{body}");

        life.start_drain();
        let (status, body) = run("GET", "/health").await.unwrap();
        assert_eq!(
            (status, &body["error"]["message"]),
            (503, &json!("Shutting down"))
        );
        let (status, _) = run("POST", "/v1/completions").await.unwrap();
        assert_eq!(status, 503);
        // Cheap read-only endpoints stay up while draining.
        assert_eq!(run("POST", "/tokenize").await.unwrap().0, 200);
    }

    #[test]
    fn without_max_tokens_a_request_fills_its_share_of_the_budget() {
        let fields = |max_tokens: Option<u64>| {
            serde_json::from_value::<SamplingFields>(json!({ "max_tokens": max_tokens })).unwrap()
        };
        let ctx = Context {
            n_ctx: 8192,
            seq_ctx: 1024,
        };
        let max_new = |max_tokens, n_prompt, default| {
            generation_params(&fields(max_tokens), n_prompt, ctx, default)
                .map(|p| p.max_new_tokens)
                .map_err(|e| e.message)
        };
        // One sequence's share (8192 / 8), as llama-server's slots.
        assert_eq!(max_new(None, 100, None), Ok(924));
        // A prompt that fills its share may still use the rest of the context.
        assert_eq!(max_new(None, 1024, None), Ok(7168));
        assert_eq!(max_new(None, 5000, None), Ok(3192));
        // Explicit and endpoint defaults are kept as they are.
        assert_eq!(max_new(Some(3000), 100, None), Ok(3000));
        assert_eq!(max_new(None, 100, Some(16)), Ok(16));
        assert!(max_new(Some(9000), 100, None).is_err());
        assert!(max_new(None, 8192, None).is_err());
    }
}
