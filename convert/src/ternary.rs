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
    let is_float = matches!(t.dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16);

    if rule.online && is_float {
        check_shape(t, &[rows, cols])?;
        let w = src.read_f32(t)?;
        let (codes, scale) = ternarize::absmean(&w);
        return Ok(Ternary { codes, scale });
    }
    match (t.dtype, scale_entry) {
        (Dtype::U8, Some(s)) => {
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
                scale: beta(src, s, rule)?,
            })
        }
        (Dtype::U8, None) => Err(ConvertError::MissingTensor {
            name: scale_name,
            where_: format!(
                "packed uint8 weight `{name}` needs its scale; {}",
                src.describe()
            ),
        }),
        (_, Some(s)) if is_float => {
            check_shape(t, &[rows, cols])?;
            let w = src.read_f32(t)?;
            let mut codes = Vec::with_capacity(w.len());
            for (i, &v) in w.iter().enumerate() {
                if v != -1.0 && v != 0.0 && v != 1.0 {
                    return Err(ConvertError::tensor(
                        name,
                        format!("has a weight_scale, so its values must be -1, 0 or 1, but element {i} is {v}"),
                    ));
                }
                codes.push(v as i8);
            }
            Ok(Ternary {
                codes,
                scale: beta(src, s, rule)?,
            })
        }
        (_, None) if is_float => {
            check_shape(t, &[rows, cols])?;
            let w = src.read_f32(t)?;
            exact_ternary(name, &w)
        }
        (dtype, _) => Err(ConvertError::tensor(
            name,
            format!("dtype {dtype:?}; a projection must be U8 (HF-packed) or F32/F16/BF16"),
        )),
    }
}

/// β from a `weight_scale` tensor, per `quantization_config.linear_class`.
fn beta(src: &SafetensorsSource, s: &TensorEntry, rule: &WeightRule) -> Result<f32> {
    let Some(class) = rule.linear_class else {
        return Err(ConvertError::Unsupported(format!(
            "`{}` exists but config.json has no quantization_config, so it is unknown whether the \
             scale multiplies (autobitlinear) or divides (bitlinear); add quantization_config \
             {{\"quant_method\": \"bitnet\", \"linear_class\": ...}}",
            s.name
        )));
    };
    if s.n_elements() != 1 {
        return Err(ConvertError::tensor(
            &s.name,
            format!("shape {:?}; a per-tensor scale has one element", s.shape),
        ));
    }
    let ws = src.read_f32(s)?[0];
    if ws.is_nan() || ws <= 0.0 {
        return Err(ConvertError::tensor(
            &s.name,
            format!("scale {ws} is not positive"),
        ));
    }
    let beta = match class {
        LinearClass::AutoBitLinear => ws,
        LinearClass::BitLinear => 1.0 / ws,
    };
    if !beta.is_finite() || beta == 0.0 {
        return Err(ConvertError::tensor(
            &s.name,
            format!("scale {ws} gives an unusable β = {beta}"),
        ));
    }
    Ok(beta)
}

/// Float weights that already hold only {-β, 0, β}.
fn exact_ternary(name: &str, w: &[f32]) -> Result<Ternary> {
    let beta = w.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let mut codes = Vec::with_capacity(w.len());
    for (i, &v) in w.iter().enumerate() {
        let code = if v == 0.0 {
            0
        } else if v == beta {
            1
        } else if v == -beta {
            -1
        } else {
            return Err(ConvertError::tensor(
                name,
                format!(
                    "is not ternary (element {i} is {v}, the largest magnitude is {beta}) and the model does not \
                     ternarize online; if these are BitNet master weights, add \"quantization_config\": \
                     {{\"quant_method\": \"bitnet\", \"linear_class\": \"autobitlinear\", \"quantization_mode\": \"online\"}} \
                     to config.json"
                ),
            ));
        };
        codes.push(code);
    }
    Ok(Ternary {
        codes,
        scale: if beta > 0.0 {
            beta
        } else {
            ternarize::MIN_SCALE
        },
    })
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
