"""Loads libmedregion and declares the C signatures of include/medregion.h for ctypes.

The library is found, in order, at: $MEDREGION_LIBRARY; next to this package
(medregion/libmedregion.so, for wheels that bundle it); the repository's target/release and
target/debug folders (for a source checkout); then the system loader path.
"""

import ctypes
import os
import sys
from pathlib import Path

ABI_VERSION = 1  # MR_ABI_VERSION of the header these declarations mirror


def _library_name() -> str:
    if sys.platform == "darwin":
        return "libmedregion.dylib"
    if sys.platform == "win32":
        return "medregion.dll"
    return "libmedregion.so"


def _candidates():
    env = os.environ.get("MEDREGION_LIBRARY")
    if env:
        yield Path(env)
        return
    here = Path(__file__).resolve().parent
    yield here / _library_name()
    repo = here.parent.parent.parent
    for profile in ("release", "debug"):
        yield repo / "target" / profile / _library_name()
    yield Path(_library_name())  # system loader path


def load() -> ctypes.CDLL:
    errors = []
    for path in _candidates():
        if path.is_absolute() and not path.exists():
            errors.append(f"{path}: not found")
            continue
        try:
            return _declare(ctypes.CDLL(str(path)))
        except OSError as exc:
            errors.append(f"{path}: {exc}")
    raise OSError("cannot load libmedregion; set MEDREGION_LIBRARY to its path. Tried:\n  " + "\n  ".join(errors))


LOG_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_uint32, ctypes.c_char_p, ctypes.c_void_p)


class DeviceDesc(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("kind", ctypes.c_uint32),
        ("ordinal", ctypes.c_int32),
        ("available", ctypes.c_int32),
        ("memory_bytes", ctypes.c_uint64),
        ("compute_units", ctypes.c_uint32),
        ("name", ctypes.c_char * 128),
        ("reason", ctypes.c_char * 256),
        ("reserved", ctypes.c_uint32),
    ]


class ModelParams(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("verify_checksum", ctypes.c_int32),
        ("device_kind", ctypes.c_uint32),
        ("device_ordinal", ctypes.c_int32),
        ("gpu_encoder", ctypes.c_int32),
        ("gpu_prefill_copies", ctypes.c_int32),
    ]


class ModelDesc(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("format_version", ctypes.c_uint32),
        ("n_weights", ctypes.c_uint64),
        ("n_params", ctypes.c_uint64),
        ("file_bytes", ctypes.c_uint64),
        ("name", ctypes.c_char * 128),
        ("checksum", ctypes.c_char * 80),
        ("tokenizer", ctypes.c_char * 16),
    ]


class MasksParams(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("label_table", ctypes.c_uint32),
        ("label_table_json", ctypes.c_char_p),
    ]


class SessionParams(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("context", ctypes.c_uint32),
        ("threads", ctypes.c_uint32),
        ("max_batch", ctypes.c_uint32),
        ("activations", ctypes.c_uint32),
    ]


class ReportEvent(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("kind", ctypes.c_int32),
        ("stage", ctypes.c_int32),
        ("index", ctypes.c_uint32),
        ("count", ctypes.c_uint32),
        ("region", ctypes.c_char_p),
    ]


REPORT_PROGRESS_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p, ctypes.POINTER(ReportEvent))
REPORT_TOKEN_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int32, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t)


class ReportParams(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("max_new_tokens", ctypes.c_uint32),
        ("regions", ctypes.c_char_p),
        ("batch_regions", ctypes.c_int32),
        ("on_progress", REPORT_PROGRESS_CALLBACK),
        ("on_token", REPORT_TOKEN_CALLBACK),
        ("user_data", ctypes.c_void_p),
    ]


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    u32, sz, cp = ctypes.c_uint32, ctypes.c_size_t, ctypes.c_char_p
    sigs = {
        "mr_init": (u32, [u32]),
        "mr_abi_version": (u32, []),
        "mr_version_string": (cp, []),
        "mr_status_name": (cp, [u32]),
        "mr_last_error_message": (cp, []),
        "mr_last_error_copy": (u32, [ctypes.c_char_p, sz, ctypes.POINTER(sz)]),
        "mr_test_panic": (u32, [cp]),
        "mr_device_desc_default": (u32, [ctypes.POINTER(DeviceDesc)]),
        "mr_device_count": (u32, [ctypes.POINTER(sz)]),
        "mr_device_info": (u32, [sz, ctypes.POINTER(DeviceDesc)]),
        "mr_log_set": (u32, [LOG_CALLBACK, u32, ctypes.c_void_p]),
        "mr_model_params_default": (u32, [ctypes.POINTER(ModelParams)]),
        "mr_model_load": (u32, [cp, ctypes.POINTER(ModelParams), ctypes.POINTER(ctypes.c_void_p)]),
        "mr_model_load_from_memory": (
            u32, [ctypes.c_void_p, sz, ctypes.POINTER(ModelParams), ctypes.POINTER(ctypes.c_void_p)]),
        "mr_model_free": (None, [ctypes.c_void_p]),
        "mr_model_desc_default": (u32, [ctypes.POINTER(ModelDesc)]),
        "mr_model_info": (u32, [ctypes.c_void_p, ctypes.POINTER(ModelDesc)]),
        "mr_model_config_json": (u32, [ctypes.c_void_p, ctypes.c_char_p, sz, ctypes.POINTER(sz)]),
        "mr_volume_load": (u32, [cp, ctypes.POINTER(ctypes.c_void_p)]),
        "mr_volume_free": (None, [ctypes.c_void_p]),
        "mr_masks_params_default": (u32, [ctypes.POINTER(MasksParams)]),
        "mr_masks_load": (u32, [cp, ctypes.POINTER(MasksParams), ctypes.POINTER(ctypes.c_void_p)]),
        "mr_masks_free": (None, [ctypes.c_void_p]),
        "mr_session_params_default": (u32, [ctypes.POINTER(SessionParams)]),
        "mr_session_create": (u32, [ctypes.c_void_p, ctypes.POINTER(SessionParams), ctypes.POINTER(ctypes.c_void_p)]),
        "mr_session_cancel": (u32, [ctypes.c_void_p]),
        "mr_session_free": (None, [ctypes.c_void_p]),
        "mr_report_params_default": (u32, [ctypes.POINTER(ReportParams)]),
        "mr_session_generate_report": (u32, [
            ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(ReportParams),
            ctypes.POINTER(ctypes.c_void_p)]),
        "mr_report_json": (u32, [ctypes.c_void_p, ctypes.c_char_p, sz, ctypes.POINTER(sz)]),
        "mr_report_text": (u32, [ctypes.c_void_p, ctypes.c_char_p, sz, ctypes.POINTER(sz)]),
        "mr_report_region_count": (u32, [ctypes.c_void_p, ctypes.POINTER(sz)]),
        "mr_report_region_key": (u32, [ctypes.c_void_p, sz, ctypes.c_char_p, sz, ctypes.POINTER(sz)]),
        "mr_report_region_text": (u32, [ctypes.c_void_p, sz, ctypes.c_char_p, sz, ctypes.POINTER(sz)]),
        "mr_report_free": (None, [ctypes.c_void_p]),
    }
    for name, (restype, argtypes) in sigs.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes
    return lib
