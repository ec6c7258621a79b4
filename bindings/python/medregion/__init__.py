"""medregion: Python bindings over the C ABI (include/medregion.h), with ctypes.

Nothing here goes beyond what the C ABI offers. Every failing call raises MedregionError,
which carries the status code, its name and the library's message.

    import medregion
    print(medregion.version(), medregion.devices())
    medregion.set_log(lambda level, msg: print(level, msg), medregion.LOG_INFO)
    doc = medregion.report("model.mrm", "ct.nii.gz", "labels.nii.gz")  # the report JSON, parsed
    print(doc["text"])
"""

import ctypes
import json
import os
import threading

from . import _native

__all__ = [
    "MedregionError", "Model", "Volume", "Masks", "Session", "Report", "report", "version", "abi_version", "devices", "set_log", "status_name",
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
GPU_PRECISION_F32, GPU_PRECISION_BF16 = 0, 1
(LABELS_TOTALSEG, LABELS_RADGENOME, LABELS_JSON, LABELS_TOTALSEG_LUNG_NODULES,
 LABELS_TOTALSEG_PLEURAL_PERICARD_EFFUSION, LABELS_TOTALSEG_KIDNEY_CYSTS) = range(6)
STAGES = ("preprocess", "attributes", "encoder", "tokens", "region")

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


def _copy_string(fn, *args) -> str:
    """A string from a C getter with the size convention (size query, then the copy)."""
    needed = ctypes.c_size_t(0)
    _check(fn(*args, None, 0, ctypes.byref(needed)))
    buf = ctypes.create_string_buffer(needed.value)
    _check(fn(*args, buf, needed.value, ctypes.byref(needed)))
    return buf.value.decode("utf-8", "replace")


class _Handle:
    """An owned C handle freed by `_free` on close(), on leaving a `with` block, or when collected."""

    _free = None
    _what = "object"

    def _live(self):
        if not getattr(self, "_handle", None):
            raise ValueError(f"the {self._what} is closed")
        return self._handle

    def close(self) -> None:
        if getattr(self, "_handle", None):
            getattr(_lib, self._free)(self._handle)
            self._handle = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


class Model(_Handle):
    """A loaded model package (immutable; usable from several threads).

    Model(path, verify_checksum=False, device="cpu", gpu_encoder="f32", gpu_prefill_copies=False)
    maps a file; Model.from_bytes(data, ...) uses a bytes-like object in place (kept referenced
    by the Model). device="cuda:N" (or "cuda") also uploads the model to that GPU, where its
    sessions run (reports and the token-level calls; a library built with CUDA and a driver;
    otherwise MedregionError ERR_UNSUPPORTED with the reason); there gpu_encoder="bf16" runs
    the encoder's GEMMs in bf16 (production speed; "f32" matches the CPU's report) and
    gpu_prefill_copies=True keeps f16 copies of the quantized decoder weights (faster prefill,
    more device memory). Use as a context manager or call close().
    """

    def __init__(self, path, verify_checksum: bool = False, device: str = "cpu",
                 gpu_encoder: str = "f32", gpu_prefill_copies: bool = False):
        self._handle = None
        self._keep = None
        params = self._params(verify_checksum, device, gpu_encoder, gpu_prefill_copies)
        handle = ctypes.c_void_p()
        _check(_lib.mr_model_load(os.fsencode(path), params, ctypes.byref(handle)))
        self._handle = handle

    @classmethod
    def from_bytes(cls, data, verify_checksum: bool = False, device: str = "cpu",
                   gpu_encoder: str = "f32", gpu_prefill_copies: bool = False) -> "Model":
        self = cls.__new__(cls)
        self._handle = None
        params = cls._params(verify_checksum, device, gpu_encoder, gpu_prefill_copies)
        buf = (ctypes.c_char * len(data)).from_buffer_copy(data)  # owned, aligned copy
        handle = ctypes.c_void_p()
        _check(_lib.mr_model_load_from_memory(buf, len(data), params, ctypes.byref(handle)))
        self._keep = buf
        self._handle = handle
        return self

    @staticmethod
    def _params(verify_checksum: bool, device: str, gpu_encoder: str = "f32", gpu_prefill_copies: bool = False):
        kind, sep, n = str(device).partition(":")
        if kind == "cpu" and not sep:
            device_kind, ordinal = DEVICE_CPU, 0
        elif kind == "cuda" and (not sep or (n.isdigit() and n.isascii())):
            device_kind, ordinal = DEVICE_CUDA, int(n) if sep else 0
        else:
            raise ValueError(f"device {device!r} is not 'cpu' or 'cuda[:N]'")
        encoders = {"f32": GPU_PRECISION_F32, "bf16": GPU_PRECISION_BF16}
        if gpu_encoder not in encoders:
            raise ValueError(f"gpu_encoder {gpu_encoder!r} is not 'f32' or 'bf16'")
        p = _native.ModelParams()
        _check(_lib.mr_model_params_default(ctypes.byref(p)))
        p.verify_checksum = 1 if verify_checksum else 0
        p.device_kind = device_kind
        p.device_ordinal = ordinal
        p.gpu_encoder = encoders[gpu_encoder]
        p.gpu_prefill_copies = 1 if gpu_prefill_copies else 0
        return ctypes.byref(p)

    _free = "mr_model_free"
    _what = "model"

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
        super().close()
        self._keep = None


class Volume(_Handle):
    """A CT volume read from a NIfTI-1 (.nii, .nii.gz) or NRRD (.nrrd) file."""

    _free, _what = "mr_volume_free", "volume"

    def __init__(self, path):
        self._handle = None
        handle = ctypes.c_void_p()
        _check(_lib.mr_volume_load(os.fsencode(path), ctypes.byref(handle)))
        self._handle = handle


class Masks(_Handle):
    """Organ and lesion masks: a label map file or a folder of binary masks.

    labels: None or "totalseg" (default), "radgenome", one of the LABELS_* constants, a dict
    (a label configuration) or the path of a JSON label configuration file."""

    _free, _what = "mr_masks_free", "masks"

    def __init__(self, path, labels=None):
        self._handle = None
        p = _native.MasksParams()
        _check(_lib.mr_masks_params_default(ctypes.byref(p)))
        config = None
        if labels is None or labels == "totalseg":
            p.label_table = LABELS_TOTALSEG
        elif labels == "radgenome":
            p.label_table = LABELS_RADGENOME
        elif isinstance(labels, int):
            p.label_table = labels
        elif isinstance(labels, dict):
            config = json.dumps(labels).encode()
        else:
            with open(labels, "rb") as f:
                config = f.read()
        if config is not None:
            p.label_table = LABELS_JSON
            p.label_table_json = config
        handle = ctypes.c_void_p()
        _check(_lib.mr_masks_load(os.fsencode(path), ctypes.byref(p), ctypes.byref(handle)))
        self._handle = handle


class Report:
    """A finished report: `json` (str, schema version 1), `text` (attributes, then each region
    under its "Header:" line), `regions` (list of (key, text)); `data()` parses the JSON."""

    def __init__(self, json_text: str, text: str, regions: list):
        self.json = json_text
        self.text = text
        self.regions = regions

    def data(self) -> dict:
        return json.loads(self.json)


class Session(_Handle):
    """A decoder session over a Model: one thread at a time (another thread's call raises
    MedregionError ERR_BUSY), except cancel(). Keeps the model alive."""

    _free, _what = "mr_session_free", "session"

    ACTIVATIONS = {"int8": 0, "f32": 1}

    def __init__(self, model: Model, context: int = 0, threads: int = 0, max_batch: int = 8,
                 activations: str = "int8"):
        """activations: "int8" (llama.cpp's scheme, the default) or "f32" (quantized weights
        dequantized in registers: the dequantized model's logits to f32 rounding; CPU only)."""
        self._handle = None
        if activations not in self.ACTIVATIONS:
            raise ValueError(f"activations: {activations!r} is not 'int8' or 'f32'")
        p = _native.SessionParams()
        _check(_lib.mr_session_params_default(ctypes.byref(p)))
        p.context, p.threads, p.max_batch = context, threads, max_batch
        p.activations = self.ACTIVATIONS[activations]
        handle = ctypes.c_void_p()
        _check(_lib.mr_session_create(model._live(), ctypes.byref(p), ctypes.byref(handle)))
        self._handle = handle

    def cancel(self) -> None:
        """Stops the running (or next) report; safe from any thread."""
        _check(_lib.mr_session_cancel(self._live()))

    def generate_report(self, ct: Volume, masks: Masks, regions=None, max_new_tokens=None,
                        batch_regions=None, on_progress=None, on_token=None) -> Report:
        """Runs the whole pipeline (mr_session_generate_report).

        regions: region keys (a list or a comma-separated str; None = all). max_new_tokens:
        per region (None = the model's default). batch_regions: None (the model's default),
        False (one by one) or True. on_progress(event) gets dicts {"kind": "stage"|"progress",
        "stage": one of STAGES, "index", "count", "region": key or None}; on_token(index, key,
        text) each piece of region text. A callback returning True, or raising, cancels: the
        call raises MedregionError with status ERR_CANCELLED (the exception as its __cause__)."""
        p = _native.ReportParams()
        _check(_lib.mr_report_params_default(ctypes.byref(p)))
        if max_new_tokens is not None:
            if max_new_tokens < 1:
                raise ValueError("max_new_tokens must be at least 1")
            p.max_new_tokens = max_new_tokens
        if regions is not None:
            p.regions = (regions if isinstance(regions, str) else ",".join(regions)).encode()
        if batch_regions is not None:
            p.batch_regions = 1 if batch_regions else 0
        raised = []

        def guard(fn, *args):
            if raised:
                return 1
            try:
                return 1 if fn(*args) else 0
            except BaseException as exc:  # never let an exception reach the C caller
                raised.append(exc)
                return 1

        if on_progress is not None:
            def progress(_user, e):
                ev = e.contents
                return guard(on_progress, {
                    "kind": "stage" if ev.kind == 0 else "progress",
                    "stage": STAGES[ev.stage] if 0 <= ev.stage < len(STAGES) else ev.stage,
                    "index": ev.index, "count": ev.count,
                    "region": ev.region.decode() if ev.region else None,
                })
            p.on_progress = _native.REPORT_PROGRESS_CALLBACK(progress)
        if on_token is not None:
            def token(_user, index, region, piece, length):
                text = ctypes.string_at(piece, length).decode("utf-8", "replace")
                return guard(on_token, index, region.decode(), text)
            p.on_token = _native.REPORT_TOKEN_CALLBACK(token)
        handle = ctypes.c_void_p()
        status = _lib.mr_session_generate_report(
            self._live(), ct._live(), masks._live(), ctypes.byref(p), ctypes.byref(handle))
        if status != OK:
            err = MedregionError(status, _last_error())
            if raised:
                raise err from raised[0]
            raise err
        try:
            n = ctypes.c_size_t(0)
            _check(_lib.mr_report_region_count(handle, ctypes.byref(n)))
            regions_out = [(_copy_string(_lib.mr_report_region_key, handle, i),
                            _copy_string(_lib.mr_report_region_text, handle, i)) for i in range(n.value)]
            return Report(_copy_string(_lib.mr_report_json, handle),
                          _copy_string(_lib.mr_report_text, handle), regions_out)
        finally:
            _lib.mr_report_free(handle)


def report(model_path, ct_path, masks_path, labels=None, regions=None, max_new_tokens=None,
           threads: int = 0, on_progress=None, on_token=None) -> dict:
    """The whole pipeline on one study: the report JSON, parsed (schema version 1: "study",
    "attributes", "regions" with their "text", the merged "text", "timings"). See
    Session.generate_report for the arguments; labels as for Masks; threads 0 = one per core."""
    with Model(model_path) as model, Volume(ct_path) as ct, Masks(masks_path, labels) as masks, \
            Session(model, threads=threads) as session:
        return session.generate_report(ct, masks, regions=regions, max_new_tokens=max_new_tokens,
                                       on_progress=on_progress, on_token=on_token).data()


def _test_panic(message: str) -> None:
    """Triggers the library's panic-boundary test hook (always raises MedregionError)."""
    _check(_lib.mr_test_panic(message.encode()))


_check(_lib.mr_init(_native.ABI_VERSION))
