"""Helpers for the weight-conversion tests: random BN statistics, legacy Keras h5 files."""

import h5py
import keras
import numpy as np
import pytest


def randomise(model, seed=0, gamma=(0.5, 1.0)):
    """Random BN statistics and affine parameters, random conv biases: a conversion that
    dropped or mis-ordered any of them would change the outputs."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape
            layer.set_weights([rng.uniform(*gamma, n), rng.normal(0, 0.1, n),
                               rng.normal(0, 0.1, n), rng.uniform(0.5, 1.5, n)])
        elif isinstance(layer, keras.layers.Conv2D) and layer.use_bias:
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, rng.normal(0, 0.1, bias.shape)])
    return model


def write_legacy_h5(model, path):
    """Save a functional model's weights the way keras.applications publishes them (Keras 2
    layout: one group per layer, `layer_names` / `weight_names` attributes)."""
    return write_legacy_h5_layers(
        {layer.name: [(w.name, keras.ops.convert_to_numpy(w)) for w in layer.weights]
         for layer in model.layers}, path)


def write_legacy_h5_layers(layers, path):
    """`write_legacy_h5` from `{layer name: [(weight name, array), ...]}` (no model needed)."""
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [n.encode() for n in layers]
        for layer, named in layers.items():
            group = f.create_group(layer)
            weight_names = [f"{layer}/{name}:0" for name, _ in named]
            group.attrs["weight_names"] = [n.encode() for n in weight_names]
            for name, (_, array) in zip(weight_names, named, strict=True):
                group.create_dataset(name, data=array)
    return path


@pytest.fixture
def rng():
    return np.random.default_rng(0)
