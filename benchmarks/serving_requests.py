"""The serving load of `python -m benchmarks.reliability`: mixed requests against exported
SavedModels, every answer accounted for element by element, latency and memory over time.

`serving_default` gets random batches of 1-4 random-size images; `serving_bytes` batches of
JPEGs/PNGs of several sizes (some with an EXIF orientation) among which a few bad uploads
(garbage, a truncated JPEG, a header declaring 8000x8000 pixels), each of which must be
answered `valid` False naming its index, each good one True.
"""

from __future__ import annotations

import io
import struct
import time
from pathlib import Path

import numpy as np

from benchmarks.timing import rss_mb

FLAT_MIB = 32.0  # RSS growth from call 200 to the last call below this counts as flat memory
BAD_KINDS = {  # what `serving_bytes` must say about each bad upload
    "garbage": "not a JPEG/PNG/GIF/BMP image",
    "truncated_jpeg": "truncated JPEG (no end-of-image marker)",
    "oversize_header": "8000x8000 image (64000000 pixels) is above the limit",
}


def _encode(pixels: np.ndarray, fmt: str, orientation: int = 1) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    image = Image.fromarray(pixels)
    if orientation != 1:
        exif = Image.Exif()
        exif[0x0112] = orientation
        image.save(buffer, format=fmt, exif=exif)
    else:
        image.save(buffer, format=fmt)
    return buffer.getvalue()


