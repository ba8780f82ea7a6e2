"""Where a defective turn failed first: the rules baseline of failure point isolation.

A team can route a defect only when it knows which component failed: speech recognition
(``asr``), language understanding (``nlu``), entity resolution (``entity``) or the result
itself (``result``: an error, a service the assistant cannot use). The strongest evidence is
the user's own fix: when a later rephrase of the same goal succeeded, the difference between
what the assistant understood then and what it understood now says where it went wrong:

* another intent (or none) now: the NLU misread the request;
* the same intent, a slot value that differs but is spelled alike: the recogniser misheard it;
* the same intent, a slot value that differs and is not alike: the right words resolved to the
  wrong entity;
* the same understanding: the result failed.

Without a fix, a short request heard with low confidence that nobody rephrased is a wake-up
nobody meant (``false_wake``); then the assistant's own status and its module confidences
decide. Every rule is a column expression, so the classifier runs inside the silver batch at no
extra pass. A turn that is no defect, or a system command, gets ``none`` and no score.
"""

from __future__ import annotations

from collections.abc import Callable

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from feedback.config import FailurePointsConfig
from feedback.silver.detect import spelling_similarity_column

FAILURE_POINTS = ("none", "false_wake", "asr", "nlu", "entity", "result")
"""Every value of ``failure_point``, in the order a request flows through the assistant."""

RULES_CLASSIFIER = "rules-v1"

FailurePointClassifier = Callable[[DataFrame, FailurePointsConfig], DataFrame]
"""Adds ``failure_point``, ``failure_point_score`` and ``failure_point_classifier`` to labelled turns:
``failure_points_by_rules``, or a learned classifier that the pipeline passes in."""

# (failure point, confidence) of each rule; the confidence is the rule's prior, not a probability.
_ERROR_STATUS = ("result", 0.9)
_FALSE_WAKE = ("false_wake", 0.6)
_FIX_OTHER_INTENT = ("nlu", 0.8)
_FIX_VALUE_ALIKE = ("asr", 0.8)
_FIX_VALUE_OTHER = ("entity", 0.6)
_FIX_SAME_MEANING = ("result", 0.6)
_NO_INTENT = ("nlu", 0.6)
_LOW_ASR_CONFIDENCE = ("asr", 0.5)
_LOW_NLU_CONFIDENCE = ("nlu", 0.5)
_UNHANDLED = ("result", 0.5)
_OTHERWISE = ("nlu", 0.3)


def with_fix_evidence(turns: DataFrame) -> DataFrame:
    """Add ``_fixed_intent``, ``_fixed_slots`` and ``_fixed_utterance``: what the user said and the
    assistant understood in the request that finally served the turn's goal, for a turn of a
    successful chain before its last request (else null)."""
    chain = Window.partitionBy("chain_id")
    final = F.max_by(F.struct(F.col("turn_index").alias("index"), "intent", "slots", "utterance"), "turn_index").over(chain)
    fixed = F.col("chain_success") & F.col("chain_id").isNotNull() & (F.col("turn_index") < final["index"])
    return (
        turns.withColumn("_fixed_intent", F.when(fixed, final["intent"]))
        .withColumn("_fixed_slots", F.when(fixed, F.coalesce(final["slots"], F.create_map().cast("map<string,string>"))))
        .withColumn("_fixed_utterance", F.when(fixed, final["utterance"]))
    )


def failure_points_by_rules(turns: DataFrame, config: FailurePointsConfig) -> DataFrame:
    """Add ``failure_point``, ``failure_point_score`` and ``failure_point_classifier`` (``rules-v1``).

    ``turns`` needs the silver labels (``defect``, ``is_system_command``, ``rephrased``,
    ``chain_id``, ``chain_success``, ``turn_index``, ``status``, ``utterance``, ``intent``,
    ``slots``) and the module confidences ``asr_confidence`` and ``nlu_confidence`` of the event.
    """
    evidence = with_fix_evidence(turns)
    own_slots = F.coalesce("slots", F.create_map().cast("map<string,string>"))
    changed = F.filter(F.map_entries("_fixed_slots"), lambda e: ~F.coalesce(F.try_element_at(own_slots, e["key"]) == e["value"], F.lit(False)))

    def spelled_alike(entry: Column) -> Column:
        heard = F.coalesce(F.try_element_at(own_slots, entry["key"]), F.lit(""))
        return spelling_similarity_column(heard, entry["value"], both_empty=1.0) >= config.min_value_similarity

    alike = F.exists(changed, spelled_alike)
    has_fix = F.col("_fixed_intent").isNotNull()
    short = F.size(F.split(F.trim(F.col("utterance")), r"\s+")) <= config.false_wake_max_words
    unsure = F.coalesce(F.col("asr_confidence") < config.false_wake_asr_confidence_below, F.lit(False))
    rules: list[tuple[Column, tuple[str, float]]] = [
        (F.col("status") == "error", _ERROR_STATUS),
        (~has_fix & ~F.col("rephrased") & short & unsure, _FALSE_WAKE),
        (has_fix & ~F.coalesce(F.col("intent") == F.col("_fixed_intent"), F.lit(False)), _FIX_OTHER_INTENT),
        (has_fix & alike, _FIX_VALUE_ALIKE),
        (has_fix & (F.size(changed) > 0), _FIX_VALUE_OTHER),
        (has_fix, _FIX_SAME_MEANING),
        (F.col("intent").isNull(), _NO_INTENT),
        (F.coalesce(F.col("asr_confidence") < config.asr_confidence_below, F.lit(False)), _LOW_ASR_CONFIDENCE),
        (F.coalesce(F.col("nlu_confidence") < config.nlu_confidence_below, F.lit(False)), _LOW_NLU_CONFIDENCE),
        (F.col("status") == "unhandled", _UNHANDLED),
    ]
    point: Column = F.lit(_OTHERWISE[0])
    score: Column = F.lit(_OTHERWISE[1])
    for condition, (label, confidence) in reversed(rules):
        point = F.when(condition, F.lit(label)).otherwise(point)
        score = F.when(condition, F.lit(confidence)).otherwise(score)
    classified = F.col("defect") & ~F.col("is_system_command")
    return (
        evidence.withColumn("failure_point", F.when(classified, point).otherwise(F.lit("none")))
        .withColumn("failure_point_score", F.when(classified, score.cast("double")))
        .withColumn("failure_point_classifier", F.when(classified, F.lit(RULES_CLASSIFIER)))
        .drop("_fixed_intent", "_fixed_slots", "_fixed_utterance")
    )
