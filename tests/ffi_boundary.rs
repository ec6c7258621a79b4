//! The C ABI's conventions, exercised from Rust through the exported functions themselves:
//! per-thread last-error messages, the panic boundary, status names, buffer-size reporting and
//! the log callback's delivery across threads.

use std::ffi::{c_char, c_void, CStr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use medregion::ffi::*;

fn last_error() -> String {
    // SAFETY: mr_last_error_message never returns NULL and the string lives until the next failure.
    unsafe { CStr::from_ptr(mr_last_error_message()) }.to_string_lossy().into_owned()
}

// Tests in this file share the process-wide log sink: each holds this lock so the log test
// counts only its own messages.
static LOG_LOCK: Mutex<()> = Mutex::new(());

#[test]
fn last_error_is_per_thread() {
    let _guard = LOG_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    // SAFETY: NULL is a valid (rejected) argument.
    assert_eq!(unsafe { mr_device_count(std::ptr::null_mut()) }, MR_ERR_NULL_POINTER);
    let here = last_error();
    assert!(here.contains("out_count"), "{here}");
    let there = std::thread::spawn(|| {
        let before = last_error();
        assert_eq!(mr_init(MR_ABI_VERSION + 7), MR_ERR_ABI_MISMATCH);
        (before, last_error())
    })
    .join()
    .unwrap();
    assert_eq!(there.0, "", "a new thread starts with no message");
    assert!(there.1.contains("ABI 8") && there.1.contains("ABI 1"), "{}", there.1);
    assert_eq!(last_error(), here, "another thread's failure must not change ours");
}

#[test]
fn success_does_not_clear_the_last_error() {
    let _guard = LOG_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    assert_eq!(mr_init(MR_ABI_VERSION + 1), MR_ERR_ABI_MISMATCH);
    let msg = last_error();
    assert_eq!(mr_init(MR_ABI_VERSION), MR_OK);
    assert_eq!(last_error(), msg);
}

#[test]
fn panics_become_internal_errors_on_many_threads() {
    let _guard = LOG_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let handles: Vec<_> = (0..8)
        .map(|i| {
            std::thread::spawn(move || {
                let msg = std::ffi::CString::new(format!("panic number {i}")).unwrap();
                // SAFETY: valid NUL-terminated string.
                let status = unsafe { mr_test_panic(msg.as_ptr()) };
                (status, last_error())
            })
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        let (status, msg) = h.join().expect("the thread survived the panic");
        assert_eq!(status, MR_ERR_INTERNAL);
        assert!(msg.contains(&format!("panic number {i}")), "{msg}");
        assert!(msg.contains("src/ffi/core.rs"), "the location is kept: {msg}");
    }
}

#[test]
fn status_names_cover_every_code() {
    let _guard = LOG_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    for code in 0..=14u32 {
        // SAFETY: static strings.
        let name = unsafe { CStr::from_ptr(mr_status_name(code)) }.to_str().unwrap();
        assert!(name.starts_with("MR_") && name != "MR_UNKNOWN_STATUS", "{code}: {name}");
    }
    // SAFETY: static string.
    assert_eq!(unsafe { CStr::from_ptr(mr_status_name(15)) }.to_str().unwrap(), "MR_UNKNOWN_STATUS");
}

#[test]
fn error_copy_reports_the_needed_size() {
    let _guard = LOG_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    assert_eq!(mr_init(0), MR_ERR_ABI_MISMATCH);
    let msg = last_error();
    let mut needed = 0usize;
    // SAFETY: size query with NULL buffer.
    assert_eq!(unsafe { mr_last_error_copy(std::ptr::null_mut(), 0, &mut needed) }, MR_OK);
    assert_eq!(needed, msg.len() + 1);
    let mut small = vec![b'#' as c_char; needed - 1];
    // SAFETY: buffer of the given length.
    let s = unsafe { mr_last_error_copy(small.as_mut_ptr(), small.len(), &mut needed) };
    assert_eq!(s, MR_ERR_BUFFER_TOO_SMALL);
    assert!(small.iter().all(|&c| c == b'#' as c_char), "a short buffer is untouched");
    let mut exact = vec![0 as c_char; needed];
    // SAFETY: buffer of the given length.
    assert_eq!(unsafe { mr_last_error_copy(exact.as_mut_ptr(), exact.len(), std::ptr::null_mut()) }, MR_OK);
    // SAFETY: NUL-terminated by the call.
    assert_eq!(unsafe { CStr::from_ptr(exact.as_ptr()) }.to_str().unwrap(), msg);
}

static DELIVERED: AtomicUsize = AtomicUsize::new(0);

unsafe extern "C" fn count_messages(level: mr_log_level, message: *const c_char, user_data: *mut c_void) {
    assert!(!message.is_null());
    assert!((MR_LOG_ERROR..=MR_LOG_TRACE).contains(&level));
    assert_eq!(user_data as usize, 0xfeed);
    DELIVERED.fetch_add(1, Ordering::SeqCst);
}

#[test]
fn log_callback_receives_messages_from_every_thread() {
    let _guard = LOG_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    DELIVERED.store(0, Ordering::SeqCst);
    assert_eq!(mr_log_set(Some(count_messages), MR_LOG_DEBUG, 0xfeed as *mut c_void), MR_OK);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(|| {
                for _ in 0..25 {
                    // SAFETY: NULL is rejected.
                    assert_eq!(unsafe { mr_device_count(std::ptr::null_mut()) }, MR_ERR_NULL_POINTER);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(mr_log_set(None, MR_LOG_NONE, std::ptr::null_mut()), MR_OK);
    assert_eq!(DELIVERED.load(Ordering::SeqCst), 100, "one debug message per failed call");
    // SAFETY: NULL is rejected.
    assert_eq!(unsafe { mr_device_count(std::ptr::null_mut()) }, MR_ERR_NULL_POINTER);
    assert_eq!(DELIVERED.load(Ordering::SeqCst), 100, "nothing after logging is turned off");
}

#[test]
fn device_list_matches_the_rust_api() {
    let _guard = LOG_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let mut n = 0usize;
    // SAFETY: valid out pointer.
    assert_eq!(unsafe { mr_device_count(&mut n) }, MR_OK);
    assert_eq!(n, medregion::devices().len());
    let mut d = std::mem::MaybeUninit::<mr_device_desc>::uninit();
    // SAFETY: valid out pointer; default initialises every byte.
    let mut d = unsafe {
        assert_eq!(mr_device_desc_default(d.as_mut_ptr()), MR_OK);
        d.assume_init()
    };
    for (i, dev) in medregion::devices().iter().enumerate() {
        // SAFETY: valid struct with struct_size set.
        assert_eq!(unsafe { mr_device_info(i, &mut d) }, MR_OK);
        // SAFETY: NUL-terminated by the library.
        let name = unsafe { CStr::from_ptr(d.name.as_ptr()) }.to_str().unwrap();
        assert!(dev.name.starts_with(name));
        assert_eq!(d.available != 0, dev.available);
    }
}
