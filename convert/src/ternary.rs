//! Reading one BitLinear projection as ternary codes and a per-tensor scale β (W = β·T).
//!
//! Three storage forms exist, and the config — never a guess — decides the scale:
//! - packed uint8 `[out/4, in]` (transformers `pack_weights`) with `<name>_scale` (`weight_scale`);
//! - float codes in {-1, 0, 1} with `weight_scale`;
//! - float weights without a scale: absmean-ternarized when the model quantizes online
//!   (1bitLLM, `quantization_mode: online`), otherwise they must already be exactly ternary
//!   (every value in {-β, 0, β}).

use bitnet_backend::formats::{hf_packed, ternarize};
use safetensors::Dtype;

use crate::arch::WeightRule;
use crate::error::{ConvertError, Result};
use crate::hf::config::LinearClass;
use crate::hf::safetensors_source::{SafetensorsSource, TensorEntry};

/// Ternary codes (row-major `[rows, cols]`) and the scale that dequantizes them.
#[derive(Clone, Debug, PartialEq)]
pub struct Ternary {
    pub codes: Vec<i8>,
    pub scale: f32,
}

/// How a projection is stored in the checkpoint, which with the config's rule decides how it is
/// read. The converter and `bitnet-candle`'s `VarBuilder` loader both decide with [`stored_as`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoredAs {
    /// uint8 `[out/4, in]` in transformers' `pack_weights` layout, plus `weight_scale`.
    Packed,
    /// Float values in {-1, 0, 1} plus `weight_scale`.
    FloatCodes,
    /// Float master weights the model ternarizes by absmean in every forward pass.
    OnlineMaster,
    /// Float values that must already be exactly {-β, 0, β} (no scale tensor, no online rule).
    ExactTernary,
}

/// Decides how the projection `name` (stored as `dtype`, with or without a `weight_scale`
/// companion) is read under `rule`.
pub fn stored_as(name: &str, dtype: Dtype, has_scale: bool, rule: &WeightRule) -> Result<StoredAs> {
    let is_float = matches!(dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16);
    match (dtype, has_scale) {
        _ if rule.online && is_float => Ok(StoredAs::OnlineMaster),
        (Dtype::U8, true) => Ok(StoredAs::Packed),
        (Dtype::U8, false) => Err(ConvertError::MissingTensor {
            name: format!("{name}_scale"),
            where_: format!("packed uint8 weight `{name}` needs its scale"),
        }),
        (_, true) if is_float => Ok(StoredAs::FloatCodes),
        (_, false) if is_float => Ok(StoredAs::ExactTernary),
        (dtype, _) => Err(ConvertError::tensor(
            name,
            format!("dtype {dtype:?}; a projection must be U8 (HF-packed) or F32/F16/BF16"),
        )),
    }
}

/// β (`W = β·T`) from the stored values of a `weight_scale` tensor, per
/// `quantization_config.linear_class`: the one place the scale's meaning is decided.
pub fn beta_from_scale(scale_name: &str, stored: &[f32], rule: &WeightRule) -> Result<f32> {
    let Some(class) = rule.linear_class else {
        return Err(ConvertError::Unsupported(format!(
            "`{scale_name}` exists but config.json has no quantization_config, so it is unknown whether the \
             scale multiplies (autobitlinear) or divides (bitlinear); add quantization_config \
             {{\"quant_method\": \"bitnet\", \"linear_class\": ...}}"
        )));
    };
    let &[ws] = stored else {
        return Err(ConvertError::tensor(
            scale_name,
            format!(
                "{} values; a per-tensor scale has one element",
                stored.len()
            ),
        ));
    };
    if ws.is_nan() || ws <= 0.0 {
        return Err(ConvertError::tensor(
            scale_name,
            format!("scale {ws} is not positive"),
        ));
    }
    let beta = match class {
        LinearClass::AutoBitLinear => ws,
        LinearClass::BitLinear => 1.0 / ws,
    };
    if !beta.is_finite() || beta == 0.0 {
        return Err(ConvertError::tensor(
            scale_name,
            format!("scale {ws} gives an unusable β = {beta}"),
        ));
    }
    Ok(beta)
}

/// Codes from float values that must each be -1, 0 or 1 (a [`StoredAs::FloatCodes`] tensor).
pub fn float_codes(name: &str, w: &[f32], codes: &mut [i8]) -> Result<()> {
    for (i, (&v, c)) in w.iter().zip(codes.iter_mut()).enumerate() {
        if v != -1.0 && v != 0.0 && v != 1.0 {
            return Err(ConvertError::tensor(
                name,
                format!(
                    "has a weight_scale, so its values must be -1, 0 or 1, but element {i} is {v}"
                ),
            ));
        }
        *c = v as i8;
    }
    Ok(())
}

