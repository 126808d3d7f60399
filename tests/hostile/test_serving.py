"""Hostile inputs to the exported SavedModels' signatures (issue 20), through plain
`tf.saved_model.load(path).signatures[...]`: wrong shapes refused at the boundary naming the input,
empty images refused, bad uploads answered per element (`valid`, `error`) while the good ones are
served as if alone, EXIF orientation applied as the Python loaders do, decompression bombs
refused from the header."""

import io
import struct

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
if keras.backend.backend() != "tensorflow":
    pytest.skip("SavedModel export is TensorFlow-only", allow_module_level=True)

from PIL import Image, ImageOps  # noqa: E402

import keras_resnet_suite as krs  # noqa: E402
from detection.data.records import inspect_image  # noqa: E402
from detection.data.report import DataReport  # noqa: E402
from detection.export import export_saved_model as export_detector  # noqa: E402
from keras_resnet_suite import export  # noqa: E402
from keras_resnet_suite.data import images  # noqa: E402
from tests.detection.detector_helpers import tiny_detector  # noqa: E402

SIZE = 16  # the pixel-probe model's input side
NOT_IMAGE = "not a JPEG/PNG/GIF/BMP image"
JPEG_KIND = "unsupported JPEG kind (only 8-bit baseline, extended and progressive JPEGs decode)"


