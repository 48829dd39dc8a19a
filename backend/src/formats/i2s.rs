//! bitnet.cpp's I2_S layout (GGML type 36 in bitnet.cpp-flavoured GGUF files).
//!
//! Values are flattened row-major (`[rows, cols]`, cols = ggml ne0 = in_features contiguous)
//! and cut into blocks of 128. Block `b` occupies bytes `32b..32b+32`; byte `j` of a block holds
//! the 2-bit codes (`v + 1`: 0 = -1, 1 = 0, 2 = +1) of elements `j`, `j+32`, `j+64`, `j+96`
//! at bits 7-6, 5-4, 3-2, 1-0. After the `n/4` packed bytes comes a 32-byte tail whose
//! first 4 bytes hold the per-tensor f32 scale (little endian). bitnet.cpp's writers leave
//! tail bytes 4..32 as garbage, copies of the scale, or zeros, so readers use bytes 0..4 only;
//! [`pack`] writes zeros there.

use super::{check_len, check_multiple, check_ternary};
use crate::{Error, Result};

const FORMAT: &str = "I2_S";

/// Elements per block.
pub const BLOCK: usize = 128;
/// Packed bytes per block.
pub const BLOCK_BYTES: usize = 32;
/// Bytes after the packed data; the scale is in the first 4.
pub const TAIL_BYTES: usize = 32;

/// Total byte size of an I2_S tensor of `n` elements (`n / 4 + 32`).
pub fn packed_size(n: usize) -> usize {
    n / 4 + TAIL_BYTES
}

/// Packs ternary `values` (length a multiple of 128) and `scale` into a new I2_S buffer.
pub fn pack(values: &[i8], scale: f32) -> Result<Vec<u8>> {
    check_multiple(FORMAT, values.len(), BLOCK)?;
    let mut out = vec![0u8; packed_size(values.len())];
    pack_into(values, scale, &mut out)?;
    Ok(out)
}

/// Packs into `out`, which must be exactly [`packed_size`]`(values.len())` bytes long.
/// The whole tail is written (scale, then 28 zero bytes).
pub fn pack_into(values: &[i8], scale: f32, out: &mut [u8]) -> Result<()> {
    check_multiple(FORMAT, values.len(), BLOCK)?;
    check_len(
        FORMAT,
        "output buffer",
        out.len(),
        packed_size(values.len()),
    )?;
    check_ternary(FORMAT, values)?;
    if !scale.is_finite() {
        return Err(Error::format(
            FORMAT,
            format!("scale {scale} is not finite"),
        ));
    }
    let (data, tail) = out.split_at_mut(values.len() / 4);
    for (block, bytes) in values
        .chunks_exact(BLOCK)
        .zip(data.chunks_exact_mut(BLOCK_BYTES))
    {
        for (j, byte) in bytes.iter_mut().enumerate() {
            let code = |k: usize| (block[k] + 1) as u8;
            *byte = code(j) << 6 | code(j + 32) << 4 | code(j + 64) << 2 | code(j + 96);
        }
    }
    tail[..4].copy_from_slice(&scale.to_le_bytes());
    tail[4..].fill(0);
    Ok(())
}

/// Unpacks `n` ternary values and the scale.
pub fn unpack(bytes: &[u8], n: usize) -> Result<(Vec<i8>, f32)> {
    let mut values = vec![0i8; n];
    let scale = unpack_into(bytes, n, &mut values)?;
    Ok((values, scale))
}

/// Unpacks into `out` (length `n`) and returns the scale. Code 3, which no writer produces,
/// is reported as an error rather than guessed at.
pub fn unpack_into(bytes: &[u8], n: usize, out: &mut [i8]) -> Result<f32> {
    check_multiple(FORMAT, n, BLOCK)?;
    check_len(FORMAT, "tensor data", bytes.len(), packed_size(n))?;
    check_len(FORMAT, "output buffer", out.len(), n)?;
    let data = &bytes[..n / 4];
    let mut saw_code3 = false;
    for (block, packed) in out
        .chunks_exact_mut(BLOCK)
        .zip(data.chunks_exact(BLOCK_BYTES))
    {
        for (j, &b) in packed.iter().enumerate() {
            for (lane, shift) in [6u32, 4, 2, 0].into_iter().enumerate() {
                let code = (b >> shift) & 3;
                saw_code3 |= code == 3;
                block[j + 32 * lane] = code as i8 - 1;
            }
        }
    }
    if saw_code3 {
        let at = data
            .iter()
            .position(|&b| (0..4).any(|k| (b >> (2 * k)) & 3 == 3))
            .unwrap_or(0);
        return Err(Error::format(
            FORMAT,
            format!("invalid 2-bit code 3 in packed byte {at}"),
        ));
    }
    scale(bytes, n)
}

