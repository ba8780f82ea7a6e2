"""Hand-written silver turns for the rewrite-mining and rewriter tests: chains of requests by users."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from pyspark.sql import DataFrame, SparkSession

from feedback.core.schema import SILVER_TURNS_SCHEMA

START = dt.datetime(2026, 11, 2, 10, 0, 0)

# What each utterance means to the NLU when it is served correctly (the implicit evaluation reads it).
MEANINGS: dict[str, tuple[str, dict[str, str]]] = {
    "a": ("GetWeather", {"city": "paris"}),
    "b": ("GetWeather", {"city": "paris"}),
    "c": ("GetWeather", {"city": "london"}),
    "d": ("PlayMusic", {"artist": "abba"}),
    "e": ("PlayMusic", {"artist": "abba"}),
}


@dataclass(frozen=True)
class Chain:
    """A user's request and its rephrases, in order; ``success``: the last turn was no defect."""

    user: str
    utterances: tuple[str, ...]
    success: bool
    meanings: dict[str, tuple[str, dict[str, str]]] = field(default_factory=lambda: MEANINGS)


def silver_rows(chains: list[Chain]) -> list[tuple[object, ...]]:
    """Full ``SILVER_TURNS_SCHEMA`` rows: one session per chain, turns a few seconds apart."""
    rows: list[tuple[object, ...]] = []
    for number, chain in enumerate(chains):
        session = f"s{number:03d}"
        start = START + dt.timedelta(minutes=10 * number)
        ids = [f"{session}-t{i}" for i in range(len(chain.utterances))]
        linked = len(chain.utterances) > 1
        for i, text in enumerate(chain.utterances):
            last = i == len(chain.utterances) - 1
            defect = not (last and chain.success)
            ts = start + dt.timedelta(seconds=5 * i)
            intent, slots = chain.meanings.get(text, ("Unknown", {}))
            reasons = ["rephrased"] if not last else ([] if chain.success else ["unhandled"])
            rows.append(
                (
                    ids[i], chain.user, f"dev-{chain.user}", "speaker", session, start, i, ts, ts.date(), text, text,
                    "weather", intent, slots, "success" if not defect or not last else "unhandled", "speech", "ok",
                    ts + dt.timedelta(seconds=2), None, False, False, 3.0, False, False,
                    ids[i - 1] if i > 0 else None, 0.9 if i > 0 else None, "test" if i > 0 else None,
                    not last, ids[0] if linked else None, chain.success if linked else None, False, defect, reasons,
                    START, ids[0], chain.success, "none", None, None,
                )
            )
    return rows


def silver_frame(spark: SparkSession, chains: list[Chain]) -> DataFrame:
    return spark.createDataFrame(silver_rows(chains), SILVER_TURNS_SCHEMA)


# The hand-worked example of tests/unit/rewrites/test_mine.py. Visits per utterance:
#   a: 2 -> b, 1 -> c, 1 failure          b: 1 -> a, 3 successes          c: 1 success, 1 failure
HAND_CHAINS = [
    Chain("u1", ("a", "b"), True),
    Chain("u2", ("b", "a", "b"), True),
    Chain("u3", ("a", "c"), True),
    Chain("u4", ("a",), False),
    Chain("u5", ("b",), True),
    Chain("u6", ("c",), False),
]
