//! ggml tensor type ids, their block geometry and byte sizes.

use crate::{Error, Result};

/// A ggml tensor type as stored in a GGUF tensor info.
///
/// Ids follow ggml mainline (`ggml.h`), except 36, which is [`GgmlType::I2S`] only in
/// bitnet.cpp-flavoured files (see [`GgmlType::from_id`]). Ids this crate cannot size
/// (removed types, bitnet.cpp's TL1/TL2, future types) are kept as [`GgmlType::Unknown`].
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    IQ2_XXS,
    IQ2_XS,
    IQ3_XXS,
    IQ1_S,
    IQ4_NL,
    IQ3_S,
    IQ2_S,
    IQ4_XS,
    I8,
    I16,
    I32,
    I64,
    F64,
    IQ1_M,
    BF16,
    TQ1_0,
    TQ2_0,
    MXFP4,
    NVFP4,
    Q1_0,
    Q2_0,
    /// bitnet.cpp's I2_S (id 36 in bitnet.cpp-flavoured files): `n/4 + 32` bytes.
    I2S,
    /// An id with no known layout here; its size cannot be computed.
    Unknown(u32),
}

/// Mainline ids (0..=42) with block size and bytes per block; `None` marks removed ids.
const MAINLINE: [Option<(GgmlType, u64, u64)>; 43] = {
    use GgmlType::*;
    [
        Some((F32, 1, 4)),
        Some((F16, 1, 2)),
        Some((Q4_0, 32, 18)),
        Some((Q4_1, 32, 20)),
        None, // 4: Q4_2, removed
        None, // 5: Q4_3, removed
        Some((Q5_0, 32, 22)),
        Some((Q5_1, 32, 24)),
        Some((Q8_0, 32, 34)),
        Some((Q8_1, 32, 40)),
        Some((Q2_K, 256, 84)),
        Some((Q3_K, 256, 110)),
        Some((Q4_K, 256, 144)),
        Some((Q5_K, 256, 176)),
        Some((Q6_K, 256, 210)),
        Some((Q8_K, 256, 292)),
        Some((IQ2_XXS, 256, 66)),
        Some((IQ2_XS, 256, 74)),
        Some((IQ3_XXS, 256, 98)),
        Some((IQ1_S, 256, 50)),
        Some((IQ4_NL, 32, 18)),
        Some((IQ3_S, 256, 110)),
        Some((IQ2_S, 256, 82)),
        Some((IQ4_XS, 256, 136)),
        Some((I8, 1, 1)),
        Some((I16, 1, 2)),
        Some((I32, 1, 4)),
        Some((I64, 1, 8)),
        Some((F64, 1, 8)),
        Some((IQ1_M, 256, 56)),
        Some((BF16, 1, 2)),
        None, // 31..=33: Q4_0_4_4, Q4_0_4_8, Q4_0_8_8, removed
        None,
        None,
        Some((TQ1_0, 256, 54)),
        Some((TQ2_0, 256, 66)),
        None, // 36..=38: IQ4_NL_4_4, IQ4_NL_4_8, IQ4_NL_8_8, removed (36 = I2_S in bitnet.cpp)
        None,
        None,
        Some((MXFP4, 32, 17)),
        Some((NVFP4, 64, 36)),
        Some((Q1_0, 128, 18)),
        Some((Q2_0, 64, 18)),
    ]
};

/// bitnet.cpp's id for I2_S.
pub const I2S_ID: u32 = 36;
/// Elements per I2_S block; rows (ne0) must be a multiple of it.
const I2S_BLOCK: u64 = 128;

impl GgmlType {
    /// Interprets a raw type id. `bitnet_flavoured` says the file comes from bitnet.cpp
    /// (see [`crate::gguf::is_bitnet_flavoured`]): there 36 is I2_S and 37.. are bitnet.cpp's
    /// own types (I8_S, TL1, TL2) that this crate does not decode.
    pub fn from_id(id: u32, bitnet_flavoured: bool) -> GgmlType {
        if bitnet_flavoured && id >= I2S_ID {
            return if id == I2S_ID {
                GgmlType::I2S
            } else {
                GgmlType::Unknown(id)
            };
        }
        match MAINLINE.get(id as usize) {
            Some(Some((t, _, _))) => *t,
            _ => GgmlType::Unknown(id),
        }
    }

    /// The id written to a GGUF file.
    pub fn id(self) -> u32 {
        match self {
            GgmlType::I2S => I2S_ID,
            GgmlType::Unknown(id) => id,
            known => MAINLINE
                .iter()
                .position(|e| matches!(e, Some((t, _, _)) if *t == known))
                .map_or(u32::MAX, |i| i as u32),
        }
    }

