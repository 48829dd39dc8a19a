//! Chat prompt formatting.
//!
//! A model's `tokenizer.chat_template` (a Jinja template from Hugging Face) is rendered with
//! `minijinja`, configured like transformers' environment (`trim_blocks`, `lstrip_blocks`,
//! `raise_exception`, Python string methods). Files without one get BitNet b1.58 2B4T's format:
//! `User: {content}<|eot_id|>Assistant: `, with `System: ` and `Assistant: ` turns alike.

use std::collections::BTreeMap;

use minijinja::syntax::SyntaxConfig;
use minijinja::{Environment, ErrorKind, Value};

use crate::{Error, Result};

/// One chat turn.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text of the turn.
    pub content: String,
}

impl ChatMessage {
    /// A turn with the given role.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// How to turn a conversation into prompt text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChatTemplate {
    /// BitNet b1.58 2B4T's format (the one llama.cpp calls "bitnet").
    BitNet,
    /// A Jinja template (from `tokenizer.chat_template` or the user).
    Jinja(String),
}

/// Special-token texts a template may refer to.
#[derive(Clone, Debug, Default)]
pub struct TemplateTokens {
    /// Text of the BOS token (`bos_token` in templates).
    pub bos: String,
    /// Text of the EOS token (`eos_token` in templates).
    pub eos: String,
}

impl ChatTemplate {
    /// The model's template when it has one, else BitNet's.
    pub fn from_metadata(template: Option<&str>) -> Self {
        match template {
            Some(t) if !t.trim().is_empty() => ChatTemplate::Jinja(t.to_owned()),
            _ => ChatTemplate::BitNet,
        }
    }

    /// Renders `messages`; with `add_generation_prompt` the text ends where the assistant's
    /// reply begins.
    pub fn apply(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        tokens: &TemplateTokens,
    ) -> Result<String> {
        match self {
            ChatTemplate::BitNet => Ok(bitnet_format(messages, add_generation_prompt)),
            ChatTemplate::Jinja(src) => render_jinja(src, messages, add_generation_prompt, tokens),
        }
    }
}

fn bitnet_format(messages: &[ChatMessage], add_generation_prompt: bool) -> String {
    let mut out = String::new();
    for m in messages {
        let role = match m.role.as_str() {
            "system" => "System",
            "user" => "User",
            "assistant" => "Assistant",
            other => other,
        };
        out.push_str(role);
        out.push_str(": ");
        out.push_str(if m.role == "system" {
            m.content.trim()
        } else {
            &m.content
        });
        out.push_str("<|eot_id|>");
    }
    if add_generation_prompt {
        out.push_str("Assistant: ");
    }
    out
}

fn render_jinja(
    src: &str,
    messages: &[ChatMessage],
    add_generation_prompt: bool,
    tokens: &TemplateTokens,
) -> Result<String> {
    let err = |e: minijinja::Error| Error::ChatTemplate(format!("{e:#}"));
    let mut env = Environment::new();
    env.set_syntax(
        SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(err)?,
    );
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function(
        "raise_exception",
        |msg: String| -> std::result::Result<Value, minijinja::Error> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
        },
    );
    let template = env.template_from_str(src).map_err(err)?;
    let messages: Vec<Value> = messages
        .iter()
        .map(|m| {
            let mut map = BTreeMap::new();
            map.insert("role", Value::from(m.role.as_str()));
            map.insert("content", Value::from(m.content.as_str()));
            Value::from(map)
        })
        .collect();
    let mut ctx = BTreeMap::new();
    ctx.insert("messages", Value::from(messages));
    ctx.insert("add_generation_prompt", Value::from(add_generation_prompt));
    ctx.insert("bos_token", Value::from(tokens.bos.as_str()));
    ctx.insert("eos_token", Value::from(tokens.eos.as_str()));
    template.render(Value::from(ctx)).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn convo() -> Vec<ChatMessage> {
        vec![
            ChatMessage::new("system", "Be brief. "),
            ChatMessage::new("user", "Hi!"),
            ChatMessage::new("assistant", "Hello."),
            ChatMessage::new("user", "2+2?"),
        ]
    }

    #[test]
    fn bitnet_builtin_format() -> Result<()> {
        let text = ChatTemplate::BitNet.apply(&convo(), true, &TemplateTokens::default())?;
        assert_eq!(
            text,
            "System: Be brief.<|eot_id|>User: Hi!<|eot_id|>Assistant: Hello.<|eot_id|>User: 2+2?<|eot_id|>Assistant: "
        );
        Ok(())
    }

    /// BitNet b1.58 2B4T's Hugging Face template renders to the same text as the built-in format
    /// (plus BOS, which the template emits itself).
    #[test]
    fn hf_2b4t_style_template_matches_builtin() -> Result<()> {
        let src = "{% for message in messages %}{% set content = message['role'] | capitalize + ': ' + message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ 'Assistant: ' }}{% endif %}";
        let tokens = TemplateTokens {
            bos: "<|begin_of_text|>".into(),
            eos: "<|end_of_text|>".into(),
        };
        let msgs = vec![ChatMessage::new("user", "Hey, are you conscious?")];
        let jinja = ChatTemplate::Jinja(src.into()).apply(&msgs, true, &tokens)?;
        let builtin = ChatTemplate::BitNet.apply(&msgs, true, &tokens)?;
        assert_eq!(jinja, format!("<|begin_of_text|>{builtin}"));
        Ok(())
    }

    #[test]
    fn python_methods_raise_exception_and_block_trimming() -> Result<()> {
        let src = "{% for m in messages %}\n  {% if m.role not in ['user', 'assistant'] %}{{ raise_exception('bad role ' + m.role) }}{% endif %}\n[{{ m.role.upper() }}] {{ m.content.strip() }}\n{% endfor %}";
        let t = ChatTemplate::Jinja(src.into());
        let msgs = vec![ChatMessage::new("user", "  x  ")];
        assert_eq!(
            t.apply(&msgs, false, &TemplateTokens::default())?,
            "[USER] x\n"
        );
        let err = t
            .apply(&convo(), false, &TemplateTokens::default())
            .unwrap_err();
        assert!(err.to_string().contains("bad role system"), "{err}");
        Ok(())
    }

    #[test]
    fn syntax_errors_are_reported() {
        let t = ChatTemplate::Jinja("{% for m in messages %}".into());
        assert!(t.apply(&convo(), true, &TemplateTokens::default()).is_err());
        assert_eq!(
            ChatTemplate::from_metadata(Some("  ")),
            ChatTemplate::BitNet
        );
    }
}
