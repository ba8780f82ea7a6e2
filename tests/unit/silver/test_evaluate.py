"""``feedback evaluate``'s figures on a hand-made silver/turns table: ours and the naive baseline's.

Silver rows carry literal predictions of ours; the baseline's are worked out by hand from the
same rows (docs/quality.md, "The naive baseline"):

- d1: a1 (ends 3.5 s) is cut by a2 at 2 s; a2 (media) by the stop a3 at 10 s (8 s: terminated);
  a2 rephrases a1 ("beetles"/"beatles", 0.96); b1 -> b2 is at most 20/35 = 0.57 (no link).
- d2: c1 (media) is followed 15 s later (no barge-in) by c2, which rephrases it ("play jazz" in
  "play jazz please", 18/25 = 0.72): a false link, and c1 a defect.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from feedback.core.lake import LakePaths
from feedback.silver.evaluate import root_events, run, visible_defects

from support.turn_data import DAY

T0 = DAY + dt.timedelta(hours=10)
SILVER_COLUMNS = (
    "event_id string, user_id string, device_id string, ts timestamp, utterance string, status string, "
    "response_type string, response_end_ts timestamp, barge_in boolean, terminated boolean, defect boolean, rephrase_of string, "
    "goal_id string, goal_success boolean, failure_point string"
)


def at(seconds: float | None) -> dt.datetime | None:
    return None if seconds is None else T0 + dt.timedelta(seconds=seconds)


# event, device, ts s, utterance, status, response type, response end s,
# ours: barge-in, terminated, defect, rephrase_of, goal, goal success (the stop a3 serves a1's goal), failure point
SILVER = [
    ("a1", "d1", 0, "play songs by the beetles", "unhandled", "speech", 3.5, True, False, True, None, "a1", False, "asr"),
    ("a2", "d1", 2, "play songs by the beatles", "success", "media", None, True, True, True, "a1", "a1", False, "asr"),
    ("a3", "d1", 10, "stop", "success", "speech", 10.5, False, False, False, None, "a1", False, "none"),
    ("b1", "d1", 100, "whats the weather", "success", "speech", 103.5, False, False, True, None, "b1", True, "nlu"),
    ("b2", "d1", 110, "turn on the lights", "success", "speech", 113.5, False, False, False, "b1", "b1", True, "none"),
    ("c1", "d2", 0, "play jazz", "success", "media", None, False, False, True, None, "c1", False, "result"),
    ("c2", "d2", 15, "play jazz please", "success", "speech", 18.5, False, False, False, None, "c2", True, "none"),
]
# event: barge-in, terminated, defective, rephrase_of, failure point (x1 is not in silver yet)
TRUTH = {
    "a1": (True, False, True, None, "asr"),
    "a2": (True, True, True, "a1", "asr"),
    "a3": (False, False, False, None, "none"),
    "b1": (False, False, True, None, "result"),
    "b2": (False, False, False, None, "none"),
    "c1": (True, False, True, None, "result"),
    "c2": (False, False, False, None, "none"),
    "x1": (False, False, False, None, "none"),
}


def lake_and_truth(spark: SparkSession, tmp_path: Path) -> tuple[LakePaths, Path]:
    lake = LakePaths.at(tmp_path / "lake")
    rows = [(e, "u1", d, at(t), u, s, r, at(end), *ours) for e, d, t, u, s, r, end, *ours in SILVER]
    spark.createDataFrame(rows, SILVER_COLUMNS).write.format("delta").save(lake.silver_turns)
    truth = tmp_path / "ground_truth.jsonl"
    lines = [
        {"event_id": e, "barge_in": b, "terminated": t, "defective": d, "rephrase_of": r, "is_system_command": e == "a3", "failure_point": f}
        for e, (b, t, d, r, f) in TRUTH.items()
    ]
    truth.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return lake, truth


def score(tp: int, fp: int, fn: int, precision: float, recall: float, f1: float) -> dict[str, float | int]:
    return {"true_positives": tp, "false_positives": fp, "false_negatives": fn, "precision": precision, "recall": recall, "f1": f1}


def test_evaluate_reports_the_baseline_beside_ours(spark: SparkSession, tmp_path: Path) -> None:
    lake, truth = lake_and_truth(spark, tmp_path)
    out = tmp_path / "evaluation.json"
    evaluation = run(spark, lake, truth, out)
    assert evaluation.render() == "\n".join(
        [
            "scored 7 of 8 ground-truth events (coverage 0.8750)",
            "| signal | precision | recall | F1 | TP | FP | FN | baseline P | baseline R | baseline F1 |",
            "|---|---|---|---|---|---|---|---|---|---|",
            "| barge_in | 1.0000 | 0.6667 | 0.8000 | 2 | 0 | 1 | 1.0000 | 0.6667 | 0.8000 |",
            "| terminated | 1.0000 | 1.0000 | 1.0000 | 1 | 0 | 0 | 1.0000 | 1.0000 | 1.0000 |",
            "| defect | 1.0000 | 1.0000 | 1.0000 | 4 | 0 | 0 | 1.0000 | 0.7500 | 0.8571 |",
            "| rephrase_link | 0.5000 | 1.0000 | 0.6667 | 1 | 1 | 0 | 0.5000 | 1.0000 | 0.6667 |",
            # a1, a2, c1 were barged into; b1 left no signal (nobody barged in, rephrased it, and its status is success)
            "defects: 3 detectable, 1 silent (silent share 0.2500); detectable defects found: "
            "ours 3 (recall 1.0000), baseline 3 (recall 1.0000)",
            # ours: {a1, a2}, {b1, b2}, {c1}, {c2}; true: {a1, a2}, {b1}, {b2}, {c1}, {c2}; b1's goal failed, silver says b2 fixed it
            "goals: 3 of 4 segmented exactly as one of the 5 true goals (precision 0.7500, recall 0.6000, F1 0.6667); "
            "success right for 4 (accuracy 0.8000)",
            # on a1, a2, b1, c1: asr right twice, b1's result called nlu, c1's result right
            "failure points on 4 defects found: accuracy 0.7500, macro-F1 0.8333",
            "| true \\ predicted | asr | nlu | result | F1 |",
            "|---|---|---|---|---|",
            "| asr | 2 | 0 | 0 | 1.0000 |",
            "| nlu | 0 | 0 | 0 | 0.0000 |",
            "| result | 0 | 1 | 1 | 0.6667 |",
        ]
    )
    figures = json.loads(out.read_text())
    assert sorted(figures) == [
        "barge_in", "baseline", "coverage", "defect", "detectable_defects", "failure_points", "goals", "rephrase_link", "scored_events",
        "terminated", "truth_events",
    ]  # fmt: skip
    points = figures["failure_points"]
    assert (points.pop("labels"), points.pop("matrix"), points.pop("turns")) == (["asr", "nlu", "result"], [[2, 0, 0], [0, 0, 0], [0, 1, 1]], 4)
    assert points.pop("f1") == pytest.approx({"asr": 1.0, "nlu": 0.0, "result": 2 / 3})
    assert points == pytest.approx({"accuracy": 0.75, "macro_f1": (1 + 2 / 3) / 2})
    goals = {"predicted_goals": 4, "true_goals": 5, "matched_goals": 3, "success_correct": 4}
    assert figures["goals"] == pytest.approx(goals | {"precision": 0.75, "recall": 0.6, "f1": 2 / 3, "success_accuracy": 0.8})
    detectable = {"detectable": 3, "silent": 1, "found": 3, "silent_share": 0.25, "recall": 1.0}
    assert figures["detectable_defects"] == pytest.approx(detectable)
    assert figures["baseline"].pop("detectable_defects") == pytest.approx(detectable)
    assert (figures["truth_events"], figures["scored_events"], figures["coverage"]) == (8, 7, 0.875)
    assert figures["barge_in"] == pytest.approx(score(2, 0, 1, 1.0, 2 / 3, 0.8))
    assert figures["rephrase_link"] == pytest.approx(score(1, 1, 0, 0.5, 1.0, 2 / 3))
    baseline = {
        "barge_in": score(2, 0, 1, 1.0, 2 / 3, 0.8),
        "terminated": score(1, 0, 0, 1.0, 1.0, 1.0),
        "defect": score(3, 0, 1, 1.0, 0.75, 6 / 7),
        "rephrase_link": score(1, 1, 0, 0.5, 1.0, 2 / 3),
    }
    assert sorted(figures["baseline"]) == sorted(baseline)
    for signal, expected in baseline.items():
        assert figures["baseline"][signal] == pytest.approx(expected), signal


def test_a_caller_may_leave_the_baseline_out(spark: SparkSession, tmp_path: Path) -> None:
    lake, truth = lake_and_truth(spark, tmp_path)
    out = tmp_path / "evaluation.json"
    evaluation = run(spark, lake, truth, out, baseline=False)
    assert evaluation.baseline is None
    assert evaluation.render().splitlines()[1:4] == [
        "| signal | precision | recall | F1 | TP | FP | FN |",
        "|---|---|---|---|---|---|---|",
        "| barge_in | 1.0000 | 0.6667 | 0.8000 | 2 | 0 | 1 |",
    ]
    assert "baseline" not in json.loads(out.read_text())


def test_a_defect_is_visible_through_any_signal_and_silent_without_one(spark: SparkSession) -> None:
    truth = spark.createDataFrame(
        [
            ("barged", True, False, None, None),
            ("stopped", False, True, None, None),
            ("rephrased", False, False, None, None),
            ("rephrase", False, False, "rephrased", None),
            ("rated", False, False, None, "negative"),
            ("failed", False, False, None, None),
            ("silent", False, False, None, "positive"),
            ("fine", True, False, None, None),
        ],
        "event_id string, barge_in boolean, terminated boolean, rephrase_of string, explicit_feedback string",
    ).withColumn("defective", F.col("event_id") != F.lit("fine"))
    statuses = {"failed": "unhandled"}
    turns = spark.createDataFrame(
        [(e, statuses.get(e, "success")) for e in ("barged", "stopped", "rephrased", "rephrase", "rated", "failed", "silent", "fine")],
        "event_id string, status string",
    )
    expected = spark.createDataFrame(
        [("barged", True), ("stopped", True), ("rephrased", True), ("rephrase", False), ("rated", True), ("failed", True), ("silent", False)],
        "event_id string, visible boolean",
    )
    assertDataFrameEqual(visible_defects(turns, truth), expected)


def test_root_events_follow_links_to_the_first_request() -> None:
    parents = {"a": None, "b": "a", "c": "b", "d": None, "e": "z"}
    assert root_events(parents) == {"a": "a", "b": "a", "c": "a", "d": "d", "e": "z", "z": "z"}
    with pytest.raises(ValueError, match="cycle"):
        root_events({"a": "b", "b": "a"})
