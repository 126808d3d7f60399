"""`python -m benchmarks.own_data`: every contender in its own process (torch with
OMP_WAIT_POLICY=PASSIVE), ratios over torchvision's R50-FPN from the same run, JSON + Markdown
(workers mocked here with made-up timings; the real run is in benchmarks/results)."""

import json
import subprocess

from benchmarks import own_data


def test_each_contender_in_a_process_and_ratios_in_the_table(tmp_path, monkeypatch):
    calls = []

    def fake_run(cmd, env, **kwargs):
        calls.append((cmd, env))
        name = cmd[cmd.index("--name") + 1]
        slow = 2.0 if name == own_data.TORCH[0] else 1.0
        row = {"model": name, "step_first_s": 9.0, "step_s": slow, "step_cpu_s": slow / 2,
               "image_first_s": 3.0, "image_s": slow / 4, "image_cpu_s": slow / 8,
               "images": 2, "steps": 1}
        return subprocess.CompletedProcess(cmd, 0, stdout="noise\n" + json.dumps(row), stderr="")

    monkeypatch.setattr(own_data.subprocess, "run", fake_run)
    assert own_data.main(["--images", "2", "--steps", "1", "--tag", "t", "--out",
                          str(tmp_path)]) == 0
    assert len(calls) == len(own_data.CANDIDATES) + len(own_data.TORCH)
    assert all(env["OMP_WAIT_POLICY"] == "PASSIVE" for _, env in calls)
    assert [c[c.index("--worker") + 1] for c, _ in calls].count("torch") == 2
    result = json.loads((tmp_path / "own-data-t.json").read_text())
    assert result["results"][f"torchvision {own_data.TORCH[0]}"]["image_s"] == 0.5
    table = (tmp_path / "own-data-t.md").read_text()
    start = next(n for n in own_data.CANDIDATES if "starting config" in n)
    assert f"| {start} | 1.00 (0.50) | 0.25 (0.12) | 0.50x (0.50x) | 0.50x (0.50x) |" in table
