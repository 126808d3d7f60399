"""Balanced sampler: RPN 256 @ 0.5 and head 512 @ 0.25, fractions on hand-made label sets."""

import numpy as np
import pytest
from keras import ops

from detection.modeling.ops import sampling

pytestmark = pytest.mark.jax


def _counts(labels, mask):
    mask = ops.convert_to_numpy(mask)
    return (mask & (labels == 1)).sum(1), (mask & (labels == 0)).sum(1), (mask & (labels == -1)).sum(1)


def test_rpn_fraction_with_plenty_of_both(jit):
    labels = np.zeros((2, 3000), "int32")
    labels[:, :400] = 1
    labels[:, 400:600] = -1
    mask = jit(lambda lb: sampling.subsample_labels(lb, 256, 0.5, seed=3))(labels)
    pos, neg, ign = _counts(labels, mask)
    np.testing.assert_array_equal(pos, [128, 128])
    np.testing.assert_array_equal(neg, [128, 128])
    np.testing.assert_array_equal(ign, [0, 0])


def test_few_positives_filled_with_negatives(jit):
    labels = np.zeros((2, 1000), "int32")
    labels[0, :10] = 1  # 10 positives: all taken, 246 negatives
    labels[1, :] = -1
    labels[1, :20] = 0  # only 20 negatives and no positives
    mask = jit(lambda lb: sampling.subsample_labels(lb, 256, 0.5, seed=0))(labels)
    pos, neg, ign = _counts(labels, mask)
    np.testing.assert_array_equal(pos, [10, 0])
    np.testing.assert_array_equal(neg, [246, 20])
    np.testing.assert_array_equal(ign, [0, 0])


def test_head_fraction_and_randomness():
    labels = np.zeros((1, 2000), "int32")
    labels[0, ::4] = 1  # 500 positives
    a = sampling.subsample_labels(labels, 512, 0.25, seed=1)
    b = sampling.subsample_labels(labels, 512, 0.25, seed=2)
    pos, neg, _ = _counts(labels, a)
    assert (pos[0], neg[0]) == (128, 384)
    assert (ops.convert_to_numpy(a) != ops.convert_to_numpy(b)).any()  # seeds differ


def test_sampled_indices_pads_with_invalid():
    mask = np.array([[False, True, False, True, False]])
    idx, valid = sampling.sampled_indices(mask, 4)
    np.testing.assert_array_equal(ops.convert_to_numpy(idx)[0, :2], [1, 3])
    np.testing.assert_array_equal(ops.convert_to_numpy(valid), [[True, True, False, False]])
