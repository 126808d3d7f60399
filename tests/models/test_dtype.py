"""`dtype` (a Keras dtype policy) on `krs.build`, the CamelCase builders and the backbone
builders, as every Keras layer takes it: the layers, deep inside the blocks too, compute in the
policy's dtype, before and after a `.keras` round trip. Tiny ResNet-20/18 at 32x32."""

import keras
import numpy as np
import pytest

import keras_resnet_suite as krs
from keras_resnet_suite import backbones

TINY = {"depths": (1, 1, 1, 1), "widths": (8, 8, 8, 8), "stem_width": 8}


def _compute_dtypes(model: keras.Model) -> set[str]:
    return {layer.compute_dtype for layer in model._flatten_layers(include_self=False)
            if not isinstance(layer, keras.layers.InputLayer)}


@pytest.mark.jax
def test_classifier_builders_compute_in_the_policy(tmp_path):
    # bfloat16 here (variables too); mixed_float16 in the backbone test below.
    policy = "bfloat16"
    compute = keras.dtype_policies.get(policy).compute_dtype
    model = krs.build("resnet20", dtype=policy, depths=(1, 1, 1))
    # The classifier stays float32 (a stable softmax); everything before it is in `compute`.
    assert model.get_layer("predictions").compute_dtype == "float32"
    body = keras.Model(model.input, model.get_layer("avg_pool").output)
    assert _compute_dtypes(body) == {compute}
    assert model.get_layer("conv2_x").blocks[0].branch[1].variable_dtype == \
        keras.dtype_policies.get(policy).variable_dtype
    features = body(np.ones((1, 32, 32, 3), "float32"))
    assert keras.backend.standardize_dtype(features.dtype) == compute
    path = tmp_path / "m.keras"
    model.save(path)
    again = keras.saving.load_model(path)
    assert again.get_layer("conv3_x").blocks[0].branch[1].compute_dtype == compute
    np.testing.assert_allclose(again.predict(np.ones((1, 32, 32, 3)), verbose=0),
                               model.predict(np.ones((1, 32, 32, 3)), verbose=0), atol=1e-6)
    assert krs.ResNet20(dtype=policy, depths=(1, 1, 1)).get_layer("conv1").compute_dtype == compute
    assert keras.config.dtype_policy().name == "float32"  # the global policy is left alone


@pytest.mark.parametrize("policy", ["bfloat16", "mixed_float16"])
def test_backbone_builders_compute_in_the_policy(policy):
    compute = keras.dtype_policies.get(policy).compute_dtype
    for model in (backbones.build("resnet18", dtype=policy, **TINY),
                  backbones.ResNet18(dtype=keras.dtype_policies.get(policy), **TINY)):
        assert _compute_dtypes(model) == {compute}
        out = model(np.ones((1, 32, 32, 3), "float32"))
        assert {keras.backend.standardize_dtype(v.dtype) for v in out.values()} == {compute}


def test_an_unknown_policy_is_one_line():
    with pytest.raises(ValueError, match="float12"):
        krs.build("resnet20", dtype="float12", depths=(1, 1, 1))
