"""Entry point for scheduled simulations: write contract-v1 traffic and its ground truth.

    python jobs/simulate.py --out DIR [--users N] [--days D] [--seed S] [--corpus snips|sgd] [--conf FILE]
"""

from __future__ import annotations

import sys

from feedback.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["simulate", *sys.argv[1:]]))
