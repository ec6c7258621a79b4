//! The `bytes` kind: the synthetic byte-level tokenizer of test packages. Token id `b` is byte
//! `b` (0..=255); the special tokens come from the model config (ids 256 and up). The package
//! tensor holds [`BYTES_TOKENIZER_MAGIC`] and nothing else.

use super::TokenTable;
use crate::model::config::BYTES_TOKENIZER_MAGIC;
use crate::{Error, Result};

/// Checks the tensor bytes and returns the table of the 256 byte tokens.
pub(crate) fn parse(bytes: &[u8]) -> Result<TokenTable> {
    if bytes != BYTES_TOKENIZER_MAGIC {
        return Err(Error::format(
            "bytes tokenizer",
            format!(
                "the tokenizer bytes ({} bytes) are not `{}`",
                bytes.len(),
                String::from_utf8_lossy(BYTES_TOKENIZER_MAGIC)
            ),
        ));
    }
    let mut table = TokenTable::with_capacity(256, 256);
    for b in 0..=255u8 {
        table.push(Some(&[b]));
    }
    Ok(table)
}
