"""A MaskRCNN's SavedModel: `detection_masks` (box-relative, `[batch, N, S, S]`) equal to
`model.predict`'s masks through both signatures at any batch, and `python -m detection predict`
drawing and writing the masks (COCO RLE) from the SavedModel (from Keras weights:
tests/detection/engine/test_train_masks.py)."""

import json

import numpy as np
import pytest

from tests.conftest import png_bytes

pytestmark = pytest.mark.tf_only

tf = pytest.importorskip("tensorflow")
mask_utils = pytest.importorskip("pycocotools.mask")

SIZES = ((64, 64), (48, 80))  # mixed sizes through serving_bytes (height, width)


def _images():
    from detector_helpers import mixed_size_images

    return mixed_size_images(SIZES)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from detector_helpers import tiny_detector

    from detection.export import export_saved_model

    # FPN (28x28 masks), a low score threshold so the untrained model still detects
    model = tiny_detector("fpn", masks=True, score_threshold=0.0, max_detections=6)
    folder = tmp_path_factory.mktemp("export")
    return model, export_saved_model(model, folder / "saved")


def _check_row(served: dict, b: int, dets: dict) -> None:
    n = int(dets["num_detections"][0])
    assert n > 0 and int(served["num_detections"][b]) == n
    masks = served["detection_masks"][b]
    assert masks.shape == (6, 28, 28) and masks.dtype == np.float32
    np.testing.assert_allclose(masks[:n], dets["masks"][0, :n], atol=1e-4)
    assert not np.any(masks[n:])  # padding rows are zero, as the boxes'
    np.testing.assert_array_equal(served["detection_classes"][b, :n], dets["classes"][0, :n] + 1)


def test_detection_masks_match_predict_in_both_signatures(exported):
    model, path = exported
    loaded = tf.saved_model.load(str(path))
    square, wide = _images()
    # serving_default at a dynamic batch: 1 and 2 images of one size
    for batch in ([square], [square, square[:, ::-1]]):
        out = {k: v.numpy() for k, v in loaded.signatures["serving_default"](
            images=tf.constant(np.stack(batch))).items()}
        assert set(out) == {"detection_boxes", "detection_scores", "detection_classes",
                            "num_detections", "detection_masks"}
        for b, image in enumerate(batch):
            _check_row(out, b, model.predict(image[None].astype("float32"), verbose=0))
    # serving_bytes: mixed sizes, one undecodable element answered with zero masks
    blobs = [png_bytes(square), b"not an image", png_bytes(wide)]
    out = {k: v.numpy() for k, v in loaded.signatures["serving_bytes"](
        image_bytes=tf.constant(blobs)).items()}
    assert out["valid"].tolist() == [True, False, True]
    assert out["detection_masks"].shape == (3, 6, 28, 28) and not np.any(out["detection_masks"][1])
    for b, image in ((0, square), (2, wide)):
        _check_row(out, b, model.predict(image[None].astype("float32"), verbose=0))


def test_predict_cli_writes_and_draws_masks(exported, tmp_path):
    from detection import cli
    from detection.evaluation.paste import paste_masks

    model, path = exported
    image = _images()[1]
    (tmp_path / "wide.png").write_bytes(png_bytes(image))
    out = tmp_path / "preds"
    assert cli.main(["predict", str(tmp_path / "wide.png"), "--model", str(path), "--out",
                     str(out), "--score-threshold", "0"]) == 0
    (entry,) = json.loads((out / "detections.json").read_text())
    dets = model.predict(image[None].astype("float32"), verbose=0)
    n = int(dets["num_detections"][0])
    assert len(entry["detections"]) == n > 0
    want = paste_masks(dets["masks"][0, :n], dets["boxes"][0, :n], 48, 80)
    decoded = np.stack([mask_utils.decode({"size": d["mask_rle"]["size"],
                                           "counts": d["mask_rle"]["counts"].encode()})
                        for d in entry["detections"]]).astype(np.uint8)
    assert entry["detections"][0]["mask_rle"]["size"] == [48, 80]
    # the SavedModel's float path (masks within 1e-4) may flip a pixel sitting at 0.5
    assert np.mean(decoded != want) <= 1e-3
    assert want.any()  # the comparison has mask pixels to compare
    assert (out / "wide.png").read_bytes()[:4] == b"\x89PNG"


def test_drawn_masks_change_thepng_bytes(tmp_path):
    """The semi-transparent fill is in the picture: the same detections with and without a
    mask draw different pixels inside the mask only; a mask of the wrong size is refused."""
    from PIL import Image

    from detection.engine.visualize import draw_detections

    image = np.full((40, 40, 3), 128, np.uint8)
    pred = {"boxes": np.array([[5.0, 5.0, 35.0, 35.0]]), "scores": np.array([0.9]),
            "classes": np.array([0])}
    mask = np.zeros((1, 40, 40), np.uint8)
    mask[0, 15:25, 15:25] = 1
    plain = draw_detections([image], [pred], tmp_path / "plain.png", columns=1)
    filled = draw_detections([image], [{**pred, "masks": mask}], tmp_path / "mask.png", columns=1)
    a = np.asarray(Image.open(plain).convert("RGB"), np.int32)
    b = np.asarray(Image.open(filled).convert("RGB"), np.int32)
    changed = np.abs(a - b).sum(-1) > 30
    assert changed.any() and changed.mean() < 0.2
    with pytest.raises(ValueError, match=r"image 0 has masks of shape \(1, 20, 20\)"):
        draw_detections([image], [{**pred, "masks": mask[:, :20, :20]}], tmp_path / "x.png")
