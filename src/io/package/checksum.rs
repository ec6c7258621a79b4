//! The package checksum (defined in the module doc of `crate::io::package`).

use sha2::{Digest, Sha256};

use crate::tensor::DType;

/// Prefix of the checksum value.
pub const CHECKSUM_PREFIX: &str = "sha256:";

/// Length of a checksum value: `sha256:` + 64 hex digits.
pub(crate) const CHECKSUM_LEN: usize = 7 + 64;

/// One tensor as the checksum preamble lists it.
pub(crate) struct ChecksumEntry<'a> {
    pub name: &'a str,
    pub dtype: DType,
    pub shape: &'a [usize],
    /// Relative to the data section.
    pub begin: usize,
    pub end: usize,
}

/// The preamble `P` of the checksum.
pub(crate) fn preamble<'a>(
    format_version: u32,
    tokenizer: &str,
    config_json: &str,
    entries: impl Iterator<Item = ChecksumEntry<'a>>,
    data_len: usize,
) -> Vec<u8> {
    let mut p = String::new();
    p.push_str("medregion-package\n");
    p.push_str(&format!("format_version={format_version}\n"));
    p.push_str(&format!("tokenizer={tokenizer}\n"));
    p.push_str(&format!("config={}\n{config_json}\n", config_json.len()));
    for e in entries {
        let dims: Vec<String> = e.shape.iter().map(|d| d.to_string()).collect();
        p.push_str(&format!(
            "tensor={} {} [{}] {} {}\n",
            e.name,
            e.dtype.name(),
            dims.join(","),
            e.begin,
            e.end
        ));
    }
    p.push_str(&format!("data={data_len}\n"));
    p.into_bytes()
}

/// Streaming SHA-256 that renders as `sha256:<hex>`.
pub(crate) struct ChecksumHasher(Sha256);

impl ChecksumHasher {
    pub fn new() -> Self {
        ChecksumHasher(Sha256::new())
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    pub fn finish(self) -> String {
        let digest = self.0.finalize();
        let mut out = String::with_capacity(CHECKSUM_LEN);
        out.push_str(CHECKSUM_PREFIX);
        for b in digest {
            out.push_str(&format!("{b:02x}"));
        }
        out
    }
}

/// Whether `text` has the form of a checksum value.
pub(crate) fn is_well_formed(text: &str) -> bool {
    text.len() == CHECKSUM_LEN
        && text.starts_with(CHECKSUM_PREFIX)
        && text[CHECKSUM_PREFIX.len()..].bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preamble_text_and_hash() {
        let shape = [2usize, 3];
        let p = preamble(
            1,
            "bytes",
            "{}",
            [ChecksumEntry { name: "a", dtype: DType::F32, shape: &shape, begin: 0, end: 24 }].into_iter(),
            24,
        );
        assert_eq!(
            String::from_utf8(p).unwrap(),
            "medregion-package\nformat_version=1\ntokenizer=bytes\nconfig=2\n{}\ntensor=a F32 [2,3] 0 24\ndata=24\n"
        );
        let mut h = ChecksumHasher::new();
        h.update(b"abc");
        assert_eq!(h.finish(), "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert!(is_well_formed("sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
        assert!(!is_well_formed("sha256:BA7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
    }
}
