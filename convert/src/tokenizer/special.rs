//! Special token ids, BOS/EOS flags and chat templates, from `tokenizer_config.json`,
//! `generation_config.json`, `chat_template.jinja` and `config.json` — in that order of
//! preference, as gguf-py's SpecialVocab reads them.

use std::path::Path;

use bitnet_backend::gguf::Value;
use serde_json::Value as Json;

use crate::error::{ConvertError, Result};
use crate::hf::config::HfConfig;

/// Special token ids and tokenizer flags.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SpecialTokens {
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub eot: Option<u32>,
    pub unk: Option<u32>,
    pub pad: Option<u32>,
    pub add_bos: Option<bool>,
    pub add_eos: Option<bool>,
    /// `(name, template)`; the unnamed one is `tokenizer.chat_template`.
    pub chat_templates: Vec<(Option<String>, String)>,
}

impl SpecialTokens {
    /// `(what, id)` for every id that is set.
    pub fn ids(&self) -> Vec<(&'static str, u32)> {
        [
            ("bos", self.bos),
            ("eos", self.eos),
            ("eot", self.eot),
            ("unknown", self.unk),
            ("padding", self.pad),
        ]
        .into_iter()
        .filter_map(|(w, id)| id.map(|id| (w, id)))
        .collect()
    }

    pub(super) fn metadata(&self) -> Vec<(String, Value)> {
        let mut md = Vec::new();
        for (key, id) in [
            ("bos_token_id", self.bos),
            ("eos_token_id", self.eos),
            ("eot_token_id", self.eot),
            ("unknown_token_id", self.unk),
            ("padding_token_id", self.pad),
        ] {
            if let Some(id) = id {
                md.push((format!("tokenizer.ggml.{key}"), Value::U32(id)));
            }
        }
        if let Some(b) = self.add_bos {
            md.push(("tokenizer.ggml.add_bos_token".into(), Value::Bool(b)));
        }
        if let Some(b) = self.add_eos {
            md.push(("tokenizer.ggml.add_eos_token".into(), Value::Bool(b)));
        }
        md
    }

    pub(super) fn template_metadata(&self) -> Vec<(String, Value)> {
        let mut md = Vec::new();
        let mut names = Vec::new();
        for (name, template) in &self.chat_templates {
            match name {
                None => md.push((
                    "tokenizer.chat_template".into(),
                    Value::String(template.clone()),
                )),
                Some(n) => {
                    md.push((
                        format!("tokenizer.chat_template.{n}"),
                        Value::String(template.clone()),
                    ));
                    names.push(n.clone());
                }
            }
        }
        if !names.is_empty() {
            md.push((
                "tokenizer.chat_templates".into(),
                Value::string_array(names),
            ));
        }
        md
    }
}

/// Combines the tokenizer's own defaults (`base`) with the JSON side files.
pub(super) fn resolve(
    dir: &Path,
    config: &HfConfig,
    base: &SpecialTokens,
    lookup: impl Fn(&str) -> Option<u32>,
) -> Result<SpecialTokens> {
    let mut out = base.clone();
    let tc_path = dir.join("tokenizer_config.json");
    let tc = read_optional_json(&tc_path)?;
    if let Some(tc) = &tc {
        for (key, slot) in [
            ("bos_token", &mut out.bos),
            ("eos_token", &mut out.eos),
            ("unk_token", &mut out.unk),
            ("pad_token", &mut out.pad),
        ] {
            let text = match tc.get(key) {
                Some(Json::String(s)) => Some(s.as_str()),
                Some(Json::Object(o)) => o.get("content").and_then(Json::as_str),
                _ => None,
            };
            if let Some(text) = text {
                let id = lookup(text).ok_or_else(|| {
                    ConvertError::tokenizer(
                        &tc_path,
                        format!("{key} `{text}` is not in the vocabulary"),
                    )
                })?;
                *slot = Some(id);
            }
        }
        for (key, slot) in [
            ("add_bos_token", &mut out.add_bos),
            ("add_eos_token", &mut out.add_eos),
        ] {
            match tc.get(key) {
                None | Some(Json::Null) => {}
                Some(Json::Bool(b)) => *slot = Some(*b),
                Some(other) => {
                    return Err(ConvertError::tokenizer(
                        &tc_path,
                        format!("`{key}` must be true or false, found {other}"),
                    ))
                }
            }
        }
        out.chat_templates = chat_templates(tc.get("chat_template"), &tc_path)?;
    }
    let jinja = dir.join("chat_template.jinja");
    if out.chat_templates.is_empty() && jinja.is_file() {
        let t = std::fs::read_to_string(&jinja).map_err(|e| ConvertError::io("read", &jinja, e))?;
        out.chat_templates.push((None, t));
    }

    // config.json ids fill what the tokenizer files leave open.
    out.bos = out.bos.or(config.bos_token_id);
    out.eos = out.eos.or(config.eos_token_id);
    out.pad = out.pad.or(config.pad_token_id);

    // End of turn: an extra stop id in generation_config.json (Llama-3 instruct lists
    // [<|end_of_text|>, <|eot_id|>]), else the conventional token text.
    let gc_path = dir.join("generation_config.json");
    if let Some(gc) = read_optional_json(&gc_path)? {
        if let Some(ids) = gc.get("eos_token_id").and_then(Json::as_array) {
            out.eot = ids
                .iter()
                .filter_map(Json::as_u64)
                .filter_map(|id| u32::try_from(id).ok())
                .find(|&id| Some(id) != out.eos);
        }
    }
    if out.eot.is_none() {
        out.eot = lookup("<|eot_id|>");
    }
    Ok(out)
}

fn chat_templates(v: Option<&Json>, path: &Path) -> Result<Vec<(Option<String>, String)>> {
    match v {
        None | Some(Json::Null) => Ok(Vec::new()),
        Some(Json::String(s)) => Ok(vec![(None, s.clone())]),
        Some(Json::Array(items)) => items
            .iter()
            .map(|item| {
                let name = item.get("name").and_then(Json::as_str);
                let template = item.get("template").and_then(Json::as_str);
                match (name, template) {
                    (Some("default"), Some(t)) => Ok((None, t.to_string())),
                    (Some(n), Some(t)) => Ok((Some(n.to_string()), t.to_string())),
                    _ => Err(ConvertError::tokenizer(
                        path,
                        "chat_template list entries need `name` and `template` strings",
                    )),
                }
            })
            .collect(),
        Some(other) => Err(ConvertError::tokenizer(
            path,
            format!("`chat_template` must be a string or a list, found {other}"),
        )),
    }
}

fn read_optional_json(path: &Path) -> Result<Option<Json>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| ConvertError::io("read", path, e))?;
    let v: Json = serde_json::from_str(&text)
        .map_err(|e| ConvertError::json(path, format!("invalid JSON: {e}")))?;
    if !v.is_object() {
        return Err(ConvertError::json(path, "top level is not a JSON object"));
    }
    Ok(Some(v))
}
