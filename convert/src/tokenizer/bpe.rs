//! Byte-level BPE from `tokenizer.json` (Llama-3 and GPT-2 style) → GGUF model `gpt2`.

use std::path::Path;

use serde_json::Value;

use super::{fill_gaps, looks_special, token_type, SpecialTokens, Vocab};
use crate::error::{ConvertError, Result};

/// The Llama-3 pre-tokenizer split regex, as tokenizer.json spells it (JSON-decoded).
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Reads a byte-level BPE tokenizer. `Ok(None)` when the file holds another kind of tokenizer
/// (e.g. a SentencePiece-style BPE with byte fallback), which the caller reads elsewhere.
pub(super) fn load(path: &Path, n_vocab: usize) -> Result<Option<Vocab>> {
    let text = std::fs::read_to_string(path).map_err(|e| ConvertError::io("read", path, e))?;
    let root: Value = serde_json::from_str(&text)
        .map_err(|e| ConvertError::tokenizer(path, format!("invalid JSON: {e}")))?;
    let err = |p: String| ConvertError::tokenizer(path, p);
    let model = root
        .get("model")
        .ok_or_else(|| err("no `model` object".into()))?;
    if model.get("type").and_then(Value::as_str) != Some("BPE") || !is_byte_level(&root) {
        return Ok(None);
    }
    let pre = pre_tokenizer_name(&root).map_err(err)?;
    if !matches!(root.get("normalizer"), None | Some(Value::Null)) {
        return Err(err(format!(
            "byte-level BPE with a normalizer ({}) is not a Llama-3 or GPT-2 vocabulary; unsupported",
            short(&root["normalizer"])
        )));
    }

    let vocab = model
        .get("vocab")
        .and_then(Value::as_object)
        .ok_or_else(|| err("`model.vocab` is not an object".into()))?;
    let mut slots: Vec<Option<(String, f32, i32)>> = vec![None; n_vocab];
    let place = |id: u64,
                 token: &str,
                 ty: i32,
                 slots: &mut Vec<Option<(String, f32, i32)>>|
     -> Result<()> {
        let idx = usize::try_from(id).unwrap_or(usize::MAX);
        if idx >= n_vocab {
            return Err(err(format!(
                "token `{token}` has id {id}, but the model's embedding has only {n_vocab} rows"
            )));
        }
        slots[idx] = Some((token.to_string(), 0.0, ty));
        Ok(())
    };
    for (token, id) in vocab {
        let id = id
            .as_u64()
            .ok_or_else(|| err(format!("vocab entry `{token}` has a non-integer id {id}")))?;
        if let Some(Some((other, ..))) = slots.get(id as usize) {
            return Err(err(format!("tokens `{other}` and `{token}` share id {id}")));
        }
        place(id, token, token_type::NORMAL, &mut slots)?;
    }
    if let Some(added) = root.get("added_tokens").and_then(Value::as_array) {
        for a in added {
            let (Some(id), Some(content)) = (
                a.get("id").and_then(Value::as_u64),
                a.get("content").and_then(Value::as_str),
            ) else {
                return Err(err(format!("malformed added_tokens entry {}", short(a))));
            };
            let special = a.get("special").and_then(Value::as_bool).unwrap_or(false);
            let ty = if special || looks_special(content) {
                token_type::CONTROL
            } else {
                token_type::USER_DEFINED
            };
            place(id, content, ty, &mut slots)?;
        }
    }
    let merges = read_merges(model).map_err(err)?;
    let (tokens, scores, token_types) = fill_gaps(slots);
    let special = SpecialTokens {
        add_bos: post_processor_adds_bos(&root),
        ..SpecialTokens::default()
    };
    Ok(Some(Vocab {
        model: "gpt2",
        pre: Some(pre),
        tokens,
        scores,
        token_types,
        merges,
        add_space_prefix: None,
        special,
    }))
}

/// A byte-level vocabulary has a ByteLevel pre-tokenizer or decoder.
fn is_byte_level(root: &Value) -> bool {
    let has = |v: &Value| {
        v.get("type").and_then(Value::as_str) == Some("ByteLevel")
            || v.get("pretokenizers")
                .or_else(|| v.get("decoders"))
                .and_then(Value::as_array)
                .is_some_and(|items| {
                    items
                        .iter()
                        .any(|i| i.get("type").and_then(Value::as_str) == Some("ByteLevel"))
                })
    };
    root.get("pre_tokenizer").is_some_and(has) || root.get("decoder").is_some_and(has)
}

