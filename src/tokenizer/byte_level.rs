//! GPT-2's byte ↔ unicode mapping (`bytes_to_unicode` in openai/gpt-2 `encoder.py`, the
//! `ByteLevel` pre-tokenizer/decoder of Hugging Face `tokenizers`, `unicode_byte_to_utf8` in
//! llama.cpp): every byte is spelled as one printable character, so that byte-level BPE
//! vocabularies can be stored as text. Printable Latin-1 bytes map to themselves, the other 68
//! bytes to U+0100.. in byte order (space → `Ġ`, newline → `Ċ`).

/// The character that spells byte `b`.
pub(crate) fn byte_to_char(b: u8) -> char {
    BYTE_TO_CHAR[b as usize]
}

/// The byte a character spells, if it is one of the 256 mapped characters.
pub(crate) fn char_to_byte(c: char) -> Option<u8> {
    let c = c as u32;
    if c < 0x100 {
        let b = c as u8;
        if is_printable(b) {
            return Some(b);
        }
        return None;
    }
    // U+0100 + k is the k-th non-printable byte.
    let k = c - 0x100;
    if k < 68 {
        NON_PRINTABLE.get(k as usize).copied()
    } else {
        None
    }
}

/// Decodes a byte-level token string into bytes; characters outside the mapping are kept as
/// their UTF-8 bytes (what `tokenizers`' ByteLevel decoder does).
pub(crate) fn decode_into(text: &str, out: &mut Vec<u8>) {
    for c in text.chars() {
        match char_to_byte(c) {
            Some(b) => out.push(b),
            None => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
}

/// Spells bytes as byte-level characters.
pub(crate) fn encode_into(bytes: &[u8], out: &mut String) {
    out.extend(bytes.iter().map(|&b| byte_to_char(b)));
}

const fn is_printable(b: u8) -> bool {
    matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF)
}

const NON_PRINTABLE: [u8; 68] = {
    let mut out = [0u8; 68];
    let mut n = 0;
    let mut b = 0usize;
    while b < 256 {
        if !is_printable(b as u8) {
            out[n] = b as u8;
            n += 1;
        }
        b += 1;
    }
    out
};

const BYTE_TO_CHAR: [char; 256] = {
    let mut out = ['\0'; 256];
    let mut n = 0u32;
    let mut b = 0usize;
    while b < 256 {
        out[b] = if is_printable(b as u8) {
            b as u8 as char
        } else {
            let c = match char::from_u32(0x100 + n) {
                Some(c) => c,
                None => '\0',
            };
            n += 1;
            c
        };
        b += 1;
    }
    out
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpt2_mapping() {
        assert_eq!(byte_to_char(b' '), 'Ġ');
        assert_eq!(byte_to_char(b'\n'), 'Ċ');
        assert_eq!(byte_to_char(b'a'), 'a');
        assert_eq!(byte_to_char(0xAD), 'Ń');
        for b in 0..=255u8 {
            assert_eq!(char_to_byte(byte_to_char(b)), Some(b));
        }
        assert_eq!(char_to_byte('€'), None);
    }
}
