"""medregion: Python bindings over the C ABI (include/medregion.h), with ctypes.

Nothing here goes beyond what the C ABI offers. Every failing call raises MedregionError,
which carries the status code, its name and the library's message.

    import medregion
    print(medregion.version(), medregion.devices())
    medregion.set_log(lambda level, msg: print(level, msg), medregion.LOG_INFO)
"""

import ctypes
import json
import os
import threading

from . import _native

__all__ = [
    "MedregionError", "Model", "version", "abi_version", "devices", "set_log", "status_name",
    "LOG_NONE", "LOG_ERROR", "LOG_WARN", "LOG_INFO", "LOG_DEBUG", "LOG_TRACE",
    "OK", "ERR_INVALID_ARGUMENT", "ERR_NULL_POINTER", "ERR_BUFFER_TOO_SMALL", "ERR_ABI_MISMATCH",
    "ERR_IO", "ERR_FORMAT", "ERR_UNSUPPORTED", "ERR_SHAPE", "ERR_OUT_OF_MEMORY", "ERR_DEVICE",
    "ERR_BUSY", "ERR_CANCELLED", "ERR_NOT_FOUND", "ERR_INTERNAL",
]

(OK, ERR_INVALID_ARGUMENT, ERR_NULL_POINTER, ERR_BUFFER_TOO_SMALL, ERR_ABI_MISMATCH, ERR_IO,
 ERR_FORMAT, ERR_UNSUPPORTED, ERR_SHAPE, ERR_OUT_OF_MEMORY, ERR_DEVICE, ERR_BUSY, ERR_CANCELLED,
 ERR_NOT_FOUND, ERR_INTERNAL) = range(15)
LOG_NONE, LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG, LOG_TRACE = range(6)
DEVICE_CPU, DEVICE_CUDA = 0, 1

_lib = _native.load()


class MedregionError(RuntimeError):
    """A failed medregion call: `.status` (int), `.status_name` and the message."""

    def __init__(self, status: int, message: str):
        self.status = status
        self.status_name = status_name(status)
        self.message = message
        super().__init__(f"{self.status_name}: {message}")


def status_name(status: int) -> str:
    return _lib.mr_status_name(status).decode()


def _check(status: int) -> None:
    if status != OK:
        raise MedregionError(status, _last_error())


def _last_error() -> str:
    needed = ctypes.c_size_t(0)
    if _lib.mr_last_error_copy(None, 0, ctypes.byref(needed)) != OK:
        return ""
    buf = ctypes.create_string_buffer(needed.value)
    if _lib.mr_last_error_copy(buf, needed.value, ctypes.byref(needed)) != OK:
        return ""
    return buf.value.decode("utf-8", "replace")


def version() -> str:
    """The engine version, e.g. '0.1.0'."""
    return _lib.mr_version_string().decode()


def abi_version() -> int:
    """The C ABI version of the loaded library."""
    return int(_lib.mr_abi_version())


def devices() -> list:
    """Every device: dicts with kind ('cpu'/'cuda'), ordinal, available, name, reason,
    memory_bytes, compute_units. The CPU comes first."""
    n = ctypes.c_size_t(0)
    _check(_lib.mr_device_count(ctypes.byref(n)))
    out = []
    for i in range(n.value):
        d = _native.DeviceDesc()
        _check(_lib.mr_device_desc_default(ctypes.byref(d)))
        _check(_lib.mr_device_info(i, ctypes.byref(d)))
        out.append({
            "kind": "cpu" if d.kind == DEVICE_CPU else "cuda",
            "ordinal": d.ordinal,
            "available": bool(d.available),
            "name": d.name.decode("utf-8", "replace"),
            "reason": d.reason.decode("utf-8", "replace"),
            "memory_bytes": d.memory_bytes,
            "compute_units": d.compute_units,
        })
    return out


_log_lock = threading.Lock()
_log_keepalive = []  # every installed callback stays alive: one may be running on another thread


def set_log(callback, max_level: int = LOG_INFO) -> None:
    """Routes library messages with level <= max_level to callback(level, message);
    None turns logging off. Exceptions raised by the callback are swallowed."""
    with _log_lock:
        if callback is None:
            _check(_lib.mr_log_set(_native.LOG_CALLBACK(), LOG_NONE, None))
            return

        def trampoline(level, message, _user_data):
            try:
                callback(int(level), message.decode("utf-8", "replace"))
            except Exception:  # never let an exception reach the C caller
                pass

        c_fn = _native.LOG_CALLBACK(trampoline)
        _check(_lib.mr_log_set(c_fn, max_level, None))
        _log_keepalive.append(c_fn)


class Model:
    """A loaded model package (immutable; usable from several threads).

    Model(path, verify_checksum=False) maps a file; Model.from_bytes(data) uses a bytes-like
    object in place (kept referenced by the Model). Use as a context manager or call close().
    """

    def __init__(self, path, verify_checksum: bool = False):
        self._handle = None
        self._keep = None
        handle = ctypes.c_void_p()
        _check(_lib.mr_model_load(os.fsencode(path), self._params(verify_checksum), ctypes.byref(handle)))
        self._handle = handle

    @classmethod
    def from_bytes(cls, data, verify_checksum: bool = False) -> "Model":
        self = cls.__new__(cls)
        self._handle = None
        buf = (ctypes.c_char * len(data)).from_buffer_copy(data)  # owned, aligned copy
        handle = ctypes.c_void_p()
        _check(_lib.mr_model_load_from_memory(
            buf, len(data), cls._params(verify_checksum), ctypes.byref(handle)))
        self._keep = buf
        self._handle = handle
        return self

    @staticmethod
    def _params(verify_checksum: bool):
        p = _native.ModelParams()
        _check(_lib.mr_model_params_default(ctypes.byref(p)))
        p.verify_checksum = 1 if verify_checksum else 0
        return ctypes.byref(p)

    def _live(self):
        if not self._handle:
            raise ValueError("the model is closed")
        return self._handle

    def info(self) -> dict:
        """name, format_version, n_weights, n_params, file_bytes, checksum, tokenizer."""
        d = _native.ModelDesc()
        _check(_lib.mr_model_desc_default(ctypes.byref(d)))
        _check(_lib.mr_model_info(self._live(), ctypes.byref(d)))
        return {
            "name": d.name.decode(), "format_version": d.format_version, "n_weights": d.n_weights,
            "n_params": d.n_params, "file_bytes": d.file_bytes, "checksum": d.checksum.decode(),
            "tokenizer": d.tokenizer.decode(),
        }

    def config(self) -> dict:
        """The model configuration (parsed JSON)."""
        needed = ctypes.c_size_t(0)
        _check(_lib.mr_model_config_json(self._live(), None, 0, ctypes.byref(needed)))
        buf = ctypes.create_string_buffer(needed.value)
        _check(_lib.mr_model_config_json(self._live(), buf, needed.value, ctypes.byref(needed)))
        return json.loads(buf.value.decode())

    def close(self) -> None:
        if self._handle:
            _lib.mr_model_free(self._handle)
            self._handle = None
        self._keep = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def _test_panic(message: str) -> None:
    """Triggers the library's panic-boundary test hook (always raises MedregionError)."""
    _check(_lib.mr_test_panic(message.encode()))


_check(_lib.mr_init(_native.ABI_VERSION))
