//! Tokenizer files → GGUF `tokenizer.ggml.*` metadata.
//!
//! Two vocabularies exist in BitNet checkpoints: byte-level BPE in `tokenizer.json` (Llama-3,
//! GPT-2 style; GGUF model `gpt2`) and SentencePiece in `tokenizer.model` (Llama-2 style; GGUF
//! model `llama`).

mod bpe;
mod protobuf;
mod sentencepiece;
mod special;

use std::path::Path;

use bitnet_backend::gguf::Value;

use crate::error::{ConvertError, Result};
use crate::hf::config::HfConfig;

pub use special::SpecialTokens;

/// GGUF token types (llama.cpp `llama_token_type`, identical to SentencePiece's piece types).
pub mod token_type {
    pub const NORMAL: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const CONTROL: i32 = 3;
    pub const USER_DEFINED: i32 = 4;
    pub const UNUSED: i32 = 5;
    pub const BYTE: i32 = 6;
}

/// A vocabulary ready to be written as GGUF metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct Vocab {
    /// `tokenizer.ggml.model`: `gpt2` or `llama`.
    pub model: &'static str,
    /// `tokenizer.ggml.pre` (BPE only): `llama-bpe` or `gpt-2`.
    pub pre: Option<&'static str>,
    pub tokens: Vec<String>,
    pub scores: Vec<f32>,
    pub token_types: Vec<i32>,
    /// BPE merges as `"left right"`.
    pub merges: Vec<String>,
    /// SentencePiece's `add_dummy_prefix`.
    pub add_space_prefix: Option<bool>,
    pub special: SpecialTokens,
}

impl Vocab {
    /// Reads the tokenizer of the checkpoint in `dir`, padded with `[PAD<id>]` tokens to
    /// `n_vocab` entries (the embedding's row count, which llama.cpp requires to match).
    pub fn load(dir: &Path, config: &HfConfig, n_vocab: usize) -> Result<Vocab> {
        let json = dir.join("tokenizer.json");
        let spm = dir.join("tokenizer.model");
        let mut vocab = if json.is_file() {
            match bpe::load(&json, n_vocab)? {
                Some(v) => v,
                // Not a byte-level BPE: a Llama-2 style tokenizer.json, which tokenizer.model describes.
                None if spm.is_file() => sentencepiece::load(&spm, dir, n_vocab)?,
                None => return Err(ConvertError::tokenizer(
                    &json,
                    "not a byte-level BPE tokenizer, and there is no tokenizer.model to read a \
                         SentencePiece vocabulary from",
                )),
            }
        } else if spm.is_file() {
            sentencepiece::load(&spm, dir, n_vocab)?
        } else {
            return Err(ConvertError::tokenizer(
                dir,
                "neither tokenizer.json nor tokenizer.model found in the model folder",
            ));
        };
        let lookup = |text: &str| {
            vocab
                .tokens
                .iter()
                .position(|t| t == text)
                .map(|i| i as u32)
        };
        let special = special::resolve(dir, config, &vocab.special, lookup)?;
        for (what, id) in special.ids() {
            if id as usize >= vocab.tokens.len() {
                return Err(ConvertError::tokenizer(
                    dir,
                    format!(
                        "{what} token id {id} is outside the vocabulary of {} tokens",
                        vocab.tokens.len()
                    ),
                ));
            }
        }
        vocab.special = special;
        Ok(vocab)
    }

    /// The `tokenizer.*` metadata entries, in the order llama.cpp's converters write them.
    pub fn metadata(&self) -> Vec<(String, Value)> {
        let mut md: Vec<(String, Value)> = vec![(
            "tokenizer.ggml.model".into(),
            Value::String(self.model.into()),
        )];
        if let Some(pre) = self.pre {
            md.push(("tokenizer.ggml.pre".into(), Value::String(pre.into())));
        }
        md.push((
            "tokenizer.ggml.tokens".into(),
            Value::string_array(self.tokens.iter().cloned()),
        ));
        md.push((
            "tokenizer.ggml.scores".into(),
            Value::array(self.scores.iter().copied()),
        ));
        md.push((
            "tokenizer.ggml.token_type".into(),
            Value::array(self.token_types.iter().copied()),
        ));
        if !self.merges.is_empty() {
            md.push((
                "tokenizer.ggml.merges".into(),
                Value::string_array(self.merges.iter().cloned()),
            ));
        }
        md.extend(self.special.metadata());
        if let Some(p) = self.add_space_prefix {
            md.push(("tokenizer.ggml.add_space_prefix".into(), Value::Bool(p)));
        }
        md.extend(self.special.template_metadata());
        md
    }
}

/// Fills the ids no tokenizer entry claims with `[PAD<id>]` / UNUSED, as llama.cpp's converter does.
fn fill_gaps(slots: Vec<Option<(String, f32, i32)>>) -> (Vec<String>, Vec<f32>, Vec<i32>) {
    let n = slots.len();
    let (mut tokens, mut scores, mut types) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for (id, slot) in slots.into_iter().enumerate() {
        let (t, s, ty) =
            slot.unwrap_or_else(|| (format!("[PAD{id}]"), -1000.0, token_type::UNUSED));
        tokens.push(t);
        scores.push(s);
        types.push(ty);
    }
    (tokens, scores, types)
}

/// llama.cpp's converter marks added tokens that look like control tokens as CONTROL even when
/// the tokenizer does not flag them special.
fn looks_special(token: &str) -> bool {
    matches!(token, "<pad>" | "<mask>" | "<2mass>" | "[@BOS@]")
        || (token.starts_with("<|") && token.ends_with("|>"))
        || (token.starts_with("<｜") && token.ends_with("｜>"))
        || (token.starts_with("<start_of_") && token.ends_with('>'))
        || (token.starts_with("<end_of_") && token.ends_with('>'))
}
