//! SentencePiece `tokenizer.model` (Llama-2 vocabularies, e.g. 1bitLLM) → GGUF model `llama`.
//!
//! Reads `ModelProto`: `pieces` (1: piece 1, score 2, type 3), `trainer_spec` (2: model_type 3,
//! unk_id 40, bos_id 41, eos_id 42, pad_id 43) and `normalizer_spec` (3: add_dummy_prefix 3),
//! plus `added_tokens.json` and the `added_tokens_decoder` of tokenizer_config.json.

use std::path::Path;

use serde_json::Value;

use super::protobuf::{Field, Reader};
use super::{fill_gaps, looks_special, token_type, SpecialTokens, Vocab};
use crate::error::{ConvertError, Result};

/// SentencePiece `TrainerSpec.ModelType.BPE`.
const MODEL_TYPE_BPE: u64 = 2;

/// The parts of a SentencePiece model llama.cpp needs.
#[derive(Debug, Default, PartialEq)]
pub(super) struct SpModel {
    pub pieces: Vec<(String, f32, i32)>,
    pub model_type: Option<u64>,
    pub unk_id: Option<i32>,
    pub bos_id: Option<i32>,
    pub eos_id: Option<i32>,
    pub pad_id: Option<i32>,
    pub add_dummy_prefix: Option<bool>,
}

/// Parses the bytes of a `tokenizer.model`.
pub(super) fn parse(bytes: &[u8]) -> Result<SpModel, String> {
    let mut m = SpModel::default();
    let mut r = Reader::new(bytes);
    while let Some((number, field)) = r.next_field()? {
        match (number, field) {
            (1, Field::Bytes(b)) => m.pieces.push(parse_piece(b, m.pieces.len())?),
            (2, Field::Bytes(b)) => {
                let mut t = Reader::new(b);
                while let Some((n, f)) = t.next_field()? {
                    match (n, f) {
                        (3, Field::Varint(v)) => m.model_type = Some(v),
                        // int32 fields: negative values are sign-extended 64-bit varints.
                        (40, Field::Varint(v)) => m.unk_id = Some(v as i64 as i32),
                        (41, Field::Varint(v)) => m.bos_id = Some(v as i64 as i32),
                        (42, Field::Varint(v)) => m.eos_id = Some(v as i64 as i32),
                        (43, Field::Varint(v)) => m.pad_id = Some(v as i64 as i32),
                        _ => {}
                    }
                }
            }
            (3, Field::Bytes(b)) => {
                let mut n = Reader::new(b);
                while let Some((num, f)) = n.next_field()? {
                    if let (3, Field::Varint(v)) = (num, f) {
                        m.add_dummy_prefix = Some(v != 0);
                    }
                }
            }
            _ => {}
        }
    }
    if m.pieces.is_empty() {
        return Err("no pieces: not a SentencePiece model".into());
    }
    Ok(m)
}

fn parse_piece(b: &[u8], index: usize) -> Result<(String, f32, i32), String> {
    let (mut piece, mut score, mut ty) = (None, 0.0f32, token_type::NORMAL);
    let mut r = Reader::new(b);
    while let Some((n, f)) = r.next_field()? {
        match (n, f) {
            (1, Field::Bytes(s)) => {
                piece = Some(
                    String::from_utf8(s.to_vec())
                        .map_err(|_| format!("piece {index} is not UTF-8"))?,
                )
            }
            (2, Field::Fixed32(bits)) => score = f32::from_bits(bits),
            (3, Field::Varint(v)) => {
                ty = i32::try_from(v)
                    .ok()
                    .filter(|t| (1..=6).contains(t))
                    .ok_or_else(|| format!("piece {index} has unknown type {v}"))?
            }
            _ => {}
        }
    }
    let piece = piece.ok_or_else(|| format!("piece {index} has no text"))?;
    Ok((piece, score, ty))
}

