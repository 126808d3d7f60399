"""Benchmarks against the peers: `python -m benchmarks [--quick]`.

Every figure is the median of repeated timed runs after warm-up; peers alternate round by round
(TensorFlow's oneDNN on and off in worker processes of their own), and are reported as paired
ratios so that a shared, loaded machine biases all of them alike.
"""
