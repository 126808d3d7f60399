"""Encoded image bytes -> RGB pixels: the one decoder of the classification pipelines, the
SavedModel `serving_bytes` signatures and the detection loaders; and the pixel limit
(decompression-bomb guard) every entry point checks from the header before decoding."""

from __future__ import annotations

import os

import tensorflow as tf

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


def decode_rgb(contents: tf.Tensor) -> tf.Tensor:
    """Encoded JPEG (also CMYK), PNG, GIF (first frame) or BMP bytes -> uint8 `[H, W, 3]`.

    Grayscale and CMYK files come out RGB, so every image has three channels. Undecodable bytes
    raise `tf.errors.InvalidArgumentError` when the op runs: eagerly at the call, in a
    `tf.data` map when the element is produced (`Dataset.ignore_errors` drops it there).
    """
    image = tf.io.decode_image(contents, channels=3, expand_animations=False)
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


DAMAGED_DATA = "damaged image data (the decoder refused it: e.g. a bad Huffman table)"


def _decoded_or_empty(contents: tf.Tensor) -> tf.Tensor:
    """`decode_rgb(contents)`, or an empty `[0, 0, 3]` where the decoder fails on data the
    header check passed (damaged tables or compressed data only decoding finds): a graph
    cannot catch an op's error, but a one-element tf.data pipeline can drop it
    (`ignore_errors`), so one bad upload does not fail the whole batch (found by fuzzing)."""
    data = tf.data.Dataset.from_tensors(contents).map(decode_rgb).ignore_errors()
    empty = tf.data.Dataset.from_tensors(tf.zeros([0, 0, 3], tf.uint8))
    return data.concatenate(empty).take(1).get_single_element()
