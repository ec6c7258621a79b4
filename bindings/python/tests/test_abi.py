"""Tests of the ctypes bindings against the real shared library (run by tests/python_bindings.rs
with MEDREGION_LIBRARY pointing at target/release/libmedregion.so)."""

import ctypes
import threading
import unittest

import medregion
from medregion import _native


class BindingsTest(unittest.TestCase):
    def test_versions(self):
        self.assertEqual(medregion.abi_version(), _native.ABI_VERSION)
        self.assertRegex(medregion.version(), r"^\d+\.\d+\.\d+")

    def test_abi_mismatch_is_refused(self):
        status = medregion._lib.mr_init(_native.ABI_VERSION + 1)
        self.assertEqual(status, medregion.ERR_ABI_MISMATCH)
        self.assertIn("ABI", medregion._last_error())

    def test_devices(self):
        devs = medregion.devices()
        self.assertGreaterEqual(len(devs), 2)
        self.assertEqual(devs[0]["kind"], "cpu")
        self.assertTrue(devs[0]["available"])
        self.assertGreaterEqual(devs[0]["compute_units"], 1)
        for d in devs[1:]:
            self.assertEqual(d["kind"], "cuda")
            if not d["available"]:
                self.assertTrue(d["reason"])

    def test_struct_layout_matches_header(self):
        self.assertEqual(ctypes.sizeof(_native.DeviceDesc), 416)
        d = _native.DeviceDesc()
        self.assertEqual(medregion._lib.mr_device_desc_default(ctypes.byref(d)), medregion.OK)
        self.assertEqual(d.struct_size, ctypes.sizeof(_native.DeviceDesc))

    def test_errors_carry_status_and_message(self):
        with self.assertRaises(medregion.MedregionError) as ctx:
            medregion._check(medregion._lib.mr_device_count(None))
        self.assertEqual(ctx.exception.status, medregion.ERR_NULL_POINTER)
        self.assertEqual(ctx.exception.status_name, "MR_ERR_NULL_POINTER")
        self.assertIn("out_count", ctx.exception.message)

    def test_bad_device_index(self):
        d = _native.DeviceDesc()
        medregion._lib.mr_device_desc_default(ctypes.byref(d))
        status = medregion._lib.mr_device_info(10_000, ctypes.byref(d))
        self.assertEqual(status, medregion.ERR_NOT_FOUND)

    def test_panic_boundary(self):
        with self.assertRaises(medregion.MedregionError) as ctx:
            medregion._test_panic("python boom")
        self.assertEqual(ctx.exception.status, medregion.ERR_INTERNAL)
        self.assertIn("python boom", str(ctx.exception))
        self.assertTrue(medregion.devices())  # still alive

    def test_status_names(self):
        self.assertEqual(medregion.status_name(medregion.OK), "MR_OK")
        self.assertEqual(medregion.status_name(medregion.ERR_INTERNAL), "MR_ERR_INTERNAL")
        self.assertEqual(medregion.status_name(999), "MR_UNKNOWN_STATUS")

    def test_log_callback(self):
        seen = []
        medregion.set_log(lambda level, msg: seen.append((level, msg)), medregion.LOG_DEBUG)
        try:
            medregion._lib.mr_device_count(None)
            self.assertTrue(any(l == medregion.LOG_DEBUG and "out_count" in m for l, m in seen))
            # a raising callback does not break the library
            medregion.set_log(lambda level, msg: 1 / 0, medregion.LOG_DEBUG)
            self.assertEqual(medregion._lib.mr_device_count(None), medregion.ERR_NULL_POINTER)
        finally:
            medregion.set_log(None)
        n = len(seen)
        medregion._lib.mr_device_count(None)
        self.assertEqual(len(seen), n)

    def test_last_error_is_per_thread(self):
        medregion._lib.mr_device_count(None)
        mine = medregion._last_error()
        other = []
        t = threading.Thread(target=lambda: other.append(medregion._last_error()))
        t.start()
        t.join()
        self.assertEqual(other, [""])
        self.assertEqual(medregion._last_error(), mine)


if __name__ == "__main__":
    unittest.main()
