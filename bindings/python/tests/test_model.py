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


if __name__ == "__main__":
    unittest.main()