def uploads(seed: int = 0) -> tuple[list[bytes], dict[str, bytes]]:
    """Good JPEGs/PNGs of several sizes (some with an EXIF orientation) and the bad uploads."""
    rng = np.random.default_rng(seed)
    good = []
    for i, (h, w) in enumerate([(24, 40), (48, 48), (64, 96), (120, 90), (200, 150), (33, 257)]):
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        for fmt in ("JPEG", "PNG"):
            good.append(_encode(pixels, fmt, orientation=(1, 6, 3, 8)[i % 4]))
    jpeg = good[0]
    sof = jpeg.index(b"\xff\xc0")  # the frame header's height and width follow at +5
    bad = {"garbage": bytes(rng.integers(0, 256, 300, dtype=np.uint8)),
           "truncated_jpeg": jpeg[: len(jpeg) // 2],
           "oversize_header": jpeg[: sof + 5] + struct.pack(">HH", 8000, 8000) + jpeg[sof + 9:]}
    return good, bad


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


class Requests:
    """Random requests to loaded SavedModels, each answer checked element by element."""

    def __init__(self, paths: dict[str, Path], seed: int, bad_rate: float) -> None:
        import tensorflow as tf

        self.tf, self.rng, self.bad_rate = tf, np.random.default_rng(seed), bad_rate
        self.models = {name: tf.saved_model.load(str(path)).signatures
                       for name, path in paths.items()}
        self.good, self.bad = uploads(seed)
        self.kinds = [(m, s) for m in sorted(self.models)
                      for s in ("serving_default", "serving_bytes")]
        # oneDNN keeps compiled primitives per input shape (up to its cache capacity), so
        # memory is read against the number of distinct `images` shapes sent
        self.shapes: set[tuple] = set()

    def send(self, model: str, sig: str) -> tuple[int, int, list[str]]:
        """One call; `(bad elements sent, elements answered invalid, accounting problems)`."""
        batch = int(self.rng.integers(1, 5))
        if sig == "serving_default":
            return self._images(model, batch)
        return self._uploads(model, batch)

    def _images(self, model: str, batch: int) -> tuple[int, int, list[str]]:
        rng = self.rng
        if model == "classifier":
            images = rng.normal(size=(batch, 32, 32, 3)).astype(np.float32)
        else:
            h, w = (int(v) for v in rng.integers(32, 161, 2))
            images = rng.integers(0, 256, (batch, h, w, 3), dtype=np.uint8)
        self.shapes.add((model, images.shape))
        out = self.models[model]["serving_default"](images=self.tf.constant(images))
        key = "probabilities" if model == "classifier" else "num_detections"
        got = out[key].numpy()
        return 0, 0, ([] if got.shape[0] == batch and np.isfinite(got).all()
                      else [f"{model} serving_default: {key} of shape {got.shape} for "
                            f"{batch} images"])

    def _uploads(self, model: str, batch: int) -> tuple[int, int, list[str]]:
        rng, bad, good = self.rng, self.bad, self.good
        sent = [str(rng.choice(list(bad))) if rng.random() < self.bad_rate else None
                for _ in range(batch)]
        data = [bad[k] if k else good[int(rng.integers(len(good)))] for k in sent]
        out = self.models[model]["serving_bytes"](
            image_bytes=self.tf.constant(data, dtype=self.tf.string))
        valid, error = out["valid"].numpy(), out["error"].numpy()
        problems = []
        for i, kind in enumerate(sent):
            text = error[i].decode()
            expected = f"image_bytes[{i}]: {BAD_KINDS[kind]}" if kind else ""
            if bool(valid[i]) == bool(kind) or not text.startswith(expected) or (
                    not kind and text):
                problems.append(f"{model} serving_bytes[{i}] ({kind or 'good'}): "
                                f"valid={valid[i]} error={text!r}")
        return sum(k is not None for k in sent), int((~valid).sum()), problems


def serving_load(paths: dict[str, Path], calls: int = 1000, every: int = 100, seed: int = 0,
                 bad_rate: float = 0.15, max_seconds: float = 1800) -> dict:
    """Send `calls` mixed requests to the SavedModels at `paths`; failures, validity accounting,
    latency and RSS (see the module docstring)."""
    requests = Requests(paths, seed, bad_rate)
    for model, sig in requests.kinds:  # warm-up: each signature's first call builds its kernels
        requests.send(model, sig)
    latencies: dict[str, list[float]] = {f"{m} {s}": [] for m, s in requests.kinds}
    tally = {"failures": [], "problems": [], "bad_sent": 0, "invalid": 0,
             "rss": [(0, rss_mb())]}
    start = time.perf_counter()
    done = 0
    for done in range(1, calls + 1):
        model, sig = requests.kinds[int(requests.rng.integers(len(requests.kinds)))]
        t0 = time.perf_counter()
        try:
            n_bad, n_invalid, wrong = requests.send(model, sig)
            tally["bad_sent"] += n_bad
            tally["invalid"] += n_invalid
            tally["problems"] += wrong
        except Exception as error:  # a failed request is the figure being measured
            tally["failures"].append(f"call {done} {model} {sig}: {type(error).__name__}: "
                                     f"{str(error).splitlines()[0] if str(error) else ''}")
        latencies[f"{model} {sig}"].append(time.perf_counter() - t0)
        if done % every == 0 or done == calls:
            tally["rss"].append((done, rss_mb()))
        if time.perf_counter() - start > max_seconds:
            tally["rss"].append((done, rss_mb()))
            break
    return summary(requests, latencies, tally, done, calls, time.perf_counter() - start)


def summary(requests: Requests, latencies: dict[str, list[float]], tally: dict, done: int,
            calls: int, seconds: float) -> dict:
    """The serving load's figures: failures, accounting, latency percentiles, memory growth."""
    every_call = [t for ts in latencies.values() for t in ts]
    rss, failures, problems = tally["rss"], tally["failures"], tally["problems"]
    # from call 200 on (allocator pools and caches have settled), else from after warm-up
    base_call, base = next(((n, mb) for n, mb in rss if n >= 200 and n < done), rss[0])
    growth = None if base is None or rss[-1][1] is None else rss[-1][1] - base
    return {
        "calls": done, "calls_asked": calls, "seconds": round(seconds, 1),
        "failures": len(failures), "failure_examples": failures[:5],
        "bad_elements_sent": tally["bad_sent"], "invalid_answers": tally["invalid"],
        "accounting_errors": len(problems), "accounting_examples": problems[:5],
        "latency_ms": {"p50": 1000 * _percentile(every_call, 50),
                       "p95": 1000 * _percentile(every_call, 95)},
        "latency_ms_by_kind": {k: {"calls": len(v), "p50": 1000 * _percentile(v, 50),
                                   "p95": 1000 * _percentile(v, 95)}
                               for k, v in latencies.items()},
        "rss_mb": [[n, None if mb is None else round(mb, 1)] for n, mb in rss],
        "rss_growth_mb": None if growth is None else round(growth, 1),
        "distinct_image_shapes": {m: sum(k == m for k, _ in requests.shapes)
                                  for m in sorted(requests.models)},
        "rss_growth_from_call": base_call,
        "flat_memory": growth is not None and growth < FLAT_MIB,
    }  # fmt: skip
