"""`python -m benchmarks`: run the suite, print the table, write benchmarks/results/."""

from keras_resnet_suite import runtime

runtime.default_for_our_commands()  # before anything loads TensorFlow (runtime.py)

from benchmarks.run import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