/// Reads the projection `name` (an HF `...proj.weight`) of shape `[rows, cols]`.
pub fn load(
    src: &SafetensorsSource,
    name: &str,
    rows: usize,
    cols: usize,
    rule: &WeightRule,
) -> Result<Ternary> {
    let t = src.require(name)?;
    let scale_name = format!("{name}_scale");
    let scale_entry = src.get(&scale_name);
    let beta = |s: &TensorEntry| beta_from_scale(&s.name, &src.read_f32(s)?, rule);
    match (
        stored_as(name, t.dtype, scale_entry.is_some(), rule)?,
        scale_entry,
    ) {
        (StoredAs::OnlineMaster, _) => {
            check_shape(t, &[rows, cols])?;
            let w = src.read_f32(t)?;
            let (codes, scale) = ternarize::absmean(&w);
            Ok(Ternary { codes, scale })
        }
        (StoredAs::Packed, Some(s)) => {
            if !rows.is_multiple_of(4) {
                return Err(ConvertError::tensor(
                    name,
                    format!(
                        "{rows} output features is not a multiple of 4, so it cannot be HF-packed"
                    ),
                ));
            }
            check_shape(t, &[rows / 4, cols])?;
            let bytes = src.read_raw(t, 0, rows / 4 * cols)?;
            let codes = hf_packed::unpack(&bytes, rows, cols)
                .map_err(|e| ConvertError::tensor(name, e.to_string()))?;
            check_codes(name, &codes)?;
            Ok(Ternary {
                codes,
                scale: beta(s)?,
            })
        }
        (StoredAs::FloatCodes, Some(s)) => {
            check_shape(t, &[rows, cols])?;
            let w = src.read_f32(t)?;
            let mut codes = vec![0i8; w.len()];
            float_codes(name, &w, &mut codes)?;
            Ok(Ternary {
                codes,
                scale: beta(s)?,
            })
        }
        (StoredAs::ExactTernary, _) => {
            check_shape(t, &[rows, cols])?;
            let w = src.read_f32(t)?;
            exact_ternary(name, &w)
        }
        (kind, None) => Err(ConvertError::MissingTensor {
            name: scale_name,
            where_: format!(
                "{kind:?} weight `{name}` needs its scale; {}",
                src.describe()
            ),
        }),
    }
}

/// Float weights that already hold only {-β, 0, β}.
fn exact_ternary(name: &str, w: &[f32]) -> Result<Ternary> {
    let max_abs = w.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let mut codes = vec![0i8; w.len()];
    exact_codes(name, w, max_abs, 0, &mut codes)?;
    Ok(Ternary {
        codes,
        scale: exact_beta(max_abs),
    })
}

/// β of a float tensor that must hold only {-β, 0, β}: its largest magnitude (the smallest
/// scale for an all-zero tensor).
pub fn exact_beta(max_abs: f32) -> f32 {
    if max_abs > 0.0 {
        max_abs
    } else {
        ternarize::MIN_SCALE
    }
}

/// Codes of values that must each be 0 or ±`max_abs` (the tensor's largest magnitude); `first`
/// is the index of `w[0]` in the tensor, for the error message.
pub fn exact_codes(
    name: &str,
    w: &[f32],
    max_abs: f32,
    first: usize,
    codes: &mut [i8],
) -> Result<()> {
    for (i, (&v, c)) in w.iter().zip(codes.iter_mut()).enumerate() {
        *c = if v == 0.0 {
            0
        } else if v == max_abs {
            1
        } else if v == -max_abs {
            -1
        } else {
            return Err(ConvertError::tensor(
                name,
                format!(
                    "is not ternary (element {} is {v}, the largest magnitude is {max_abs}) and the model does not \
                     ternarize online; if these are BitNet master weights, add \"quantization_config\": \
                     {{\"quant_method\": \"bitnet\", \"linear_class\": \"autobitlinear\", \"quantization_mode\": \"online\"}} \
                     to config.json",
                    first + i
                ),
            ));
        };
    }
    Ok(())
}

fn check_shape(t: &TensorEntry, want: &[usize]) -> Result<()> {
    if t.shape != want {
        return Err(ConvertError::tensor(
            &t.name,
            format!("shape {:?}, expected {want:?} from config.json", t.shape),
        ));
    }
    Ok(())
}

fn check_codes(name: &str, codes: &[i8]) -> Result<()> {
    match codes.iter().position(|c| !(-1..=1).contains(c)) {
        None => Ok(()),
        Some(i) => Err(ConvertError::tensor(
            name,
            format!("packed code 3 (not ternary) at element {i}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_ternary_accepts_three_values_only() {
        let t = exact_ternary("w", &[0.5, -0.5, 0.0, 0.5]).unwrap();
        assert_eq!(
            t,
            Ternary {
                codes: vec![1, -1, 0, 1],
                scale: 0.5
            }
        );
        let e = exact_ternary("w", &[0.5, -0.25, 0.0])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("is not ternary") && e.contains("quantization_mode"),
            "{e}"
        );
        assert_eq!(exact_ternary("w", &[0.0, 0.0]).unwrap().codes, vec![0, 0]);
    }
}
