"""Two lakes of the same traffic, one fed from files and one from Kafka, compared without their provenance."""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession

from feedback.core.lake import LakePaths

# Columns that record when, from where or by which batch a row was written: they differ by source.
PROVENANCE = {"ingest_time", "ingest_batch", "source_file", "source_offset", "processed_at", "ingest_date"}


def comparable(spark: SparkSession, lake: LakePaths) -> dict[str, DataFrame]:
    tables = {
        "bronze": lake.bronze,
        "quarantine": lake.quarantine,
        "silver": lake.silver_turns,
        "defect_metrics": lake.defect_metrics,
        "utterance_defects": lake.utterance_defects,
        "rephrase_pairs": lake.rephrase_pairs,
    }
    frames = {}
    for name, path in tables.items():
        frame = spark.read.format("delta").load(path)
        frame = frame.drop(*[c for c in frame.columns if c in PROVENANCE or c.endswith("_sketch")])
        frames[name] = frame
    return frames
