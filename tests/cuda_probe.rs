//! Built only with `--features cuda` (the README's test command includes that run). On a machine
//! without a CUDA driver (CI, the developers' machines) the probe must not panic and must list one
//! CUDA entry marked unavailable, with the reason; on a GPU machine it must list real devices.

#![cfg(feature = "cuda")]

use medregion::{devices, DeviceKind};

fn driver_present() -> bool {
    ["libcuda.so.1", "libcuda.so"].iter().any(|name| {
        // SAFETY: dlopen of the system's CUDA driver library by name; nothing is called.
        unsafe { libloading_probe(name) }
    })
}

/// Minimal dlopen check via the C library, so the test does not depend on cudarc internals.
unsafe fn libloading_probe(name: &str) -> bool {
    extern "C" {
        fn dlopen(filename: *const std::ffi::c_char, flag: i32) -> *mut std::ffi::c_void;
    }
    let c = std::ffi::CString::new(name).unwrap();
    // SAFETY: valid NUL-terminated name; RTLD_LAZY = 1. The handle is deliberately not closed.
    !unsafe { dlopen(c.as_ptr(), 1) }.is_null()
}

#[test]
fn cuda_probe_reports_instead_of_failing() {
    let list = devices();
    assert_eq!(list[0].kind, DeviceKind::Cpu);
    let cuda: Vec<_> = list.iter().filter(|d| d.kind == DeviceKind::Cuda).collect();
    assert!(!cuda.is_empty(), "a CUDA build always lists CUDA devices or why there are none");
    if driver_present() {
        for d in cuda {
            assert!(d.available || !d.reason.is_empty());
        }
    } else {
        assert_eq!(cuda.len(), 1);
        assert!(!cuda[0].available);
        assert!(cuda[0].reason.contains("no CUDA driver"), "{}", cuda[0].reason);
    }
}

#[test]
fn opening_a_gpu_without_one_is_an_error_not_a_panic() {
    use medregion::backend::cuda::Gpu;
    let usable = devices().iter().any(|d| d.kind == DeviceKind::Cuda && d.available);
    if !usable {
        let err = Gpu::open(0).expect_err("no usable CUDA device");
        let text = err.to_string();
        assert!(text.contains("cuda:0"), "{text}");
    }
    // An ordinal past the last device is an error on every machine.
    let err = Gpu::open(4096).expect_err("no such device");
    assert!(err.to_string().contains("cuda:4096"), "{err}");
}
