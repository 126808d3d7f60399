"""The long fuzz run (issue 35): every reader a user's file reaches, fed `--cases` inputs each
from the strategies the short fuzz tests use (`benchmarks.fuzz_inputs`), judged by
`benchmarks.fuzz_targets` (a named error, a counted skip or a correct result).

    python -m benchmarks.fuzz [--cases 10000] [--targets voc_xml coco_json ...] [--seed 0]
                              [--out benchmarks/results] [--suffix -name]

Unlike the tests, a failure does not stop the run: it is counted (`failure: <Type>`) with the
first input that gave it, so one run says how many inputs each reader saw and how each ended.
Results: `benchmarks/results/fuzz-<host>-<date><suffix>.{json,md}`.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, seed, settings

from benchmarks.fuzz_targets import TARGETS, Target, run_one


def fuzz_target(target: Target, cases: int, root: Path, random_seed: int = 0) -> dict:
    """`cases` inputs through `target`: outcome counts, first failing input per kind, time."""
    counts: collections.Counter = collections.Counter()
    examples: dict[str, dict] = {}

    @seed(random_seed)
    @settings(max_examples=cases, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(target.strategy)
    def case(value):
        try:
            outcome = run_one(target, value, root)
        except (Exception, RecursionError) as err:  # noqa: BLE001 - counted, run goes on
            outcome = f"failure: {type(err).__name__}"
            examples.setdefault(outcome, {"input": repr(value)[:400],
                                          "message": " ".join(str(err).split())[:400]})
        counts[outcome] += 1

    start = time.perf_counter()
    case()
    seconds = time.perf_counter() - start
    return {"cases": sum(counts.values()), "outcomes": dict(sorted(counts.items())),
            "failures": sum(v for k, v in counts.items() if k.startswith("failure")),
            "first_failing_inputs": examples, "seconds": round(seconds, 1)}


def _markdown(result: dict) -> str:
    lines = [f"# Fuzz run, {result['date']} ({result['host']})", "",
             f"`python -m benchmarks.fuzz --cases {result['cases_asked']} --seed "
             f"{result['seed']}`; {result['note']}", "",
             "| reader | inputs | named error | counted skip | correct result | failures | s |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in result["targets"].items():
        o = r["outcomes"]
        lines.append(f"| {name} | {r['cases']} | {o.get('error', 0)} | {o.get('counted', 0)} | "
                     f"{o.get('ok', 0)} | {r['failures']} | {r['seconds']} |")
    for name, r in result["targets"].items():
        for kind, example in r["first_failing_inputs"].items():
            lines.append(f"\n{name} {kind}: {example['message']}\n\n    {example['input']}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fuzz", description=__doc__)
    parser.add_argument("--cases", type=int, default=10_000, help="inputs per reader")
    parser.add_argument("--targets", nargs="+", choices=sorted(TARGETS), default=list(TARGETS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--note", default="", help="a line for the report (machine, load)")
    parser.add_argument("--suffix", default="", help="added to the result files' names")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TQDM_DISABLE", "1")  # the loaders' progress bars, once per input
    results: dict = {}
    date = time.strftime("%Y-%m-%d")
    result = {"date": date, "host": platform.node() or "host", "cases_asked": args.cases,
              "seed": args.seed, "note": args.note, "python": sys.version.split()[0],
              "targets": results}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"fuzz-{result['host']}-{date}{args.suffix}"
    with tempfile.TemporaryDirectory() as root:
        for name in args.targets:
            results[name] = fuzz_target(TARGETS[name], args.cases, Path(root), args.seed)
            r = results[name]
            print(f"{name}: {r['cases']} inputs in {r['seconds']} s: {r['outcomes']}",
                  flush=True)
            # written after each reader, so a run cut short keeps what it measured
            stem.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
            stem.with_suffix(".md").write_text(_markdown(result))
    print(f"wrote {stem}.json and .md")
    return 1 if any(r["failures"] for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
