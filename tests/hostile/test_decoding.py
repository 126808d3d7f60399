"""One decoding rule (issue 35): the SavedModels' in-graph decoder (`images.decode_checked`), the
loaders (`decode_rgb` in tf.data, the CIFAR folder reader's PIL path) and `detection predict`
give the same pixels, and those are PIL's, on real photos and on every format the signatures
accept; BMP kinds TensorFlow's decoder would read differently are refused by name everywhere."""

import io
import json
import struct

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from PIL import Image, ImageOps  # noqa: E402

import detection  # noqa: E402
from detection.data.records import inspect_image  # noqa: E402
from detection.data.report import DataReport  # noqa: E402
from detection.engine.predict import _read_image  # noqa: E402
from keras_resnet_suite.data import images  # noqa: E402
from keras_resnet_suite.data.cifar import _decode_32  # noqa: E402
from keras_resnet_suite.data.folder import check_image  # noqa: E402

PHOTOS = {"raccoon-voc": "raccoon-voc/VOC2007/JPEGImages/raccoon-1.jpg",
          "coco-mini": "coco-mini/val2017/000000000139.jpg",
          "voc2007-sample": "voc2007-sample/VOC2007/JPEGImages/000001.jpg"}  # fmt: skip
BMP_REFUSED = "damaged, truncated or unsupported BMP (uncompressed 8/24/32-bit BMPs decode)"


def _pil(data: bytes) -> np.ndarray:
    """What a careful user checks against: PIL, upright, RGB."""
    return np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))


