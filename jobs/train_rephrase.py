"""spark-submit entry point: fine-tune, evaluate and register the BERT rephrase detector (weekly).

    spark-submit --py-files dist/feedback-*.whl jobs/train_rephrase.py --lake DIR [--conf FILE]
        [--events DIR --truth FILE]
"""

from __future__ import annotations

import sys

from feedback.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["train-rephrase", *sys.argv[1:]]))
