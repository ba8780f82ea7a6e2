"""NLU labels from users' own corrections: ``gold/nlu_annotations``.

When a request fails and the user's rephrase of it succeeds, what the assistant understood from
the rephrase (intent, domain, slot values) is a label for the wording that failed: the user
said so by trying again. Each slot value of the rephrase is aligned to the words of the failed
wording that carry it, by spelling and by sound ("the beetles" carries "the beatles"), so a
value the failed wording never said is not put on it. Labels are pooled over users per failed
wording; a row needs ``privacy.min_users`` distinct users and holds no user id.

``run`` rebuilds the table from silver in one Delta commit (a rerun writes the same rows) and,
given a simulator ground truth, scores the rows against what the users meant; ``export``
writes them as JSON lines for an NLU team.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TextIO

from delta.tables import DeltaTable
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, MapType, StringType, StructField, StructType

from feedback.config import AnnotationsConfig, AppConfig
from feedback.core.lake import LakePaths, require_lake
from feedback.core.privacy import check_min_users
from feedback.core.schema import CHANGE_DATA_FEED, NLU_ANNOTATIONS_SCHEMA, TABLE_COMMENTS
from feedback.core.tables import ensure_table, table_version
from feedback.core.text import normalized_words as words_of
from feedback.core.text import similarity
from feedback.core.truth import read_truth

LOG = logging.getLogger("feedback.gold.annotations")

EXPORT_FORMATS = ("jsonl",)

@dataclass(frozen=True)
class Span:
    """Words ``start`` to ``end`` (exclusive) of a wording, and how alike they are to a slot value."""

    start: int
    end: int
    text: str
    score: float


def align_value(words: Sequence[str], value: str) -> Span | None:
    """The run of ``words`` most like ``value`` (``similarity``), or None for an empty value or wording.

    Runs of one word fewer to one word more than the value are tried; on a tie the run as long
    as the value, then the earliest, wins.
    """
    size = len(words_of(value))
    if size == 0 or not words:
        return None
    best: Span | None = None
    best_key: tuple[float, int, int] | None = None
    for length in range(max(1, size - 1), size + 2):
        for start in range(0, len(words) - length + 1):
            text = " ".join(words[start : start + length])
            score = similarity(text, value)
            key = (score, -abs(length - size), -start)
            if best_key is None or key > best_key:
                best, best_key = Span(start, start + length, text, score), key
    return best


@dataclass(frozen=True)
class AlignedSlots:
    """The slot values a failed wording carries (as the rephrase resolved them), where it says them, and the weakest match."""

    slots: dict[str, str]
    spans: dict[str, str]
    score: float


def align_slots(wording: str, slots: Mapping[str, str] | None, min_similarity: float) -> AlignedSlots:
    """Keep the slots of ``slots`` whose value ``wording`` says, aligned at ``min_similarity`` or better.

    ``score`` is the lowest similarity among the kept slots, 1.0 when none is kept.
    """
    words = words_of(wording)
    kept: dict[str, str] = {}
    spans: dict[str, str] = {}
    scores: list[float] = []
    for name, value in sorted((slots or {}).items()):
        span = align_value(words, value or "")
        if span is not None and span.score >= min_similarity:
            kept[name], spans[name] = value, span.text
            scores.append(span.score)
    return AlignedSlots(kept, spans, min(scores) if scores else 1.0)


ALIGNED_SLOTS_TYPE = StructType(
    [
        StructField("slots", MapType(StringType(), StringType()), False),
        StructField("spans", MapType(StringType(), StringType()), False),
        StructField("score", DoubleType(), False),
    ]
)


def _aligned_row(text: str, values: dict[str, str] | None, min_similarity: float) -> tuple[dict[str, str], dict[str, str], float]:
    aligned = align_slots(text, values, min_similarity)
    return aligned.slots, aligned.spans, aligned.score


def _align_column(wording: Column, slots: Column, min_similarity: float) -> Column:
    """``align_slots`` as a column of ``ALIGNED_SLOTS_TYPE`` (a plain Python UDF: maps do not need Arrow)."""
    return F.udf(lambda text, values: _aligned_row(text, values, min_similarity), ALIGNED_SLOTS_TYPE)(wording, slots)


def _only_words_of(wording: Column, other: Column) -> Column:
    """Every word of ``wording`` is a word of ``other`` (both normalized)."""
    others = F.split(other, " ")
    return F.forall(F.split(wording, " "), lambda word: F.array_contains(others, word))


def corrected_requests(turns: DataFrame) -> DataFrame:
    """Failed requests whose goal the user reached by rephrasing, each with what the assistant understood at the end.

    One row per failed request of a successful chain whose wording differs from the chain's last
    (successful) request: ``user_id``, ``chain_id``, ``utterance`` (the failed wording,
    normalized), and the last request's wording (``fix_utterance``), ``intent``, ``domain`` and
    ``slots``.
    """
    chains = turns.filter(~F.col("is_system_command") & F.col("chain_id").isNotNull() & F.col("chain_success"))
    last = Window.partitionBy("chain_id").orderBy(F.col("turn_index").desc())
    finals = (
        chains.withColumn("_rank", F.row_number().over(last))
        .filter((F.col("_rank") == 1) & ~F.col("defect") & F.col("intent").isNotNull())
        .select(
            "chain_id",
            F.col("normalized_utterance").alias("_final_utterance"),
            "intent",
            "domain",
            F.coalesce("slots", F.create_map().cast("map<string,string>")).alias("slots"),
        )
    )
    failed = chains.filter(F.col("defect")).select("user_id", "chain_id", F.col("normalized_utterance").alias("utterance"))
    return (
        failed.join(finals, "chain_id", "inner")
        .filter(F.col("utterance") != F.col("_final_utterance"))
        .select("user_id", "chain_id", "utterance", F.col("_final_utterance").alias("fix_utterance"), "intent", "domain", "slots")
    )


def nlu_annotations(turns: DataFrame, min_users: int, config: AnnotationsConfig) -> DataFrame:
    """Silver turns -> one label per failed wording (``NLU_ANNOTATIONS_SCHEMA`` without the build columns).

    The label of a wording is the (intent, domain, aligned slots) the most chains gave it (then
    the most users, then the smallest intent name); ``confidence`` is its share of the wording's
    chains. A failed wording that says none of the slot values of its fix (or, for a fix
    without values, has no word of its own) gives no label. Rows
    under ``min_users`` distinct users or ``annotations.min_confidence`` are left out.
    """
    check_min_users(min_users)
    corrected = corrected_requests(turns)
    wording_chains = corrected.groupBy("utterance").agg(F.countDistinct("chain_id").alias("wording_chains"))
    aligned = (
        corrected.withColumn("_aligned", _align_column(F.col("utterance"), F.col("slots"), config.min_slot_similarity))
        # A wording that says none of the values its fix was understood with ("play" before "play
        # the beatles"), or, for a fix without values, only words of the fix ("that's" before
        # "that's good, book it"), is a false start or a wake-up nobody meant: no evidence of a meaning.
        .filter((F.size("_aligned.slots") > 0) | ((F.size("slots") == 0) & ~_only_words_of(F.col("utterance"), F.col("fix_utterance"))))
    )
    labels = aligned.select(
        "user_id",
        "chain_id",
        "utterance",
        "intent",
        "domain",
        F.array_sort(F.map_entries("_aligned.slots")).alias("_slot_entries"),
        F.col("_aligned.spans").alias("slot_spans"),
        F.col("_aligned.score").alias("alignment_score"),
    )
    counted = labels.groupBy("utterance", "intent", "domain", "_slot_entries").agg(
        F.first("slot_spans").alias("slot_spans"),
        F.min("alignment_score").alias("alignment_score"),
        F.countDistinct("user_id").alias("support_users"),
        F.countDistinct("chain_id").alias("support_chains"),
    )
    ranked = Window.partitionBy("utterance").orderBy(
        F.col("support_chains").desc(), F.col("support_users").desc(), F.col("intent"), F.col("domain")
    )
    best = (
        counted.withColumn("_rank", F.row_number().over(ranked))
        .filter(F.col("_rank") == 1)
        .join(wording_chains, "utterance", "inner")
        .withColumn("confidence", F.col("support_chains") / F.col("wording_chains"))
    )
    return best.filter(
        (F.col("support_users") >= F.lit(min_users)) & (F.col("confidence") >= F.lit(config.min_confidence))
    ).select(
        "utterance",
        "intent",
        "domain",
        F.map_from_entries("_slot_entries").alias("slots"),
        "slot_spans",
        "alignment_score",
        "support_users",
        "support_chains",
        "wording_chains",
        "confidence",
    )


# ----- scoring against a simulator ground truth ---------------------------------------------------


@dataclass(frozen=True)
class AnnotationQuality:
    """How many rows carry what the users meant, by the simulator's intended meaning of each wording.

    The meaning of a wording is the (intent, slots) the ground truth gives most of its requests.
    A row's slots are right when every value it holds equals the meant value of that slot
    (compared as ``words_of`` normalizes them); ``slots_meant`` counts the meant slots of the
    rows, ``slots_kept`` those the rows hold.
    """

    rows: int
    intent_correct: int
    slots_correct: int
    slots_kept: int
    slots_meant: int

    @property
    def intent_accuracy(self) -> float:
        return self.intent_correct / self.rows if self.rows else 0.0

    @property
    def slot_accuracy(self) -> float:
        return self.slots_correct / self.rows if self.rows else 0.0

    @property
    def slot_coverage(self) -> float:
        return self.slots_kept / self.slots_meant if self.slots_meant else 0.0

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self) | {
            "intent_accuracy": self.intent_accuracy,
            "slot_accuracy": self.slot_accuracy,
            "slot_coverage": self.slot_coverage,
        }


def score_annotation(
    intent: str, slots: Mapping[str, str], meant_intent: str | None, meant_slots: Mapping[str, str] | None
) -> tuple[bool, bool, int, int]:
    """(intent right, every slot value right, slots kept that were meant, slots meant) of one row."""
    meant = {name: " ".join(words_of(value)) for name, value in (meant_slots or {}).items()}
    right = all(meant.get(name) == " ".join(words_of(value)) for name, value in slots.items())
    kept = sum(1 for name in slots if name in meant)
    return intent == meant_intent, right, kept, len(meant)


def evaluate_annotations(annotations: DataFrame, turns: DataFrame, truth: DataFrame) -> AnnotationQuality:
    """Score ``annotations`` against the intended meaning of their wordings (``AnnotationQuality``)."""
    meanings = (
        truth.filter(~F.col("is_system_command"))
        .select("event_id", "intended_intent", "intended_slots")
        .join(turns.select("event_id", F.col("normalized_utterance").alias("utterance")), "event_id", "inner")
        .select("utterance", "intended_intent", F.array_sort(F.map_entries("intended_slots")).alias("_meant"))
        .groupBy("utterance", "intended_intent", "_meant")
        .count()
    )
    commonest = Window.partitionBy("utterance").orderBy(F.col("count").desc(), F.col("intended_intent"))
    meant = (
        meanings.withColumn("_rank", F.row_number().over(commonest))
        .filter(F.col("_rank") == 1)
        .select("utterance", "intended_intent", F.map_from_entries("_meant").alias("intended_slots"))
    )
    rows = annotations.select("utterance", "intent", "slots").join(meant, "utterance", "left").collect()
    totals = [0, 0, 0, 0]
    for row in rows:
        for index, value in enumerate(score_annotation(row["intent"], row["slots"] or {}, row["intended_intent"], row["intended_slots"])):
            totals[index] += int(value)
    return AnnotationQuality(len(rows), *totals)


# ----- the table, the command and the export -------------------------------------------------------


@dataclass(frozen=True)
class AnnotationResult:
    """Summary of ``run`` (the CLI prints ``render``)."""

    rows: int
    table_version: int
    silver_version: int
    quality: AnnotationQuality | None = None

    def render(self) -> str:
        lines = [
            f"{self.rows} NLU annotations in gold/nlu_annotations (Delta version {self.table_version}, from silver/turns version "
            f"{self.silver_version})"
        ]
        if self.quality is not None:
            q = self.quality
            lines.append(
                f"  against the intended meaning: intent right for {q.intent_correct} of {q.rows} ({q.intent_accuracy:.4f}), "
                f"every slot value right for {q.slots_correct} ({q.slot_accuracy:.4f}), "
                f"{q.slots_kept} of {q.slots_meant} meant slots kept ({q.slot_coverage:.4f})"
            )
        return "\n".join(lines)

    def as_dict(self) -> dict[str, object]:
        figures: dict[str, object] = {"rows": self.rows, "table_version": self.table_version, "silver_version": self.silver_version}
        if self.quality is not None:
            figures["quality"] = self.quality.as_dict()
        return figures


def ensure_annotations_table(spark: SparkSession, lake: LakePaths) -> None:
    ensure_table(
        spark, lake.nlu_annotations, NLU_ANNOTATIONS_SCHEMA, (), CHANGE_DATA_FEED, comment=TABLE_COMMENTS["nlu_annotations"]
    )


def run(
    spark: SparkSession,
    config: AppConfig,
    lake: LakePaths,
    truth_path: str | Path | None = None,
    json_out: str | Path | None = None,
) -> AnnotationResult:
    """Rebuild ``LAKE/gold/nlu_annotations`` from one version of ``LAKE/silver/turns``; score it on ``truth_path`` if given."""
    paths = require_lake(lake)
    if not DeltaTable.isDeltaTable(spark, paths.silver_turns):
        raise ValueError(f"lake: no Delta table at {paths.silver_turns}; run `feedback pipeline` into this lake first")
    silver_version = table_version(spark, paths.silver_turns)
    turns = spark.read.format("delta").option("versionAsOf", silver_version).load(paths.silver_turns)
    ensure_annotations_table(spark, paths)
    LOG.info("labelling failed wordings from %s (version %d)", paths.silver_turns, silver_version)
    built_at = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0)
    rows = nlu_annotations(turns, config.privacy.min_users, config.annotations).select(
        *[F.col(name) for name in NLU_ANNOTATIONS_SCHEMA.fieldNames() if name not in ("built_at", "silver_version")],
        F.lit(built_at).alias("built_at"),
        F.lit(silver_version).cast("long").alias("silver_version"),
    )
    rows.write.format("delta").mode("overwrite").save(paths.nlu_annotations)
    written_version = table_version(spark, paths.nlu_annotations)
    written = spark.read.format("delta").option("versionAsOf", written_version).load(paths.nlu_annotations)
    count = written.count()
    LOG.info("%d annotations written (version %d)", count, written_version)
    quality = evaluate_annotations(written, turns, read_truth(spark, truth_path)) if truth_path is not None else None
    result = AnnotationResult(count, written_version, silver_version, quality)
    if json_out is not None:
        Path(json_out).write_text(json.dumps(result.as_dict(), indent=2, sort_keys=True) + "\n")
    return result


def training_example(row: Mapping[str, object]) -> dict[str, object]:
    """One annotation as an NLU training example: the text, its intent and domain, and each slot's
    value with the characters of the text that say it (``start`` inclusive, ``end`` exclusive)."""
    text = str(row["utterance"])
    spans: Mapping[str, str] = row["slot_spans"] or {}  # type: ignore[assignment]
    slots = []
    for name, value in sorted((row["slots"] or {}).items()):  # type: ignore[union-attr]
        span = spans.get(name)
        start = _word_offset(text, span) if span else -1
        slots.append(
            {"slot": name, "value": value, "text": span, "start": start if start >= 0 else None, "end": start + len(span) if span and start >= 0 else None}
        )
    return {
        "text": text,
        "intent": row["intent"],
        "domain": row["domain"],
        "slots": slots,
        "support_users": row["support_users"],
        "support_chains": row["support_chains"],
        "confidence": row["confidence"],
    }


def _word_offset(text: str, phrase: str) -> int:
    """Where ``phrase`` starts in ``text`` on word boundaries; -1 when it is not there."""
    match = re.search(r"(?<![\w'])" + re.escape(phrase) + r"(?![\w'])", text)
    return match.start() if match else -1


def export(spark: SparkSession, lake: LakePaths, out: TextIO, fmt: str = "jsonl") -> int:
    """Write ``LAKE/gold/nlu_annotations`` to ``out`` as training examples, one JSON object per line; returns the count."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"fmt must be one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")
    paths = require_lake(lake)
    if not DeltaTable.isDeltaTable(spark, paths.nlu_annotations):
        raise ValueError(f"lake: no Delta table at {paths.nlu_annotations}; run `feedback annotate` on this lake first")
    table = spark.read.format("delta").load(paths.nlu_annotations)
    count = 0
    for row in table.orderBy(F.col("support_chains").desc(), "utterance").toLocalIterator():
        out.write(json.dumps(training_example(row.asDict()), sort_keys=True, ensure_ascii=False) + "\n")
        count += 1
    return count
