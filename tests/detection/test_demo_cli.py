"""`python -m detection demo` end to end on a few images: the mAP line, the PNG, the weights."""

import re

from detection import cli


def test_demo_command_prints_map_and_writes_png(tmp_path, capsys):
    code = cli.main(["demo", "--out", str(tmp_path), "--train-images", "16",
                     "--test-images", "4", "--epochs", "1"])
    assert code == 0
    out = capsys.readouterr().out
    match = re.search(r"^mAP@0\.5 = (\d\.\d{3})$", out, re.MULTILINE)
    assert match and 0.0 <= float(match.group(1)) <= 1.0
    png = tmp_path / "detections.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert (tmp_path / "final.weights.h5").stat().st_size > 0  # the demo is a train run folder


def test_bad_config_path_is_reported(tmp_path, capsys):
    assert cli.main(["demo", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err