pub(super) fn load(path: &Path, dir: &Path, n_vocab: usize) -> Result<Vocab> {
    let bytes = std::fs::read(path).map_err(|e| ConvertError::io("read", path, e))?;
    let err = |p: String| ConvertError::tokenizer(path, p);
    let m = parse(&bytes).map_err(&err)?;
    match m.model_type {
        Some(MODEL_TYPE_BPE) => {}
        other => {
            return Err(err(format!(
                "SentencePiece model type {} is not BPE (2); only Llama-style BPE SentencePiece vocabularies are supported",
                other.map_or("unset (unigram)".to_string(), |t| t.to_string())
            )))
        }
    }
    if m.pieces.len() > n_vocab {
        return Err(err(format!(
            "{} pieces, but the model's embedding has only {n_vocab} rows",
            m.pieces.len()
        )));
    }
    let mut slots: Vec<Option<(String, f32, i32)>> = vec![None; n_vocab];
    for (i, p) in m.pieces.iter().enumerate() {
        slots[i] = Some(p.clone());
    }

    let added_path = dir.join("added_tokens.json");
    if added_path.is_file() {
        let text = std::fs::read_to_string(&added_path)
            .map_err(|e| ConvertError::io("read", &added_path, e))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| ConvertError::tokenizer(&added_path, format!("invalid JSON: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| ConvertError::tokenizer(&added_path, "not a {token: id} object"))?;
        for (token, id) in obj {
            let id = id
                .as_u64()
                .and_then(|i| usize::try_from(i).ok())
                .filter(|&i| i < n_vocab)
                .ok_or_else(|| {
                    ConvertError::tokenizer(
                        &added_path,
                        format!("`{token}` has id {id}, outside the {n_vocab}-row embedding"),
                    )
                })?;
            slots[id] = Some((token.clone(), -1000.0, token_type::USER_DEFINED));
        }
    }
    // tokenizer_config.json's added_tokens_decoder says which added tokens are special.
    let tc_path = dir.join("tokenizer_config.json");
    if tc_path.is_file() {
        let text =
            std::fs::read_to_string(&tc_path).map_err(|e| ConvertError::io("read", &tc_path, e))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| ConvertError::json(&tc_path, format!("invalid JSON: {e}")))?;
        if let Some(dec) = v.get("added_tokens_decoder").and_then(Value::as_object) {
            for (id, data) in dec {
                let (Ok(id), Some(content)) = (
                    id.parse::<usize>(),
                    data.get("content").and_then(Value::as_str),
                ) else {
                    return Err(ConvertError::tokenizer(
                        &tc_path,
                        format!("malformed added_tokens_decoder entry `{id}`"),
                    ));
                };
                if id >= n_vocab {
                    return Err(ConvertError::tokenizer(&tc_path, format!("added token `{content}` has id {id}, outside the {n_vocab}-row embedding")));
                }
                if id < m.pieces.len() {
                    continue; // a SentencePiece piece keeps its own type
                }
                let special = data
                    .get("special")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                let entry = if special || looks_special(content) {
                    (content.to_string(), -1000.0, token_type::CONTROL)
                } else {
                    (
                        content.replace('\u{2581}', " "),
                        -1000.0,
                        token_type::USER_DEFINED,
                    )
                };
                slots[id] = Some(entry);
            }
        }
    }

    let (tokens, scores, token_types) = fill_gaps(slots);
    let id = |v: Option<i32>, default: i32| {
        let v = v.unwrap_or(default);
        u32::try_from(v).ok()
    };
    let special = SpecialTokens {
        // ModelProto defaults: unk 0, bos 1, eos 2, pad -1 (none).
        unk: id(m.unk_id, 0),
        bos: id(m.bos_id, 1),
        eos: id(m.eos_id, 2),
        pad: id(m.pad_id, -1),
        ..SpecialTokens::default()
    };
    Ok(Vocab {
        model: "llama",
        pre: None,
        tokens,
        scores,
        token_types,
        merges: Vec::new(),
        add_space_prefix: Some(m.add_dummy_prefix.unwrap_or(true)),
        special,
    })
}

/// Test helper: encodes a SentencePiece model with the fields [`parse`] reads (shared with the
/// integration tests' synthetic checkpoints).
#[cfg(test)]
#[path = "../../tests/common/sentencepiece_model.rs"]
pub(crate) mod test_model;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pieces_and_specs() {
        let bytes = test_model::encode(
            &[
                ("<unk>", 0.0, 2),
                ("<s>", 0.0, 3),
                ("</s>", 0.0, 3),
                ("<0x41>", 0.0, 6),
                ("\u{2581}a", -1.5, 1),
            ],
            1,
            2,
            0,
            -1,
            false,
        );
        let m = parse(&bytes).unwrap();
        assert_eq!(m.pieces.len(), 5);
        assert_eq!(m.pieces[4], ("\u{2581}a".to_string(), -1.5, 1));
        assert_eq!(m.pieces[3].2, token_type::BYTE);
        assert_eq!(
            (m.unk_id, m.bos_id, m.eos_id, m.pad_id),
            (Some(0), Some(1), Some(2), Some(-1))
        );
        assert_eq!(m.model_type, Some(MODEL_TYPE_BPE));
        assert_eq!(m.add_dummy_prefix, Some(false));
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(parse(b"").is_err());
        assert!(parse(b"{\"not\": \"protobuf\"}").is_err());
        let mut bytes = test_model::encode(&[("a", 0.0, 1)], 1, 2, 0, -1, true);
        bytes.truncate(bytes.len() - 3);
        assert!(parse(&bytes).is_err());
    }
}
