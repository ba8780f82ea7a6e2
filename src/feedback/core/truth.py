"""The simulator's ground truth (``ground_truth.jsonl``), read with one explicit schema.

Every evaluation reads it here: silver's (barge-in, termination, defects, rephrase links), the
rephrase detector's training labels and the rewrite win/loss, so they all see the same fields.
"""

from __future__ import annotations

from pathlib import Path

from pyspark.sql import DataFrame, SparkSession

TRUTH_SCHEMA = (
    "event_id string, user_id string, device_id string, ts string, utterance string, "
    "intended_intent string, intended_slots map<string,string>, is_system_command boolean, "
    "defective boolean, defect_causes array<string>, failure_point string, barge_in boolean, terminated boolean, "
    "rephrase_of string, abandoned boolean, explicit_feedback string"
)


def read_truth(spark: SparkSession, path: str | Path) -> DataFrame:
    """``ground_truth.jsonl`` at ``path`` as a DataFrame of ``TRUTH_SCHEMA``."""
    truth_path = Path(path)
    if not truth_path.is_file():
        raise ValueError(f"truth: no such file {truth_path}")
    return spark.read.schema(TRUTH_SCHEMA).json(str(truth_path.resolve()))
