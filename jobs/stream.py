"""spark-submit entry point: keep processing files as they land in --events until stopped.

    spark-submit --py-files dist/feedback-*.whl jobs/stream.py --events DIR --lake DIR [--conf FILE]
"""

from __future__ import annotations

import sys

from feedback.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["stream", *sys.argv[1:]]))
