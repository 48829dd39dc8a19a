//! `config.json`: the hyper-parameters and the `quantization_config` that decide how weights are
//! read. Missing required fields are errors that name the key; optional ones take transformers'
//! own defaults, never a guess of ours.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{ConvertError, Result};

/// `quantization_config.linear_class`: what `weight_scale` means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinearClass {
    /// transformers `BitLinear`: `y = x·T / weight_scale`, i.e. β = 1 / weight_scale.
    BitLinear,
    /// transformers `AutoBitLinear`: `y = x·T · weight_scale`, i.e. β = weight_scale.
    AutoBitLinear,
}

/// `quantization_config.quantization_mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuantMode {
    /// Weights are stored already ternary (packed uint8 or codes) with a `weight_scale`.
    Offline,
    /// Weights are float masters, ternarized by absmean in every forward pass.
    Online,
}

/// A `quantization_config` with `quant_method == "bitnet"`.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizationConfig {
    pub linear_class: LinearClass,
    pub mode: QuantMode,
    pub use_rms_norm: bool,
    pub modules_to_not_convert: Vec<String>,
}

/// The fields of `config.json` the converter uses.
#[derive(Clone, Debug)]
pub struct HfConfig {
    pub path: PathBuf,
    pub architecture: String,
    pub model_type: Option<String>,
    pub name_or_path: Option<String>,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f32,
    pub rope_theta: f32,
    pub hidden_act: String,
    pub tie_word_embeddings: bool,
    pub attention_bias: bool,
    pub mlp_bias: bool,
    /// `rope_scaling`, if present and not null.
    pub rope_scaling: Option<Map<String, Value>>,
    pub quantization: Option<QuantizationConfig>,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    pub pad_token_id: Option<u32>,
}

impl HfConfig {
    /// Reads and validates `<dir>/config.json`.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let text =
            std::fs::read_to_string(&path).map_err(|e| ConvertError::io("read", &path, e))?;
        Self::parse(&text, &path)
    }

    /// Parses the text of a config.json; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| ConvertError::json(path, format!("invalid JSON: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| ConvertError::json(path, "top level is not a JSON object"))?;
        let f = Fields { obj, path };

        let archs = f.opt("architectures").ok_or_else(|| {
            ConvertError::json(
                path,
                "missing `architectures` (e.g. [\"BitNetForCausalLM\"])",
            )
        })?;
        let architecture = match archs.as_array().map(|a| a.as_slice()) {
            Some([Value::String(s)]) => s.clone(),
            _ => {
                return Err(ConvertError::json(
                    path,
                    format!("`architectures` must be a list of exactly one string, found {archs}"),
                ))
            }
        };

        let hidden_size = f.usize("hidden_size")?;
        let num_attention_heads = f.usize("num_attention_heads")?;
        let num_key_value_heads = f
            .opt_usize("num_key_value_heads")?
            .unwrap_or(num_attention_heads);
        if num_attention_heads == 0 || num_key_value_heads == 0 {
            return Err(ConvertError::json(
                path,
                "attention head counts must be positive",
            ));
        }
        if num_attention_heads % num_key_value_heads != 0 {
            return Err(ConvertError::json(
                path,
                format!(
                    "num_attention_heads {num_attention_heads} is not a multiple of \
                     num_key_value_heads {num_key_value_heads}"
                ),
            ));
        }
        let head_dim = match f.opt_usize("head_dim")? {
            Some(d) => d,
            None => {
                if hidden_size % num_attention_heads != 0 {
                    return Err(ConvertError::json(
                        path,
                        format!(
                            "hidden_size {hidden_size} is not a multiple of num_attention_heads \
                             {num_attention_heads} and there is no head_dim"
                        ),
                    ));
                }
                hidden_size / num_attention_heads
            }
        };
        if head_dim == 0 || head_dim % 2 != 0 {
            return Err(ConvertError::json(
                path,
                format!("head_dim {head_dim} must be even and positive"),
            ));
        }

        let rope_scaling = match f.opt("rope_scaling") {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => Some(m.clone()),
            Some(other) => {
                return Err(ConvertError::json(
                    path,
                    format!("`rope_scaling` must be an object or null, found {other}"),
                ))
            }
        };

        let quantization = match f.opt("quantization_config") {
            None | Some(Value::Null) => None,
            Some(Value::Object(q)) => Some(parse_quantization(q, path)?),
            Some(other) => {
                return Err(ConvertError::json(
                    path,
                    format!("`quantization_config` must be an object, found {other}"),
                ))
            }
        };

        let cfg = HfConfig {
            path: path.to_path_buf(),
            architecture,
            model_type: f.opt_str("model_type")?,
            name_or_path: f.opt_str("_name_or_path")?,
            hidden_size,
            intermediate_size: f.usize("intermediate_size")?,
            num_hidden_layers: f.usize("num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            vocab_size: f.usize("vocab_size")?,
            // transformers' LlamaConfig/BitNetConfig default is 2048.
            max_position_embeddings: f.opt_usize("max_position_embeddings")?.unwrap_or(2048),
            rms_norm_eps: f.opt_f32("rms_norm_eps")?.unwrap_or(1e-6),
            rope_theta: f.opt_f32("rope_theta")?.unwrap_or(10000.0),
            hidden_act: f.opt_str("hidden_act")?.unwrap_or_else(|| "silu".into()),
            tie_word_embeddings: f.opt_bool("tie_word_embeddings")?.unwrap_or(false),
            attention_bias: f.opt_bool("attention_bias")?.unwrap_or(false),
            mlp_bias: f.opt_bool("mlp_bias")?.unwrap_or(false),
            rope_scaling,
            quantization,
            bos_token_id: f.opt_token_id("bos_token_id")?,
            eos_token_id: f.opt_token_id("eos_token_id")?,
            pad_token_id: f.opt_token_id("pad_token_id")?,
        };
        for (key, value) in [
            ("hidden_size", cfg.hidden_size),
            ("intermediate_size", cfg.intermediate_size),
            ("num_hidden_layers", cfg.num_hidden_layers),
            ("vocab_size", cfg.vocab_size),
        ] {
            if value == 0 {
                return Err(ConvertError::json(
                    path,
                    format!("`{key}` must be positive"),
                ));
            }
        }
        if !(cfg.rms_norm_eps.is_finite() && cfg.rms_norm_eps > 0.0) {
            return Err(ConvertError::json(
                path,
                "`rms_norm_eps` must be a positive number",
            ));
        }
        if !(cfg.rope_theta.is_finite() && cfg.rope_theta > 0.0) {
            return Err(ConvertError::json(
                path,
                "`rope_theta` must be a positive number",
            ));
        }
        Ok(cfg)
    }
}

