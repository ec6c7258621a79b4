//! Pointer and string helpers shared by the exports.

use std::ffi::{c_char, CStr};

use crate::error::{Error, Result};

/// `p` as a reference, or `MR_ERR_NULL_POINTER` naming the argument.
///
/// # Safety
/// `p` must be NULL or point to a valid, initialised `T` for the returned lifetime.
pub(crate) unsafe fn non_null<'a, T>(p: *const T, name: &'static str) -> Result<&'a T> {
    // SAFETY: the caller guarantees `p` is NULL or valid; NULL is rejected here.
    unsafe { p.as_ref() }.ok_or(Error::NullPointer(name))
}

/// `p` as a mutable reference, or `MR_ERR_NULL_POINTER` naming the argument.
///
/// # Safety
/// `p` must be NULL or point to a valid `T`, not aliased, for the returned lifetime.
pub(crate) unsafe fn non_null_mut<'a, T>(p: *mut T, name: &'static str) -> Result<&'a mut T> {
    // SAFETY: as above.
    unsafe { p.as_mut() }.ok_or(Error::NullPointer(name))
}

/// A caller's versioned struct (first field `uint32_t struct_size`), or `default` for NULL;
/// refuses a `struct_size` older than ours, naming `name` and the `*_default` function that
/// fills it.
///
/// # Safety
/// `p` must be NULL or readable for its `struct_size` bytes.
pub(crate) unsafe fn read_versioned<T: Copy>(
    p: *const T,
    name: &str,
    default: T,
    default_fn: &str,
) -> Result<T> {
    // SAFETY: forwarded contract; with the current size as the oldest, the whole struct is read.
    unsafe { read_versioned_since(p, name, default, default_fn, std::mem::size_of::<T>() as u32) }
}

/// [`read_versioned`] for a struct that grew: a `struct_size` from `oldest` (the first
/// version's size) up is accepted, the fields the caller's version has are read, and the
/// newer ones keep `default`'s values. Fields are only ever added at the end.
///
/// # Safety
/// `p` must be NULL or readable for its `struct_size` bytes; `T` is a `repr(C)` struct of
/// plain integer and float fields whose first `oldest` bytes are the first version.
pub(crate) unsafe fn read_versioned_since<T: Copy>(
    p: *const T,
    name: &str,
    default: T,
    default_fn: &str,
    oldest: u32,
) -> Result<T> {
    if p.is_null() {
        return Ok(default);
    }
    // SAFETY: `struct_size` is the first field of every version; read it alone first.
    let size = unsafe { p.cast::<u32>().read_unaligned() };
    if size < oldest {
        return Err(Error::invalid(
            format!("{name}->struct_size"),
            format!("is {size}, at least {oldest} needed (call {default_fn} first)"),
        ));
    }
    let mut out = default;
    let n = (size as usize).min(std::mem::size_of::<T>());
    // SAFETY: the caller's struct is readable for `size ≥ n` bytes; `out` is a `T` of
    // `size_of::<T>() ≥ n` bytes; a prefix of plain fields copied byte for byte is a valid
    // value of those fields (the caller's contract on `T`).
    unsafe { std::ptr::copy_nonoverlapping(p.cast::<u8>(), (&mut out as *mut T).cast::<u8>(), n) };
    Ok(out)
}

/// A NUL-terminated UTF-8 string argument.
///
/// # Safety
/// `p` must be NULL or point to a NUL-terminated string that lives for the returned lifetime.
pub(crate) unsafe fn c_str<'a>(p: *const c_char, name: &'static str) -> Result<&'a str> {
    if p.is_null() {
        return Err(Error::NullPointer(name));
    }
    // SAFETY: non-NULL and NUL-terminated per the caller's contract.
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str().map_err(|e| Error::invalid(name, format!("not valid UTF-8 ({e})")))
}

/// Copies `text` plus a NUL terminator into the caller's buffer.
///
/// The needed size (bytes, including the NUL) is written to `*out_needed` whenever
/// `out_needed` is not NULL, even when the buffer is too small. `buf == NULL && buf_len == 0`
/// is a pure size query and succeeds; a too-small buffer is left untouched.
///
/// # Safety
/// `buf` must be NULL or writable for `buf_len` bytes; `out_needed` NULL or writable.
pub(crate) unsafe fn copy_out_str(
    text: &str,
    buf: *mut c_char,
    buf_len: usize,
    out_needed: *mut usize,
    what: &str,
) -> Result<()> {
    let needed = text.len() + 1;
    if !out_needed.is_null() {
        // SAFETY: non-NULL and writable per the contract.
        unsafe { *out_needed = needed };
    }
    if buf.is_null() {
        return if buf_len == 0 { Ok(()) } else { Err(Error::NullPointer("buf")) };
    }
    if buf_len < needed {
        return Err(Error::BufferTooSmall { what: what.to_string(), needed, given: buf_len });
    }
    // SAFETY: `buf` is writable for `buf_len >= needed` bytes and cannot overlap `text`,
    // which Rust owns.
    unsafe {
        std::ptr::copy_nonoverlapping(text.as_ptr(), buf.cast::<u8>(), text.len());
        *buf.add(text.len()) = 0;
    }
    Ok(())
}

/// Copies `text` into a fixed-size C char array, truncating on a UTF-8 boundary, NUL-terminated.
pub(crate) fn fill_char_array(dst: &mut [c_char], text: &str) {
    let max = dst.len().saturating_sub(1);
    let mut end = text.len().min(max);
    while end > 0 && !text.is_char_boundary(end) {
        end -= 1;
    }
    for (d, b) in dst.iter_mut().zip(text.as_bytes()[..end].iter()) {
        *d = *b as c_char;
    }
    for d in dst.iter_mut().skip(end) {
        *d = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn char_array_truncates_on_a_utf8_boundary() {
        let mut buf = [1 as c_char; 6];
        fill_char_array(&mut buf, "abcdé"); // é is 2 bytes: "abcd" + 'é' needs 6 + NUL
        let bytes: Vec<u8> = buf.iter().map(|&c| c as u8).collect();
        assert_eq!(&bytes, b"abcd\0\0");
        fill_char_array(&mut buf, "");
        assert!(buf.iter().all(|&c| c == 0));
    }

    #[test]
    fn copy_out_reports_size_and_leaves_short_buffers_alone() {
        let mut needed = 0usize;
        let mut buf = [7 as c_char; 3];
        // SAFETY: buffer and size pointer are valid.
        let r = unsafe { copy_out_str("hello", buf.as_mut_ptr(), buf.len(), &mut needed, "greeting") };
        assert!(matches!(r, Err(Error::BufferTooSmall { needed: 6, given: 3, .. })));
        assert_eq!(needed, 6);
        assert!(buf.iter().all(|&c| c == 7));
        let mut big = [7 as c_char; 6];
        // SAFETY: as above.
        unsafe { copy_out_str("hello", big.as_mut_ptr(), big.len(), std::ptr::null_mut(), "greeting") }
            .unwrap();
        assert_eq!(big.map(|c| c as u8), *b"hello\0");
    }
}
