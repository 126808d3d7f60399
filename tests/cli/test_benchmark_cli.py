"""`keras-resnet-suite benchmark`: one CIFAR epoch through the command line, which chooses the
CPU kernels before TensorFlow loads."""

import json

import pytest

keras = pytest.importorskip("keras")
if keras.backend.backend() != "tensorflow":
    pytest.skip("the benchmark reads CIFAR through tf.data", allow_module_level=True)

from keras_resnet_suite import cli  # noqa: E402


def test_benchmark_reports_rates_and_accuracy(binary_release, capsys):
    # 30 training images in batches of 6: 5 steps, fewer than the 5 the timer skips by default
    code = cli.main(["benchmark", "--data", str(binary_release / "cifar-10-batches-bin"),
                     "--batch-size", "6", "--jit-compile", "false"])
    assert code == 0
    out = capsys.readouterr().out
    result = json.loads(out[out.rindex("{\n"):])
    assert (result["model"], result["recipe"], result["epochs"]) == ("resnet20", "paper-cifar", 1)
    assert 0.0 <= result["test_accuracy"] <= 1.0
    assert result["train_images_per_s"] > 0 and result["pipeline_images_per_s"] > 0
    assert result["pipeline_over_train"] == pytest.approx(
        result["pipeline_images_per_s"] / result["train_images_per_s"], rel=0.05)


def test_benchmark_names_a_missing_data_source(tmp_path, capsys):
    assert cli.main(["benchmark", "--data", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nowhere" in err[0], err
