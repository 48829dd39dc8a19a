//! OpenAI-compatible request and response bodies (the subset of fields this server honours;
//! unknown fields, `model` among them since one model is served, are ignored as OpenAI's own
//! clients send many).

use serde::{Deserialize, Serialize};

/// `prompt` of /v1/completions: one string, an array holding exactly one string, or an array
/// of token ids.
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub enum Prompt {
    One(String),
    Many(Vec<String>),
    Tokens(Vec<u32>),
}

/// `stop`: one string or up to four.
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

impl Stop {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Stop::One(s) => vec![s],
            Stop::Many(v) => v,
        }
    }
}

/// Sampling fields common to both endpoints (llama.cpp server's extensions included).
#[derive(Deserialize, Debug, Clone, Default)]
pub struct SamplingFields {
    pub max_tokens: Option<u64>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<u32>,
    pub repeat_penalty: Option<f32>,
    pub seed: Option<u64>,
    pub stop: Option<Stop>,
    pub n: Option<u32>,
    #[serde(default)]
    pub stream: bool,
    /// llama.cpp's extension: generate past end-of-generation tokens (benchmarks).
    #[serde(default)]
    pub ignore_eos: bool,
    pub stream_options: Option<StreamOptions>,
}

/// `stream_options`: `include_usage` adds a last chunk with the usage and no choices.
#[derive(Deserialize, Debug, Clone, Default)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

#[derive(Deserialize, Debug, Clone)]
pub struct CompletionRequest {
    pub prompt: Prompt,
    #[serde(default)]
    pub echo: bool,
    #[serde(flatten)]
    pub sampling: SamplingFields,
}

/// A chat message's `content`: a string, or an array of parts of which text parts are used.
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Deserialize, Debug, Clone)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

#[derive(Deserialize, Debug, Clone)]
pub struct Message {
    pub role: String,
    pub content: Content,
}

#[derive(Deserialize, Debug, Clone)]
pub struct ChatRequest {
    pub messages: Vec<Message>,
    /// Newer name of `max_tokens`.
    pub max_completion_tokens: Option<u64>,
    #[serde(flatten)]
    pub sampling: SamplingFields,
}

#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
    pub prompt_tokens_details: PromptTokensDetails,
}

/// OpenAI's breakdown of the prompt tokens: `cached_tokens` came from a cached prefix (another
/// request's or this conversation's earlier turn) and were not computed again.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct PromptTokensDetails {
    pub cached_tokens: usize,
}

/// The error body OpenAI returns.
#[derive(Serialize, Debug)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, Debug)]
pub struct ErrorDetail {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub param: Option<&'static str>,
    pub code: Option<&'static str>,
}