fn parse_quantization(q: &Map<String, Value>, path: &Path) -> Result<QuantizationConfig> {
    let f = Fields { obj: q, path };
    let method = f
        .opt_str("quant_method")?
        .ok_or_else(|| ConvertError::json(path, "`quantization_config` has no `quant_method`"))?;
    if method != "bitnet" {
        return Err(ConvertError::Unsupported(format!(
            "`{}`: quantization_config.quant_method is `{method}`; only `bitnet` (ternary) \
             checkpoints can be converted",
            path.display()
        )));
    }
    // Absent keys take transformers' BitNetQuantConfig defaults: bitlinear, offline.
    let linear_class = match f.opt_str("linear_class")?.as_deref() {
        None | Some("bitlinear") => LinearClass::BitLinear,
        Some("autobitlinear") => LinearClass::AutoBitLinear,
        Some(other) => {
            return Err(ConvertError::json(
                path,
                format!("quantization_config.linear_class `{other}` is neither `bitlinear` nor `autobitlinear`"),
            ))
        }
    };
    let mode = match f.opt_str("quantization_mode")?.as_deref() {
        None | Some("offline") => QuantMode::Offline,
        Some("online") => QuantMode::Online,
        Some(other) => {
            return Err(ConvertError::json(
                path,
                format!(
                "quantization_config.quantization_mode `{other}` is neither `offline` nor `online`"
            ),
            ))
        }
    };
    let modules_to_not_convert = match q.get("modules_to_not_convert") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str().map(str::to_string).ok_or_else(|| {
                    ConvertError::json(
                        path,
                        "quantization_config.modules_to_not_convert must hold strings",
                    )
                })
            })
            .collect::<Result<_>>()?,
        Some(other) => {
            return Err(ConvertError::json(
                path,
                format!("quantization_config.modules_to_not_convert must be a list, found {other}"),
            ))
        }
    };
    Ok(QuantizationConfig {
        linear_class,
        mode,
        use_rms_norm: f.opt_bool("use_rms_norm")?.unwrap_or(false),
        modules_to_not_convert,
    })
}

/// Typed access to a JSON object with errors that name the key and the file.
struct Fields<'a> {
    obj: &'a Map<String, Value>,
    path: &'a Path,
}

