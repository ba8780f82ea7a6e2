"""spark-submit entry point: OPTIMIZE and VACUUM every table of the lake.

    spark-submit --py-files dist/feedback-*.whl jobs/maintain.py --lake DIR [--conf FILE]
"""

from __future__ import annotations

import sys

from feedback.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["maintain", *sys.argv[1:]]))
