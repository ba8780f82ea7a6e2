"""spark-submit entry point: recompute silver and gold from bronze for some event dates.

    spark-submit --py-files dist/feedback-*.whl jobs/backfill.py --lake DIR --late [--conf FILE]
    spark-submit --py-files dist/feedback-*.whl jobs/backfill.py --lake DIR --from DATE --to DATE [--conf FILE]
"""

from __future__ import annotations

import sys

from feedback.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["backfill", *sys.argv[1:]]))
