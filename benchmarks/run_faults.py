"""Training-run faults, re-measured on `python -m detection train` (a tiny C4 detector):

- **two runs, one folder**: a second run started on the folder of a running one must be refused
  in one line naming the holder (exit 2), and the first must finish unharmed;
- **SIGTERM and resume**: SIGTERM a step after the first checkpoint: exit 143, one line saying
  where a resume starts, no temporary folder or lock left; the same command then resumes there;
- **disk full and resume**: `--out` on a 2.3 MB tmpfs (a private mount namespace, `unshare`)
  that fills up before the run ends: one line naming the file and the last complete
  checkpoint, exit 1 (never a crash: 139), no partial folder; after `mount -o remount` gives
  space, the same command resumes there.

The resumed runs' final weights are compared with the first (uninterrupted) run's.
`python -m benchmarks.reliability` runs these (unless `--skip-train`; `--faults-only`: these
alone, into `benchmarks/results/reliability-<host>-<date>-faults.{json,md}`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def _env() -> dict:
    path = [str(REPO), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "3",
            "PYTHONPATH": os.pathsep.join(path)}


def faults_config(base: Path, path: Path) -> Path:
    """`base` (a tiny detector config) cut to 16 steps with a checkpoint every 4."""
    config = yaml.safe_load(base.read_text())
    config["train"].update(steps=16, checkpoint_every=4)
    path.write_text(yaml.safe_dump(config))
    return path


def _command(config: Path, out: Path | str) -> list[str]:
    return [sys.executable, "-m", "detection", "train", "--config", str(config), "--out",
            str(out), "--eval-images", "1"]


def _last_line(text: str) -> str:
    lines = text.replace("\r", "\n").strip().splitlines()
    return lines[-1] if lines else ""


def _leftovers(out: Path) -> list[str]:
    """Temporary files or folders and a lock left in a run folder."""
    return sorted(str(p.relative_to(out)) for p in out.rglob("*")
                  if ".tmp-" in p.name or p.name == "run.lock")


def _weights(path: Path) -> dict:
    import h5py
    import numpy as np

    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda k, v: out.__setitem__(k, np.asarray(v[()]))
                     if hasattr(v, "shape") else None)
    return out


def _same(a: Path, b: Path) -> bool:
    import numpy as np

    wa, wb = _weights(a), _weights(b)
    return wa.keys() == wb.keys() and all(np.array_equal(wa[k], wb[k]) for k in wa)


def two_runs_one_folder(config: Path, work: Path) -> dict:
    """Run A to the end; run B on A's folder once A holds the lock. A's folder is the
    uninterrupted reference of the other cases."""
    out = work / "whole"
    start = time.perf_counter()
    first = subprocess.Popen(_command(config, out), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=_env(), cwd=REPO)
    while not (out / "run.lock").exists() and first.poll() is None:
        time.sleep(0.2)
    second = subprocess.run(_command(config, out), capture_output=True, text=True, env=_env(),
                            cwd=REPO, timeout=900)
    _, first_err = first.communicate(timeout=900)
    return {"case": "two runs, one folder", "first_exit": first.returncode,
            "second_exit": second.returncode, "second_line": _last_line(second.stderr),
            "first_finished": (out / "final.weights.h5").is_file(),
            "leftovers": _leftovers(out), "seconds": round(time.perf_counter() - start, 1)}


def sigterm_and_resume(config: Path, work: Path, whole: Path) -> dict:
    """SIGTERM once the first checkpoint exists; then the same command again."""
    out = work / "sigterm"
    proc = subprocess.Popen(_command(config, out), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=_env(), cwd=REPO)
    while not list((out / "checkpoints").glob("step-*")) and proc.poll() is None:
        time.sleep(0.1)
    sent = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=900)
    stop_s = time.perf_counter() - sent
    line, leftovers = _last_line(err), _leftovers(out)
    resumed = subprocess.run(_command(config, out), capture_output=True, text=True, env=_env(),
                             cwd=REPO, timeout=900)
    m = re.search(r"resuming from step (\d+)", resumed.stdout)
    said = re.search(r"resumes from step (\d+)", line)
    return {"case": "SIGTERM and resume", "exit": proc.returncode, "line": line,
            "seconds_to_exit": round(stop_s, 1), "leftovers": leftovers,
            "said_resume_step": int(said.group(1)) if said else None,
            "resumed_from_step": int(m.group(1)) if m else None,
            "resume_exit": resumed.returncode,
            "final_weights_identical": resumed.returncode == 0
            and _same(whole / "final.weights.h5", out / "final.weights.h5")}


DISK_SCRIPT = """
set -u
mount -t tmpfs -o size={size} tmpfs {disk} || exit 77
{command} > {work}/full.out 2> {work}/full.err; echo $? > {work}/full.rc
find {disk} | sort > {work}/full.ls
mount -o remount,size=64m {disk}
{command} > {work}/resume.out 2> {work}/resume.err; echo $? > {work}/resume.rc
cp {disk}/run/final.weights.h5 {work}/resumed.weights.h5 2>/dev/null || true
"""


def disk_full_and_resume(config: Path, work: Path, whole: Path, size: str = "2300k") -> dict:
    """A tmpfs `--out` of `size` (fills up at the tiny detector's second checkpoint)."""
    if shutil.which("unshare") is None:
        return {"case": "disk full and resume", "skipped": "no unshare"}
    disk, logs = work / "disk", work / "disk-logs"
    disk.mkdir()
    logs.mkdir()
    command = " ".join(_command(config, disk / "run"))
    script = DISK_SCRIPT.format(size=size, disk=disk, work=logs, command=command)
    user = [] if os.geteuid() == 0 else ["--map-root-user"]
    if subprocess.run(["unshare", "--mount", *user, "true"], capture_output=True).returncode:
        return {"case": "disk full and resume", "skipped": "unshare refused"}
    proc = subprocess.run(["unshare", "--mount", *user, "sh", "-c", script], env=_env(),
                          cwd=REPO, capture_output=True, text=True, timeout=1800)
    if proc.returncode == 77:
        return {"case": "disk full and resume", "skipped": proc.stderr.strip()[-200:]}
    err = (logs / "full.err").read_text()
    line = _last_line(err)
    listing = (logs / "full.ls").read_text().split()
    said = re.search(r"resumes from step (\d+)", line)
    m = re.search(r"resuming from step (\d+)", (logs / "resume.out").read_text())
    resumed = logs / "resumed.weights.h5"
    return {"case": "disk full and resume", "tmpfs": size,
            "exit": int((logs / "full.rc").read_text()), "line": line,
            "traceback_or_crash": "Traceback" in err or "Exception ignored" in err,
            "leftovers": [p for p in listing if ".tmp-" in p or p.endswith("run.lock")],
            "said_resume_step": int(said.group(1)) if said else None,
            "resumed_from_step": int(m.group(1)) if m else None,
            "resume_exit": int((logs / "resume.rc").read_text()),
            "final_weights_identical": resumed.is_file()
            and _same(whole / "final.weights.h5", resumed)}


def run_faults(base_config: Path, work: Path) -> list[dict]:
    """The three cases on `base_config` (cut by `faults_config`), in `work`."""
    config = faults_config(base_config, work / "faults.yaml")
    results = [two_runs_one_folder(config, work)]
    whole = work / "whole"
    results.append(sigterm_and_resume(config, work, whole))
    results.append(disk_full_and_resume(config, work, whole))
    results = json.loads(json.dumps(results).replace(str(work), "WORK"))  # no temporary paths
    for r in results:
        print(f"{r['case']}: " + ", ".join(f"{k} {v}" for k, v in r.items() if k != "case"),
              flush=True)
    return results


def faults_ok(r: dict) -> bool:
    """Whether a case behaved (a skipped one counts as such)."""
    if "skipped" in r:
        return True
    if r["case"] == "two runs, one folder":
        return (r["first_exit"], r["second_exit"], r["leftovers"]) == (0, 2, [])
    return (r["exit"] in (1, 143) and not r["leftovers"] and r["resume_exit"] == 0
            and r["said_resume_step"] == r["resumed_from_step"] is not None
            and r["final_weights_identical"])


def markdown_rows(results: list[dict]) -> list[str]:
    """A table of the cases (for this module's and `benchmarks.reliability`'s Markdown)."""
    lines = ["| training-run fault (`python -m detection train`, 16 steps, checkpoint every 4) "
             "| exit | one line said | left behind | resumed from | final weights vs "
             "uninterrupted |", "| --- | --- | --- | --- | --- | --- |"]
    for r in results:
        if "skipped" in r:
            lines.append(f"| {r['case']} | skipped: {r['skipped']} | | | | |")
        elif r["case"] == "two runs, one folder":
            lines.append(f"| {r['case']} | second {r['second_exit']}, first "
                         f"{r['first_exit']} | `{r['second_line']}` | "
                         f"{', '.join(r['leftovers']) or 'nothing'} | - | first run finished: "
                         f"{r['first_finished']} |")
        else:
            same = "bit-identical" if r["final_weights_identical"] else "differ"
            lines.append(f"| {r['case']} | {r['exit']} | `{r['line']}` | "
                         f"{', '.join(r['leftovers']) or 'nothing'} | step "
                         f"{r['resumed_from_step']} (exit {r['resume_exit']}) | {same} |")
    return lines
