"""spark-submit entry point: rebuild gold/nlu_annotations, NLU labels from the rephrases that fixed failed requests.

    spark-submit --py-files dist/feedback-*.whl jobs/annotate.py --lake DIR [--conf FILE] [--truth FILE]
"""

from __future__ import annotations

import sys

from feedback.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["annotate", *sys.argv[1:]]))
