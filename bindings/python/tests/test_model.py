"""Model loading through the bindings; MEDREGION_TEST_PACKAGE names a tiny synthetic package
(tests/python_bindings.rs makes one with `medregion convert --synthetic tiny`)."""

import os
import unittest

import medregion

PACKAGE = os.environ.get("MEDREGION_TEST_PACKAGE")


@unittest.skipUnless(PACKAGE, "MEDREGION_TEST_PACKAGE not set")
class ModelTest(unittest.TestCase):
    def test_load_info_config(self):
        with medregion.Model(PACKAGE, verify_checksum=True) as m:
            info = m.info()
            self.assertEqual(info["tokenizer"], "bytes")
            self.assertGreater(info["n_params"], 0)
            self.assertEqual(info["file_bytes"], os.path.getsize(PACKAGE))
            cfg = m.config()
            self.assertIn("decoder", cfg)
            self.assertEqual(cfg["name"], info["name"])
        with self.assertRaises(ValueError):
            m.info()

    def test_from_bytes(self):
        with open(PACKAGE, "rb") as f:
            data = f.read()
        m = medregion.Model.from_bytes(data)
        self.assertEqual(m.info()["file_bytes"], len(data))
        m.close()
        m.close()  # idempotent

    def test_errors(self):
        with self.assertRaises(medregion.MedregionError) as ctx:
            medregion.Model("/nonexistent/model.safetensors")
        self.assertEqual(ctx.exception.status, medregion.ERR_IO)
        with open(PACKAGE, "rb") as f:
            data = f.read()
        with self.assertRaises(medregion.MedregionError) as ctx:
            medregion.Model.from_bytes(data[: len(data) // 3])
        self.assertEqual(ctx.exception.status, medregion.ERR_FORMAT)

    def test_device(self):
        # This library is built without CUDA (or the machine has no driver): a CUDA model is
        # refused with the reason, before the file is read; a bad device string before any call.
        cuda = [d for d in medregion.devices() if d["kind"] == "cuda"]
        if not any(d["available"] for d in cuda):
            with self.assertRaises(medregion.MedregionError) as ctx:
                medregion.Model(PACKAGE, device="cuda:0")
            self.assertEqual(ctx.exception.status, medregion.ERR_UNSUPPORTED)
            self.assertIn("cuda:0", ctx.exception.message)
        for bad in ("gpu", "cuda:-1", "cuda:x", "cpu:0", ""):
            with self.assertRaises(ValueError):
                medregion.Model(PACKAGE, device=bad)
        with medregion.Model(PACKAGE, device="cpu") as m:
            self.assertGreater(m.info()["n_params"], 0)
        # The GPU settings: checked before any call, ignored on the CPU.
        with self.assertRaises(ValueError):
            medregion.Model(PACKAGE, gpu_encoder="fp8")
        with medregion.Model(PACKAGE, gpu_encoder="bf16", gpu_prefill_copies=True) as m:
            self.assertGreater(m.info()["n_params"], 0)


if __name__ == "__main__":
    unittest.main()
