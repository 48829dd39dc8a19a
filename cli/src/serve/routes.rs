//! HTTP handlers: request validation, prompt building, and the JSON / SSE response shapes.

use super::openai::{
    ChatRequest, CompletionRequest, Content, ErrorBody, ErrorDetail, Prompt, SamplingFields, Usage,
};
use super::worker::{Event, Job, Queue};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bitnet_candle::{ChatMessage, GenerationParams, Model, SamplingParams};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

struct Inner {
    model: Model,
    model_id: String,
    n_ctx: usize,
    queue: Queue,
    created: u64,
    next_id: AtomicU64,
}

impl AppState {
    pub fn new(model: Model, model_id: String, n_ctx: usize, queue: Queue) -> Self {
        AppState(Arc::new(Inner {
            model,
            model_id,
            n_ctx,
            queue,
            created: unix_time(),
            next_id: AtomicU64::new(1),
        }))
    }
}

pub fn router(state: AppState, max_body: usize) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/v1/models", get(models))
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat_completions))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// An error answered with OpenAI's JSON error body.
struct ApiError {
    status: StatusCode,
    message: String,
    code: Option<&'static str>,
}

impl ApiError {
    fn bad_request(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
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
            StatusCode::SERVICE_UNAVAILABLE => "server_busy",
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

async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn not_found() -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        message: "no such endpoint; see /v1/models, /v1/completions, /v1/chat/completions, /health"
            .into(),
        code: None,
    }
}

async fn models(State(state): State<AppState>) -> Json<Value> {
    let s = &state.0;
    Json(json!({
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
    }))
}

fn parse_body<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
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
    let req: CompletionRequest = parse_body(body)?;
    let prompt = match req.prompt {
        Prompt::One(p) => p,
        Prompt::Many(mut v) if v.len() == 1 => v.remove(0),
        Prompt::Many(_) => {
            return Err(ApiError::bad_request(
                "`prompt` must be one string (batches of prompts are not supported)",
            ))
        }
    };
    let ids = state
        .0
        .model
        .tokenizer()
        .encode(&prompt, true)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let echo = req.echo.then_some(prompt);
    start(
        state,
        Endpoint::Completion,
        ids,
        req.sampling,
        Some(16),
        echo,
    )
    .await
}

async fn chat_completions(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
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
    let model = &state.0.model;
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
    start(state, Endpoint::Chat, ids, req.sampling, None, None).await
}

/// Validates the sampling fields against the prompt and context, enqueues the job, and answers.
async fn start(
    state: AppState,
    endpoint: Endpoint,
    prompt: Vec<u32>,
    fields: SamplingFields,
    default_max_tokens: Option<u64>,
    echo: Option<String>,
) -> Result<Response, ApiError> {
    let s = &state.0;
    let params = generation_params(&fields, prompt.len(), s.n_ctx, default_max_tokens)?;
    let stops = fields
        .stop
        .clone()
        .map(|s| s.into_vec())
        .unwrap_or_default();
    if stops.len() > 4 {
        return Err(ApiError::bad_request("`stop` takes at most 4 sequences"));
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(64);
    let job = Job {
        prompt,
        params,
        stops,
        events: tx,
    };
    if !s.queue.submit(job) {
        return Err(ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "the server's request queue is full; retry later".into(),
            code: None,
        });
    }
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
    if fields.stream {
        Ok(stream_response(meta, rx, echo).into_response())
    } else {
        collect_response(meta, rx, echo).await
    }
}

fn generation_params(
    f: &SamplingFields,
    n_prompt: usize,
    n_ctx: usize,
    default_max_tokens: Option<u64>,
) -> Result<GenerationParams, ApiError> {
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
    mut rx: tokio::sync::mpsc::Receiver<Event>,
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

fn stream_response(
    meta: ResponseMeta,
    rx: tokio::sync::mpsc::Receiver<Event>,
    echo: Option<String>,
) -> Sse<impl tokio_stream::Stream<Item = Result<SseEvent, Infallible>>> {
    let meta = Arc::new(meta);
    let opening = {
        let meta = Arc::clone(&meta);
        let first = match (meta.endpoint, echo) {
            (Endpoint::Chat, _) => Some(chunk(&meta, Some(""), None, true)),
            (Endpoint::Completion, Some(e)) => Some(chunk(&meta, Some(&e), None, false)),
            (Endpoint::Completion, None) => None,
        };
        tokio_stream::iter(first.map(|v| Ok(SseEvent::default().data(v.to_string()))))
    };
    let body = ReceiverStream::new(rx).map(move |event| {
        let payload = match event {
            Event::Text(t) => chunk(&meta, Some(&t), None, false),
            Event::Done { finish_reason, .. } => chunk(&meta, None, Some(finish_reason), false),
            Event::Error(message) => {
                json!({ "error": { "message": message, "type": "server_error" } })
            }
        };
        Ok(SseEvent::default().data(payload.to_string()))
    });
    let done = tokio_stream::once(Ok(SseEvent::default().data("[DONE]")));
    Sse::new(opening.chain(body).chain(done))
}

fn unix_time() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
