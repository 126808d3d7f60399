"""`python -m benchmarks`: run the suite, print the table, write benchmarks/results/."""

from benchmarks.run import main

if __name__ == "__main__":
    raise SystemExit(main())
