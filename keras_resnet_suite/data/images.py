"""Encoded image bytes -> RGB pixels: the one decoder of the classification pipelines, the
SavedModel `serving_bytes` signatures and the detection loaders; and the pixel limit
(decompression-bomb guard) every entry point checks from the header before decoding."""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf
from PIL import ImageOps

from keras_resnet_suite.data import image_headers

# A 1 MB JPEG can declare 8000x8000 pixels: 192 MB as uint8 RGB, 768 MB as float32, seconds of
# decoding. 50 megapixels admits every common camera's full-resolution output (48 MP phone
# sensors write 8000x6000) and refuses such bombs; raise it per call or with the variable.
MAX_PIXELS = 50_000_000
MAX_PIXELS_ENV = "KRS_MAX_PIXELS"
# TensorFlow's PNG decoder refuses 2**29 pixels and more, so no limit may go beyond it.
DECODER_MAX_PIXELS = 2**29 - 1


class ImageTooLargeError(ValueError):
    """An image whose header declares more pixels than the limit (it is never decoded)."""


def max_pixels(limit: int | None = None) -> int:
    """The pixel limit in force: `limit` if given, else `$KRS_MAX_PIXELS`, else `MAX_PIXELS`."""
    if limit is not None:
        value, where = limit, "max_pixels"
    else:
        value, where = os.environ.get(MAX_PIXELS_ENV) or MAX_PIXELS, f"${MAX_PIXELS_ENV}"
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where} must be a whole number of pixels, got {value!r}") from None
    if number <= 0:
        raise ValueError(f"{where} must be positive, got {number}")
    return number


def too_large(width: int, height: int, limit: int | None = None) -> str | None:
    """Why a `width` x `height` image is refused (its pixel count over the limit), else None."""
    bound = max_pixels(limit)
    if int(width) * int(height) <= bound:
        return None
    return (f"{width}x{height} pixels ({width * height / 1e6:.1f} megapixels) exceed the limit "
            f"of {bound / 1e6:g} megapixels (max_pixels; ${MAX_PIXELS_ENV} raises it)")


def check_pixels(width: int, height: int, source: str, limit: int | None = None) -> None:
    """Raise `ImageTooLargeError` naming `source` when the image is over the pixel limit."""
    reason = too_large(width, height, limit)
    if reason is not None:
        raise ImageTooLargeError(f"image {source}: {reason}")


JPEG_DCT_METHOD = "INTEGER_ACCURATE"  # libjpeg's ISLOW: PIL's IDCT; TF's default is IFAST
_JPEG_MAGIC, _BMP_MAGIC = b"\xff\xd8\xff", b"BM"


def _le(raw: tf.Tensor, at: int, size: int) -> tf.Tensor:
    """The little-endian unsigned integer of `size` bytes at `at` of a uint8 tensor, as int64."""
    shifts = tf.constant([8 * i for i in range(size)], tf.int64)
    return tf.reduce_sum(tf.bitwise.left_shift(tf.cast(raw[at : at + size], tf.int64), shifts))


def _bmp_through_palette(contents: tf.Tensor) -> tf.Tensor:
    """An 8-bit BMP's pixels looked up in its colour table, as PIL reads it: TensorFlow's BMP
    decoder returns the palette indices as grey levels (right only for a grey-ramp palette)."""
    raw = tf.io.decode_raw(contents, tf.uint8)
    start = 14 + _le(raw, 14, 4)  # the colour table follows the info header
    used = _le(raw, 46, 4)
    colours = tf.where((used == 0) | (used > 256), tf.constant(256, tf.int64), used)
    table = raw[start : start + 1024]
    table = tf.reshape(tf.pad(table, [[0, 1024 - tf.shape(table)[0]]]), [256, 4])
    palette = tf.where(tf.range(256, dtype=tf.int64)[:, None] < colours,
                       tf.reverse(table[:, :3], [1]), tf.zeros([256, 3], tf.uint8))  # BGR -> RGB
    indices = tf.io.decode_bmp(contents, channels=0)
    return tf.gather(palette, tf.cast(indices[..., 0], tf.int32))


