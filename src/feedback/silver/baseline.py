"""A deliberately naive baseline detector, scored beside ours by ``feedback evaluate``.

It exists as a reference point that any detector must beat: fixed timing rules, one string
ratio and a fixed list of stop words, with nothing tuned on the traffic. A signal on which our
detector does not beat it is a finding to report, not a figure to hide. Its definition is
published (docs/quality.md, "The naive baseline"), so it must not be improved here.

Per device stream (rows of one ``(user_id, device_id)`` ordered by ``(ts, event_id)``; no
sessions):

- barge-in: the next request on the device comes before ``ts + latency + duration`` (a null
  latency counts as 0, a null duration gives no end), or, for ``response_type == "media"``,
  within 10 s of this request's ``ts`` (at most 10 s later);
- terminated: the same, and that next request is a stop;
- rephrase: for a request R, the next two requests after it, stops skipped; the first of them
  that comes within 30 s of R (at most 30 s later) with a ``difflib`` ratio of the normalized
  utterances of at least 0.6 rephrases R. A follow-up claimed by several requests rephrases the
  nearest earlier one (the latest claimant); the others stay unlinked and do not fall back to
  another follow-up. Stops never rephrase and are never rephrased;
- defect: barged into, rephrased (a later turn links to it), or status unhandled or error.

The core (``predict_device``) is plain Python over one device's turns; ``predict_frame`` is its
pandas form for ``applyInPandas``, and ``baseline_predictions`` runs it in Spark.
"""

from __future__ import annotations

import datetime as dt
import difflib
import math
import numbers
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

STOP_PHRASES: frozenset[str] = frozenset(
    {"stop", "cancel", "never mind", "nevermind", "pause", "skip", "next", "shut up", "stop it"}
)
MEDIA_WINDOW = dt.timedelta(seconds=10)
REPHRASE_WINDOW = dt.timedelta(seconds=30)
REPHRASE_MIN_RATIO = 0.6
REPHRASE_LOOKAHEAD = 2
DEFECT_STATUSES: frozenset[str] = frozenset({"unhandled", "error"})

TRAFFIC_COLUMNS = (
    "user_id",
    "device_id",
    "ts",
    "event_id",
    "utterance",
    "status",
    "response_type",
    "response_latency_ms",
    "response_duration_ms",
)
"""What ``baseline_predictions`` reads (bronze rows have them; ``silver_traffic`` derives them from silver)."""

BASELINE_SCHEMA = "event_id string, barge_in boolean, terminated boolean, defect boolean, rephrase_of string"
"""The baseline's predictions: shaped like the columns of silver/turns that ``evaluate_turns`` scores."""

_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class BaselineTurn:
    """One request as the baseline sees it."""

    event_id: str
    ts: dt.datetime
    utterance: str | None
    status: str | None = "success"
    response_type: str | None = "speech"
    response_latency_ms: int | None = None
    response_duration_ms: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.event_id, str) or not self.event_id:
            raise ValueError(f"event_id must be a non-empty string, got {self.event_id!r}")
        if not isinstance(self.ts, dt.datetime):
            raise TypeError(f"ts must be a datetime, got {type(self.ts).__name__}")

    @property
    def response_end(self) -> dt.datetime | None:
        """``ts + latency + duration``; a null latency counts as 0, a null duration gives no end."""
        if self.response_duration_ms is None:
            return None
        latency = self.response_latency_ms or 0
        return self.ts + dt.timedelta(milliseconds=latency + self.response_duration_ms)


@dataclass(frozen=True)
class BaselinePrediction:
    """The baseline's decision for one turn (the ``BASELINE_SCHEMA`` columns)."""

    event_id: str
    barge_in: bool
    terminated: bool
    defect: bool
    rephrase_of: str | None


def normalize(utterance: str | None) -> str:
    """Lower case, punctuation removed, whitespace collapsed ("Never-mind!" -> "nevermind"); None -> ""."""
    if utterance is None:
        return ""
    if not isinstance(utterance, str):
        raise TypeError(f"utterance must be a string or None, got {type(utterance).__name__}")
    kept = "".join(c for c in utterance.lower() if not unicodedata.category(c).startswith("P"))
    return _SPACES.sub(" ", kept).strip()


def is_stop(utterance: str | None) -> bool:
    """Whether the normalized utterance is one of ``STOP_PHRASES``."""
    return normalize(utterance) in STOP_PHRASES


def similarity(first: str | None, second: str | None) -> float:
    """``difflib.SequenceMatcher(None, a, b).ratio()`` of the two normalized utterances."""
    return difflib.SequenceMatcher(None, normalize(first), normalize(second)).ratio()


def interrupted(turn: BaselineTurn, next_ts: dt.datetime) -> bool:
    """Whether a request at ``next_ts`` cuts into ``turn``'s response (the barge-in rule)."""
    end = turn.response_end
    if end is not None and next_ts < end:
        return True
    return turn.response_type == "media" and next_ts - turn.ts <= MEDIA_WINDOW


