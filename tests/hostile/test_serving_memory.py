"""A server stays bounded (issue 35): RSS grew ~0.2 MiB per request with oneDNN on when every
request brought a new image size, since oneDNN compiles and caches kernels per input shape. The
detector's resize now pads each side to one of a few bucket sizes first (zero columns in the
interpolation matrices: the same canvas), so the shape-specialised products see few shapes. The
soak itself is `python -m benchmarks.serving_soak`; these check the rule and its figures."""

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
if keras.backend.backend() != "tensorflow":
    pytest.skip("sizes known only at run time exist in TensorFlow graphs", allow_module_level=True)

from benchmarks.serving_soak import distinct_size, levels  # noqa: E402
from detection.modeling.transform import bucket_side, resize_to_canvas  # noqa: E402


def test_bucket_sides_cover_every_size_with_few_values():
    sides = np.arange(1, 65536)
    buckets = bucket_side(tf.constant(sides)).numpy()
    assert (buckets >= sides).all() and (buckets[31:] <= 1.25 * sides[31:]).all()
    assert len(set(buckets.tolist())) <= 45


@pytest.mark.parametrize("rule", ["canvas", "torchvision", "detectron2"])
def test_padded_resize_gives_the_canvas_of_the_unpadded_one(rule):
    """A graph with unknown sizes (a SavedModel's) pads to the bucket; the canvas is the one
    of the static path, which does not pad."""
    dynamic = tf.function(lambda x: resize_to_canvas(x, (64, 96), rule)[0], input_signature=[
        tf.TensorSpec([None, None, None, 3], tf.float32)])
    rng = np.random.default_rng(0)
    for h, w in [(37, 53), (33, 257), (100, 41), (64, 96)]:
        images = rng.uniform(0, 255, (2, h, w, 3)).astype("float32")
        static, _, _ = resize_to_canvas(tf.constant(images), (64, 96), rule)
        np.testing.assert_allclose(dynamic(images).numpy(), static.numpy(), atol=1e-3)


def test_soak_sizes_are_distinct_and_levelling_is_judged_after_warm_up():
    assert len({distinct_size(i) for i in range(10000)}) == 10000
    flat = [[1, 900], [100, 1000], [200, 1010], [300, 1012], [400, 1013]]
    rising = [[1, 900], [100, 1000], [200, 1030], [300, 1060], [400, 1090], [500, 1120]]
    assert levels(flat)["levels_off"] and not levels(rising)["levels_off"]
