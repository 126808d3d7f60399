"""The adapters' stand-ins in Keras' registry: a `.keras` file that holds an adapter finds it
without an import of the adapter module, and names the package to install when the host
library is missing. The fresh-process reloads in test_keras_hub (keras_resnet_suite imported
before Keras) and test_keras_cv (after it) use them."""

import sys

import keras
import pytest

from keras_resnet_suite import integrations

NAME = "keras_resnet_suite>ResNetHubBackbone"
CONFIG = {"module": "keras_resnet_suite.integrations.keras_hub", "class_name": "ResNetHubBackbone",
          "registered_name": NAME, "config": {"architecture": "resnet18"}}


def test_missing_host_library_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "keras_hub", None)  # as if keras-hub were not installed
    monkeypatch.delitem(sys.modules, "keras_resnet_suite.integrations.keras_hub", raising=False)
    monkeypatch.setitem(keras.saving.get_custom_objects(), NAME, integrations._stand_in(NAME))
    with pytest.raises(ImportError) as info:
        keras.saving.deserialize_keras_object(CONFIG)
    assert str(info.value) == ("this model holds ResNetHubBackbone, which needs keras-hub "
                               "(keras_hub is not installed): pip install keras-hub")