def _encode(array: np.ndarray, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _photo(height: int = 24, width: int = 40, seed: int = 0) -> np.ndarray:
    """Random pixels: any turn or flip of them is visible."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _with_jpeg_size(data: bytes, width: int, height: int) -> bytes:
    """A JPEG whose frame header (SOF0) declares `width` x `height`: a decompression bomb's
    header on a small file."""
    at = data.index(b"\xff\xc0")
    return data[: at + 5] + struct.pack(">HH", height, width) + data[at + 9 :]


def _with_jpeg_precision(data: bytes, bits: int) -> bytes:
    at = data.index(b"\xff\xc0")
    return data[: at + 4] + bytes([bits]) + data[at + 5 :]


def _with_png_size(data: bytes, width: int, height: int) -> bytes:
    return data[:16] + struct.pack(">II", width, height) + data[24:]


def _call(signature, **inputs) -> dict:
    return {k: v.numpy() for k, v in signature(**{k: tf.constant(v) for k, v in inputs.items()}
                                               ).items()}  # fmt: skip


def _refused(signature, match: str, **inputs) -> str:
    """The one-line reason a signature refuses `inputs` (TensorFlow's error text)."""
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        signature(**{k: tf.constant(v) for k, v in inputs.items()})
    text = str(error.value)
    assert match in text, text
    return text


@pytest.fixture(autouse=True)
def _seed():
    """Overrides the suite's per-test seeding and `clear_session`: both clear TensorFlow's
    kernel cache, so each test would instantiate the loaded signatures again (1-3 s a test).
    This module seeds and builds its models once, in its module fixtures."""


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """resnet20 on 32x32 inputs with class names, exported and loaded back."""
    keras.utils.set_random_seed(0)
    path = tmp_path_factory.mktemp("serving") / "resnet20"
    export.export_saved_model(krs.build("resnet20", input_shape=(32, 32, 3), classes=10), path,
                              class_names=[f"c{i}" for i in range(10)], top_k=3)  # fmt: skip
    return tf.saved_model.load(str(path)).signatures


@pytest.fixture(scope="module")
def pixels(tmp_path_factory):
    """A 'classifier' whose outputs are its input pixels (Flatten, no softmax): `serving_bytes`
    shows exactly what the SavedModel decoded, turned and preprocessed."""
    model = keras.Sequential([keras.Input((SIZE, SIZE, 3)), keras.layers.Flatten()])
    path = tmp_path_factory.mktemp("serving") / "pixels"
    export.export_saved_model(model, path, from_logits=False, top_k=1)
    serve = tf.saved_model.load(str(path)).signatures["serving_bytes"]

    def decoded(data: bytes) -> np.ndarray:
        out = _call(serve, image_bytes=[data])
        assert out["valid"][0], out["error"][0]
        return out["probabilities"][0].reshape(SIZE, SIZE, 3)

    return decoded


def _preprocessed(upright: np.ndarray) -> np.ndarray:
    """The pixel-probe model's preprocessing of already upright pixels."""
    return export._preprocess(tf.constant(upright), (SIZE, SIZE), SIZE, None, None).numpy()


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    keras.utils.set_random_seed(0)
    model = tiny_detector(score_threshold=0.0, max_detections=10)
    path = export_detector(model, tmp_path_factory.mktemp("serving") / "detector")
    return tf.saved_model.load(str(path)).signatures


# ---- serving_default: the declared shape is enforced at the boundary --------------------------


@pytest.mark.parametrize("shape", [(1, 32, 32, 4), (32, 32, 3), (1, 28, 28, 3), (1, 32, 32, 3, 1)])
def test_classifier_images_of_wrong_shape_are_refused_naming_images(classifier, shape):
    text = _refused(classifier["serving_default"], "Shape of tensor images",
                    images=np.zeros(shape, np.float32))
    assert "expected shape [?,32,32,3]" in text and "Incompatible shapes" not in text


def test_classifier_non_finite_pixels_are_refused(classifier):
    image = np.zeros((2, 32, 32, 3), np.float32)
    image[1, 5, 5, 0] = np.nan
    _refused(classifier["serving_default"], "images: contain NaN or infinite values", images=image)


def test_classifier_float64_images_are_refused_by_dtype(classifier):
    _refused(classifier["serving_default"], "input #0(zero-based) was expected to be a float tensor but is a double tensor",
             images=np.zeros((1, 32, 32, 3), np.float64))


def test_classifier_empty_batch_gives_empty_outputs(classifier):
    out = _call(classifier["serving_default"], images=np.zeros((0, 32, 32, 3), np.float32))
    assert out["probabilities"].shape == (0, 10) and out["top_k_labels"].shape == (0, 3)
    out = _call(classifier["serving_bytes"], image_bytes=np.array([], object))
    assert out["valid"].shape == (0,) and out["probabilities"].shape == (0, 10)


@pytest.mark.parametrize("shape", [(1, 32, 32, 4), (32, 32, 3), (1, 1, 32, 32, 3)])
def test_detector_images_of_wrong_shape_are_refused_naming_images(detector, shape):
    text = _refused(detector["serving_default"], "Shape of tensor images",
                    images=np.zeros(shape, np.uint8))
    assert "expected shape [?,?,?,3]" in text and "transform" not in text


def test_detector_float_images_are_refused_by_dtype(detector):
    _refused(detector["serving_default"],
             "input #0(zero-based) was expected to be a uint8 tensor but is a float tensor",
             images=np.zeros((1, 32, 32, 3), np.float32))


@pytest.mark.parametrize("height, width", [(0, 0), (0, 17), (23, 0)])
def test_detector_empty_image_is_refused_naming_its_size(detector, height, width):
    _refused(detector["serving_default"],
             f"images: empty image of {width}x{height} pixels (width x height)",
             images=np.zeros((2, height, width, 3), np.uint8))


def test_detector_empty_batch_gives_empty_outputs(detector):
    out = _call(detector["serving_default"], images=np.zeros((0, 0, 0, 3), np.uint8))
    assert out["detection_boxes"].shape == (0, 10, 4) and out["num_detections"].shape == (0,)
    out = _call(detector["serving_bytes"], image_bytes=np.array([], object))
    assert out["valid"].shape == (0,) and out["detection_scores"].shape == (0, 10)


@pytest.mark.parametrize("value", [b"one image, no batch axis", [[b"a"], [b"b"]]])
def test_image_bytes_of_wrong_rank_are_refused_naming_image_bytes(classifier, detector, value):
    for signatures in (classifier, detector):
        _refused(signatures["serving_bytes"], "Shape of tensor image_bytes",
                 image_bytes=np.array(value, object))


# ---- serving_bytes: one bad upload is named, the others are served ---------------------------


def _bad_uploads() -> dict[str, tuple[bytes, str]]:
    jpeg, png = _encode(_photo(), "JPEG"), _encode(_photo(), "PNG")
    gif, bmp = _encode(_photo(), "GIF"), _encode(_photo(), "BMP")
    return {
        "garbage": (b"garbage \x00\x01\x02 bytes", NOT_IMAGE),
        "text": (b"<html>not found</html>", NOT_IMAGE),
        "empty": (b"", "empty (0 bytes)"),
        "tiff": (_encode(_photo(), "TIFF"), NOT_IMAGE),
        "webp": (_encode(_photo(), "WEBP"), NOT_IMAGE),  # TF decodes it; the loaders do not
        "truncated_jpeg": (jpeg[: len(jpeg) // 2], "truncated JPEG (no end-of-image marker)"),
        "jpeg_header_only": (jpeg[:20], "truncated JPEG (no end-of-image marker)"),
        "damaged_jpeg": (b"\xff\xd8\xff\xe0" + b"\x00\x01" + b"junk" * 10,
                         "damaged JPEG header"),
        "lossless_jpeg": (jpeg.replace(b"\xff\xc0", b"\xff\xc3", 1), JPEG_KIND),
        "12_bit_jpeg": (_with_jpeg_precision(jpeg, 12), JPEG_KIND),
        "truncated_png": (png[:-40], "truncated PNG (no IEND chunk at the end)"),
        "damaged_png": (png[:8] + b"\x00" * 40, "damaged PNG header"),
        "truncated_gif": (gif[:-10], "truncated GIF (no trailer byte at the end)"),
        "truncated_bmp": (bmp[:-7], "damaged, truncated or unsupported BMP (uncompressed 8/24/32-bit BMPs decode)"),
        "gif_of_0_pixels": (gif[:6] + b"\x00\x00" + gif[8:], "empty image (0x24 pixels)"),
        "jpeg_bomb": (_with_jpeg_size(jpeg, 8000, 8000),
                      "8000x8000 image (64000000 pixels) is above the limit of 50000000 pixels"),
        "png_bomb": (_with_png_size(png, 30000, 20000),
                     "30000x20000 image (600000000 pixels) is above the limit of 50000000 pixels"),
    }


@pytest.mark.parametrize("kind", list(_bad_uploads()))
def test_classifier_bad_upload_is_named_and_the_good_ones_served(classifier, kind):
    data, problem = _bad_uploads()[kind]
    good = [_encode(_photo(seed=1), "JPEG"), _encode(_photo(seed=2), "PNG")]
    serve = classifier["serving_bytes"]
    out = _call(serve, image_bytes=np.array([good[0], data, good[1]], object))
    np.testing.assert_array_equal(out["valid"], [True, False, True])
    assert out["error"].tolist() == [b"", f"image_bytes[1]: {problem}".encode(), b""]
    # the bad element: no probabilities, no classes, no labels
    assert not out["probabilities"][1].any() and not out["top_k_probabilities"][1].any()
    assert out["top_k_classes"][1].tolist() == [-1, -1, -1]
    assert out["top_k_labels"][1].tolist() == [b"", b"", b""]
    for i, b in ((0, 0), (2, 1)):  # the good ones exactly as served alone
        alone = _call(serve, image_bytes=np.array([good[b]], object))
        np.testing.assert_allclose(out["probabilities"][i], alone["probabilities"][0], atol=1e-6)
        assert out["top_k_labels"][i].tolist() == alone["top_k_labels"][0].tolist()


@pytest.mark.parametrize("kind", ["garbage", "truncated_png", "jpeg_bomb"])
def test_detector_bad_upload_is_named_and_the_good_ones_served(detector, kind):
    data, problem = _bad_uploads()[kind]
    good = _encode(_photo(48, 56, seed=3), "PNG")
    serve = detector["serving_bytes"]
    out = _call(serve, image_bytes=np.array([data, good], object))
    np.testing.assert_array_equal(out["valid"], [False, True])
    assert out["error"].tolist() == [f"image_bytes[0]: {problem}".encode(), b""]
    assert out["num_detections"][0] == 0 and not out["detection_boxes"][0].any()
    assert not out["detection_scores"][0].any() and not out["detection_classes"][0].any()
    alone = _call(serve, image_bytes=np.array([good], object))
    assert out["num_detections"][1] == alone["num_detections"][0] > 0
    for key in ("detection_boxes", "detection_scores", "detection_classes"):
        np.testing.assert_allclose(out[key][1], alone[key][0], atol=1e-5)


def test_stray_bytes_between_jpeg_segments_are_skipped_as_libjpeg_does(pixels):
    """Padding between two header segments (some writers leave it): decoded, not refused."""
    data = _encode(_photo(), "JPEG", quality=95)
    at = 4 + int.from_bytes(data[4:6], "big")  # after SOI and the APP0 segment
    padded = data[:at] + b"\x00\x00\x17" + data[at:]
    expected = _preprocessed(images.decode_rgb(padded).numpy())
    np.testing.assert_array_equal(pixels(padded), expected)


@pytest.mark.parametrize("fmt, mode", [("JPEG", "RGB"), ("JPEG", "L"), ("JPEG", "CMYK"),
                                       ("PNG", "RGBA"), ("PNG", "L"), ("GIF", "P"),
                                       ("BMP", "RGB")])  # fmt: skip
def test_every_supported_kind_is_served(classifier, fmt, mode):
    buffer = io.BytesIO()
    Image.fromarray(_photo()).convert(mode).save(buffer, format=fmt)
    out = _call(classifier["serving_bytes"], image_bytes=np.array([buffer.getvalue()], object))
    assert out["valid"].tolist() == [True] and out["error"].tolist() == [b""]
    assert abs(out["probabilities"][0].sum() - 1) < 1e-5


# ---- EXIF orientation: one rule for serving, the loaders and predict --------------------------


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


@pytest.mark.parametrize("orientation", range(1, 9))
def test_serving_bytes_turns_jpeg_upright_as_the_loaders_do(pixels, orientation, tmp_path):
    """A PIL-written JPEG with each EXIF orientation: the SavedModel's pixels equal the detection
    loaders' (`records.inspect_image` reads the tag with PIL, TensorFlow decodes, then
    `upright_image`), preprocessed alike."""
    path = tmp_path / "photo.jpg"
    Image.fromarray(_photo()).save(path, exif=_exif(orientation), quality=95)
    info = inspect_image(path, DataReport())
    assert info.orientation == orientation
    loader = images.upright_image(images.decode_rgb(path.read_bytes()), info.orientation)
    assert loader.shape[:2] == ((40, 24) if orientation >= 5 else (24, 40))
    np.testing.assert_array_equal(pixels(path.read_bytes()), _preprocessed(loader.numpy()))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_serving_bytes_turns_png_upright_as_pil_exif_transpose(pixels, orientation):
    """Lossless PNG with an eXIf chunk: the SavedModel's pixels equal PIL's
    `ImageOps.exif_transpose` (what `python -m detection predict` uses)."""
    data = _encode(_photo(), "PNG", exif=_exif(orientation))
    upright = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    np.testing.assert_array_equal(pixels(data), _preprocessed(upright))


def test_damaged_exif_block_leaves_the_photo_as_stored(pixels):
    """An APP1 "Exif" segment with garbage instead of a TIFF header: orientation 1, as PIL."""
    stored = _photo()
    data = _encode(stored, "JPEG", quality=95, exif=b"Exif\x00\x00" + b"\xee" * 30)
    assert ImageOps.exif_transpose(Image.open(io.BytesIO(data))).size == (40, 24)
    expected = _preprocessed(images.decode_rgb(data).numpy())
    np.testing.assert_array_equal(pixels(data), expected)


def test_detector_serving_bytes_detects_a_rotated_photo_upright(detector, tmp_path):
    """Orientation 6 (a phone photo stored on its side): the detections of `serving_bytes` equal
    those of `serving_default` on the upright pixels, normalised to the upright frame."""
    upright = _photo(48, 72, seed=4)
    stored = np.ascontiguousarray(np.rot90(upright, 1))  # orientation 6 turns it back clockwise
    data = _encode(stored, "PNG", exif=_exif(6))
    served = _call(detector["serving_bytes"], image_bytes=np.array([data], object))
    direct = _call(detector["serving_default"], images=upright[None])
    assert served["valid"][0] and served["num_detections"][0] == direct["num_detections"][0] > 0
    np.testing.assert_allclose(served["detection_boxes"], direct["detection_boxes"], atol=1e-4)
    np.testing.assert_allclose(served["detection_scores"], direct["detection_scores"], atol=1e-5)


def test_detector_serves_a_real_photo_as_predict_sees_it(detector, shared_data):
    """A raccoon-voc photo: `serving_bytes` gives the detections of `serving_default` on PIL's
    pixels (TensorFlow's default IDCT changed a kangaroo's 5 detections into 4, issue 35)."""
    data = (shared_data / "raccoon-voc/VOC2007/JPEGImages/raccoon-10.jpg").read_bytes()
    pil = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    served = _call(detector["serving_bytes"], image_bytes=np.array([data], object))
    direct = _call(detector["serving_default"], images=pil[None])
    assert served["valid"][0] and served["num_detections"][0] == direct["num_detections"][0] > 0
    for key in ("detection_boxes", "detection_scores", "detection_classes"):
        np.testing.assert_allclose(served[key], direct[key], atol=1e-5)


# ---- the pixel limit ----------------------------------------------------------------------------


def test_pixel_limit_is_inclusive():
    data = _encode(_photo(24, 40), "PNG")
    image, valid, problem = images.decode_checked(tf.constant(data), max_pixels=24 * 40)
    assert bool(valid) and image.shape == (24, 40, 3) and problem.numpy() == b""
    image, valid, problem = images.decode_checked(tf.constant(data), max_pixels=24 * 40 - 1)
    assert not bool(valid) and image.shape == (1, 1, 3)
    assert problem.numpy() == b"40x24 image (960 pixels) is above the limit of 959 pixels"


@pytest.mark.parametrize("bad", [0, -5, 2**29, 1.5e6, "big", True])
def test_export_refuses_a_bad_max_pixels(tmp_path, bad):
    model = krs.build("resnet20", input_shape=(32, 32, 3), classes=10)
    with pytest.raises(ValueError, match="max_pixels must be an int from 1 to 536870911"):
        export.export_saved_model(model, tmp_path / "x", max_pixels=bad)
    with pytest.raises(ValueError, match="max_pixels must be an int"):
        export_detector(_FakeDetector(), tmp_path / "y", max_pixels=bad)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


class _FakeDetector:
    """Just enough of a detector for export's argument checks, which run before any tracing."""

    transform = object()
    image_size = (64, 64)
