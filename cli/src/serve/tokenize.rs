//! llama-server's `POST /tokenize` and `POST /detokenize`.
//!
//! `/tokenize` takes `content` plus `add_special` (prepend BOS, default false), `parse_special`
//! (special-token texts become their ids, default true) and `with_pieces` (default false), and
//! answers `{"tokens": [ids]}` or `{"tokens": [{"id", "piece"}]}`, where a piece is a string
//! when its bytes are valid UTF-8 and an array of bytes otherwise. `/detokenize` takes
//! `tokens` and answers `{"content": text}`.

use super::routes::ApiError;
use bitnet_candle::{Model, Pieces};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize, Debug)]
pub struct TokenizeRequest {
    content: String,
    #[serde(default)]
    add_special: bool,
    #[serde(default = "yes")]
    parse_special: bool,
    #[serde(default)]
    with_pieces: bool,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize, Debug)]
pub struct DetokenizeRequest {
    tokens: Vec<i64>,
}

pub fn tokenize(model: &Model, pieces: &Pieces, req: TokenizeRequest) -> Result<Value, ApiError> {
    let tokenizer = model.tokenizer();
    let ids = tokenizer
        .encode_with(&req.content, req.add_special, req.parse_special)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    if !req.with_pieces {
        return Ok(json!({ "tokens": ids }));
    }
    let tokens = ids
        .iter()
        .map(|&id| {
            let bytes = pieces
                .bytes(tokenizer, id, true)
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
            let piece = match String::from_utf8(bytes) {
                Ok(text) => json!(text),
                Err(e) => json!(e.into_bytes()),
            };
            Ok(json!({ "id": id, "piece": piece }))
        })
        .collect::<Result<Vec<Value>, ApiError>>()?;
    Ok(json!({ "tokens": tokens }))
}

pub fn detokenize(model: &Model, req: DetokenizeRequest) -> Result<Value, ApiError> {
    let n_vocab = model.n_vocab();
    let ids = req
        .tokens
        .iter()
        .enumerate()
        .map(|(i, &t)| {
            u32::try_from(t)
                .ok()
                .filter(|&id| (id as usize) < n_vocab)
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "tokens[{i}] = {t} is outside the vocabulary of {n_vocab} tokens"
                    ))
                })
        })
        .collect::<Result<Vec<u32>, ApiError>>()?;
    let content = model
        .tokenizer()
        .decode(&ids, false)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(json!({ "content": content }))
}
