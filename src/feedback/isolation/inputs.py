"""What the classifier reads for each defective request, gathered from silver's turns in Spark."""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import BooleanType, DoubleType, MapType, StringType, StructField, StructType

from feedback.silver.failure_points import with_fix_evidence

INPUTS_SCHEMA = StructType(
    [
        StructField("event_id", StringType(), False),
        StructField("utterance", StringType(), True),
        StructField("response_text", StringType(), True),
        StructField("intent", StringType(), True),
        StructField("slots", MapType(StringType(), StringType()), True),
        StructField("status", StringType(), True),
        StructField("response_type", StringType(), True),
        StructField("asr_confidence", DoubleType(), True),
        StructField("nlu_confidence", DoubleType(), True),
        StructField("rephrased", BooleanType(), True),
        StructField("barge_in", BooleanType(), True),
        StructField("terminated", BooleanType(), True),
        StructField("abandoned", BooleanType(), True),
        StructField("negative_feedback", BooleanType(), True),
        StructField("next_turn_gap_s", DoubleType(), True),
        StructField("next_stop_like", BooleanType(), True),
        StructField("next_utterance", StringType(), True),
        StructField("fix_intent", StringType(), True),
        StructField("fix_slots", MapType(StringType(), StringType()), True),
        StructField("fix_utterance", StringType(), True),
        StructField("rules_failure_point", StringType(), True),
    ]
)
"""One row per defective request: the turn, what followed it, the user's fix and the rules' answer."""


def classification_inputs(turns: DataFrame) -> DataFrame:
    """Labelled turns -> ``INPUTS_SCHEMA`` rows for the defective requests (not system commands).

    ``turns`` holds silver's columns with the rules' ``failure_point`` and the events'
    ``asr_confidence`` and ``nlu_confidence``: the silver batch before its final select, or
    ``silver/turns`` joined to bronze's confidences (``with_confidences``).
    """
    session = Window.partitionBy("session_id").orderBy("turn_index")
    evidence = (
        with_fix_evidence(turns)
        .withColumn("next_stop_like", F.lead("stop_like").over(session))
        .withColumn("next_utterance", F.lead("utterance").over(session))
    )
    return evidence.filter(F.col("defect") & ~F.col("is_system_command")).select(
        "event_id",
        "utterance",
        "response_text",
        "intent",
        "slots",
        "status",
        "response_type",
        F.col("asr_confidence").cast("double").alias("asr_confidence"),
        F.col("nlu_confidence").cast("double").alias("nlu_confidence"),
        "rephrased",
        "barge_in",
        "terminated",
        "abandoned",
        F.coalesce(F.col("explicit_feedback") == "negative", F.lit(False)).alias("negative_feedback"),
        "next_turn_gap_s",
        "next_stop_like",
        "next_utterance",
        F.col("_fixed_intent").alias("fix_intent"),
        F.col("_fixed_slots").alias("fix_slots"),
        F.col("_fixed_utterance").alias("fix_utterance"),
        F.col("failure_point").alias("rules_failure_point"),
    )


def with_confidences(turns: DataFrame, bronze: DataFrame) -> DataFrame:
    """``silver/turns`` with each event's ``asr_confidence`` and ``nlu_confidence`` from bronze (silver does not keep them)."""
    confidences = bronze.select("event_id", "asr_confidence", "nlu_confidence").dropDuplicates(["event_id"])
    return turns.join(confidences, "event_id", "left")
