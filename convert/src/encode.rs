//! Tensor bytes in the output types: ternary projections in the outtype, float rows (embedding,
//! LM head, norms) in F32/F16/Q8_0/Q6_K/Q4_0. Shape checks run before any file is created so a
//! tensor that cannot be stored is reported up front, never silently written in another type.

use bitnet_backend::formats::{i2s, q4_0, q6_k, q8_0, tq1_0, tq2_0};
use bitnet_backend::gguf::GgmlType;
use half::{bf16, f16};

use crate::error::{ConvertError, Result};
use crate::options::{EmbeddingType, OutType};

/// The ggml type of ternary projections for an outtype.
pub fn ternary_type(outtype: OutType) -> GgmlType {
    match outtype {
        OutType::I2S => GgmlType::I2S,
        OutType::Tq2_0 => GgmlType::TQ2_0,
        OutType::Tq1_0 => GgmlType::TQ1_0,
        OutType::F16 => GgmlType::F16,
        OutType::F32 => GgmlType::F32,
    }
}

/// The ggml type of float rows for an embedding type.
pub fn float_type(ty: EmbeddingType) -> GgmlType {
    match ty {
        EmbeddingType::F32 => GgmlType::F32,
        EmbeddingType::F16 => GgmlType::F16,
        EmbeddingType::Q8_0 => GgmlType::Q8_0,
        EmbeddingType::Q6K => GgmlType::Q6_K,
        EmbeddingType::Q4_0 => GgmlType::Q4_0,
        EmbeddingType::BF16 => GgmlType::BF16,
    }
}

/// Checks a projection whose rows hold `row_len` values fits `outtype`'s blocks.
pub fn check_ternary_shape(name: &str, row_len: usize, outtype: OutType) -> Result<()> {
    let block = match outtype {
        OutType::I2S => i2s::BLOCK,
        OutType::Tq2_0 | OutType::Tq1_0 => tq2_0::BLOCK,
        OutType::F16 | OutType::F32 => return Ok(()),
    };
    if row_len.is_multiple_of(block) {
        return Ok(());
    }
    let block_of = |t: OutType| {
        if t == OutType::I2S {
            i2s::BLOCK
        } else {
            tq2_0::BLOCK
        }
    };
    let others: Vec<&str> = [OutType::I2S, OutType::Tq2_0, OutType::Tq1_0]
        .into_iter()
        .filter(|&t| t != outtype && row_len.is_multiple_of(block_of(t)))
        .map(OutType::name)
        .collect();
    let hint = if others.is_empty() {
        "pick --outtype f16 or f32 (any row length) instead".to_string()
    } else {
        format!("pick another --outtype: {} or f16/f32", others.join(", "))
    };
    Err(ConvertError::OutType {
        name: name.to_string(),
        ty: outtype.name(),
        problem: format!(
            "its rows hold {row_len} values, not a multiple of the {block}-value block"
        ),
        hint,
    })
}

/// Checks float rows of `row_len` values fit the embedding type's blocks.
pub fn check_float_shape(
    name: &str,
    row_len: usize,
    ty: EmbeddingType,
    option: &str,
) -> Result<()> {
    let block = match ty {
        EmbeddingType::F32 | EmbeddingType::F16 | EmbeddingType::BF16 => 1,
        EmbeddingType::Q8_0 => q8_0::BLOCK,
        EmbeddingType::Q4_0 => q4_0::BLOCK,
        EmbeddingType::Q6K => q6_k::BLOCK,
    };
    if row_len.is_multiple_of(block) {
        return Ok(());
    }
    Err(ConvertError::OutType {
        name: name.to_string(),
        ty: ty.name(),
        problem: format!(
            "its rows hold {row_len} values, not a multiple of the {block}-value block"
        ),
        hint: format!("pick another {option} (f16 or f32 always work)"),
    })
}

/// Encodes ternary codes with their scale in the outtype.
pub fn encode_ternary(codes: &[i8], scale: f32, outtype: OutType) -> Result<Vec<u8>> {
    Ok(match outtype {
        OutType::I2S => i2s::pack(codes, scale)?,
        OutType::Tq2_0 => tq2_0::pack_ternary(codes, scale)?,
        OutType::Tq1_0 => tq1_0::pack_ternary(codes, scale)?,
        OutType::F16 => codes
            .iter()
            .flat_map(|&c| f16::from_f32(c as f32 * scale).to_le_bytes())
            .collect(),
        OutType::F32 => codes
            .iter()
            .flat_map(|&c| (c as f32 * scale).to_le_bytes())
            .collect(),
    })
}

/// Encodes whole rows of floats in the embedding type.
pub fn encode_float(x: &[f32], ty: EmbeddingType) -> Result<Vec<u8>> {
    Ok(match ty {
        EmbeddingType::F32 => x.iter().flat_map(|v| v.to_le_bytes()).collect(),
        EmbeddingType::F16 => x
            .iter()
            .flat_map(|&v| f16::from_f32(v).to_le_bytes())
            .collect(),
        EmbeddingType::BF16 => x
            .iter()
            .flat_map(|&v| bf16::from_f32(v).to_le_bytes())
            .collect(),
        EmbeddingType::Q8_0 => q8_0::quantize(x)?,
        EmbeddingType::Q6K => q6_k::quantize(x)?,
        EmbeddingType::Q4_0 => q4_0::quantize(x)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_errors_name_the_tensor_and_alternatives() {
        let e = check_ternary_shape("blk.0.ffn_down.weight", 8640, OutType::I2S)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("blk.0.ffn_down.weight") && e.contains("8640") && e.contains("f16 or f32"),
            "{e}"
        );
        let e = check_ternary_shape("w", 384, OutType::Tq2_0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("i2_s"), "{e}");
        assert!(check_ternary_shape("w", 2560, OutType::I2S).is_ok());
        assert!(check_ternary_shape("w", 100, OutType::F16).is_ok());
        let e = check_float_shape(
            "token_embd.weight",
            320,
            EmbeddingType::Q6K,
            "--token-embedding-type",
        )
        .unwrap_err();
        assert!(e.to_string().contains("--token-embedding-type"), "{e}");
    }

    #[test]
    fn dense_encodings() {
        assert_eq!(
            encode_ternary(&[1, -1, 0], 0.5, OutType::F32).unwrap(),
            [0.5f32, -0.5, 0.0]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<_>>()
        );
        assert_eq!(
            encode_float(&[1.0, -2.0], EmbeddingType::F16).unwrap(),
            vec![0x00, 0x3c, 0x00, 0xc0]
        );
    }
}
