//! Tokenizer built from GGUF metadata (or a `tokenizer.json` that overrides it).
//!
//! Two vocabulary kinds are supported, each rebuilt as the Hugging Face `tokenizers` pipeline the
//! model was trained with, so ids match the model's own `tokenizer.json`:
//! - `tokenizer.ggml.model = "gpt2"` (byte-level BPE). The pre-tokenizer comes from
//!   `tokenizer.ggml.pre`, with llama.cpp's (b11434) names and split rules:
//!   - the Llama-3 family (`llama-bpe`, `llama3`, `llama-v3`, `falcon3` for Falcon3-1.58bit,
//!     `falcon-h1`, `pixtral`, `midm-2.0`, `lfm2`, `jina-v5-nano`): the Llama-3 split regex,
//!     then byte-level mapping, `ignore_merges`.
//!   - `gpt-2` and `phi-2`: GPT-2's byte-level pre-tokenizer.
//!   - `falcon`: Falcon-7B/40B's three splits.
//!   - `default`, or absent (llama.cpp's fallback, with its one-line warning on stderr): the
//!     four "default" splits (punctuation runs, GPT-2's rule, digit runs, groups of three
//!     digits). Absent for `bitnet-b1.58` / `bitnet-25` files is the exception: the official
//!     BitNet b1.58 2B4T GGUF has no `tokenizer.ggml.pre` although its vocabulary is Llama-3's,
//!     and we tokenize it as its Hugging Face tokenizer does (bitnet.cpp uses the default).
//!   - any other name: an error naming it (never a silent fallback). Pass the model's
//!     `tokenizer.json` instead.
//! - `tokenizer.ggml.model = "llama"` (SentencePiece BPE, Llama-2 vocabularies): merges are
//!   derived from the piece scores the way Hugging Face's converter does, with byte fallback and
//!   the `▁` space convention.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, OnceLock};

use bitnet_backend::gguf::{GgufFile, Value};
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, NormalizerWrapper, SplitDelimiterBehavior};

use crate::{Error, Result};

/// Llama-3's pre-tokenizer split pattern (from its `tokenizer.json`).
pub const LLAMA3_SPLIT_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// GPT-2's split pattern, as llama.cpp writes it (without the trailing `|\s+`, which a split
/// that keeps unmatched text makes redundant).
const GPT2_SPLIT_REGEX: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";

/// llama.cpp's `LLAMA_VOCAB_PRE_TYPE_DEFAULT` splits, applied one after the other.
const DEFAULT_SPLITS: &[&str] = &[
    r"[\p{P}\$\+<=>\^~\|]+",
    GPT2_SPLIT_REGEX,
    r"\p{N}+",
    r"[0-9][0-9][0-9]",
];

/// llama.cpp's `LLAMA_VOCAB_PRE_TYPE_FALCON` splits.
const FALCON_SPLITS: &[&str] = &[
    r"[\p{P}\$\+<=>\^~\|`]+",
    GPT2_SPLIT_REGEX,
    r"[0-9][0-9][0-9]",
];

/// `tokenizer.ggml.pre` names llama.cpp gives the Llama-3 split rule.
const LLAMA3_NAMES: &[&str] = &[
    "llama3",
    "llama-v3",
    "llama-bpe",
    "falcon3",
    "falcon-h1",
    "pixtral",
    "midm-2.0",
    "lfm2",
    "jina-v5-nano",
];

/// `tokenizer.ggml.pre` names llama.cpp gives GPT-2's split rule (and no other setting).
const GPT2_NAMES: &[&str] = &["gpt-2", "phi-2"];

/// What llama.cpp prints when a BPE vocabulary has no `tokenizer.ggml.pre`.
const MISSING_PRE_WARNING: &str =
    "warning: tokenizer.ggml.pre is missing, using llama.cpp's 'default' pre-tokenizer (as llama.cpp does; tokens may differ from the model's own tokenizer)";

/// Texts of tokens that end a turn or a document in the vocabularies we know; a token whose text
/// is one of these counts as end-of-generation even when no metadata key names it.
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|eom_id|>",
    "<|end_of_text|>",
    "<|endoftext|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "</s>",
];

