// SPDX-License-Identifier: Apache-2.0
//! Standard base64 (RFC 4648 §4, with `=` padding), the encoding of QGA's binary members
//! (`input-data`, `out-data`, `buf-b64`, passwords). Written here rather than pulled in as a
//! crate: it is 80 lines. Decoding skips ASCII whitespace anywhere, since Proxmox wraps its
//! base64 at 76 columns and ends it with a newline; padding may be left out.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Why a text is not base64 (`Display` is the text QEMU uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Invalid;

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Base64 data is not valid")
    }
}

/// The length of `encode` of `n` bytes.
pub const fn encoded_len(n: usize) -> usize {
    n.div_ceil(3) * 4
}

/// `data` as padded base64, on one line.
pub fn encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(encoded_len(data.len()));
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(
                    ALPHABET[usize::from(((n >> (18 - 6 * i)) & 63).to_le_bytes()[0])],
                ));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn value(c: u8) -> Option<u32> {
    let v = match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    };
    Some(u32::from(v))
}

/// Decodes `text`, skipping ASCII whitespace. Padding is optional but, when present, must
/// end the text; a lone trailing character (6 bits) is invalid.
pub fn decode(text: &str) -> Result<Vec<u8>, Invalid> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3 + 3);
    let (mut acc, mut bits, mut pad) = (0u32, 0u32, 0usize);
    let mut symbols = 0usize;
    for &c in text.as_bytes() {
        if c.is_ascii_whitespace() {
            continue;
        }
        if c == b'=' {
            pad += 1;
            continue;
        }
        if pad > 0 {
            return Err(Invalid);
        }
        let v = value(c).ok_or(Invalid)?;
        symbols += 1;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits).to_le_bytes()[0]);
        }
        acc &= (1 << bits) - 1;
    }
    let rem = symbols % 4;
    if rem == 1 || pad > 2 || (pad > 0 && (rem + pad) % 4 != 0) {
        return Err(Invalid);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4648_vectors_round_trip() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, coded) in cases {
            assert_eq!(encode(plain.as_bytes()), coded);
            assert_eq!(encoded_len(plain.len()), coded.len());
            assert_eq!(decode(coded).unwrap(), plain.as_bytes());
            assert_eq!(
                decode(coded.trim_end_matches('=')).unwrap(),
                plain.as_bytes()
            );
        }
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(decode(&encode(&all)).unwrap(), all);
    }

    #[test]
    fn wrapped_text_with_a_trailing_newline_decodes() {
        let data: Vec<u8> = (0..200u8).map(|i| i.wrapping_mul(7)).collect();
        let one = encode(&data);
        let wrapped: String = one
            .as_bytes()
            .chunks(76)
            .map(|l| format!("{}\r\n", std::str::from_utf8(l).unwrap()))
            .collect();
        assert_eq!(decode(&wrapped).unwrap(), data);
        assert_eq!(decode(" Zm9v\tYg==\n").unwrap(), b"foob");
    }

    #[test]
    fn garbage_is_refused() {
        for bad in ["Zm9v!", "Z", "Zm9vY", "Zg===", "Zg=a", "=Zg", "Zm8=Zm8="] {
            assert_eq!(decode(bad), Err(Invalid), "{bad}");
        }
        assert_eq!(Invalid.to_string(), "Base64 data is not valid");
    }
}
