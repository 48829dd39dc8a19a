//! The packed uint8 layout of Hugging Face transformers' BitNet `pack_weights`.
//!
//! A ternary weight `W[out, in]` is stored as uint8 `[out/4, in]`, packed along the *output*
//! dimension: with `P = out / 4`, byte `[p, c]` holds `W[i*P + p, c] + 1` at bits `2i..2i+2`
//! for `i = 0..4`, so `W[i*P + p, c] = ((byte >> 2i) & 3) - 1`.

use super::{check_len, check_ternary};
use crate::{Error, Result};

const FORMAT: &str = "HF packed";

fn check_shape(out_features: usize, in_features: usize) -> Result<usize> {
    if !out_features.is_multiple_of(4) {
        return Err(Error::format(
            FORMAT,
            format!("out_features {out_features} is not a multiple of 4"),
        ));
    }
    out_features.checked_mul(in_features).ok_or_else(|| {
        Error::format(
            FORMAT,
            format!("shape [{out_features}, {in_features}] overflows"),
        )
    })
}

/// Packs row-major ternary `values` of shape `[out_features, in_features]`.
pub fn pack(values: &[i8], out_features: usize, in_features: usize) -> Result<Vec<u8>> {
    let n = check_shape(out_features, in_features)?;
    check_len(FORMAT, "value count", values.len(), n)?;
    check_ternary(FORMAT, values)?;
    let plane = n / 4; // elements in one group of P output rows
    let mut out = vec![0u8; plane];
    for i in 0..4 {
        let rows = &values[i * plane..(i + 1) * plane];
        for (byte, &v) in out.iter_mut().zip(rows) {
            *byte |= ((v + 1) as u8) << (2 * i);
        }
    }
    Ok(out)
}

/// Unpacks `[out_features/4, in_features]` bytes into row-major `[out_features, in_features]`
/// ternary values. Code 3 (which would decode to +2) is an error.
pub fn unpack(bytes: &[u8], out_features: usize, in_features: usize) -> Result<Vec<i8>> {
    let n = check_shape(out_features, in_features)?;
    let plane = n / 4;
    check_len(FORMAT, "packed data", bytes.len(), plane)?;
    if let Some(at) = bytes
        .iter()
        .position(|&b| (0..4).any(|i| (b >> (2 * i)) & 3 == 3))
    {
        return Err(Error::format(
            FORMAT,
            format!("invalid code 3 (value +2) in packed byte {at}"),
        ));
    }
    let mut out = vec![0i8; n];
    for (i, rows) in out.chunks_exact_mut(plane.max(1)).enumerate().take(4) {
        for (v, &b) in rows.iter_mut().zip(bytes) {
            *v = ((b >> (2 * i)) & 3) as i8 - 1;
        }
    }
    Ok(out)
}

/// Unpacks output row `row` of `[out_features/4, in_features]` packed bytes into `out`
/// (`in_features` values), without unpacking the rest of the tensor.
pub fn unpack_row(
    bytes: &[u8],
    out_features: usize,
    in_features: usize,
    row: usize,
    out: &mut [i8],
) -> Result<()> {
    let n = check_shape(out_features, in_features)?;
    check_len(FORMAT, "packed data", bytes.len(), n / 4)?;
    check_len(FORMAT, "row buffer", out.len(), in_features)?;
    if row >= out_features {
        return Err(Error::format(
            FORMAT,
            format!("row {row} is outside the {out_features} output features"),
        ));
    }
    let plane_rows = out_features / 4;
    let (shift, p) = (2 * (row / plane_rows), row % plane_rows);
    let src = &bytes[p * in_features..(p + 1) * in_features];
    for (col, (v, &b)) in out.iter_mut().zip(src).enumerate() {
        let code = (b >> shift) & 3;
        if code == 3 {
            return Err(Error::format(
                FORMAT,
                format!(
                    "invalid code 3 (value +2) in packed byte {}",
                    p * in_features + col
                ),
            ));
        }
        *v = code as i8 - 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_4x2() {
        // Column 0 rows 0..4 = [1, 0, -1, 1] -> codes 2,1,0,2 -> 2 | 1<<2 | 0<<4 | 2<<6 = 0x86.
        // Column 1 rows 0..4 = [-1, -1, 0, 1] -> codes 0,0,1,2 -> 1<<4 | 2<<6 = 0x90.
        let w = [1, -1, 0, -1, -1, 0, 1, 1];
        let packed = pack(&w, 4, 2).unwrap();
        assert_eq!(packed, vec![0x86, 0x90]);
        assert_eq!(unpack(&packed, 4, 2).unwrap(), w);
    }

    #[test]
    fn hand_computed_8x3() {
        // P = 2: byte [p, c] holds rows p, 2+p, 4+p, 6+p of column c.
        let mut w = vec![0i8; 24];
        w[5 * 3 + 2] = 1; // row 5 = 2*2 + 1 -> byte [1, 2], bits 5-4
        w[6 * 3] = -1; // row 6 = 3*2 + 0 -> byte [0, 0], bits 7-6
        let packed = pack(&w, 8, 3).unwrap();
        let mut want = vec![0x55u8; 6];
        want[3 + 2] = 0b01_10_01_01;
        want[0] = 0b00_01_01_01;
        assert_eq!(packed, want);
        assert_eq!(unpack(&packed, 8, 3).unwrap(), w);
    }

    #[test]
    fn rows_unpack_like_the_whole_tensor() {
        let (rows, cols) = (12, 5);
        let w: Vec<i8> = (0..rows * cols).map(|i| (i % 3) as i8 - 1).collect();
        let packed = pack(&w, rows, cols).unwrap();
        let mut row = vec![0i8; cols];
        for r in 0..rows {
            unpack_row(&packed, rows, cols, r, &mut row).unwrap();
            assert_eq!(row, w[r * cols..(r + 1) * cols], "row {r}");
        }
        assert!(unpack_row(&packed, rows, cols, rows, &mut row).is_err());
        assert!(unpack_row(&packed, rows, cols, 0, &mut [0; 4]).is_err());
        let mut bad = packed.clone();
        bad[7] = 0xFF;
        assert!(unpack_row(&bad, rows, cols, 1, &mut row)
            .unwrap_err()
            .to_string()
            .contains("byte 7"));
    }

    #[test]
    fn rejects_bad_input() {
        assert!(pack(&[0; 6], 3, 2).is_err());
        assert!(pack(&[0; 7], 4, 2).is_err());
        assert!(pack(&[0, 0, 0, 0, 0, 0, 0, -2], 4, 2).is_err());
        assert!(unpack(&[0x55], 4, 2).is_err());
        assert!(unpack(&[0x55, 0xFF], 4, 2).is_err());
        assert!(unpack(&[], usize::MAX - 3, 2).is_err());
    }

    #[test]
    fn empty_shapes() {
        assert_eq!(pack(&[], 0, 5).unwrap(), Vec::<u8>::new());
        assert_eq!(unpack(&[], 8, 0).unwrap(), Vec::<i8>::new());
    }
}