def decode_rgb(contents: tf.Tensor) -> tf.Tensor:
    """Encoded JPEG (also CMYK), PNG, GIF (first frame) or BMP bytes -> uint8 `[H, W, 3]`.

    The one decoding rule of every entry point (loaders, training, `predict`, the SavedModels'
    `serving_bytes`): pixel for pixel what PIL's `Image.open(f).convert("RGB")` gives for
    JPEG (IDCT `JPEG_DCT_METHOD`; TensorFlow's default differs from PIL by up to 8 grey
    levels), PNG of 1-16 bits with or without alpha or palette (alpha dropped), GIF and 8/24/32-
    bit BMP (an 8-bit one through its palette). A 16-bit grey PNG keeps each value's high byte
    (libpng's rule; PIL's `convert` clips such values to 255 instead). Grayscale and CMYK
    come out RGB. Undecodable bytes raise `tf.errors.InvalidArgumentError` when the op runs:
    eagerly at the call, in a `tf.data` map when the element is produced (`Dataset.
    ignore_errors` drops it there); `image_headers.inspect` refuses from the header what the
    decoders would get wrong (compressed or 1/4/16-bit BMPs).
    """
    contents = tf.convert_to_tensor(contents, tf.string)
    head = tf.strings.substr(tf.strings.join([contents, "\0" * 30]), 0, 30)
    is_bmp8 = (tf.strings.substr(head, 0, 2) == _BMP_MAGIC) & (
        tf.strings.substr(head, 28, 2) == b"\x08\x00")
    kind = tf.where(tf.strings.substr(head, 0, 3) == _JPEG_MAGIC, 0, tf.where(is_bmp8, 1, 2))
    image = tf.switch_case(kind, [
        lambda: tf.io.decode_jpeg(contents, channels=3, dct_method=JPEG_DCT_METHOD),
        lambda: _bmp_through_palette(contents),
        lambda: tf.io.decode_image(contents, channels=3, expand_animations=False)])
    image.set_shape([None, None, 3])
    return image


def upright_image(image: tf.Tensor, orientation: tf.Tensor) -> tf.Tensor:
    """A decoded [H, W, C] image with its EXIF `orientation` (1..8) applied, as PIL's
    `ImageOps.exif_transpose` and photo viewers do (TensorFlow's decoders ignore EXIF)."""
    def transpose(x):
        return tf.transpose(x, [1, 0, 2])

    branches = [
        lambda: image,
        lambda: tf.image.flip_left_right(image),
        lambda: tf.image.rot90(image, 2),
        lambda: tf.image.flip_up_down(image),
        lambda: transpose(image),
        lambda: tf.image.rot90(image, 3),  # rot90 turns counter-clockwise: 3 = clockwise
        lambda: tf.image.rot90(transpose(image), 2),
        lambda: tf.image.rot90(image, 1),
    ]
    index = tf.clip_by_value(tf.cast(orientation, tf.int32) - 1, 0, 7)
    out = tf.switch_case(index, branches)
    out.set_shape([None, None, image.shape[-1]])
    return out


