"""Hand-written ``bronze/interactions`` rows for tests that write to bronze directly."""

from __future__ import annotations

import datetime as dt

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import StructType

from feedback.core.schema import BRONZE_SCHEMA

UTC = dt.timezone.utc
START = dt.datetime(2026, 11, 2, 10, 0, tzinfo=UTC)


def bronze_row(event_id: str = "e1", at_s: float = 0.0, **fields: object) -> dict[str, object]:
    """A valid bronze row of a weather request ``at_s`` seconds after 10:00 UTC of 2026-11-02, with ``fields`` replaced."""
    ts = START + dt.timedelta(seconds=at_s)
    row: dict[str, object] = {
        "event_id": event_id,
        "schema_version": 1,
        "ts": ts,
        "event_date": ts.date(),
        "user_id": "u1",
        "device_id": "d1",
        "device_type": "speaker",
        "locale": "en-US",
        "utterance": "what's the weather",
        "asr_confidence": 0.9,
        "nlu_confidence": 0.8,
        "domain": "weather",
        "intent": "GetWeather",
        "slots": {"city": "paris"},
        "response_type": "speech",
        "response_text": "sunny all day",
        "status": "success",
        "response_latency_ms": 500,
        "response_duration_ms": 3000,
        "explicit_feedback": None,
        "raw": f'{{"event_id": "{event_id}"}}',
        "source_file": "file:/landing/events-1.jsonl",
        "ingest_time": START + dt.timedelta(hours=1),
        "ingest_batch": "test-app:0",
        "source_offset": None,
    }
    unknown = set(fields) - set(row)
    if unknown:
        raise ValueError(f"fields: not bronze columns: {sorted(unknown)}")
    return row | fields


def bronze_frame(spark: SparkSession, rows: list[dict[str, object]], schema: StructType = BRONZE_SCHEMA) -> DataFrame:
    """``rows`` (from ``bronze_row``) as a DataFrame in the bronze schema (or ``schema``, with the same columns)."""
    return spark.createDataFrame([tuple(row[name] for name in schema.fieldNames()) for row in rows], schema)
