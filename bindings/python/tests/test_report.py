"""The end-to-end report through the bindings: MEDREGION_TEST_PACKAGE names a tiny synthetic
package, MEDREGION_TEST_CT and MEDREGION_TEST_MASKS the synthetic phantom's CT and label map
(tests/python_bindings.rs makes them with `medregion convert --synthetic tiny` and
`medregion phantom`)."""

import ctypes
import os
import threading
import unittest

import medregion
from medregion import _native

PACKAGE = os.environ.get("MEDREGION_TEST_PACKAGE")
CT = os.environ.get("MEDREGION_TEST_CT")
MASKS = os.environ.get("MEDREGION_TEST_MASKS")
HEADERS = ["Lung", "Large airways", "Mediastinum", "Heart and great vessels", "Osseous structures",
           "Upper abdomen"]


def without_timings(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k != "timings"}


class LayoutTest(unittest.TestCase):
    def test_struct_layout_matches_the_library(self):
        for cls, fn in [(_native.ReportParams, "mr_report_params_default"),
                        (_native.SessionParams, "mr_session_params_default"),
                        (_native.MasksParams, "mr_masks_params_default")]:
            p = cls()
            self.assertEqual(getattr(medregion._lib, fn)(ctypes.byref(p)), medregion.OK)
            self.assertEqual(p.struct_size, ctypes.sizeof(cls), cls.__name__)
        self.assertEqual(ctypes.sizeof(_native.ReportParams), 48)
        self.assertEqual(ctypes.sizeof(_native.ReportEvent), 32)
        p = _native.ReportParams()
        medregion._lib.mr_report_params_default(ctypes.byref(p))
        self.assertEqual((p.max_new_tokens, p.regions, p.batch_regions), (0, None, -1))
        p = _native.SessionParams()
        medregion._lib.mr_session_params_default(ctypes.byref(p))
        self.assertEqual((p.max_batch, p.activations), (8, 0))

    def test_bad_activations_are_refused_before_the_library_is_called(self):
        with self.assertRaises(ValueError) as ctx:
            medregion.Session(None, activations="fp32")
        self.assertIn("activations", str(ctx.exception))