def decode_checked(
    contents: tf.Tensor, max_pixels: int = MAX_PIXELS
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """One encoded image (scalar string) -> `(image, valid, problem)`, never raising for bad
    bytes: the upright uint8 `[H, W, 3]` pixels (EXIF orientation applied) and `valid` True, or
    a 1x1 black placeholder, `valid` False and `problem` saying what is wrong (not an image,
    damaged or truncated, empty, or more than `max_pixels` pixels, judged from the header before
    any pixel is decoded). Files that pass decode with TensorFlow's decoders, the rules of
    `image_headers`; graph-only, so it runs inside a SavedModel that cannot import this project.
    """
    header = image_headers.inspect(contents)
    pixels = header.height * header.width
    size = tf.strings.join([tf.strings.as_string(header.width), "x",
                            tf.strings.as_string(header.height)])  # fmt: skip
    problem = tf.gather(tf.constant(image_headers.PROBLEMS), header.problem)
    problem = tf.where(problem != "", problem, tf.where(
        pixels == 0, tf.strings.join(["empty image (", size, " pixels)"]), tf.where(
            pixels > max_pixels,
            tf.strings.join([size, " image (", tf.strings.as_string(pixels), " pixels) is above "
                             f"the limit of {int(max_pixels)} pixels"]),
            "")))  # fmt: skip
    valid = tf.equal(problem, "")
    image = tf.cond(valid, lambda: _decoded_or_empty(contents),
                    lambda: tf.zeros([0, 0, 3], tf.uint8))  # fmt: skip
    decoded = tf.size(image) > 0
    problem = tf.where(valid & ~decoded, DAMAGED_DATA, problem)
    valid = valid & decoded
    image = tf.cond(valid, lambda: upright_image(image, header.orientation),
                    lambda: tf.zeros([1, 1, 3], tf.uint8))  # fmt: skip
    image.set_shape([None, None, 3])
    return image, valid, problem


def bmp_problem(head: bytes) -> str | None:
    """Why a BMP file (its first 66 bytes or more) is not decoded by `decode_rgb` as PIL reads
    it, else None: the Python loaders' side of `image_headers`' BMP rule (TensorFlow's BMP
    decoder reads only uncompressed 8/24/32-bit pixels and ignores the compression field)."""
    if head[:2] != _BMP_MAGIC:
        return None
    if len(head) < 34:
        return "BMP header cut short"
    head = head + bytes(max(0, 66 - len(head)))
    info_size, bits, compression = (int.from_bytes(head[at : at + n], "little")
                                    for at, n in ((14, 4), (28, 2), (30, 4)))  # fmt: skip
    masks = [int.from_bytes(head[at : at + 4], "little") for at in (54, 58, 62)]
    if info_size < 40:
        return "OS/2 BMP (only Windows BMPs decode)"
    if bits not in (8, 24, 32):
        return f"{bits}-bit BMP (uncompressed 8/24/32-bit BMPs decode)"
    if compression == 0 or (compression == 3 and bits == 32
                            and masks == [0xFF0000, 0xFF00, 0xFF]):  # fmt: skip
        return None
    return f"compressed BMP (compression {compression}; uncompressed 8/24/32-bit BMPs decode)"


def pil_rgb(image) -> np.ndarray:
    """An open PIL image's uint8 `[H, W, 3]` pixels by `decode_checked`'s rule, for Python
    readers that decode with PIL: EXIF orientation applied, a 16-bit grey image's high bytes
    (PIL's own `convert("RGB")` clips its values at 255), anything else `convert("RGB")`."""
    image = ImageOps.exif_transpose(image)
    if image.mode.startswith("I"):
        grey = (np.asarray(image).astype(np.int64) >> 8).clip(0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    return np.asarray(image.convert("RGB"))


DAMAGED_DATA = "damaged image data (the decoder refused it: e.g. a bad Huffman table)"


def _decoded_or_empty(contents: tf.Tensor) -> tf.Tensor:
    """`decode_rgb(contents)`, or an empty `[0, 0, 3]` where the decoder fails on data the
    header check passed (damaged tables or compressed data only decoding finds): a graph
    cannot catch an op's error, but a one-element tf.data pipeline can drop it
    (`ignore_errors`), so one bad upload does not fail the whole batch (found by fuzzing)."""
    data = tf.data.Dataset.from_tensors(contents).map(decode_rgb).ignore_errors()
    empty = tf.data.Dataset.from_tensors(tf.zeros([0, 0, 3], tf.uint8))
    return data.concatenate(empty).take(1).get_single_element()