impl Fields<'_> {
    fn opt(&self, key: &str) -> Option<&Value> {
        self.obj.get(key)
    }

    fn err(&self, key: &str, want: &str, got: &Value) -> ConvertError {
        ConvertError::json(self.path, format!("`{key}` must be {want}, found {got}"))
    }

    fn usize(&self, key: &str) -> Result<usize> {
        self.opt_usize(key)?
            .ok_or_else(|| ConvertError::json(self.path, format!("missing required key `{key}`")))
    }

    fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        match self.opt(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| self.err(key, "a non-negative integer", v)),
        }
    }

    fn opt_f32(&self, key: &str) -> Result<Option<f32>> {
        match self.opt(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .map(|x| Some(x as f32))
                .ok_or_else(|| self.err(key, "a number", v)),
        }
    }

    fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.opt(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.err(key, "true or false", v)),
        }
    }

    fn opt_str(&self, key: &str) -> Result<Option<String>> {
        match self.opt(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(self.err(key, "a string", v)),
        }
    }

    /// A token id, or a list of ids (generation-style `eos_token_id`), of which the first counts.
    fn opt_token_id(&self, key: &str) -> Result<Option<u32>> {
        let as_id = |v: &Value| v.as_u64().and_then(|n| u32::try_from(n).ok());
        match self.opt(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) if items.is_empty() => Ok(None),
            Some(v @ Value::Array(items)) => as_id(&items[0])
                .map(Some)
                .ok_or_else(|| self.err(key, "a token id or a list of token ids", v)),
            Some(v) => as_id(v)
                .map(Some)
                .ok_or_else(|| self.err(key, "a token id", v)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<HfConfig> {
        HfConfig::parse(text, Path::new("config.json"))
    }

    const TWO_B: &str = r#"{"architectures":["BitNetForCausalLM"],"hidden_act":"relu2",
        "hidden_size":2560,"intermediate_size":6912,"max_position_embeddings":4096,
        "model_type":"bitnet","rms_norm_eps":1e-05,"num_attention_heads":20,
        "num_hidden_layers":30,"num_key_value_heads":5,"rope_theta":500000.0,
        "tie_word_embeddings":true,"vocab_size":128256,"bos_token_id":128000,"eos_token_id":128001,
        "quantization_config":{"quant_method":"bitnet","linear_class":"autobitlinear",
        "quantization_mode":"offline"}}"#;

    #[test]
    fn parses_2b4t_config() {
        let c = parse(TWO_B).unwrap();
        assert_eq!(c.architecture, "BitNetForCausalLM");
        assert_eq!(c.head_dim, 128);
        assert_eq!(c.num_key_value_heads, 5);
        assert_eq!(c.rope_theta, 500000.0);
        assert!(c.tie_word_embeddings);
        let q = c.quantization.unwrap();
        assert_eq!(q.linear_class, LinearClass::AutoBitLinear);
        assert_eq!(q.mode, QuantMode::Offline);
        assert_eq!(c.eos_token_id, Some(128001));
    }

    #[test]
    fn quantization_defaults_are_transformers_defaults() {
        let c = parse(
            r#"{"architectures":["LlamaForCausalLM"],"hidden_size":64,"intermediate_size":128,
            "num_attention_heads":4,"num_hidden_layers":1,"vocab_size":10,
            "eos_token_id":[7,9],"quantization_config":{"quant_method":"bitnet"}}"#,
        )
        .unwrap();
        let q = c.quantization.unwrap();
        assert_eq!(q.linear_class, LinearClass::BitLinear);
        assert_eq!(q.mode, QuantMode::Offline);
        assert_eq!(c.num_key_value_heads, 4);
        assert_eq!(c.eos_token_id, Some(7));
        assert_eq!(c.rms_norm_eps, 1e-6);
    }

    #[test]
    fn errors_name_the_key() {
        let e =
            parse(r#"{"architectures":["BitNetForCausalLM"],"hidden_size":"big"}"#).unwrap_err();
        assert!(
            e.to_string()
                .contains("`hidden_size` must be a non-negative integer"),
            "{e}"
        );
        let e = parse(r#"{"architectures":["X"],"hidden_size":8,"num_attention_heads":2}"#)
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("missing required key `intermediate_size`"),
            "{e}"
        );
        let e = parse("{not json").unwrap_err();
        assert!(e.to_string().contains("invalid JSON"), "{e}");
        let e = parse(r#"{"architectures":["A","B"]}"#).unwrap_err();
        assert!(e.to_string().contains("exactly one string"), "{e}");
        let e = parse(&TWO_B.replace("\"bitnet\",\"linear_class\"", "\"gptq\",\"linear_class\""))
            .unwrap_err();
        assert!(e.to_string().contains("quant_method is `gptq`"), "{e}");
        let e = parse(&TWO_B.replace("autobitlinear", "fancy")).unwrap_err();
        assert!(e.to_string().contains("linear_class `fancy`"), "{e}");
    }
}
