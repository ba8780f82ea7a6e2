"""spark-submit entry point: train, evaluate and register the failure-point classifier (weekly).

    spark-submit --py-files dist/feedback-*.whl jobs/train_failure_points.py --lake DIR [--conf FILE]
"""

from __future__ import annotations

import sys

from feedback.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["train-failure-points", *sys.argv[1:]]))
