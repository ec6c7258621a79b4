//! Device listing: `mr_device_count`, `mr_device_info`.

use std::ffi::c_char;

use super::boundary::status_call;
use super::status::*;
use super::util::{fill_char_array, non_null_mut};
use crate::backend::{self, DeviceKind};
use crate::error::Error;

/// Kind of a compute device.
pub type mr_device_kind = u32;
/// The host CPU (always listed first, always available).
pub const MR_DEVICE_CPU: mr_device_kind = 0;
/// An NVIDIA GPU through CUDA.
pub const MR_DEVICE_CUDA: mr_device_kind = 1;

/// Description of one compute device, filled by `mr_device_info`.
/// Set `struct_size` first (`mr_device_desc_default` does it).
#[repr(C)]
pub struct mr_device_desc {
    /// `sizeof(mr_device_desc)` as the caller compiled it.
    pub struct_size: u32,
    /// `MR_DEVICE_CPU` or `MR_DEVICE_CUDA`.
    pub kind: mr_device_kind,
    /// Index among devices of the same kind (the N of `cuda:N`).
    pub ordinal: i32,
    /// 1 when the device can be used, 0 when not (`reason` says why).
    pub available: i32,
    /// Total memory in bytes (system RAM for the CPU); 0 when unknown.
    pub memory_bytes: u64,
    /// Hardware threads (CPU) or streaming multiprocessors (GPU).
    pub compute_units: u32,
    /// Device name, NUL-terminated (truncated if longer).
    pub name: [c_char; 128],
    /// Why the device is unavailable, NUL-terminated; empty when available.
    pub reason: [c_char; 256],
    /// Zero. (Makes the layout free of padding, so every byte the library writes is defined.)
    pub reserved: u32,
}

// No padding anywhere: callers may memcmp/hash the struct, and valgrind sees only defined bytes.
const _: () = assert!(std::mem::size_of::<mr_device_desc>() == 4 * 4 + 8 + 4 + 128 + 256 + 4);

/// Fills `*out` with zeros and the right `struct_size`. `out == NULL` gives `MR_ERR_NULL_POINTER`.
///
/// # Safety
/// `out` must be NULL or point to writable memory for one `mr_device_desc`.
#[no_mangle]
pub unsafe extern "C" fn mr_device_desc_default(out: *mut mr_device_desc) -> mr_status {
    status_call("mr_device_desc_default", || {
        // SAFETY: forwarded caller contract.
        let out = unsafe { non_null_mut(out, "out") }?;
        *out = blank_desc();
        Ok(())
    })
}

fn blank_desc() -> mr_device_desc {
    mr_device_desc {
        struct_size: std::mem::size_of::<mr_device_desc>() as u32,
        kind: MR_DEVICE_CPU,
        ordinal: 0,
        available: 0,
        memory_bytes: 0,
        compute_units: 0,
        name: [0; 128],
        reason: [0; 256],
        reserved: 0,
    }
}

/// Number of listed devices: the CPU, then each usable CUDA device; when CUDA is not usable
/// (not compiled in, no driver, no device) one CUDA entry with `available == 0` and the reason.
/// Devices are probed once per process. Thread-safe.
///
/// # Safety
/// `out_count` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn mr_device_count(out_count: *mut usize) -> mr_status {
    status_call("mr_device_count", || {
        // SAFETY: forwarded caller contract.
        let out = unsafe { non_null_mut(out_count, "out_count") }?;
        *out = backend::devices().len();
        Ok(())
    })
}

/// Describes device `index` (0 <= index < count). `out->struct_size` must be at least
/// `sizeof(mr_device_desc)` of this header (else `MR_ERR_INVALID_ARGUMENT`); a bad index gives
/// `MR_ERR_NOT_FOUND`. Thread-safe.
///
/// # Safety
/// `out` must be NULL or point to a writable `mr_device_desc` whose `struct_size` is set.
#[no_mangle]
pub unsafe extern "C" fn mr_device_info(index: usize, out: *mut mr_device_desc) -> mr_status {
    status_call("mr_device_info", || {
        // SAFETY: forwarded caller contract.
        let out = unsafe { non_null_mut(out, "out") }?;
        let need = std::mem::size_of::<mr_device_desc>() as u32;
        if out.struct_size < need {
            return Err(Error::invalid(
                "out->struct_size",
                format!("is {}, at least {need} needed (call mr_device_desc_default first)", out.struct_size),
            ));
        }
        let list = backend::devices();
        let dev = list.get(index).ok_or_else(|| {
            Error::NotFound(format!("device index {index} (there are {} devices)", list.len()))
        })?;
        let mut desc = blank_desc();
        desc.struct_size = out.struct_size;
        desc.kind = match dev.kind {
            DeviceKind::Cpu => MR_DEVICE_CPU,
            DeviceKind::Cuda => MR_DEVICE_CUDA,
        };
        desc.ordinal = dev.ordinal;
        desc.available = dev.available as i32;
        desc.memory_bytes = dev.memory_bytes;
        desc.compute_units = dev.compute_units;
        fill_char_array(&mut desc.name, &dev.name);
        fill_char_array(&mut desc.reason, &dev.reason);
        *out = desc;
        Ok(())
    })
}
