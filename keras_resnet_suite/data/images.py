"""Encoded image bytes -> RGB pixels: the one decoder of the classification pipelines, the
SavedModel `serving_bytes` signatures and the detection loaders."""

from __future__ import annotations

import tensorflow as tf


def decode_rgb(contents: tf.Tensor) -> tf.Tensor:
    """Encoded JPEG (also CMYK), PNG, GIF (first frame) or BMP bytes -> uint8 `[H, W, 3]`.

    Grayscale and CMYK files come out RGB, so every image has three channels. Undecodable bytes
    raise `tf.errors.InvalidArgumentError` when the op runs: eagerly at the call, in a
    `tf.data` map when the element is produced (`Dataset.ignore_errors` drops it there).
    """
    image = tf.io.decode_image(contents, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image
