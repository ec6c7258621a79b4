//! CUDA device probe (feature `cuda`). cudarc loads libcuda dynamically and PANICS on the first
//! call when the library is missing (DESIGN §9), so presence is checked first with
//! `is_culib_present`, and the caller keeps a panic boundary around this anyway.

use cudarc::driver::{result, sys};

use super::{DeviceInfo, DeviceKind};

/// Every CUDA device, or why there is none.
pub(super) fn probe() -> Result<Vec<DeviceInfo>, String> {
    // SAFETY: only tries to dlopen the driver library by its usual names.
    if !unsafe { sys::is_culib_present() } {
        return Err("no CUDA driver found (libcuda.so could not be loaded)".to_string());
    }
    result::init().map_err(|e| format!("the CUDA driver failed to initialise: {e:?}"))?;
    let count = result::device::get_count().map_err(|e| format!("cuDeviceGetCount failed: {e:?}"))?;
    let mut list = Vec::new();
    for ordinal in 0..count {
        let dev = match result::device::get(ordinal) {
            Ok(d) => d,
            Err(e) => {
                list.push(DeviceInfo {
                    kind: DeviceKind::Cuda,
                    ordinal,
                    available: false,
                    reason: format!("cuDeviceGet failed: {e:?}"),
                    name: "CUDA".to_string(),
                    memory_bytes: 0,
                    compute_units: 0,
                });
                continue;
            }
        };
        let name = result::device::get_name(dev).unwrap_or_else(|_| "CUDA device".to_string());
        // SAFETY: `dev` came from cuDeviceGet above.
        let memory_bytes = unsafe { result::device::total_mem(dev) }.unwrap_or(0) as u64;
        // SAFETY: as above.
        let sms = unsafe {
            result::device::get_attribute(
                dev,
                sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
            )
        }
        .unwrap_or(0);
        list.push(DeviceInfo {
            kind: DeviceKind::Cuda,
            ordinal,
            available: true,
            reason: String::new(),
            name,
            memory_bytes,
            compute_units: sms.max(0) as u32,
        });
    }
    Ok(list)
}