@unittest.skipUnless(PACKAGE and CT and MASKS, "MEDREGION_TEST_PACKAGE/CT/MASKS not set")
class ReportTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.doc = medregion.report(PACKAGE, CT, MASKS, max_new_tokens=4)

    def test_report_document(self):
        doc = self.doc
        self.assertEqual(doc["schema_version"], 1)
        self.assertEqual(len(doc["regions"]), 6)
        for r in doc["regions"]:
            self.assertTrue(r["text"], r)
            self.assertLessEqual(r["tokens"], 4)
        self.assertIn("Lung volume:", doc["attributes"]["text"])
        self.assertEqual(doc["study"]["ct_dims"], [192, 192, 80])
        again = medregion.report(PACKAGE, CT, MASKS, labels="totalseg", max_new_tokens=4, threads=1)
        self.assertEqual(without_timings(again), without_timings(doc))

    def test_f32_activations_session_reports(self):
        with medregion.Model(PACKAGE) as model, medregion.Volume(CT) as ct, \
                medregion.Masks(MASKS) as masks, \
                medregion.Session(model, threads=1, activations="f32") as session:
            rep = session.generate_report(ct, masks, regions=["lung"], max_new_tokens=4)
            self.assertEqual([k for k, _ in rep.regions], ["lung"])
            self.assertTrue(rep.regions[0][1])

    def test_session_report_and_callbacks(self):
        events, tokens = [], {}
        with medregion.Model(PACKAGE) as model, medregion.Volume(CT) as ct, \
                medregion.Masks(MASKS) as masks, medregion.Session(model, threads=2) as session:
            rep = session.generate_report(
                ct, masks, regions=["upper_abdomen", "lung"], max_new_tokens=4,
                on_progress=lambda e: events.append(e),
                on_token=lambda i, key, text: tokens.setdefault((i, key), []).append(text))
            self.assertEqual([k for k, _ in rep.regions], ["upper_abdomen", "lung"])
            by_key = {r["key"]: r["text"] for r in self.doc["regions"]}
            for key, text in rep.regions:
                self.assertEqual(text, by_key[key])
                self.assertIn(f"\n{HEADERS[5 if key == 'upper_abdomen' else 0]}:\n{text}\n", rep.text)
            self.assertEqual(rep.data()["regions"][1]["text"], by_key["lung"])
            stages = [e["stage"] for e in events if e["kind"] == "stage"]
            self.assertEqual(stages, ["preprocess", "attributes", "encoder", "tokens", "region", "region"])
            self.assertEqual([e["region"] for e in events if e["stage"] == "region"], ["upper_abdomen", "lung"])
            progress = [e for e in events if e["kind"] == "progress"]
            self.assertTrue(progress and all(e["stage"] == "encoder" for e in progress))
            self.assertEqual(progress[-1]["index"], progress[-1]["count"])
            self.assertEqual(sorted(tokens), [(0, "upper_abdomen"), (1, "lung")])
            for (i, key), pieces in tokens.items():
                self.assertIn(rep.regions[i][1], "".join(pieces))

            # Returning True from a callback cancels.
            seen = []
            with self.assertRaises(medregion.MedregionError) as ctx:
                session.generate_report(ct, masks, max_new_tokens=4,
                                        on_token=lambda i, key, text: seen.append(text) or True)
            self.assertEqual(ctx.exception.status, medregion.ERR_CANCELLED)
            self.assertEqual(len(seen), 1)
            with self.assertRaises(medregion.MedregionError) as ctx:
                session.generate_report(ct, masks, on_progress=lambda e: e["stage"] == "encoder")
            self.assertEqual(ctx.exception.status, medregion.ERR_CANCELLED)

            # Raising from a callback cancels too, with the exception as the cause.
            def boom(_event):
                raise KeyError("boom")
            with self.assertRaises(medregion.MedregionError) as ctx:
                session.generate_report(ct, masks, on_progress=boom)
            self.assertEqual(ctx.exception.status, medregion.ERR_CANCELLED)
            self.assertIsInstance(ctx.exception.__cause__, KeyError)

            # Session.cancel from another thread.
            started = threading.Event()

            def wait_for_cancel(e):
                if e["stage"] == "encoder" and e["kind"] == "stage":
                    started.set()
                    canceller.join()

            canceller = threading.Thread(target=lambda: (started.wait(), session.cancel()))
            canceller.start()
            with self.assertRaises(medregion.MedregionError) as ctx:
                session.generate_report(ct, masks, on_progress=wait_for_cancel)
            self.assertEqual(ctx.exception.status, medregion.ERR_CANCELLED)

            # The session still works after the failures.
            again = session.generate_report(ct, masks, regions="lung", max_new_tokens=4)
            self.assertEqual(again.regions, [("lung", by_key["lung"])])

    def test_errors(self):
        with self.assertRaises(medregion.MedregionError) as ctx:
            medregion.report(PACKAGE, CT, MASKS, regions=["lung", "no_such_region"])
        self.assertEqual(ctx.exception.status, medregion.ERR_INVALID_ARGUMENT)
        self.assertIn("no_such_region", str(ctx.exception))
        with self.assertRaises(medregion.MedregionError) as ctx:
            medregion.report(PACKAGE, "/nonexistent/ct.nrrd", MASKS)
        self.assertEqual(ctx.exception.status, medregion.ERR_IO)
        self.assertIn("/nonexistent/ct.nrrd", str(ctx.exception))
        with self.assertRaises(ValueError):
            medregion.report(PACKAGE, CT, MASKS, max_new_tokens=0)
        v = medregion.Volume(CT)
        v.close()
        with self.assertRaises(ValueError):
            v._live()


if __name__ == "__main__":
    unittest.main()