    /// Name as ggml prints it (`"TQ2_0"`, `"I2_S"`, `"unknown(36)"` ...).
    pub fn name(self) -> String {
        match self {
            GgmlType::I2S => "I2_S".to_string(),
            GgmlType::Unknown(id) => format!("unknown({id})"),
            other => format!("{other:?}"),
        }
    }

    /// Whether sizes and data of this type can be handled.
    pub fn is_known(self) -> bool {
        !matches!(self, GgmlType::Unknown(_))
    }

    /// `(elements per block, bytes per block)`; `None` for [`GgmlType::Unknown`] and for
    /// [`GgmlType::I2S`], whose size is per tensor (`n/4 + 32`), not per block.
    pub fn block_geometry(self) -> Option<(u64, u64)> {
        MAINLINE
            .iter()
            .flatten()
            .find(|(t, _, _)| *t == self)
            .map(|&(_, b, s)| (b, s))
    }

    /// Bytes of a tensor of this type with ggml dims (`dims[0]` = ne0, contiguous).
    ///
    /// Errors for unknown types, for ne0 not a multiple of the block size (128 for I2_S),
    /// and on overflow.
    pub fn tensor_bytes(self, dims: &[u64]) -> Result<u64> {
        let overflow = || Error::Format {
            format: "ggml tensor",
            problem: format!("dims {dims:?} overflow"),
        };
        let n = dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .ok_or_else(overflow)?;
        let ne0 = dims.first().copied().unwrap_or(1);
        let (block, bytes) = match self {
            GgmlType::Unknown(id) => return Err(Error::UnknownGgmlType { id }),
            GgmlType::I2S => (I2S_BLOCK, I2S_BLOCK / 4),
            _ => self
                .block_geometry()
                .ok_or(Error::UnknownGgmlType { id: self.id() })?,
        };
        if !ne0.is_multiple_of(block) {
            return Err(Error::Format {
                format: "ggml tensor",
                problem: format!(
                    "{} rows must hold whole blocks: ne0 = {ne0} is not a multiple of {block}",
                    self.name()
                ),
            });
        }
        let data = (n / block).checked_mul(bytes).ok_or_else(overflow)?;
        if self == GgmlType::I2S {
            data.checked_add(32).ok_or_else(overflow)
        } else {
            Ok(data)
        }
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        for id in 0..64u32 {
            for flavoured in [false, true] {
                let t = GgmlType::from_id(id, flavoured);
                assert_eq!(t.id(), id, "{t:?}");
            }
        }
        assert_eq!(GgmlType::from_id(34, false), GgmlType::TQ1_0);
        assert_eq!(GgmlType::from_id(35, true), GgmlType::TQ2_0);
        assert_eq!(GgmlType::from_id(36, true), GgmlType::I2S);
        assert_eq!(GgmlType::from_id(36, false), GgmlType::Unknown(36));
        assert_eq!(GgmlType::from_id(39, false), GgmlType::MXFP4);
        assert_eq!(GgmlType::from_id(39, true), GgmlType::Unknown(39));
        assert_eq!(GgmlType::from_id(4, false), GgmlType::Unknown(4));
        assert_eq!(GgmlType::from_id(43, false), GgmlType::Unknown(43));
    }

    #[test]
    fn sizes() {
        assert_eq!(GgmlType::F32.tensor_bytes(&[3, 5]).unwrap(), 60);
        assert_eq!(GgmlType::Q8_0.tensor_bytes(&[64, 2]).unwrap(), 4 * 34);
        assert_eq!(GgmlType::TQ2_0.tensor_bytes(&[512]).unwrap(), 132);
        assert_eq!(GgmlType::TQ1_0.tensor_bytes(&[256, 3]).unwrap(), 162);
        assert_eq!(
            GgmlType::I2S.tensor_bytes(&[2560, 6912]).unwrap(),
            4_423_712
        );
        assert_eq!(GgmlType::F16.tensor_bytes(&[]).unwrap(), 2);
        assert_eq!(GgmlType::F32.tensor_bytes(&[0, 7]).unwrap(), 0);
        assert!(GgmlType::I2S.tensor_bytes(&[8640, 2]).is_err());
        assert!(GgmlType::Q4_0.tensor_bytes(&[48]).is_err());
        assert!(GgmlType::Unknown(36).tensor_bytes(&[128]).is_err());
        assert!(GgmlType::F32.tensor_bytes(&[u64::MAX, 2]).is_err());
        assert!(GgmlType::F64.tensor_bytes(&[1 << 62]).is_err());
    }

    #[test]
    fn names() {
        assert_eq!(GgmlType::TQ1_0.to_string(), "TQ1_0");
        assert_eq!(GgmlType::Q4_K.to_string(), "Q4_K");
        assert_eq!(GgmlType::I2S.to_string(), "I2_S");
        assert_eq!(GgmlType::Unknown(99).to_string(), "unknown(99)");
    }
}
