"""spark-submit entry point: mine gold/rewrites from silver rephrase chains and register the query rewriter.

    spark-submit --py-files dist/feedback-*.whl jobs/mine_rewrites.py --lake DIR [--conf FILE] [--truth FILE] [--no-register]
"""

from __future__ import annotations

import sys

from feedback.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["mine-rewrites", *sys.argv[1:]]))