/// llama.cpp token types (`tokenizer.ggml.token_type`).
mod token_type {
    pub const NORMAL: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const CONTROL: i32 = 3;
    pub const USER_DEFINED: i32 = 4;
    pub const UNUSED: i32 = 5;
}

/// Which pipeline a GGUF vocabulary needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VocabKind {
    /// Byte-level BPE with the Llama-3 split regex.
    Llama3Bpe,
    /// Byte-level BPE with GPT-2's pre-tokenizer.
    Gpt2Bpe,
    /// Byte-level BPE with llama.cpp's default splits (no or `default` `tokenizer.ggml.pre`).
    DefaultBpe,
    /// Byte-level BPE with Falcon-7B/40B's splits.
    FalconBpe,
    /// SentencePiece BPE (Llama-2 style, `▁` for spaces, byte fallback).
    SentencePiece,
}

/// The tokenizer keys of a GGUF file, decoded.
#[derive(Clone, Debug, Default)]
pub struct VocabMetadata {
    /// `tokenizer.ggml.model`.
    pub model: String,
    /// `tokenizer.ggml.pre`, if present.
    pub pre: Option<String>,
    /// `tokenizer.ggml.tokens` (id = index).
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.token_type`, if present (llama.cpp token types).
    pub token_types: Option<Vec<i32>>,
    /// `tokenizer.ggml.scores`, if present.
    pub scores: Option<Vec<f32>>,
    /// `tokenizer.ggml.merges` ("left right" strings), if present.
    pub merges: Option<Vec<String>>,
    /// `tokenizer.ggml.bos_token_id`.
    pub bos: Option<u32>,
    /// `tokenizer.ggml.eos_token_id`.
    pub eos: Option<u32>,
    /// `tokenizer.ggml.eot_token_id`.
    pub eot: Option<u32>,
    /// `tokenizer.ggml.eom_token_id`.
    pub eom: Option<u32>,
    /// `tokenizer.ggml.unknown_token_id`.
    pub unk: Option<u32>,
    /// `tokenizer.ggml.padding_token_id`.
    pub pad: Option<u32>,
    /// `tokenizer.ggml.add_bos_token`.
    pub add_bos: Option<bool>,
    /// `tokenizer.ggml.add_space_prefix` (SentencePiece only).
    pub add_space_prefix: Option<bool>,
}

impl VocabMetadata {
    /// Reads the `tokenizer.ggml.*` keys of a GGUF file.
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        Self::from_metadata(&|k| file.get(k))
    }

    /// Reads the `tokenizer.ggml.*` keys from any GGUF-named metadata (a file's, or the
    /// converter's for a checkpoint folder).
    pub fn from_metadata<'a>(get: &'a dyn Fn(&str) -> Option<&'a Value>) -> Result<Self> {
        let key = |k: &str| format!("tokenizer.ggml.{k}");
        let string = |k: &str| -> Result<Option<String>> {
            match get(&key(k)) {
                None => Ok(None),
                Some(v) => v
                    .as_str()
                    .map(|s| Some(s.to_owned()))
                    .ok_or_else(|| wrong_type(&key(k), "a string")),
            }
        };
        let id = |k: &str| -> Result<Option<u32>> {
            match get(&key(k)) {
                None => Ok(None),
                Some(v) => v
                    .to_u32_lossless()
                    .map(Some)
                    .ok_or_else(|| wrong_type(&key(k), "an unsigned 32-bit integer")),
            }
        };
        let flag = |k: &str| -> Result<Option<bool>> {
            match get(&key(k)) {
                None => Ok(None),
                Some(v) => v
                    .as_bool()
                    .map(Some)
                    .ok_or_else(|| wrong_type(&key(k), "a boolean")),
            }
        };
        let array = |k: &str| -> Option<&[Value]> { get(&key(k)).and_then(|v| v.as_array()) };

        let model = string("model")?.ok_or_else(|| Error::MissingMetadata { key: key("model") })?;
        let tokens = match array("tokens") {
            Some(items) => items
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| wrong_type(&key("tokens"), "an array of strings"))?,
            None => return Err(Error::MissingMetadata { key: key("tokens") }),
        };
        let token_types = match array("token_type") {
            Some(items) => Some(
                items
                    .iter()
                    .map(value_i32)
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| wrong_type(&key("token_type"), "an array of integers"))?,
            ),
            None => None,
        };
        let scores = match array("scores") {
            Some(items) => Some(
                items
                    .iter()
                    .map(|v| v.to_f32_lossless())
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| wrong_type(&key("scores"), "an array of f32"))?,
            ),
            None => None,
        };
        let merges = match array("merges") {
            Some(items) => Some(
                items
                    .iter()
                    .map(|v| v.as_str().map(str::to_owned))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| wrong_type(&key("merges"), "an array of strings"))?,
            ),
            None => None,
        };
        Ok(Self {
            model,
            pre: string("pre")?,
            tokens,
            token_types,
            scores,
            merges,
            bos: id("bos_token_id")?,
            eos: id("eos_token_id")?,
            eot: id("eot_token_id")?,
            eom: id("eom_token_id")?,
            unk: id("unknown_token_id")?,
            pad: id("padding_token_id")?,
            add_bos: flag("add_bos_token")?,
            add_space_prefix: flag("add_space_prefix")?,
        })
    }

    /// Decides the pipeline; `architecture` matters only when `tokenizer.ggml.pre` is absent.
    pub fn kind(&self, architecture: &str) -> Result<VocabKind> {
        match self.model.as_str() {
            "llama" => Ok(VocabKind::SentencePiece),
            "gpt2" => match self.pre.as_deref() {
                Some(name) if LLAMA3_NAMES.contains(&name) => Ok(VocabKind::Llama3Bpe),
                Some(name) if GPT2_NAMES.contains(&name) => Ok(VocabKind::Gpt2Bpe),
                Some("falcon") => Ok(VocabKind::FalconBpe),
                Some("default") => Ok(VocabKind::DefaultBpe),
                None if matches!(architecture, "bitnet-b1.58" | "bitnet-25") => {
                    Ok(VocabKind::Llama3Bpe)
                }
                None => Ok(VocabKind::DefaultBpe),
                Some(other) => Err(Error::Tokenizer(format!(
                    "unsupported tokenizer.ggml.pre `{other}` (supported: {}, {}, falcon, default); \
                     pass the model's tokenizer.json",
                    LLAMA3_NAMES.join(", "),
                    GPT2_NAMES.join(", ")
                ))),
            },
            other => Err(Error::Tokenizer(format!(
                "unsupported tokenizer.ggml.model `{other}` (supported: gpt2, llama)"
            ))),
        }
    }

    fn token_type(&self, id: usize) -> i32 {
        self.token_types
            .as_ref()
            .and_then(|t| t.get(id).copied())
            .unwrap_or(token_type::NORMAL)
    }

    fn check_id(&self, what: &str, id: Option<u32>) -> Result<Option<u32>> {
        match id {
            Some(i) if i as usize >= self.tokens.len() => Err(Error::Tokenizer(format!(
                "{what} id {i} is outside the vocabulary of {} tokens",
                self.tokens.len()
            ))),
            other => Ok(other),
        }
    }
}

fn wrong_type(key: &str, want: &str) -> Error {
    Error::Config(format!("metadata key `{key}` must be {want}"))
}

fn value_i32(v: &Value) -> Option<i32> {
    v.to_i64_lossless().and_then(|x| i32::try_from(x).ok())
}

/// A text tokenizer plus the special-token facts generation needs.
///
/// Cheap to clone: the Hugging Face tokenizer is shared, not copied. Every generation request
/// holds a clone (its [`crate::TextStreamer`]), and a deep copy of a 128k-token BPE vocabulary
/// and its merges is about 19 MB (16 requests of `bench --batched -npl 16` held 0.3 GB).
#[derive(Clone)]
pub struct Tokenizer {
    inner: Arc<tokenizers::Tokenizer>,
    bos: Option<u32>,
    eos: Option<u32>,
    eot: Option<u32>,
    add_bos: bool,
    eog: HashSet<u32>,
    n_vocab: usize,
    /// The same tokenizer with special-token parsing off, built on first use.
    plain: Arc<OnceLock<tokenizers::Tokenizer>>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("n_vocab", &self.n_vocab)
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("eot", &self.eot)
            .field("add_bos", &self.add_bos)
            .finish()
    }
}

impl Tokenizer {
    /// Builds the tokenizer from GGUF vocabulary metadata.
    pub fn from_metadata(meta: &VocabMetadata, architecture: &str) -> Result<Self> {
        let kind = meta.kind(architecture)?;
        if kind == VocabKind::DefaultBpe && meta.pre.is_none() {
            eprintln!("{MISSING_PRE_WARNING}");
        }
        let inner = match kind {
            VocabKind::SentencePiece => build_sentencepiece(meta)?,
            _ => build_byte_level_bpe(meta, &kind)?,
        };
        Self::with_inner(inner, meta, &kind)
    }

    /// Uses a `tokenizer.json` instead of the GGUF vocabulary, after checking that it assigns
    /// every GGUF token the same id.
    pub fn from_file_checked(
        path: &Path,
        meta: &VocabMetadata,
        architecture: &str,
    ) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| Error::Tokenizer(format!("reading `{}`: {e}", path.display())))?;
        for (id, text) in meta.tokens.iter().enumerate() {
            match inner.id_to_token(id as u32) {
                Some(t) if &t == text => {}
                found => {
                    return Err(Error::Tokenizer(format!(
                        "`{}` does not match the model vocabulary: id {id} is {found:?} there but `{text}` in the GGUF",
                        path.display()
                    )))
                }
            }
        }
        // The pipeline kind only decides default BOS handling here.
        let kind = meta.kind(architecture).unwrap_or(VocabKind::Gpt2Bpe);
        Self::with_inner(inner, meta, &kind)
    }

    fn with_inner(
        inner: tokenizers::Tokenizer,
        meta: &VocabMetadata,
        kind: &VocabKind,
    ) -> Result<Self> {
        let bos = meta.check_id("bos", meta.bos)?;
        let eos = meta.check_id("eos", meta.eos)?;
        let mut eot = meta.check_id("eot", meta.eot)?;
        let eom = meta.check_id("eom", meta.eom)?;
        let mut eog: HashSet<u32> = [eos, eot, eom].into_iter().flatten().collect();
        for (id, text) in meta.tokens.iter().enumerate() {
            if EOG_TEXTS.contains(&text.as_str()) {
                eog.insert(id as u32);
                if eot.is_none() && text == "<|eot_id|>" {
                    eot = Some(id as u32);
                }
            }
        }
        // llama.cpp's defaults: SentencePiece and Llama-3 vocabularies start with BOS.
        let add_bos = meta.add_bos.unwrap_or(matches!(
            kind,
            VocabKind::SentencePiece | VocabKind::Llama3Bpe
        ));
        Ok(Self {
            inner: Arc::new(inner),
            bos,
            eos,
            eot,
            add_bos: add_bos && bos.is_some(),
            eog,
            n_vocab: meta.tokens.len(),
            plain: Arc::default(),
        })
    }

    /// Tokenizes `text`. Special-token texts in it (e.g. `<|eot_id|>`) become their ids.
    /// With `add_bos`, BOS is prepended when the vocabulary asks for it and the text does not
    /// already start with it.
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>> {
        self.encode_with(text, add_bos, true)
    }

    /// [`Tokenizer::encode`], with `parse_special` false treating special-token texts as plain
    /// text (llama.cpp's `parse_special`).
    pub fn encode_with(&self, text: &str, add_bos: bool, parse_special: bool) -> Result<Vec<u32>> {
        let tokenizer = if parse_special {
            &self.inner
        } else {
            self.plain.get_or_init(|| {
                let mut t = (*self.inner).clone();
                t.set_encode_special_tokens(true);
                t
            })
        };
        let enc = tokenizer
            .encode(text, false)
            .map_err(|e| Error::Tokenizer(format!("encoding: {e}")))?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if let (true, true, Some(bos)) = (add_bos, self.add_bos, self.bos) {
            if enc.get_ids().first() != Some(&bos) {
                ids.push(bos);
            }
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    /// Turns ids back into text; `skip_special` drops control tokens such as `<|eot_id|>`.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        if let Some(bad) = ids.iter().find(|&&id| id as usize >= self.n_vocab) {
            return Err(Error::Tokenizer(format!(
                "token id {bad} is outside the vocabulary of {} tokens",
                self.n_vocab
            )));
        }
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| Error::Tokenizer(format!("decoding: {e}")))
    }

    /// The vocabulary string of one token (before byte-level / `▁` decoding).
    pub fn token_text(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The id of a vocabulary string.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.inner.token_to_id(text)
    }

    /// Number of tokens in the model vocabulary.
    pub fn n_vocab(&self) -> usize {
        self.n_vocab
    }

    /// Beginning-of-sequence id.
    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    /// End-of-sequence id.
    pub fn eos(&self) -> Option<u32> {
        self.eos
    }

    /// End-of-turn id (`<|eot_id|>` for Llama-3 vocabularies).
    pub fn eot(&self) -> Option<u32> {
        self.eot
    }

    /// Whether `encode(.., true)` prepends BOS.
    pub fn adds_bos(&self) -> bool {
        self.add_bos
    }

    /// Whether generation must stop at this token (EOS, EOT, EOM and their known texts).
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.contains(&id)
    }

    /// Every end-of-generation id, sorted.
    pub fn eog_ids(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.eog.iter().copied().collect();
        v.sort_unstable();
        v
    }

    /// The underlying Hugging Face tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

fn tk_err(what: &str) -> impl Fn(tokenizers::Error) -> Error + '_ {
    move |e| Error::Tokenizer(format!("{what}: {e}"))
}

/// Tokens that must be matched whole in input text and can be skipped when decoding.
fn special_tokens(meta: &VocabMetadata) -> Vec<AddedToken> {
    (0..meta.tokens.len())
        .filter(|&id| {
            matches!(
                meta.token_type(id),
                token_type::UNKNOWN
                    | token_type::CONTROL
                    | token_type::USER_DEFINED
                    | token_type::UNUSED
            )
        })
        .map(|id| AddedToken::from(meta.tokens[id].clone(), true).normalized(false))
        .collect()
}

/// Token text → id. When a text repeats, the last id wins, as in the Hugging Face converters.
fn vocab_map(meta: &VocabMetadata) -> Vocab {
    meta.tokens
        .iter()
        .enumerate()
        .map(|(id, t)| (t.clone(), id as u32))
        .collect()
}

fn build_byte_level_bpe(meta: &VocabMetadata, kind: &VocabKind) -> Result<tokenizers::Tokenizer> {
    let merges_src = meta.merges.as_ref().ok_or_else(|| Error::MissingMetadata {
        key: "tokenizer.ggml.merges".into(),
    })?;
    let mut merges = Vec::with_capacity(merges_src.len());
    for (i, m) in merges_src.iter().enumerate() {
        // Split at the first space after the first character, as llama.cpp does.
        let split = m
            .char_indices()
            .skip(1)
            .find(|&(_, c)| c == ' ')
            .map(|(p, _)| p)
            .ok_or_else(|| Error::Tokenizer(format!("merge #{i} `{m}` has no space separator")))?;
        merges.push((m[..split].to_owned(), m[split + 1..].to_owned()));
    }
    let bpe = BPE::builder()
        .vocab_and_merges(vocab_map(meta), merges)
        .ignore_merges(*kind == VocabKind::Llama3Bpe)
        .build()
        .map_err(tk_err("building the BPE model"))?;
    let mut tok = tokenizers::Tokenizer::new(bpe);
    let pre: PreTokenizerWrapper = match kind {
        VocabKind::Llama3Bpe => splits_then_bytes(&[LLAMA3_SPLIT_REGEX])?,
        VocabKind::DefaultBpe => splits_then_bytes(DEFAULT_SPLITS)?,
        VocabKind::FalconBpe => splits_then_bytes(FALCON_SPLITS)?,
        _ => ByteLevel::new(false, true, true).into(),
    };
    tok.with_pre_tokenizer(Some(pre));
    tok.with_decoder(Some(ByteLevel::new(true, true, true)));
    tok.add_special_tokens(special_tokens(meta))
        .map_err(tk_err("adding special tokens"))?;
    Ok(tok)
}

/// Splits by each regex in turn (every piece, matched or not, kept: llama.cpp's
/// `unicode_regex_split`), then maps bytes to GPT-2's printable symbols.
fn splits_then_bytes(regexes: &[&str]) -> Result<PreTokenizerWrapper> {
    let mut steps: Vec<PreTokenizerWrapper> = Vec::with_capacity(regexes.len() + 1);
    for re in regexes {
        let split = Split::new(
            SplitPattern::Regex((*re).into()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| Error::Tokenizer(format!("compiling the split regex `{re}`: {e}")))?;
        steps.push(split.into());
    }
    steps.push(ByteLevel::new(false, true, false).into());
    Ok(PreTokenizerSequence::new(steps).into())
}

fn build_sentencepiece(meta: &VocabMetadata) -> Result<tokenizers::Tokenizer> {
    let scores = meta.scores.as_ref().ok_or_else(|| Error::MissingMetadata {
        key: "tokenizer.ggml.scores".into(),
    })?;
    if scores.len() != meta.tokens.len() {
        return Err(Error::Tokenizer(format!(
            "tokenizer.ggml.scores has {} entries for {} tokens",
            scores.len(),
            meta.tokens.len()
        )));
    }
    let merges = sentencepiece_merges(meta, scores);
    let mut builder = BPE::builder()
        .vocab_and_merges(vocab_map(meta), merges)
        .byte_fallback(true)
        .fuse_unk(true);
    if let Some(unk) = meta.check_id("unknown", meta.unk)? {
        builder = builder.unk_token(meta.tokens[unk as usize].clone());
    }
    let bpe = builder.build().map_err(tk_err("building the BPE model"))?;
    let mut tok = tokenizers::Tokenizer::new(bpe);
    let add_space_prefix = meta.add_space_prefix.unwrap_or(true);
    let replace = Replace::new(" ", "▁").map_err(tk_err("space replacement"))?;
    let normalizer: NormalizerWrapper = if add_space_prefix {
        NormalizerSequence::new(vec![Prepend::new("▁".into()).into(), replace.into()]).into()
    } else {
        replace.into()
    };
    tok.with_normalizer(Some(normalizer))
        .map_err(tk_err("setting the normalizer"))?;
    let mut decoders: Vec<DecoderWrapper> = vec![
        Replace::new("▁", " ")
            .map_err(tk_err("space decoder"))?
            .into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    if add_space_prefix {
        decoders.push(Strip::new(' ', 1, 0).into());
    }
    tok.with_decoder(Some(DecoderSequence::new(decoders)));
    tok.add_special_tokens(special_tokens(meta))
        .map_err(tk_err("adding special tokens"))?;
    Ok(tok)
}

/// Merges of a SentencePiece BPE vocabulary, as Hugging Face's converter derives them: every split
/// of a normal piece into two vocabulary pieces, ordered by the merged piece's score (highest
/// first), ties by the ids of the two halves.
fn sentencepiece_merges(meta: &VocabMetadata, scores: &[f32]) -> Vec<(String, String)> {
    let ids: HashMap<&str, usize> = meta
        .tokens
        .iter()
        .enumerate()
        .filter(|&(id, _)| meta.token_type(id) == token_type::NORMAL)
        .map(|(id, t)| (t.as_str(), id))
        .collect();
    let mut merges: Vec<(f32, usize, usize, usize)> = Vec::new();
    for (id, piece) in meta.tokens.iter().enumerate() {
        if meta.token_type(id) != token_type::NORMAL {
            continue;
        }
        for (split, _) in piece.char_indices().skip(1) {
            let (l, r) = piece.split_at(split);
            if let (Some(&li), Some(&ri)) = (ids.get(l), ids.get(r)) {
                merges.push((scores[id], li, ri, id));
            }
        }
    }
    merges.sort_by(|a, b| {
        b.0.total_cmp(&a.0)
            .then(a.3.cmp(&b.3))
            .then(a.1.cmp(&b.1))
            .then(a.2.cmp(&b.2))
    });
    merges
        .into_iter()
        .map(|(_, l, r, _)| (meta.tokens[l].clone(), meta.tokens[r].clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny byte-level vocabulary: the 256 byte symbols, a few merges, two special tokens.
    fn byte_level_meta(pre: Option<&str>) -> VocabMetadata {
        let bytes_to_unicode = |b: u8| -> char {
            // GPT-2's printable mapping.
            let printable = (b'!'..=b'~').contains(&b)
                || (0xA1..=0xAC).contains(&b)
                || (0xAE..=0xFF).contains(&b);
            if printable {
                b as char
            } else {
                let mut n = 0u32;
                for x in 0..b {
                    let p = (b'!'..=b'~').contains(&x)
                        || (0xA1..=0xAC).contains(&x)
                        || (0xAE..=0xFF).contains(&x);
                    if !p {
                        n += 1;
                    }
                }
                char::from_u32(256 + n).unwrap()
            }
        };
        let mut tokens: Vec<String> = (0..=255u8)
            .map(|b| bytes_to_unicode(b).to_string())
            .collect();
        let g = bytes_to_unicode(b' ');
        for t in [
            "he",
            "ll",
            "hell",
            "hello",
            &format!("{g}w"),
            "12",
            "123",
            &format!("{g}!"),
        ] {
            tokens.push(t.to_string());
        }
        let merges = vec![
            "h e".to_string(),
            "l l".to_string(),
            "he ll".to_string(),
            "hell o".to_string(),
            format!("{g} w"),
            "1 2".to_string(),
            "12 3".to_string(),
            format!("{g} !"),
        ];
        let mut types = vec![token_type::NORMAL; tokens.len()];
        tokens.push("<|begin_of_text|>".into());
        types.push(token_type::CONTROL);
        tokens.push("<|eot_id|>".into());
        types.push(token_type::CONTROL);
        VocabMetadata {
            model: "gpt2".into(),
            pre: pre.map(Into::into),
            bos: Some(tokens.len() as u32 - 2),
            token_types: Some(types),
            tokens,
            merges: Some(merges),
            ..Default::default()
        }
    }

    #[test]
    fn pre_tokenizer_choice_is_strict() {
        let m = byte_level_meta(None);
        assert_eq!(m.kind("bitnet-b1.58").unwrap(), VocabKind::Llama3Bpe);
        assert_eq!(m.kind("bitnet-25").unwrap(), VocabKind::Llama3Bpe);
        // Absent elsewhere: llama.cpp's default, as llama.cpp loads it.
        assert_eq!(m.kind("bitnet").unwrap(), VocabKind::DefaultBpe);
        assert_eq!(m.kind("llama").unwrap(), VocabKind::DefaultBpe);
        for (name, kind) in [
            ("falcon3", VocabKind::Llama3Bpe),
            ("llama3", VocabKind::Llama3Bpe),
            ("phi-2", VocabKind::Gpt2Bpe),
            ("falcon", VocabKind::FalconBpe),
            ("default", VocabKind::DefaultBpe),
        ] {
            assert_eq!(
                byte_level_meta(Some(name)).kind("llama").unwrap(),
                kind,
                "{name}"
            );
        }
        assert_eq!(
            byte_level_meta(Some("llama-bpe")).kind("llama").unwrap(),
            VocabKind::Llama3Bpe
        );
        assert_eq!(
            byte_level_meta(Some("gpt-2")).kind("llama").unwrap(),
            VocabKind::Gpt2Bpe
        );
        let err = byte_level_meta(Some("qwen2")).kind("llama").unwrap_err();
        assert!(err.to_string().contains("qwen2"), "{err}");
    }

    #[test]
    fn llama3_pipeline_splits_digits_in_threes_and_round_trips() -> Result<()> {
        let m = byte_level_meta(Some("llama-bpe"));
        let tok = Tokenizer::from_metadata(&m, "llama")?;
        let ids = tok.encode("hello 1234", true)?;
        let bos = m.bos.unwrap();
        assert_eq!(ids[0], bos);
        // "hello" merges fully; " " stays alone before digits; "123" then "4".
        let texts: Vec<String> = ids[1..]
            .iter()
            .map(|&i| tok.token_text(i).unwrap())
            .collect();
        assert_eq!(texts, vec!["hello", "Ġ", "123", "4"]);
        assert_eq!(tok.decode(&ids, true)?, "hello 1234");
        Ok(())
    }

    /// Every request of the scheduler holds a clone; a deep copy of a real vocabulary costs
    /// ~19 MB per request.
    #[test]
    fn clones_share_the_vocabulary() -> Result<()> {
        let tok = Tokenizer::from_metadata(&byte_level_meta(Some("llama-bpe")), "llama")?;
        let copy = tok.clone();
        assert!(std::ptr::eq(tok.inner(), copy.inner()));
        assert_eq!(copy.encode("hello", false)?, tok.encode("hello", false)?);
        Ok(())
    }

    #[test]
    fn default_pipeline_isolates_punctuation_and_groups_digits() -> Result<()> {
        let m = byte_level_meta(None);
        let tok = Tokenizer::from_metadata(&m, "bitnet")?;
        assert!(!tok.adds_bos(), "llama.cpp's default adds no BOS");
        let texts = |ids: Vec<u32>| -> Vec<String> {
            ids.iter().map(|&i| tok.token_text(i).unwrap()).collect()
        };
        // Punctuation runs split off first (no " !" piece); digits: runs, then threes.
        assert_eq!(
            texts(tok.encode("hello !!12345", true)?),
            vec!["hello", "Ġ", "!", "!", "123", "4", "5"]
        );
        // The Llama-3 rule instead keeps " !!" together, so the " !" merge applies.
        let tok3 = Tokenizer::from_metadata(&byte_level_meta(Some("llama-bpe")), "bitnet")?;
        let ids = tok3.encode("hello !!12345", false)?;
        let t3: Vec<String> = ids.iter().map(|&i| tok3.token_text(i).unwrap()).collect();
        assert_eq!(t3, vec!["hello", "Ġ!", "!", "123", "4", "5"]);
        Ok(())
    }

    #[test]
    fn gpt2_pipeline_keeps_leading_space_with_word() -> Result<()> {
        let m = byte_level_meta(Some("gpt-2"));
        let tok = Tokenizer::from_metadata(&m, "llama")?;
        let ids = tok.encode("hello w", false)?;
        let texts: Vec<String> = ids.iter().map(|&i| tok.token_text(i).unwrap()).collect();
        assert_eq!(texts, vec!["hello", "Ġw"]);
        Ok(())
    }

    #[test]
    fn special_tokens_are_parsed_from_text_and_end_generation() -> Result<()> {
        let m = byte_level_meta(Some("llama-bpe"));
        let tok = Tokenizer::from_metadata(&m, "llama")?;
        let eot = tok.token_id("<|eot_id|>").unwrap();
        let ids = tok.encode("hello<|eot_id|>", false)?;
        assert_eq!(ids.last(), Some(&eot));
        assert!(tok.is_eog(eot));
        assert_eq!(tok.eot(), Some(eot));
        assert_eq!(tok.decode(&ids, true)?, "hello");
        Ok(())
    }

    #[test]
    fn sentencepiece_merges_follow_scores_and_bytes_fall_back() -> Result<()> {
        let mut tokens = vec!["<unk>".to_string(), "<s>".into(), "</s>".into()];
        let mut types = vec![
            token_type::UNKNOWN,
            token_type::CONTROL,
            token_type::CONTROL,
        ];
        let mut scores = vec![0.0, 0.0, 0.0];
        for b in 0..=255u8 {
            tokens.push(format!("<0x{b:02X}>"));
            types.push(6); // byte token
            scores.push(0.0);
        }
        for (t, s) in [
            ("▁", -1.0),
            ("a", -2.0),
            ("b", -3.0),
            ("▁a", -4.0),
            ("ab", -5.0),
            ("▁ab", -6.0),
        ] {
            tokens.push(t.into());
            types.push(token_type::NORMAL);
            scores.push(s);
        }
        let meta = VocabMetadata {
            model: "llama".into(),
            tokens,
            token_types: Some(types),
            scores: Some(scores),
            bos: Some(1),
            eos: Some(2),
            unk: Some(0),
            ..Default::default()
        };
        let tok = Tokenizer::from_metadata(&meta, "bitnet")?;
        let ids = tok.encode("ab", true)?;
        let texts: Vec<String> = ids.iter().map(|&i| tok.token_text(i).unwrap()).collect();
        // "▁a" (score -4) merges before "ab" (-5); then "▁a"+"b" -> "▁ab".
        assert_eq!(texts, vec!["<s>", "▁ab"]);
        // "é" is not in the vocabulary: byte fallback gives its two UTF-8 bytes.
        let ids = tok.encode("é", false)?;
        let texts: Vec<String> = ids.iter().map(|&i| tok.token_text(i).unwrap()).collect();
        assert_eq!(texts, vec!["▁", "<0xC3>", "<0xA9>"]);
        assert_eq!(tok.decode(&ids, true)?, "é");
        assert!(tok.is_eog(2));
        Ok(())
    }
}
