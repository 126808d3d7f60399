"""Image augmentation and normalisation as stateless tf ops (seeded per image, so order-free).

Every random op takes a `seed` of shape [2]; pipelines derive it from the image's global index,
which makes a run reproducible and resumable at any step regardless of parallelism.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

# AlexNet's PCA of ImageNet RGB pixels on a [0, 1] scale (Krizhevsky et al. 2012, Sec. 4.1),
# the "standard color augmentation in [21]" of the ResNet paper, Sec. 3.4.
_PCA_EIGVAL = np.array([0.2175, 0.0188, 0.0045], np.float32)
_PCA_EIGVEC = np.array(
    [[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]],
    np.float32,
)


def split_seed(seed: tf.Tensor, n: int) -> list[tf.Tensor]:
    """`n` independent stateless seeds from one."""
    return tf.unstack(tf.random.experimental.stateless_split(seed, num=n))


def pad_crop_flip(image: tf.Tensor, seed: tf.Tensor, pad: int = 4) -> tf.Tensor:
    """Paper Sec. 4.2 CIFAR augmentation: zero-pad `pad` px, random crop back, random h-flip."""
    s_crop, s_flip = split_seed(seed, 2)
    shape = tf.shape(image)
    padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
    cropped = tf.image.stateless_random_crop(padded, shape, seed=s_crop)
    return tf.image.stateless_random_flip_left_right(cropped, seed=s_flip)


def resize_shorter_side(image: tf.Tensor, size: tf.Tensor | int) -> tf.Tensor:
    """Resize keeping aspect ratio so the shorter side equals `size` (float32 output)."""
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = tf.cast(size, tf.float32) / tf.reduce_min(shape)
    new = tf.cast(tf.round(shape * scale), tf.int32)
    new = tf.maximum(new, tf.cast(size, tf.int32))  # rounding must not undershoot the crop
    return tf.image.resize(tf.cast(image, tf.float32), new, method="bilinear", antialias=True)


def scale_crop_flip(
    image: tf.Tensor, seed: tf.Tensor, scale_range: tuple[int, int] = (256, 480), size: int = 224
) -> tf.Tensor:
    """Paper Sec. 3.4 ImageNet augmentation: shorter side uniform in `scale_range`, random
    `size` crop, random h-flip (scale augmentation of Simonyan & Zisserman)."""
    s_scale, s_crop, s_flip = split_seed(seed, 3)
    short = tf.random.stateless_uniform(
        [], s_scale, minval=scale_range[0], maxval=scale_range[1] + 1, dtype=tf.int32
    )
    resized = resize_shorter_side(image, short)
    cropped = tf.image.stateless_random_crop(resized, [size, size, 3], seed=s_crop)
    return tf.image.stateless_random_flip_left_right(cropped, seed=s_flip)


def pca_lighting(image: tf.Tensor, seed: tf.Tensor, std: float = 0.1) -> tf.Tensor:
    """AlexNet PCA colour noise on a 0-255 image: add sum_i alpha_i * lambda_i * v_i per pixel."""
    alpha = tf.random.stateless_normal([3], seed, stddev=std)
    rgb = tf.linalg.matvec(_PCA_EIGVEC, alpha * _PCA_EIGVAL) * 255.0
    return tf.cast(image, tf.float32) + rgb


def center_crop(image: tf.Tensor, size: int) -> tf.Tensor:
    """The centre `size` x `size` crop."""
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    top, left = (h - size) // 2, (w - size) // 2
    return image[top : top + size, left : left + size]


def ten_crop(image: tf.Tensor, size: int) -> tf.Tensor:
    """The 10-crop test of Krizhevsky et al. (paper Sec. 3.4): 4 corners + centre, and their
    mirror images; returns [10, size, size, C]."""
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    crops = [
        image[:size, :size],
        image[:size, w - size :],
        image[h - size :, :size],
        image[h - size :, w - size :],
        center_crop(image, size),
    ]
    crops = tf.stack(crops)
    return tf.concat([crops, tf.reverse(crops, axis=[2])], axis=0)


def normalize(image: tf.Tensor, mean: np.ndarray | None, std: np.ndarray | None) -> tf.Tensor:
    """(image - mean) / std in float32. A per-pixel `mean` [H, W, 3] whose size differs from
    the image's is resized to it (fully-convolutional testing at other scales)."""
    image = tf.cast(image, tf.float32)
    if mean is not None:
        mean_t = tf.constant(mean, tf.float32)
        if mean_t.shape.rank == 3:
            same = tf.reduce_all(tf.equal(tf.shape(image)[-3:-1], tf.shape(mean_t)[:2]))
            mean_t = tf.cond(
                same, lambda: mean_t, lambda: tf.image.resize(mean_t, tf.shape(image)[-3:-1])
            )
        image = image - mean_t
    if std is not None:
        image = image / tf.constant(std, tf.float32)
    return image