/// Reads the per-tensor scale (tail bytes 0..4 only).
pub fn scale(bytes: &[u8], n: usize) -> Result<f32> {
    check_multiple(FORMAT, n, BLOCK)?;
    check_len(FORMAT, "tensor data", bytes.len(), packed_size(n))?;
    let at = n / 4;
    let raw: [u8; 4] = [bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]];
    Ok(f32::from_le_bytes(raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Elements 0..32 = +1, 32..64 = 0, 64..96 = -1, 96..128 cycle -1, 0, +1.
    fn pattern() -> Vec<i8> {
        let mut v = vec![1i8; 32];
        v.extend([0i8; 32]);
        v.extend([-1i8; 32]);
        v.extend((0..32).map(|j| (j % 3) as i8 - 1));
        v
    }

    #[test]
    fn hand_computed_block() {
        // Byte j = 2<<6 | 1<<4 | 0<<2 | (j % 3) = 0x90 + j % 3.
        let mut want: Vec<u8> = (0..32).map(|j| 0x90 + (j % 3) as u8).collect();
        // Scale 0.5f32 = 0x3F000000 little endian, then 28 zero bytes.
        want.extend([0x00, 0x00, 0x00, 0x3F]);
        want.extend([0u8; 28]);
        assert_eq!(want[..4], [0x90, 0x91, 0x92, 0x90]);
        let got = pack(&pattern(), 0.5).unwrap();
        assert_eq!(got, want);
        assert_eq!(unpack(&got, 128).unwrap(), (pattern(), 0.5));
    }

    #[test]
    fn hand_computed_single_positions() {
        // All -1 (code 0) except element 33 (+1) and element 127 (0):
        // element 33 -> byte 1, bits 5-4 -> 0x20; element 127 -> byte 31, bits 1-0 -> 0x01.
        let mut v = vec![-1i8; 256];
        v[33] = 1;
        v[127] = 0;
        // Second block: element 128 + 64 + 5 = +1 -> byte 32 + 5, bits 3-2 -> 0x08.
        v[128 + 64 + 5] = 1;
        let got = pack(&v, -2.0).unwrap();
        let mut want = vec![0u8; 64 + 32];
        want[1] = 0x20;
        want[31] = 0x01;
        want[37] = 0x08;
        want[64..68].copy_from_slice(&[0x00, 0x00, 0x00, 0xC0]); // -2.0f32
        assert_eq!(got, want);
        assert_eq!(unpack(&got, 256).unwrap(), (v, -2.0));
    }

    #[test]
    fn reading_ignores_tail_bytes_4_to_31() {
        let mut bytes = pack(&pattern(), 0.25).unwrap();
        bytes[32 + 4..].fill(0xAB);
        assert_eq!(scale(&bytes, 128).unwrap(), 0.25);
        assert_eq!(unpack(&bytes, 128).unwrap(), (pattern(), 0.25));
    }

    #[test]
    fn packed_sizes() {
        assert_eq!(packed_size(2560 * 2560), 1_638_432);
        assert_eq!(packed_size(2560 * 640), 409_632);
        assert_eq!(packed_size(2560 * 6912), 4_423_712);
    }

    #[test]
    fn rejects_bad_input() {
        assert!(pack(&[0i8; 100], 1.0).is_err());
        let mut v = pattern();
        v[7] = 2;
        let err = pack(&v, 1.0).unwrap_err().to_string();
        assert!(err.contains("index 7"), "{err}");
        assert!(pack(&pattern(), f32::NAN).is_err());
        assert!(unpack(&[0u8; 63], 128).is_err());
        assert!(unpack(&[0u8; 64], 256).is_err());
        let mut bytes = pack(&pattern(), 1.0).unwrap();
        bytes[3] |= 0x03;
        let err = unpack(&bytes, 128).unwrap_err().to_string();
        assert!(err.contains("code 3 in packed byte 3"), "{err}");
        let mut small = [0u8; 40];
        assert!(pack_into(&pattern(), 1.0, &mut small).is_err());
    }
}
