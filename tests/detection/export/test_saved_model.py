"""SavedModel export of the detector: TF OD API signatures, loaded without this project, and
train/serve parity with `model.predict` (boxes within 1e-3 after normalisation)."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import png_bytes

pytestmark = pytest.mark.tf_only

tf = pytest.importorskip("tensorflow")

SIZES = ((64, 64), (48, 80), (72, 56))  # batch 3 of mixed sizes (height, width)


def _images():
    from detector_helpers import mixed_size_images

    return mixed_size_images(SIZES)


def _reference(model, image: np.ndarray) -> dict:
    """`model.predict` on one image (sizes differ, so per image), in TF OD API form."""
    dets = model.predict(image[None].astype("float32"), verbose=0)
    h, w = image.shape[:2]
    n = int(dets["num_detections"][0])
    x1, y1, x2, y2 = np.asarray(dets["boxes"][0, :n]).T
    return {"boxes": np.stack([y1 / h, x1 / w, y2 / h, x2 / w], -1),
            "scores": np.asarray(dets["scores"][0, :n]),
            "classes": np.asarray(dets["classes"][0, :n]) + 1, "n": n}


def _check(served: dict, b: int, ref: dict) -> None:
    n = int(served["num_detections"][b])
    assert n == ref["n"]
    np.testing.assert_allclose(served["detection_boxes"][b, :n], ref["boxes"], atol=1e-3)
    np.testing.assert_allclose(served["detection_scores"][b, :n], ref["scores"], atol=1e-4)
    np.testing.assert_array_equal(served["detection_classes"][b, :n], ref["classes"])
    # padding rows as the OD API: zero boxes, scores and class ids
    assert not np.any(served["detection_classes"][b, n:])
    assert not np.any(served["detection_boxes"][b, n:])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from detector_helpers import tiny_detector

    from detection.export import export_saved_model

    # A low score threshold so the untrained detector still returns boxes to compare.
    model = tiny_detector(score_threshold=0.0, max_detections=10)
    path = export_saved_model(model, tmp_path_factory.mktemp("export") / "saved")
    return model, path


def test_loads_without_project_and_matches_predict(exported, tmp_path):
    model, path = exported
    images = _images()
    np.save(tmp_path / "same.npy", np.stack([images[0]] * 2 + [images[0][:, ::-1]]))
    for i, image in enumerate(images):
        (tmp_path / f"{i}.png").write_bytes(png_bytes(image))
    script = textwrap.dedent(f"""
        import json, sys
        import numpy as np, tensorflow as tf
        assert not any(m.startswith(("detection", "keras_resnet_suite")) for m in sys.modules)
        for name in ("detection", "keras_resnet_suite"):
            sys.modules[name] = None  # importing the project fails here, installed or not
        loaded = tf.saved_model.load({str(path)!r})
        out = {{"signatures": sorted(loaded.signatures)}}
        single = loaded.signatures["serving_default"](images=tf.constant(
            np.load("same.npy")[:1]))
        batch = loaded.signatures["serving_default"](images=tf.constant(np.load("same.npy")))
        blobs = [open(f"{{i}}.png", "rb").read() for i in range(3)]
        encoded = loaded.signatures["serving_bytes"](image_bytes=tf.constant(blobs))
        for name, res in (("single", single), ("batch", batch), ("bytes", encoded)):
            out[name] = {{k: (v.numpy().astype(str) if v.dtype == tf.string else v.numpy())
                          .tolist() for k, v in res.items()}}
            out[name + "_dtypes"] = {{k: v.dtype.name for k, v in res.items()}}
        print(json.dumps(out))
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    proc = subprocess.run([sys.executable, "-I", "-c", script], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["signatures"] == ["serving_bytes", "serving_default"]
    keys = {"detection_boxes", "detection_scores", "detection_classes", "num_detections"}
    # serving_bytes also says, per element, whether it was a decodable image and why not
    assert out["bytes"].pop("valid") == [True] * 3 and out["bytes"].pop("error") == [""] * 3
    assert out["bytes_dtypes"].pop("valid") == "bool"
    assert out["bytes_dtypes"].pop("error") == "string"
    for name in ("single", "batch", "bytes"):
        assert set(out[name]) == keys
        assert out[name + "_dtypes"] == dict.fromkeys(keys, "float32")
        out[name] = {k: np.asarray(v, np.float32) for k, v in out[name].items()}
    ref = _reference(model, images[0])
    assert ref["n"] > 0  # the comparison must have detections to compare
    assert out["single"]["detection_boxes"].shape == (1, 10, 4)
    _check(out["single"], 0, ref)
    # batch 3 of one size (a tensor has one size): every row equals its own predict
    for b, image in enumerate([images[0], images[0], images[0][:, ::-1]]):
        _check(out["batch"], b, _reference(model, np.ascontiguousarray(image)))
    # batch 3 of mixed sizes through the encoded-bytes signature
    for b, image in enumerate(images):
        _check(out["bytes"], b, _reference(model, image))
        boxes = out["bytes"]["detection_boxes"][b]
        assert boxes.min() >= 0.0 and boxes.max() <= 1.0


def test_predict_cli_on_saved_model(exported, tmp_path, capsys):
    from detection import cli

    _, path = exported
    files = []
    for i, image in enumerate(_images()[1:]):
        files.append(tmp_path / f"img{i}.png")
        files[-1].write_bytes(png_bytes(image))
    out = tmp_path / "preds"
    assert cli.main(["predict", *map(str, files), "--model", str(path), "--out", str(out),
                     "--score-threshold", "0"]) == 0
    written = json.loads((out / "detections.json").read_text())
    assert [w["image"] for w in written] == [str(f) for f in files]
    for entry, (h, w) in zip(written, SIZES[1:], strict=True):
        assert (entry["height"], entry["width"]) == (h, w)
        assert 0 < len(entry["detections"]) <= 10
        for det in entry["detections"]:
            x1, y1, x2, y2 = det["box_xyxy"]
            assert 0 <= x1 <= x2 <= w and 0 <= y1 <= y2 <= h
            assert det["class"] in (0, 1, 2) and 0.0 <= det["score"] <= 1.0
        from PIL import Image

        with Image.open(out / f"{Path(entry['image']).stem}.png") as drawn:
            assert (drawn.format, drawn.size) == ("PNG", (w, h))  # the photo's own size
    printed = capsys.readouterr().out
    assert all(f"{f}: " in printed for f in files) and "detections.json" in printed


def test_predict_turns_an_exif_rotated_photo_upright(exported, tmp_path):
    """A phone photo stored on its side with EXIF orientation 6 is detected upright: the same
    detections as the upright pixels, in the upright frame."""
    from PIL import Image

    from detection import cli

    _, path = exported
    upright = _images()[1]
    stored = np.ascontiguousarray(np.rot90(upright, 1))  # orientation 6 turns it back clockwise
    exif = Image.Exif()
    exif[0x0112] = 6
    # PNG (lossless, with an eXIf chunk): upright, the two files hold the very same pixels
    Image.fromarray(stored).save(tmp_path / "phone.png", exif=exif)
    Image.fromarray(upright).save(tmp_path / "plain.png")
    out = tmp_path / "preds"
    assert cli.main(["predict", str(tmp_path / "phone.png"), str(tmp_path / "plain.png"),
                     "--model", str(path), "--out", str(out), "--score-threshold", "0"]) == 0
    phone, plain = json.loads((out / "detections.json").read_text())
    assert (phone["height"], phone["width"]) == upright.shape[:2]
    assert phone["detections"] == plain["detections"] and plain["detections"]


def test_export_refuses_non_detector(tmp_path):
    import keras

    from detection.export import export_saved_model

    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 3)])
    with pytest.raises(ValueError, match="FasterRCNN"):
        export_saved_model(model, tmp_path / "x")
