"""keras-hub's own backbone conformance harness (`TestCase.run_vision_backbone_test`: the checks
every keras-hub backbone passes: config round trip, eager call, compiled predict on arrays and
a tf.data dataset, mixed_float16 / mixed_bfloat16 / bfloat16 dtypes of every output, weight and
sub-layer, int8/float8 policy maps, pyramid outputs) on `ResNetHubBackbone`, in full; and
keras-cv's backbone checks (config round trip, level layers) with a dtype. A tiny ResNet-18."""

import numpy as np
import pytest

keras_hub = pytest.importorskip("keras_hub")

import keras  # noqa: E402
from keras_hub.src.tests.test_case import TestCase  # noqa: E402

from keras_resnet_suite.integrations.keras_hub import ResNetHubBackbone  # noqa: E402

TINY = {"depths": [1, 1, 1, 1], "widths": [8, 8, 8, 8], "stem_width": 8}


class ResNetHubBackboneConformance(TestCase):
    def test_vision_backbone(self):
        # keras-hub names a backbone after its class (res_net_hub_backbone); ours defaults to
        # the architecture's name (resnet18_backbone), so the harness is given that name.
        init = {"architecture": "resnet18", "options": TINY, "name": "res_net_hub_backbone"}
        sizes = {"C2": 8, "C3": 4, "C4": 2, "C5": 1}
        self.run_vision_backbone_test(
            cls=ResNetHubBackbone, init_kwargs=init,
            input_data=np.ones((2, 32, 32, 3), "float32"),
            expected_output_shape={k: (2, s, s, 8) for k, s in sizes.items()},
            expected_pyramid_output_keys=["P2", "P3", "P4", "P5"],
            expected_pyramid_image_sizes=[(s, s) for s in sizes.values()])


def test_plain_tensor_call_does_not_warn(recwarn):
    encoder = ResNetHubBackbone("resnet18", options=TINY)
    encoder(np.ones((1, 32, 32, 3), "float32"))
    assert not [w for w in recwarn if "structure" in str(w.message)]


@pytest.mark.parametrize("policy", ["bfloat16", "mixed_float16"])
def test_keras_cv_backbone_computes_in_its_policy_after_reload(policy):
    keras_cv = pytest.importorskip("keras_cv")  # noqa: F841
    from keras_resnet_suite.integrations.keras_cv import ResNetCVBackbone

    backbone = ResNetCVBackbone("resnet18", options=TINY, dtype=policy)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(backbone))
    compute = keras.dtype_policies.get(policy).compute_dtype
    for model in (backbone, clone):
        assert model.get_layer("conv3_x").blocks[0].branch[1].compute_dtype == compute
        out = model(np.ones((1, 32, 32, 3), "float32"))
        assert {keras.backend.standardize_dtype(v.dtype) for v in out.values()} == {compute}
    assert clone.pyramid_level_inputs == backbone.pyramid_level_inputs


def test_keras_cv_backbone_checks():
    # keras-cv ships no backbone harness; these are the checks its ResNet backbone tests make:
    # the feature extractor RetinaNet/YOLOV8 build from `pyramid_level_inputs`, its levels'
    # shapes on a symbolic input, and other input channel counts.
    pytest.importorskip("keras_cv")
    from keras_cv.src.utils.train import get_feature_extractor

    from keras_resnet_suite.integrations.keras_cv import ResNetCVBackbone

    backbone = ResNetCVBackbone("resnet18", options=TINY)
    levels = backbone.pyramid_level_inputs
    extractor = get_feature_extractor(backbone, list(levels.values()), list(levels.keys()))
    outputs = extractor(keras.Input(shape=(64, 64, 3)))
    assert list(outputs) == ["P2", "P3", "P4", "P5"]
    assert [tuple(v.shape) for v in outputs.values()] == [
        (None, 64 // 2 ** i, 64 // 2 ** i, 8) for i in (2, 3, 4, 5)]
    four = ResNetCVBackbone("resnet18", options=TINY, image_shape=(None, None, 4))
    assert four(np.ones((1, 32, 32, 4), "float32"))["C5"].shape == (1, 1, 1, 8)