def link_rephrases(ordered: Sequence[BaselineTurn]) -> dict[str, str]:
    """``{follow-up event_id: event_id it rephrases}`` over one device's turns, already in order.

    Requests are visited in order and each claims its first qualifying follow-up; a later claim
    overwrites an earlier one, so the nearest earlier request wins a follow-up claimed twice.
    """
    requests = [turn for turn in ordered if not is_stop(turn.utterance)]
    claims: dict[str, str] = {}
    for index, request in enumerate(requests):
        for follow_up in requests[index + 1 : index + 1 + REPHRASE_LOOKAHEAD]:
            if follow_up.ts - request.ts > REPHRASE_WINDOW:
                break
            if similarity(request.utterance, follow_up.utterance) >= REPHRASE_MIN_RATIO:
                claims[follow_up.event_id] = request.event_id
                break
    return claims


def predict_device(turns: Iterable[BaselineTurn]) -> list[BaselinePrediction]:
    """The baseline over one device's turns (any order), one prediction per turn in ``(ts, event_id)`` order."""
    ordered = sorted(turns, key=lambda turn: (turn.ts, turn.event_id))
    links = link_rephrases(ordered)
    rephrased = set(links.values())
    predictions: list[BaselinePrediction] = []
    for index, turn in enumerate(ordered):
        following = ordered[index + 1] if index + 1 < len(ordered) else None
        barge_in = following is not None and interrupted(turn, following.ts)
        terminated = barge_in and following is not None and is_stop(following.utterance)
        defect = barge_in or turn.event_id in rephrased or turn.status in DEFECT_STATUSES
        predictions.append(BaselinePrediction(turn.event_id, barge_in, terminated, defect, links.get(turn.event_id)))
    return predictions


def _optional_int(value: object) -> int | None:
    """A nullable integer column's cell (pandas holds one with nulls as floats, NaN for null)."""
    if value is None or value is pd.NA:
        return None
    if isinstance(value, float):
        return None if math.isnan(value) else int(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    raise TypeError(f"expected an integer or null, got {value!r}")


def _optional_str(value: object) -> str | None:
    """A nullable string column's cell."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return str(value)


def _timestamp(value: object) -> dt.datetime:
    """A ts cell as a datetime (Spark hands timestamps to pandas as UTC wall time, without a zone)."""
    if value is None or value is pd.NaT or value is pd.NA:
        raise ValueError("rows: ts must not be null")
    return pd.Timestamp(value).to_pydatetime()  # type: ignore[arg-type]


def predict_frame(rows: pd.DataFrame) -> pd.DataFrame:
    """``predict_device`` on one device's rows (the ``applyInPandas`` function); returns ``BASELINE_SCHEMA`` columns."""
    missing = sorted(set(TRAFFIC_COLUMNS) - {"user_id", "device_id"} - set(rows.columns))
    if missing:
        raise ValueError(f"rows is missing column(s) {missing}")
    turns = [
        BaselineTurn(
            event_id=str(row.event_id),
            ts=_timestamp(row.ts),
            utterance=_optional_str(row.utterance),
            status=_optional_str(row.status),
            response_type=_optional_str(row.response_type),
            response_latency_ms=_optional_int(row.response_latency_ms),
            response_duration_ms=_optional_int(row.response_duration_ms),
        )
        for row in rows.itertuples(index=False)
    ]
    predictions = predict_device(turns)
    return pd.DataFrame(
        {
            "event_id": pd.Series([p.event_id for p in predictions], dtype=object),
            "barge_in": pd.Series([p.barge_in for p in predictions], dtype=bool),
            "terminated": pd.Series([p.terminated for p in predictions], dtype=bool),
            "defect": pd.Series([p.defect for p in predictions], dtype=bool),
            "rephrase_of": pd.Series([p.rephrase_of for p in predictions], dtype=object),
        }
    )


def baseline_predictions(traffic: DataFrame) -> DataFrame:
    """The baseline per ``(user_id, device_id)`` over ``traffic`` (``TRAFFIC_COLUMNS``); ``BASELINE_SCHEMA`` rows."""
    if not isinstance(traffic, DataFrame):
        raise TypeError(f"traffic must be a DataFrame, got {type(traffic).__name__}")
    missing = sorted(set(TRAFFIC_COLUMNS) - set(traffic.columns))
    if missing:
        raise ValueError(f"traffic is missing column(s) {missing}")
    return traffic.select(*TRAFFIC_COLUMNS).groupBy("user_id", "device_id").applyInPandas(predict_frame, BASELINE_SCHEMA)


def silver_traffic(turns: DataFrame) -> DataFrame:
    """Rows of silver/turns as ``TRAFFIC_COLUMNS``, so the baseline sees the same traffic as our detector.

    Silver keeps the response's end (``response_end_ts`` = ts + latency, null as 0, + duration,
    null without a duration) rather than latency and duration; the whole span as the duration,
    with latency 0, gives the baseline exactly that end.
    """
    if not isinstance(turns, DataFrame):
        raise TypeError(f"turns must be a DataFrame, got {type(turns).__name__}")
    needed = {"user_id", "device_id", "ts", "event_id", "utterance", "status", "response_type", "response_end_ts"}
    missing = sorted(needed - set(turns.columns))
    if missing:
        raise ValueError(f"turns is missing column(s) {missing}")
    return turns.select(
        "user_id",
        "device_id",
        "ts",
        "event_id",
        "utterance",
        "status",
        "response_type",
        F.lit(0).alias("response_latency_ms"),
        # silver computed the end from ts in whole milliseconds, so this is latency + duration exactly
        (F.unix_millis("response_end_ts") - F.unix_millis("ts")).alias("response_duration_ms"),
    )