def _served(data: bytes) -> np.ndarray:
    image, valid, problem = images.decode_checked(tf.constant(data))
    assert bool(valid), problem.numpy()
    return image.numpy()


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _scene(width: int = 37, height: int = 23) -> Image.Image:
    """Smooth colours plus noise: JPEG's IDCT and chroma upsampling have work to do."""
    y, x = np.mgrid[:height, :width]
    noise = np.random.default_rng(0).integers(0, 60, (height, width, 3))
    rgb = np.stack([x * 255 // width, y * 255 // height, (x + y) * 3 % 256], -1) + noise
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


def _formats() -> dict[str, bytes]:
    src, rng = _scene(), np.random.default_rng(1)
    grey16 = (np.asarray(src.convert("L")).astype(np.uint16) * 257
              + rng.integers(0, 256, (23, 37))).astype(np.uint16)  # fmt: skip
    rgb16 = np.asarray(src).astype(np.uint16) * 257 + rng.integers(0, 256, (23, 37, 3), np.uint16)
    rgba = src.convert("RGBA")
    rgba.putalpha(Image.fromarray(rng.integers(0, 256, (23, 37), np.uint8)))
    return {
        "jpeg_baseline_420": _encode(src, "JPEG", quality=85),
        "jpeg_baseline_444": _encode(src, "JPEG", quality=95, subsampling=0),
        "jpeg_progressive": _encode(src, "JPEG", progressive=True),
        "jpeg_grayscale": _encode(src.convert("L"), "JPEG"),
        "jpeg_cmyk": _encode(src.convert("CMYK"), "JPEG"),
        "png_rgb": _encode(src, "PNG"), "png_rgba": _encode(rgba, "PNG"),
        "png_grey": _encode(src.convert("L"), "PNG"), "png_grey_alpha": _encode(
            src.convert("LA"), "PNG"), "png_1_bit": _encode(src.convert("1"), "PNG"),
        "png_palette": _encode(src.convert("P"), "PNG"),
        "png_palette_4_bit_transparent": _encode(src.quantize(16), "PNG", bits=4, transparency=2),
        "png_16_bit_rgb": tf.io.encode_png(rgb16).numpy(),
        "png_16_bit_rgba": tf.io.encode_png(np.concatenate([rgb16, rgb16[..., :1]], -1)).numpy(),
        "png_16_bit_grey": _encode(Image.fromarray(grey16), "PNG"),
        "gif": _encode(src.convert("P"), "GIF"),
        "gif_animated_transparent": _encode(src.convert("P"), "GIF", transparency=3, save_all=True,
                                            append_images=[src.rotate(90).convert("P")]),
        "bmp_8_bit_palette": _encode(src.quantize(40), "BMP"),
        "bmp_8_bit_grey": _encode(src.convert("L"), "BMP"),
        "bmp_24_bit": _encode(src, "BMP"), "bmp_32_bit": _encode(rgba, "BMP"),
    }


def _bmp(bits: int, compression: int = 0, info_size: int = 40) -> bytes:
    """A 3x2 BMP written by hand (PIL writes only 1/8/24/32-bit uncompressed ones)."""
    width, height = 3, 2
    row = (bits * width + 31) // 32 * 4
    palette = bytes(4 * 2**bits) if bits <= 8 else b""
    offset = 14 + info_size + len(palette)
    if info_size == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
        info = struct.pack("<IHHHH", 12, width, height, 1, bits)
    else:
        info = struct.pack("<IiiHHIIiiII", info_size, width, height, 1, bits, compression,
                           row * height, 2835, 2835, 0, 0).ljust(info_size, b"\0")  # fmt: skip
    pixels = bytes(range(row * height))
    return b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset) + info + palette + (
        pixels)


@pytest.mark.parametrize("name", list(PHOTOS))
def test_real_photos_decode_as_pil_in_serving_loaders_and_predict(shared_data, name, tmp_path):
    """raccoon-voc, coco-mini and voc2007-sample photos: TensorFlow's default IDCT differed
    from PIL on most pixels (up to 8-17 levels); now every entry point gives PIL's pixels."""
    data = (shared_data / PHOTOS[name]).read_bytes()
    expected = _pil(data)
    np.testing.assert_array_equal(_served(data), expected)
    np.testing.assert_array_equal(images.decode_rgb(data).numpy(), expected)
    (tmp_path / "photo.jpg").write_bytes(data)
    np.testing.assert_array_equal(_read_image(tmp_path / "photo.jpg"), expected)


@pytest.mark.parametrize("name", list(_formats()))
def test_every_accepted_format_decodes_as_pil(name):
    data = _formats()[name]
    expected = _pil(data)
    if name == "png_16_bit_grey":  # PIL's convert clips 16-bit grey at 255: the rule keeps the
        grey = np.asarray(Image.open(io.BytesIO(data))).astype(np.int64) >> 8  # high byte
        assert (expected == 255).mean() > 0.9
        expected = np.repeat(grey[..., None], 3, -1).astype(np.uint8)
    np.testing.assert_array_equal(_served(data), expected)
    np.testing.assert_array_equal(images.decode_rgb(data).numpy(), expected)
    np.testing.assert_array_equal(images.pil_rgb(Image.open(io.BytesIO(data))), expected)


def test_the_detection_loader_decodes_every_format_as_serving(shared_data, tmp_path):
    """`detection.data.coco` over the three real photos and one file of each format."""
    files = {f"{k}.{k.split('_')[0].replace('jpeg', 'jpg')}": v for k, v in _formats().items()}
    files.update({f"{k}.jpg": (shared_data / p).read_bytes() for k, p in PHOTOS.items()})
    entries, annotations = [], []
    for i, (file_name, data) in enumerate(sorted(files.items()), 1):
        (tmp_path / file_name).write_bytes(data)
        w, h = Image.open(io.BytesIO(data)).size
        entries.append({"id": i, "file_name": file_name, "width": w, "height": h})
        annotations.append({"id": i, "image_id": i, "bbox": [1, 1, 5, 5], "category_id": 1,
                            "area": 25, "iscrowd": 0})  # fmt: skip
    (tmp_path / "data.json").write_text(json.dumps({"images": entries, "annotations": annotations,
                                                    "categories": [{"id": 1, "name": "x"}]}))
    ds = detection.data.coco(tmp_path / "data.json", verbose=False)
    seen = 0
    for element, entry in zip(ds.as_numpy_iterator(), entries, strict=True):
        data = files[entry["file_name"]]
        np.testing.assert_array_equal(element["images"], _served(data).astype(np.float32),
                                      err_msg=entry["file_name"])
        seen += 1
    assert seen == len(files)


@pytest.mark.parametrize("bits, compression, info_size, why", [
    (1, 0, 40, "1-bit BMP"), (4, 0, 40, "4-bit BMP"), (16, 0, 40, "16-bit BMP"),
    (8, 1, 40, "compressed BMP (compression 1"), (4, 2, 40, "4-bit BMP"),
    (24, 3, 40, "compressed BMP (compression 3"), (24, 0, 12, "OS/2 BMP")])  # fmt: skip
def test_bmp_kinds_decoded_unlike_pil_are_refused_by_name_everywhere(bits, compression,
                                                                     info_size, why, tmp_path):
    data = _bmp(bits, compression, info_size)
    image, valid, problem = images.decode_checked(tf.constant(data))
    assert not bool(valid) and problem.numpy().decode() == BMP_REFUSED
    path = tmp_path / "odd.bmp"
    path.write_bytes(data)
    assert why in check_image(path)  # the classification folder loaders
    assert why in _decode_32(str(path))  # the CIFAR folder reader
    report = DataReport()
    assert inspect_image(path, report) is None  # the detection loaders
    assert report.count("corrupt_image") == 1  # PIL's or the rule's reason, the file named
    assert report.details("corrupt_image")[0].startswith("odd.bmp: ")
