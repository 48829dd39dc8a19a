//! The raw bytes of single tokens (the C API's `bitnet_token_to_piece`, the server's
//! `/tokenize` pieces).
//!
//! Decoding one token through the tokenizer's decoder replaces partial UTF-8 characters with
//! U+FFFD, so printing pieces one by one would garble multi-byte text. Like llama.cpp, we return
//! the exact bytes a token stands for, read from its vocabulary string:
//! - byte-level BPE (GPT-2 / Llama-3): each character maps back to one byte (GPT-2's table);
//! - SentencePiece: `▁` is a space and `<0xAB>` byte-fallback tokens are that byte;
//! - added tokens (specials such as `<|eot_id|>`) are their text as is;
//! - any other decoder: the decoded text of the token alone.

use std::collections::HashMap;

use crate::Tokenizer;
use tokenizers::DecoderWrapper;

/// How vocabulary strings map to bytes for one tokenizer.
pub struct Pieces {
    kind: Kind,
    /// Added tokens: their text and whether they are special (control) tokens.
    added: HashMap<u32, (String, bool)>,
}

enum Kind {
    ByteLevel(HashMap<char, u8>),
    SentencePiece { byte_fallback: bool },
    Decoded,
}

impl Pieces {
    pub fn new(tokenizer: &Tokenizer) -> Self {
        let inner = tokenizer.inner();
        let added_vocab = inner.get_added_vocabulary();
        let added = added_vocab
            .get_vocab()
            .iter()
            .map(|(text, &id)| (id, (text.clone(), added_vocab.is_special_token(text))))
            .collect();
        let decoder = inner.get_decoder();
        let kind = if has(decoder, &|d| matches!(d, DecoderWrapper::ByteLevel(_))) {
            Kind::ByteLevel(byte_level_decoding())
        } else if has(decoder, &|d| {
            matches!(
                d,
                DecoderWrapper::ByteFallback(_) | DecoderWrapper::Metaspace(_)
            )
        }) {
            Kind::SentencePiece {
                byte_fallback: has(decoder, &|d| matches!(d, DecoderWrapper::ByteFallback(_))),
            }
        } else {
            Kind::Decoded
        };
        Self { kind, added }
    }

    /// The bytes of token `id` (already checked to be in the vocabulary). `special`: render
    /// special tokens (otherwise they are empty).
    pub fn bytes(&self, tokenizer: &Tokenizer, id: u32, special: bool) -> crate::Result<Vec<u8>> {
        if let Some((text, is_special)) = self.added.get(&id) {
            return Ok(match (*is_special, special) {
                (true, false) => Vec::new(),
                _ => text.as_bytes().to_vec(),
            });
        }
        let Some(text) = tokenizer.token_text(id) else {
            return Ok(Vec::new());
        };
        Ok(match &self.kind {
            Kind::ByteLevel(table) => text
                .chars()
                .flat_map(|c| match table.get(&c) {
                    Some(&b) => vec![b],
                    None => c.to_string().into_bytes(),
                })
                .collect(),
            Kind::SentencePiece { byte_fallback } => match byte_fallback_value(&text) {
                Some(b) if *byte_fallback => vec![b],
                _ => text.replace('▁', " ").into_bytes(),
            },
            Kind::Decoded => tokenizer.decode(&[id], !special)?.into_bytes(),
        })
    }
}

/// Whether the decoder, or any decoder in a sequence of them, satisfies `pred`.
fn has(decoder: Option<&DecoderWrapper>, pred: &dyn Fn(&DecoderWrapper) -> bool) -> bool {
    match decoder {
        None => false,
        Some(DecoderWrapper::Sequence(seq)) => {
            seq.get_decoders().iter().any(|d| has(Some(d), pred))
        }
        Some(d) => pred(d),
    }
}

/// `<0xAB>` → 0xAB.
fn byte_fallback_value(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    match hex.len() {
        2 => u8::from_str_radix(hex, 16).ok(),
        _ => None,
    }
}

/// GPT-2's byte → printable character table, inverted: printable Latin-1 bytes stand for
/// themselves, the other 68 bytes for U+0100.. in byte order.
fn byte_level_decoding() -> HashMap<char, u8> {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut next = 0x100u32;
    (0..=255u8)
        .map(|b| {
            let c = if printable(b) {
                char::from(b)
            } else {
                next += 1;
                char::from_u32(next - 1).unwrap_or(char::REPLACEMENT_CHARACTER)
            };
            (c, b)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_table_matches_gpt2() {
        let t = byte_level_decoding();
        assert_eq!(t.len(), 256);
        assert_eq!(t[&'Ġ'], b' ');
        assert_eq!(t[&'Ċ'], b'\n');
        assert_eq!(t[&'ĉ'], b'\t');
        assert_eq!(t[&'Ā'], 0);
        assert_eq!(t[&'a'], b'a');
        assert_eq!(t[&'Ã'], 0xC3);
        assert_eq!(t[&'ł'], 0xA0);
        assert_eq!(
            t[&'Ń'], 0xAD,
            "the soft hyphen is the last non-printable byte"
        );
    }

    #[test]
    fn byte_fallback_tokens() {
        assert_eq!(byte_fallback_value("<0x0A>"), Some(b'\n'));
        assert_eq!(byte_fallback_value("<0xC3>"), Some(0xC3));
        assert_eq!(byte_fallback_value("<0x0A"), None);
        assert_eq!(byte_fallback_value("<0x123>"), None);
        assert_eq!(byte_fallback_value("▁a"), None);
    }
}
