"""spark-submit entry point: process every file in --events through every stage, then exit.

    spark-submit --py-files dist/feedback-*.whl jobs/pipeline.py --events DIR --lake DIR [--conf FILE]
"""

from __future__ import annotations

import sys

from feedback.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["pipeline", *sys.argv[1:]]))