/// llama.cpp's `tokenizer.ggml.pre` for this pre-tokenizer, detected from the split regex.
fn pre_tokenizer_name(root: &Value) -> Result<&'static str, String> {
    let pt = root.get("pre_tokenizer").unwrap_or(&Value::Null);
    let ty = pt.get("type").and_then(Value::as_str);
    let byte_level_with_regex = |v: &Value| {
        v.get("type").and_then(Value::as_str) == Some("ByteLevel")
            && v.get("use_regex").and_then(Value::as_bool).unwrap_or(true)
    };
    let items: Vec<&Value> = match ty {
        Some("Sequence") => pt
            .get("pretokenizers")
            .and_then(Value::as_array)
            .map(|a| a.iter().collect())
            .unwrap_or_default(),
        Some(_) => vec![pt],
        None => vec![],
    };
    match items.as_slice() {
        // GPT-2: ByteLevel applies its own regex.
        [one] if byte_level_with_regex(one) => Ok("gpt-2"),
        [split, bl]
            if split.get("type").and_then(Value::as_str) == Some("Split")
                && split.pointer("/pattern/Regex").and_then(Value::as_str)
                    == Some(LLAMA3_REGEX)
                && split.get("behavior").and_then(Value::as_str) == Some("Isolated")
                && !split
                    .get("invert")
                    .and_then(Value::as_bool)
                    .unwrap_or(false)
                && bl.get("type").and_then(Value::as_str) == Some("ByteLevel")
                && !bl.get("use_regex").and_then(Value::as_bool).unwrap_or(true) =>
        {
            Ok("llama-bpe")
        }
        _ => Err(format!(
            "unknown pre-tokenizer {}; supported are the Llama-3 split regex + ByteLevel \
             (tokenizer.ggml.pre = llama-bpe) and plain ByteLevel (gpt-2)",
            short(pt)
        )),
    }
}

fn read_merges(model: &Value) -> Result<Vec<String>, String> {
    let Some(items) = model.get("merges").and_then(Value::as_array) else {
        return Err("`model.merges` is not a list".into());
    };
    items
        .iter()
        .map(|m| match m {
            Value::String(s) if s.split(' ').count() == 2 => Ok(s.clone()),
            Value::Array(pair) => match pair.as_slice() {
                [Value::String(a), Value::String(b)] if !a.contains(' ') && !b.contains(' ') => {
                    Ok(format!("{a} {b}"))
                }
                _ => Err(format!(
                    "merge {} is not a pair of space-free tokens",
                    short(m)
                )),
            },
            _ => Err(format!(
                "merge {} is not `\"left right\"` or [left, right]",
                short(m)
            )),
        })
        .collect()
}

/// Whether the post-processor prepends a special token (the BOS) to single sequences.
fn post_processor_adds_bos(root: &Value) -> Option<bool> {
    fn template(v: &Value) -> Option<&Value> {
        match v.get("type").and_then(Value::as_str)? {
            "TemplateProcessing" => v.get("single"),
            "Sequence" => v.get("processors")?.as_array()?.iter().find_map(template),
            _ => None,
        }
    }
    let single = template(root.get("post_processor")?)?.as_array()?;
    Some(single.first()?.get("SpecialToken").is_some())
}

/// A JSON value shortened for error messages.
fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 200 {
        let cut = (0..=200)
            .rev()
            .find(|&i| s.is_char_boundary(i))
            .unwrap_or(0);
        format!("{}…", &s[..cut])
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn llama3_pre() -> Value {
        json!({"type":"Sequence","pretokenizers":[
            {"type":"Split","pattern":{"Regex":LLAMA3_REGEX},"behavior":"Isolated","invert":false},
            {"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":false}]})
    }

    #[test]
    fn detects_pre_tokenizers() {
        assert_eq!(
            pre_tokenizer_name(&json!({"pre_tokenizer": llama3_pre()})),
            Ok("llama-bpe")
        );
        let gpt2 =
            json!({"pre_tokenizer":{"type":"ByteLevel","add_prefix_space":false,"use_regex":true}});
        assert_eq!(pre_tokenizer_name(&gpt2), Ok("gpt-2"));
        let mut other = llama3_pre();
        other["pretokenizers"][0]["pattern"]["Regex"] = json!("\\p{N}+");
        let e = pre_tokenizer_name(&json!({ "pre_tokenizer": other })).unwrap_err();
        assert!(e.contains("unknown pre-tokenizer"), "{e}");
    }

    #[test]
    fn merges_in_both_spellings() {
        let m = json!({"merges":["a b", ["c", "d"]]});
        assert_eq!(read_merges(&m).unwrap(), vec!["a b", "c d"]);
        assert!(read_merges(&json!({"merges":[["a b","c"]]})).is_err());
        assert!(read_merges(&json!({"merges":["abc"]})).is_err());
    }

    #[test]
    fn bos_from_post_processor() {
        let root = json!({"post_processor":{"type":"Sequence","processors":[
            {"type":"ByteLevel"},
            {"type":"TemplateProcessing","single":[{"SpecialToken":{"id":"<s>","type_id":0}},{"Sequence":{"id":"A","type_id":0}}]}]}});
        assert_eq!(post_processor_adds_bos(&root), Some(true));
        let root = json!({"post_processor":{"type":"TemplateProcessing","single":[{"Sequence":{"id":"A","type_id":0}}]}});
        assert_eq!(post_processor_adds_bos(&root), Some(false));
        assert_eq!(post_processor_adds_bos(&json!({})), None);
    }
}
