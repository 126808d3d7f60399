"""The `models` table and the offline demo, end to end at a tiny size."""

import keras
import numpy as np

from keras_resnet_suite import cli, demo
from keras_resnet_suite.data import shapes


def test_models_command_prints_counts_and_paper_figures(capsys):
    cli.main(["models", "--names", "resnet20", "resnet18", "--size", "32"])
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:3]}
    assert rows["resnet20"][1:4] == ["20", "269,722", "0.27M"]
    assert rows["resnet18"][1:4] == ["18", "11,689,512", "11.7M"]


def test_demo_trains_saves_reloads_and_draws(tmp_path):
    result = demo.run(tmp_path, "resnet20", epochs=4, num_train=1536, num_test=128,
                      batch_size=64, depths=(1, 1, 1))  # a ResNet-8 keeps the test short
    assert result["test_accuracy"] > 0.5  # three balanced classes: chance is 1/3
    assert result["reload_max_abs_diff"] == 0.0
    model = keras.saving.load_model(result["saved_model"])
    images, _ = shapes.classification_arrays(8, start=1536)
    assert model.predict(images, verbose=0).shape == (8, 3)
    png = (tmp_path / "demo.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_shapes_are_deterministic_by_index_and_boxes_are_tight():
    a = shapes.render(7, image_size=48, max_objects=3, seed=3)
    b = shapes.generate(3, start=6, image_size=48, max_objects=3, seed=3)[1]
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["boxes"], b["boxes"])
    one = shapes.render(0, image_size=64, min_objects=1, max_objects=1, seed=1)
    x0, y0, x1, y1 = one["boxes"][0].astype(int)
    plain = shapes.render(0, image_size=64, min_objects=0, max_objects=0, seed=1)["image"]
    changed = np.any(one["image"] != plain, axis=-1)  # same background, shape drawn on it
    assert changed[y0:y1, x0:x1].any() and not changed[:y0].any() and not changed[y1:].any()
    assert not changed[:, :x0].any() and not changed[:, x1:].any()
    assert set(shapes.classification_arrays(60)[1]) == {0, 1, 2}
