"""`python -m benchmarks.detector_serving`: the export and serving workers are fresh processes
(mocked here with made-up timings), torchvision's reference timing runs the same seeded
weights, and `--masks` times the Mask R-CNN of the same parts against torchvision's."""

import json

import pytest

from benchmarks import detector_serving


@pytest.mark.parametrize("masks", [False, True])
def test_rounds_rotate_and_masks_reach_every_worker(masks, tmp_path, monkeypatch):
    calls, peers = [], []

    def fresh(argv, env):
        calls.append((argv, env["TF_ENABLE_ONEDNN_OPTS"]))
        if "--export" in argv:
            return {"canvas": [800, 1216]}
        return {"times_s": [2.0 if env["TF_ENABLE_ONEDNN_OPTS"] == "1" else 4.0],
                "tensorflow": "oneDNN " + env["TF_ENABLE_ONEDNN_OPTS"]}

    def reference(arch, repeats, python):
        peers.append(arch)
        return [3.0] * repeats

    monkeypatch.setattr(detector_serving, "fresh_process", fresh)
    monkeypatch.setattr("benchmarks.pretrained.reference_times", reference)
    argv = ["--rounds", "3", "--repeats", "1", "--out", str(tmp_path)]
    assert detector_serving.main(argv + (["--masks"] if masks else [])) == 0
    assert all(("--masks" in a) is masks for a, _ in calls)  # export and both serving settings
    assert [s for a, s in calls if "--serve" in a] == ["1", "0", "0", "1", "1", "0"]  # rotated
    assert peers == ["tv_mask_r50_fpn_v1" if masks else "tv_r50_fpn_v1"] * 3
    kind = "mask-serving" if masks else "detector-serving"
    result = json.loads(next(tmp_path.glob(f"{kind}-*.json")).read_text())
    assert result["case"] == peers[0] and result["off_over_on"] == pytest.approx(2.0)
    ratios = {r["contender"]: r["peer_over_ours"] for r in result["rows"]}
    assert ratios == {"ours SavedModel, oneDNN on": 1.5, "ours SavedModel, oneDNN off": 0.75,
                      detector_serving.PEER: 1.0}
