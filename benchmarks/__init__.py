"""Benchmarks against the peers (issue 5): `python -m benchmarks [--quick]`.

Every figure is the median of repeated timed runs after warm-up; peers run in the same process,
alternating round by round, and are reported as ratios so that a shared, loaded machine biases
all of them alike.
"""
