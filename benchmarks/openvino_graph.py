"""Why keras.applications' ResNet-50 runs faster than ours in OpenVINO: paired rounds in one
process of keras.applications' ResNet-50 (v1: stride in the 1x1), ours (v1.5: stride in the
3x3) and ours built with `stride_in_1x1=True` (v1), each exported by Keras to OpenVINO, with
the multiply-adds and the layers OpenVINO's CPU plugin actually executes (its runtime graph).

    python -m benchmarks.openvino_graph [--batch 1 16] [--rounds 5] [--precision f32 bf16]

Writes benchmarks/results/2026-12-08-openvino-graph.{json,md}.
"""

from __future__ import annotations

import argparse
import collections
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _models() -> dict:
    import keras

    import keras_resnet_suite as krs

    return {
        "keras.applications ResNet50": keras.applications.ResNet50(weights=None),
        "ours resnet50 (v1.5)": krs.build("resnet50"),
        "ours resnet50 stride_in_1x1 (v1)": krs.build("resnet50", stride_in_1x1=True),
    }


def _macs(ov_model) -> float:
    """Convolution + MatMul multiply-adds of one image (static 224 x 224 shapes)."""
    total = 0.0
    for op in ov_model.get_ops():
        kind = op.get_type_name()
        if kind == "Convolution":
            out = list(op.get_output_partial_shape(0).get_shape())
            weights = list(op.input_value(1).get_partial_shape().get_shape())
            total += np.prod(out[1:]) * np.prod(weights[1:])
        elif kind == "MatMul":
            a = list(op.input_value(0).get_partial_shape().get_shape())
            b = list(op.input_value(1).get_partial_shape().get_shape())
            total += np.prod(a[1:]) * b[-1]
    return float(total)


def _executed(compiled) -> dict:
    """How many layers of each type the CPU plugin runs (after its fusions)."""
    counts = collections.Counter()
    for op in compiled.get_runtime_model().get_ops():
        counts[op.get_rt_info()["layerType"].astype(str)] += 1
    return dict(sorted(counts.items()))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--precision", nargs="+", default=["f32", "bf16"])
    args = parser.parse_args(argv)
    import openvino as ov

    core, tmp = ov.Core(), Path(tempfile.mkdtemp())
    graphs, result = {}, {"rows": []}
    for name, model in _models().items():
        xml = tmp / (name.split()[0].replace(".", "_") + str(len(graphs)) + ".xml")
        model.export(str(xml), format="openvino", verbose=False)
        graph = core.read_model(str(xml))
        graph.reshape([1, 224, 224, 3])
        source = collections.Counter(op.get_type_name() for op in graph.get_ops())
        graphs[name] = (xml, _macs(graph), {k: source[k] for k in ("Pad", "Convolution")})
    for precision in args.precision:
        for batch in args.batch:
            compiled, x = {}, np.random.default_rng(0).uniform(0, 1, (batch, 224, 224, 3))
            for name, (xml, _, _) in graphs.items():
                graph = core.read_model(str(xml))
                graph.reshape([batch, 224, 224, 3])
                compiled[name] = core.compile_model(graph, "CPU", {
                    "INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"})
                compiled[name](x.astype(np.float32))
            cpu = {k: [] for k in compiled}
            wall = {k: [] for k in compiled}
            calls = max(2, 16 // batch)
            for _ in range(args.rounds):  # interleaved: each round runs every model
                for name, c in compiled.items():
                    t, u = time.perf_counter(), _cpu()
                    for _ in range(calls):
                        c(x.astype(np.float32))
                    wall[name].append((time.perf_counter() - t) / calls / batch * 1e3)
                    cpu[name].append((_cpu() - u) / calls / batch * 1e3)
            base = "keras.applications ResNet50"
            for name in compiled:
                macs = graphs[name][1]
                row = {"model": name, "precision": precision, "batch": batch,
                       "cpu_ms_per_image": float(np.median(cpu[name])),
                       "wall_ms_per_image": float(np.median(wall[name])), "gmacs": macs / 1e9,
                       "source_ops": graphs[name][2], "executed_layers": _executed(compiled[name])}
                row["gmacs_per_cpu_s"] = row["gmacs"] / row["cpu_ms_per_image"] * 1e3
                row["speed_vs_keras_apps_cpu"] = (float(np.median(cpu[base])) /
                                                  row["cpu_ms_per_image"])
                result["rows"].append(row)
                print({k: v for k, v in row.items() if k != "executed_layers"}, flush=True)
    out = Path(__file__).parent / "results" / "2026-12-08-openvino-graph"
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# ResNet-50 in OpenVINO: keras.applications vs ours, paired rounds, 2026-12-08", "",
             "| model | precision | batch | GMACs | CPU ms/img | GMAC/CPU-s | speed vs "
             "keras.applications (CPU time) | Pad ops in IR |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['model']} | {r['precision']} | {r['batch']} | {r['gmacs']:.2f} | "
              f"{r['cpu_ms_per_image']:.1f} | {r['gmacs_per_cpu_s']:.0f} | "
              f"{r['speed_vs_keras_apps_cpu']:.2f}x | {r['source_ops'].get('Pad', 0)} |"
              for r in result["rows"]]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
