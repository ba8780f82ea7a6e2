"""Typed, validated configuration loaded from YAML.

Every stage receives one of the frozen dataclasses below instead of a loose dict, so a
typo or an out-of-range value fails at start-up with an error that names the key
(``ingest.max_files_per_trigger: must be >= 1, got 0``) rather than deep inside a job.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, TypeVar

import yaml

T = TypeVar("T")

class ConfigError(ValueError):
    """A configuration value is missing, unknown, of the wrong type or out of range."""


def _require(condition: bool, key: str, message: str, value: object) -> None:
    if not condition:
        raise ConfigError(f"{key}: {message}, got {value!r}")


_SECONDS_PER_UNIT = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
_INTERVAL = re.compile(r"([0-9]+) (second|minute|hour|day)s?")


def interval_seconds(text: str, *, allow_zero: bool = False) -> int:
    """Seconds in an interval written like '15 minutes' (an integer and a unit, plural or not).

    The form is a subset of what Spark parses for ``withWatermark``, ``session_window`` and
    ``trigger(processingTime=...)``, so a value accepted here is also accepted by Spark, and a
    typo fails when the configuration is loaded instead of when the stream starts.

    Args:
        text: the interval, e.g. ``'10 seconds'`` or ``'1 day'``.
        allow_zero: accept a zero count (a processing-time trigger of ``'0 seconds'`` runs
            micro-batches back to back); otherwise the count must be positive.

    Raises:
        TypeError: ``text`` is not a string.
        ValueError: ``text`` is not such an interval.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a string, got {type(text).__name__}")
    match = _INTERVAL.fullmatch(" ".join(text.split()))
    if match is None or (int(match[1]) == 0 and not allow_zero):
        smallest = "a non-negative" if allow_zero else "a positive"
        raise ValueError(f"text must be {smallest} integer and a unit (second, minute, hour, day), got {text!r}")
    return int(match[1]) * _SECONDS_PER_UNIT[match[2]]


def _interval_ok(text: str, *, allow_zero: bool = False) -> bool:
    """Whether ``text`` is an interval ``interval_seconds`` (and so Spark) reads."""
    try:
        interval_seconds(text, allow_zero=allow_zero)
    except (TypeError, ValueError):
        return False
    return True


@dataclass(frozen=True)
class SparkConfig:
    """How the single SparkSession of a process is built (see ``feedback.core.spark``)."""

    master: str = "local[*]"
    app_name: str = "feedback"
    shuffle_partitions: int = 4
    jars_dir: str | None = None
    log_level: str = "WARN"
    state_store: str = "rocksdb"
    driver_memory: str = "4g"
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _require(bool(self.master.strip()), "spark.master", "must be non-empty", self.master)
        _require(self.shuffle_partitions >= 1, "spark.shuffle_partitions", "must be >= 1", self.shuffle_partitions)
        _require(
            self.log_level in {"ALL", "DEBUG", "INFO", "WARN", "ERROR", "FATAL", "OFF"},
            "spark.log_level",
            "must be one of ALL, DEBUG, INFO, WARN, ERROR, FATAL, OFF",
            self.log_level,
        )
        _require(self.state_store in {"rocksdb", "hdfs"}, "spark.state_store", "must be rocksdb or hdfs", self.state_store)
        _require(
            re.fullmatch(r"[1-9][0-9]*[kmgt]", self.driver_memory) is not None,
            "spark.driver_memory",
            "must be a JVM size such as 4g or 512m",
            self.driver_memory,
        )


RESULT_FORMATS = ("BOOLEAN_ONLY", "BASIC", "SUMMARY", "COMPLETE")
ON_FAILURE = ("quarantine", "stop")
NULL_CHECKED_FIELDS = ("device_type", "locale", "domain", "intent", "asr_confidence", "nlu_confidence", "response_type")


@dataclass(frozen=True)
class ValidationConfig:
    """The Great Expectations gate of each bronze micro-batch, run before anything is written.

    The batch-level expectations are what a row rule cannot see: the share of lines quarantined,
    the share of events older than ``stale_after_hours`` when their file landed, the share of
    nulls in each of ``null_checked_fields``, and the number of distinct users. A failing batch
    goes to quarantine whole (``on_failure: quarantine``, each valid line with the failed
    expectations as its reasons) or stops the stream before any write (``stop``).

    ``boolean_first``: validate with GX's ``BOOLEAN_ONLY`` result format (no unexpected-value
    lists, so far fewer Spark jobs) and run the suite again with ``result_format`` only when
    something failed: the details are kept for the batches that need them, and a clean batch
    pays about half the cost.
    """

    enabled: bool = True
    every_n_batches: int = 1
    on_failure: str = "quarantine"
    max_quarantine_share: float = 0.5
    stale_after_hours: float = 48.0
    max_stale_share: float = 1.0
    null_checked_fields: tuple[str, ...] = NULL_CHECKED_FIELDS
    max_null_share: float = 1.0
    min_distinct_users: int = 1
    result_format: str = "SUMMARY"
    boolean_first: bool = True

    def __post_init__(self) -> None:
        _require(self.every_n_batches >= 1, "ingest.validation.every_n_batches", "must be >= 1", self.every_n_batches)
        _require(self.on_failure in ON_FAILURE, "ingest.validation.on_failure", "must be quarantine or stop", self.on_failure)
        for name in ("max_quarantine_share", "max_stale_share", "max_null_share"):
            value = getattr(self, name)
            _require(0.0 <= value <= 1.0, f"ingest.validation.{name}", "must be in [0, 1]", value)
        _require(self.stale_after_hours > 0, "ingest.validation.stale_after_hours", "must be > 0", self.stale_after_hours)
        _require(self.min_distinct_users >= 1, "ingest.validation.min_distinct_users", "must be >= 1", self.min_distinct_users)
        unknown = sorted(set(self.null_checked_fields) - set(NULL_CHECKED_FIELDS))
        _require(
            not unknown, "ingest.validation.null_checked_fields", f"must be among {', '.join(NULL_CHECKED_FIELDS)}", unknown
        )
        _require(
            self.result_format in RESULT_FORMATS,
            "ingest.validation.result_format",
            "must be one of BOOLEAN_ONLY, BASIC, SUMMARY, COMPLETE",
            self.result_format,
        )


INGEST_SOURCES = ("files", "kafka")
KAFKA_STARTING_OFFSETS = ("earliest", "latest")


@dataclass(frozen=True)
class KafkaConfig:
    """The Kafka topic bronze reads when ``ingest.source`` is ``kafka`` (one contract-v1 JSON event per message value)."""

    bootstrap_servers: str = "127.0.0.1:9092"
    topic: str = "interactions"
    starting_offsets: str = "earliest"
    max_offsets_per_trigger: int = 100_000
    options: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _require(bool(self.bootstrap_servers.strip()), "ingest.kafka.bootstrap_servers", "must be non-empty", self.bootstrap_servers)
        _require(bool(self.topic.strip()), "ingest.kafka.topic", "must be non-empty", self.topic)
        _require(
            self.starting_offsets in KAFKA_STARTING_OFFSETS or self.starting_offsets.lstrip().startswith("{"),
            "ingest.kafka.starting_offsets",
            "must be earliest, latest or Spark's JSON of offsets per partition",
            self.starting_offsets,
        )
        _require(self.max_offsets_per_trigger >= 1, "ingest.kafka.max_offsets_per_trigger", "must be >= 1", self.max_offsets_per_trigger)
        reserved = sorted(set(self.options) & {"kafka.bootstrap.servers", "subscribe", "startingOffsets", "maxOffsetsPerTrigger"})
        _require(not reserved, "ingest.kafka.options", "must not repeat the settings above", reserved)


@dataclass(frozen=True)
class IngestConfig:
    """Landing files -> bronze/quarantine."""

    max_files_per_trigger: int = 200
    file_glob: str = "*.{jsonl,jsonl.gz}"
    trigger_interval: str = "10 seconds"
    target_files_per_partition: int = 1
    max_rows_per_file: int = 25_000
    recursive: bool = True
    max_file_age: str = "3650 days"
    max_line_bytes: int = 64 * 1024
    max_future_skew: str = "15 minutes"
    source: str = "files"
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)

    def __post_init__(self) -> None:
        _require(self.max_files_per_trigger >= 1, "ingest.max_files_per_trigger", "must be >= 1", self.max_files_per_trigger)
        _require(self.max_rows_per_file >= 1, "ingest.max_rows_per_file", "must be >= 1", self.max_rows_per_file)
        _require(
            self.target_files_per_partition >= 1,
            "ingest.target_files_per_partition",
            "must be >= 1",
            self.target_files_per_partition,
        )
        _require(
            _interval_ok(self.trigger_interval, allow_zero=True),
            "ingest.trigger_interval",
            "must be like '10 seconds' (0 seconds: back to back)",
            self.trigger_interval,
        )
        _require(bool(self.file_glob.strip()), "ingest.file_glob", "must be non-empty", self.file_glob)
        _require(_interval_ok(self.max_file_age), "ingest.max_file_age", "must be like '3650 days'", self.max_file_age)
        _require(_interval_ok(self.max_future_skew), "ingest.max_future_skew", "must be like '15 minutes'", self.max_future_skew)
        _require(self.max_line_bytes >= 1024, "ingest.max_line_bytes", "must be >= 1024", self.max_line_bytes)
        _require(self.source in INGEST_SOURCES, "ingest.source", f"must be one of {INGEST_SOURCES}", self.source)


VOCABULARIES = ("all", "train", "heldout")
CORPORA = ("snips", "sgd")
"""``all``: every intent and value; ``train``: without the held-out intents and values; ``heldout``: only those."""


REPHRASE_STYLES = ("repeat", "reword", "careful", "shorten", "add_words", "correct_slot", "switch")


@dataclass(frozen=True)
class RephraseMix:
    """How often users choose each way of saying a request again (weights, normalised on use).

    ``repeat``: the same words. ``reword``: another wording with the same slots. ``careful``: the
    same words, the slot values said slowly. ``shorten``: leading words dropped ("play X" for
    "i want to listen to X"). ``add_words``: a lead-in added ("i said ..."). ``correct_slot``:
    "no i said ..." with the slot values said slowly. ``switch``: another phrasing of the intent
    that keeps only some of the slots. A style a request cannot take falls back to another
    wording with the same slots (``reword``), and failing that to the same words (said carefully
    after a mishearing).
    """

    repeat: float = 0.0
    reword: float = 0.0
    careful: float = 0.0
    shorten: float = 0.0
    add_words: float = 0.0
    correct_slot: float = 0.0
    switch: float = 0.0

    def weights(self) -> tuple[float, ...]:
        """The weights in ``REPHRASE_STYLES`` order."""
        return tuple(float(getattr(self, name)) for name in REPHRASE_STYLES)


def _range(values: tuple[float, ...], key: str, low: float, high: float) -> None:
    _require(len(values) == 2 and low <= values[0] <= values[1] <= high, key, f"must be [min, max] within [{low}, {high}]", values)


MEDIA_REACTION_LIMIT_S = 29
"""A reaction to media is a barge-in only within 30 s of playback start (the ground-truth window)."""


@dataclass(frozen=True)
class BehaviourConfig:
    """How the simulated people behave: one profile (``conf/behaviour-*.yaml`` holds others).

    The defaults are profile ``a``: patient users who wait for the answer to end, interrupt late
    in it, say "stop" before retrying a third of the time, and rephrase by repeating, rewording or
    saying the slot carefully.
    """

    name: str = "a"
    retry_delay_s: tuple[float, ...] = (1.0, 8.0)
    barge_in_point: tuple[float, ...] = (0.25, 0.85)
    media_reaction_s: tuple[float, ...] = (3.0, 20.0)
    speech_barge_in_rate: float = 0.35
    stop_first_share: float = 0.3
    media_stop_share: float = 0.45
    media_skip_share: float = 0.15
    give_up_stop_share: float = 0.6
    asr_confusions: str = "rules"
    rephrase_misheard: RephraseMix = field(default_factory=lambda: RephraseMix(repeat=0.3, reword=0.25, careful=0.45))
    rephrase_misunderstood: RephraseMix = field(default_factory=lambda: RephraseMix(repeat=0.3, reword=0.7))

    def __post_init__(self) -> None:
        _require(bool(re.fullmatch(r"[a-z0-9_-]+", self.name)), "simulation.behaviour.name", "must be a short lower-case name", self.name)
        _range(self.retry_delay_s, "simulation.behaviour.retry_delay_s", 0.0, 60.0)
        _range(self.barge_in_point, "simulation.behaviour.barge_in_point", 0.0, 1.0)
        _range(self.media_reaction_s, "simulation.behaviour.media_reaction_s", 0.0, float(MEDIA_REACTION_LIMIT_S))
        for name in ("speech_barge_in_rate", "stop_first_share", "media_stop_share", "media_skip_share", "give_up_stop_share"):
            value = getattr(self, name)
            _require(0.0 <= value <= 1.0, f"simulation.behaviour.{name}", "must be in [0, 1]", value)
        _require(
            self.asr_confusions in ("rules", "lexicon"), "simulation.behaviour.asr_confusions", "must be rules or lexicon", self.asr_confusions
        )
        for mix in ("rephrase_misheard", "rephrase_misunderstood"):
            weights = getattr(self, mix).weights()
            for name, value in zip(REPHRASE_STYLES, weights):
                _require(0.0 <= value <= 1.0, f"simulation.behaviour.{mix}.{name}", "must be in [0, 1]", value)
            _require(sum(weights) > 0.0, f"simulation.behaviour.{mix}", "needs a positive weight", getattr(self, mix))
        _require(
            self.media_stop_share + self.media_skip_share <= 1.0,
            "simulation.behaviour.media_skip_share",
            "plus media_stop_share must be <= 1",
            self.media_skip_share,
        )


@dataclass(frozen=True)
class SimulationConfig:
    """Size, seed and fault rates of the traffic simulator (``feedback.simulate``)."""

    users: int = 200
    days: int = 7
    seed: int = 7
    start_date: str = "2026-11-02"
    sessions_per_user_day: float = 2.5
    duplicate_rate: float = 0.01
    late_file_rate: float = 0.03
    malformed_rate: float = 0.004
    asr_systematic_error_rate: float = 0.6
    asr_random_error_rate: float = 0.02
    nlu_misroute_rate: float = 0.03
    error_status_rate: float = 0.01
    entity_error_rate: float = 0.0
    false_wake_rate: float = 0.0
    nlu_systematic_misroute_rate: float = 0.5
    abandon_rate: float = 0.25
    noise_barge_in_rate: float = 0.025
    explicit_feedback_rate: float = 0.03
    max_attempts: int = 3
    silent_give_up_rate: float = 0.2
    corpus: str = "snips"
    vocabulary: str = "all"
    heldout_intents: tuple[str, ...] = ()
    heldout_value_share: float = 0.3
    behaviour: BehaviourConfig = field(default_factory=BehaviourConfig)
    rewriter: str | None = None
    rewrite_from_day: int = 0
    paired_sessions: bool = False

    def __post_init__(self) -> None:
        _require(
            self.vocabulary in VOCABULARIES, "simulation.vocabulary", f"must be one of {VOCABULARIES}", self.vocabulary
        )
        _require(
            0.0 < self.heldout_value_share < 1.0,
            "simulation.heldout_value_share",
            "must be in (0, 1)",
            self.heldout_value_share,
        )
        _require(self.corpus in CORPORA, "simulation.corpus", f"must be one of {CORPORA}", self.corpus)
        _require(self.users >= 1, "simulation.users", "must be >= 1", self.users)
        _require(self.days >= 1, "simulation.days", "must be >= 1", self.days)
        _require(self.sessions_per_user_day > 0, "simulation.sessions_per_user_day", "must be > 0", self.sessions_per_user_day)
        _require(1 <= self.max_attempts <= 10, "simulation.max_attempts", "must be in [1, 10]", self.max_attempts)
        _require(
            0 <= self.rewrite_from_day < self.days,
            "simulation.rewrite_from_day",
            "must be in [0, days)",
            self.rewrite_from_day,
        )
        _require(
            self.rewriter is None or (isinstance(self.rewriter, str) and self.rewriter.strip() != ""),
            "simulation.rewriter",
            "must be null or a model URI",
            self.rewriter,
        )
        for name in (
            "duplicate_rate",
            "late_file_rate",
            "malformed_rate",
            "asr_systematic_error_rate",
            "asr_random_error_rate",
            "nlu_misroute_rate",
            "error_status_rate",
            "entity_error_rate",
            "false_wake_rate",
            "silent_give_up_rate",
            "nlu_systematic_misroute_rate",
            "abandon_rate",
            "noise_barge_in_rate",
            "explicit_feedback_rate",
        ):
            value = getattr(self, name)
            _require(0.0 <= value <= 1.0, f"simulation.{name}", "must be in [0, 1]", value)
        try:
            from datetime import date

            date.fromisoformat(self.start_date)
        except ValueError:
            _require(False, "simulation.start_date", "must be an ISO date (YYYY-MM-DD)", self.start_date)


DEFAULT_TERMINATION_PHRASES = (
    "stop",
    "cancel",
    "never mind",
    "nevermind",
    "shut up",
    "be quiet",
    "quiet",
    "enough",
    "stop it",
    "stop stop",
    "no stop",
    "cancel that",
)


# Stop-like requests: the ones that end a response, plus the ones that move media on.
DEFAULT_STOP_PHRASES = DEFAULT_TERMINATION_PHRASES + ("pause", "skip", "next", "skip this", "next song")


@dataclass(frozen=True)
class SessionizeConfig:
    """Session windows and the timing rules of barge-in and termination."""

    session_gap: str = "5 minutes"
    watermark: str = "10 minutes"
    max_session_duration: str = "2 hours"
    max_files_per_trigger: int = 1000
    max_rows_per_batch: int = 100_000
    media_barge_in_window_s: float = 30.0
    termination_window_s: float = 10.0
    stop_phrases: tuple[str, ...] = DEFAULT_STOP_PHRASES
    stop_intents: tuple[str, ...] = ("Stop", "Cancel", "Pause", "Next")
    termination_phrases: tuple[str, ...] = DEFAULT_TERMINATION_PHRASES
    termination_intents: tuple[str, ...] = ("Stop", "Cancel")

    def __post_init__(self) -> None:
        _require(_interval_ok(self.session_gap), "sessionize.session_gap", "must be like '5 minutes'", self.session_gap)
        _require(_interval_ok(self.watermark), "sessionize.watermark", "must be like '10 minutes'", self.watermark)
        _require(
            _interval_ok(self.max_session_duration)
            and interval_seconds(self.max_session_duration) >= 2 * interval_seconds(self.session_gap),
            "sessionize.max_session_duration",
            "must be like '2 hours' and at least twice session_gap",
            self.max_session_duration,
        )
        _require(
            self.max_files_per_trigger >= 1, "sessionize.max_files_per_trigger", "must be >= 1", self.max_files_per_trigger
        )
        _require(self.max_rows_per_batch >= 1, "sessionize.max_rows_per_batch", "must be >= 1", self.max_rows_per_batch)
        _require(
            self.media_barge_in_window_s > 0,
            "sessionize.media_barge_in_window_s",
            "must be > 0",
            self.media_barge_in_window_s,
        )
        _require(self.termination_window_s >= 0, "sessionize.termination_window_s", "must be >= 0", self.termination_window_s)
        _require(len(self.stop_phrases) > 0, "sessionize.stop_phrases", "must be non-empty", self.stop_phrases)


@dataclass(frozen=True)
class HeuristicWeights:
    """Weights of the transparent rephrase scorer (see ``feedback.silver.detect.score_pairs_heuristic``)."""

    lexical: float = 0.0
    phonetic: float = 0.0
    characters: float = 0.0
    visible_failure: float = 0.2
    containment: float = 0.5
    step_penalty: float = 0.2

    def __post_init__(self) -> None:
        for name in ("lexical", "phonetic", "characters", "visible_failure", "containment", "step_penalty"):
            value = getattr(self, name)
            _require(0.0 <= value <= 1.0, f"detect.heuristic_weights.{name}", "must be in [0, 1]", value)


@dataclass(frozen=True)
class FailurePointsConfig:
    """The rules that say where a defective turn failed first (``feedback.silver.failure_points``).

    ``min_value_similarity``: a slot value that changed between the failed request and the one
    that fixed it counts as misheard (ASR) when the two are at least this alike (1 - Levenshtein
    distance / the longer length), as another entity otherwise. Without a fix, a turn whose
    ``asr_confidence`` is below ``asr_confidence_below`` is put on ASR, then one whose
    ``nlu_confidence`` is below ``nlu_confidence_below`` on the NLU. A request of at most
    ``false_wake_max_words`` words heard below ``false_wake_asr_confidence_below``, that nobody
    rephrased, is a wake-up nobody meant.
    """

    min_value_similarity: float = 0.6
    asr_confidence_below: float = 0.8
    nlu_confidence_below: float = 0.75
    false_wake_max_words: int = 2
    false_wake_asr_confidence_below: float = 0.5

    def __post_init__(self) -> None:
        for name in ("min_value_similarity", "asr_confidence_below", "nlu_confidence_below", "false_wake_asr_confidence_below"):
            value = getattr(self, name)
            _require(isinstance(value, float) and 0.0 <= value <= 1.0, f"detect.failure_points.{name}", "must be a number in [0, 1]", value)
        _require(
            isinstance(self.false_wake_max_words, int) and self.false_wake_max_words >= 1,
            "detect.failure_points.false_wake_max_words",
            "must be an integer >= 1",
            self.false_wake_max_words,
        )


@dataclass(frozen=True)
class DetectConfig:
    """Which pairs are rephrase candidates, when a pair counts as a rephrase, and where a defect failed."""

    rephrase_window_s: float = 120.0
    rephrase_max_back: int = 2
    rephrase_threshold: float = 0.5
    max_chain_length: int = 6
    heuristic_weights: HeuristicWeights = field(default_factory=HeuristicWeights)
    failure_points: FailurePointsConfig = field(default_factory=FailurePointsConfig)

    def __post_init__(self) -> None:
        _require(self.rephrase_window_s > 0, "detect.rephrase_window_s", "must be > 0", self.rephrase_window_s)
        _require(self.rephrase_max_back >= 1, "detect.rephrase_max_back", "must be >= 1", self.rephrase_max_back)
        _require(
            0.0 <= self.rephrase_threshold <= 1.0, "detect.rephrase_threshold", "must be in [0, 1]", self.rephrase_threshold
        )
        _require(self.max_chain_length >= 2, "detect.max_chain_length", "must be >= 2", self.max_chain_length)


@dataclass(frozen=True)
class RephraseModelConfig:
    """The BERT span-prediction rephrase detector: encoding, decoding, inference and training."""

    base_model: str | None = None
    max_length: int = 128
    max_span_tokens: int = 40
    max_request_tokens: int = 80
    n_best: int = 5
    null_score_margin: float = 0.0
    pair_evidence: bool = True
    evidence_version: int = 2
    text_version: int = 1
    batch_size: int = 64
    gpu_batch_size: int = 256
    device: str = "cpu"
    cascade_min_score: float = 0.21
    cascade_scope: str = "pair"
    student_layers: int = 0
    distill_temperature: float = 2.0
    distill_alpha: float = 0.5
    quantize: bool = True
    fp32_ffn_output_layers: int = 3
    use_champion: bool = True
    must_beat_heuristic: bool = True
    torch_threads: int = 0
    epochs: int = 3
    learning_rate: float = 5e-5
    train_batch_size: int = 16
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    negatives_per_positive: float = 3.0
    max_train_groups: int = 6000
    seed: int = 13
    train_users: int = 300
    train_days: int = 3
    train_seed: int = 1001
    eval_users: int = 200
    eval_days: int = 3
    eval_seed: int = 2002
    train_corpora: tuple[str, ...] = CORPORA
    eval_corpora: tuple[str, ...] = CORPORA
    cross_profile: str | None = "conf/behaviour-b.yaml"

    def __post_init__(self) -> None:
        _require(32 <= self.max_length <= 512, "rephrase_model.max_length", "must be in [32, 512]", self.max_length)
        _require(self.max_span_tokens >= 1, "rephrase_model.max_span_tokens", "must be >= 1", self.max_span_tokens)
        _require(self.n_best >= 1, "rephrase_model.n_best", "must be >= 1", self.n_best)
        _require(self.batch_size >= 1, "rephrase_model.batch_size", "must be >= 1", self.batch_size)
        _require(self.gpu_batch_size >= 1, "rephrase_model.gpu_batch_size", "must be >= 1", self.gpu_batch_size)
        _require(
            1 <= self.max_request_tokens <= self.max_length - 16,
            "rephrase_model.max_request_tokens",
            "must be in [1, max_length - 16]",
            self.max_request_tokens,
        )
        for key, corpora in (("train_corpora", self.train_corpora), ("eval_corpora", self.eval_corpora)):
            _require(
                len(corpora) > 0 and set(corpora) <= set(CORPORA) and len(set(corpora)) == len(corpora),
                f"rephrase_model.{key}",
                f"must name one or more of {CORPORA}, each once",
                corpora,
            )
        _require(self.device in ("auto", "cpu", "cuda"), "rephrase_model.device", "must be auto, cpu or cuda", self.device)
        _require(self.student_layers >= 0, "rephrase_model.student_layers", "must be >= 0 (0: fine-tune the whole encoder)", self.student_layers)
        _require(self.distill_temperature > 0, "rephrase_model.distill_temperature", "must be > 0", self.distill_temperature)
        _require(0.0 <= self.distill_alpha <= 1.0, "rephrase_model.distill_alpha", "must be in [0, 1]", self.distill_alpha)
        _require(
            0.0 <= self.cascade_min_score <= 1.0, "rephrase_model.cascade_min_score", "must be in [0, 1]", self.cascade_min_score
        )
        _require(
            self.cascade_scope in ("pair", "request"), "rephrase_model.cascade_scope", "must be pair or request", self.cascade_scope
        )
        _require(
            self.fp32_ffn_output_layers >= 0, "rephrase_model.fp32_ffn_output_layers", "must be >= 0", self.fp32_ffn_output_layers
        )
        _require(self.evidence_version in (1, 2), "rephrase_model.evidence_version", "must be 1 or 2", self.evidence_version)
        _require(self.text_version in (1, 2), "rephrase_model.text_version", "must be 1 or 2", self.text_version)
        _require(self.torch_threads >= 0, "rephrase_model.torch_threads", "must be >= 0 (0: the task's cores)", self.torch_threads)
        _require(self.epochs >= 1, "rephrase_model.epochs", "must be >= 1", self.epochs)
        _require(0 < self.learning_rate < 1, "rephrase_model.learning_rate", "must be in (0, 1)", self.learning_rate)
        _require(self.train_batch_size >= 1, "rephrase_model.train_batch_size", "must be >= 1", self.train_batch_size)
        _require(0 <= self.warmup_ratio < 1, "rephrase_model.warmup_ratio", "must be in [0, 1)", self.warmup_ratio)
        _require(0 <= self.weight_decay < 1, "rephrase_model.weight_decay", "must be in [0, 1)", self.weight_decay)
        _require(
            self.negatives_per_positive >= 0,
            "rephrase_model.negatives_per_positive",
            "must be >= 0",
            self.negatives_per_positive,
        )
        _require(self.max_train_groups >= 1, "rephrase_model.max_train_groups", "must be >= 1", self.max_train_groups)
        for name in ("train_users", "train_days", "eval_users", "eval_days"):
            _require(getattr(self, name) >= 1, f"rephrase_model.{name}", "must be >= 1", getattr(self, name))
        _require(self.train_seed != self.eval_seed, "rephrase_model.eval_seed", "must differ from train_seed", self.eval_seed)


@dataclass(frozen=True)
class MiningConfig:
    """Rewrite mining (``feedback mine-rewrites``): when an absorbing-chain result becomes a rewrite.

    Why each gate: the absorption probability ``B[u, S(v)]`` alone rewards a target reached by
    few lucky users, so support (distinct users and chains that went from the source to a success
    at the target) keeps one user's habit out; ``B[u, S(v)]`` shrinks with every request ``u``
    serves well itself and with every other good wording, so the target's *share* of the success
    found away from ``u`` is the guard that does not punish popular, half-broken requests; the
    target's own success rate keeps out targets that only worked for the chains we saw; the
    source's ceiling keeps requests that mostly work untouched. ``beat_own_success`` adds the
    strictest reading (``B[u, S(v)] > B[u, S(u)]``). Defaults tuned on simulation seeds 21 and 33
    (``benchmarks/tune_rewrites.py``, docs/quality.md). ``max_delete_share``: the MERGE deletes
    every live rewrite the run no longer mines, so an empty or broken silver would empty
    ``gold/rewrites``; a run that would delete more than this share of the live rows is refused.
    """

    min_probability: float = 0.02
    min_target_share: float = 0.1
    min_support_users: int = 2
    min_support_chains: int = 2
    min_target_success_rate: float = 0.7
    max_source_success_rate: float = 0.7
    beat_own_success: bool = False
    max_component_states: int = 100_000
    solve_buckets: int = 16
    solve_cells: int = 4_000_000
    max_label_iterations: int = 40
    register: bool = True
    experiment: str = "query-rewriter"
    max_delete_share: float = 0.5

    def __post_init__(self) -> None:
        for name in ("min_probability", "min_target_share", "min_target_success_rate", "max_source_success_rate", "max_delete_share"):
            value = getattr(self, name)
            _require(0.0 <= value <= 1.0, f"mining.{name}", "must be in [0, 1]", value)
        _require(
            self.min_support_users >= 2,
            "mining.min_support_users",
            "must be >= 2 (a rewrite supported by a single user exposes that user)",
            self.min_support_users,
        )
        _require(self.min_support_chains >= 1, "mining.min_support_chains", "must be >= 1", self.min_support_chains)
        _require(self.max_component_states >= 2, "mining.max_component_states", "must be >= 2", self.max_component_states)
        _require(self.solve_buckets >= 1, "mining.solve_buckets", "must be >= 1", self.solve_buckets)
        _require(self.solve_cells >= 1024, "mining.solve_cells", "must be >= 1024", self.solve_cells)
        _require(self.max_label_iterations >= 1, "mining.max_label_iterations", "must be >= 1", self.max_label_iterations)
        _require(bool(self.experiment.strip()), "mining.experiment", "must be non-empty", self.experiment)


@dataclass(frozen=True)
class PrivacyConfig:
    """What the analyst-facing reads of gold may show (``feedback.core.privacy``).

    ``min_users``: a gold row seen from fewer distinct users is not shown, because a row of one
    or two users tells about those users. The tables keep such rows: their user sketches are
    unioned into counts over several rows, which would be wrong without them. The HMAC key of
    the sketched user ids is not configured here: it comes from the environment
    (``FEEDBACK_USER_KEY``).
    """

    min_users: int = 5

    def __post_init__(self) -> None:
        _require(
            isinstance(self.min_users, int) and not isinstance(self.min_users, bool) and self.min_users >= 2,
            "privacy.min_users",
            "must be an integer >= 2",
            self.min_users,
        )


DELTA_SAFE_RETENTION_HOURS = 168
"""Delta's default ``delta.deletedFileRetentionDuration`` (7 days): VACUUM refuses a shorter retention unless told."""


@dataclass(frozen=True)
class AnnotationsConfig:
    """NLU labels from users' corrections (``feedback annotate``, ``feedback.gold.annotations``).

    ``min_slot_similarity``: a slot value of the successful rephrase is put on the failed wording
    only when some of its words are this alike to it, by spelling or sound (a value the failed
    wording never said is no label for it). ``min_confidence``: the least share of a wording's
    corrected chains that must agree on its label, so a wording users meant in different ways is
    left out.
    """

    min_slot_similarity: float = 0.6
    min_confidence: float = 0.5

    def __post_init__(self) -> None:
        for name in ("min_slot_similarity", "min_confidence"):
            value = getattr(self, name)
            _require(isinstance(value, float) and 0.0 <= value <= 1.0, f"annotations.{name}", "must be a number in [0, 1]", value)


@dataclass(frozen=True)
class MaintenanceConfig:
    """``feedback maintain``: OPTIMIZE and VACUUM of every table of a lake (``feedback.ops.maintain``).

    ``vacuum_retention_hours``: VACUUM deletes the files a table stopped using at least this long
    ago, so time travel and the change data feed reach back this far, and no further. Below
    ``DELTA_SAFE_RETENTION_HOURS`` Delta's retention check is turned off for the VACUUM: such a
    retention can delete files that a running stream or a long query still reads, so choose it
    for a lake nothing else is using at the time. ``optimize``: compact small files first.
    """

    vacuum_retention_hours: int = DELTA_SAFE_RETENTION_HOURS
    optimize: bool = True

    def __post_init__(self) -> None:
        hours = self.vacuum_retention_hours
        _require(
            isinstance(hours, int) and not isinstance(hours, bool) and hours >= 0,
            "maintenance.vacuum_retention_hours",
            "must be an integer >= 0",
            hours,
        )
        _require(isinstance(self.optimize, bool), "maintenance.optimize", "must be a boolean", self.optimize)


@dataclass(frozen=True)
class FailureModelConfig:
    """The learned failure-point classifier (``feedback train-failure-points``, ``feedback.isolation``).

    Training simulates ``users`` households for ``days`` days of each of ``train_corpora`` on the
    training vocabulary (seed ``train_seed``) and evaluates on the held-out intents and slot
    values (seed ``eval_seed``), with every failure point switched on: ``false_wake_rate`` and
    ``entity_error_rate`` replace the simulation's. ``text_components``: PCA components kept
    from the sentence embedding of the request and of its fix (0: metadata only), by
    ``base_model`` (a BERT folder; None: the packaged MiniLM); the boosting
    settings are scikit-learn's ``HistGradientBoostingClassifier``'s. ``use_champion``: the
    stream classifies defects with ``failure-point-classifier@champion`` when the lake's registry
    has one, else with the rules.
    """

    train_corpora: tuple[str, ...] = ("snips", "sgd")
    users: int = 2000
    days: int = 7
    train_seed: int = 707
    eval_seed: int = 808
    false_wake_rate: float = 0.05
    entity_error_rate: float = 0.02
    base_model: str | None = None
    text_components: int = 16
    max_iter: int = 300
    learning_rate: float = 0.08
    max_leaf_nodes: int = 31
    l2_regularization: float = 1.0
    device: str = "cpu"
    batch_size: int = 64
    use_champion: bool = True

    def __post_init__(self) -> None:
        _require(len(self.train_corpora) >= 1, "failure_model.train_corpora", "must name at least one corpus", self.train_corpora)
        for corpus in self.train_corpora:
            _require(corpus in CORPORA, "failure_model.train_corpora", f"each must be one of {CORPORA}", corpus)
        for name in ("users", "days", "max_iter", "max_leaf_nodes", "batch_size"):
            _require(getattr(self, name) >= 1, f"failure_model.{name}", "must be >= 1", getattr(self, name))
        _require(self.text_components >= 0, "failure_model.text_components", "must be >= 0", self.text_components)
        _require(self.train_seed != self.eval_seed, "failure_model.eval_seed", "must differ from train_seed", self.eval_seed)
        for name in ("false_wake_rate", "entity_error_rate"):
            _require(0.0 <= getattr(self, name) < 1.0, f"failure_model.{name}", "must be in [0, 1)", getattr(self, name))
        _require(0.0 < self.learning_rate <= 1.0, "failure_model.learning_rate", "must be in (0, 1]", self.learning_rate)
        _require(self.l2_regularization >= 0.0, "failure_model.l2_regularization", "must be >= 0", self.l2_regularization)
        _require(self.device in ("auto", "cpu", "cuda"), "failure_model.device", "must be auto, cpu or cuda", self.device)


@dataclass(frozen=True)
class AppConfig:
    """The whole configuration of one run."""

    spark: SparkConfig = field(default_factory=SparkConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    sessionize: SessionizeConfig = field(default_factory=SessionizeConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    simulation: SimulationConfig = field(default_factory=SimulationConfig)
    rephrase_model: RephraseModelConfig = field(default_factory=RephraseModelConfig)
    mining: MiningConfig = field(default_factory=MiningConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    annotations: AnnotationsConfig = field(default_factory=AnnotationsConfig)
    failure_model: FailureModelConfig = field(default_factory=FailureModelConfig)
    maintenance: MaintenanceConfig = field(default_factory=MaintenanceConfig)

    def __post_init__(self) -> None:
        _require(
            self.sessionize.max_rows_per_batch >= self.ingest.max_rows_per_file,
            "sessionize.max_rows_per_batch",
            f"must be >= ingest.max_rows_per_file ({self.ingest.max_rows_per_file}): a silver batch reads whole bronze files",
            self.sessionize.max_rows_per_batch,
        )


_INTEGER_TEXT = re.compile(r"[+-]?[0-9]+")
_NUMBER_TEXT = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")


def _as_int(value: object, key: str) -> int:
    """``value`` as an int: an int, or a string of one; never a bool, a float or other text."""
    if isinstance(value, str) and _INTEGER_TEXT.fullmatch(value.strip()):
        return int(value)
    _require(isinstance(value, int) and not isinstance(value, bool), key, "must be an integer", value)
    return value  # type: ignore[return-value]


def _as_float(value: object, key: str) -> float:
    """``value`` as a finite float.

    YAML 1.1 reads ``5e-5`` (no dot) as a string, so a string holding a decimal number is
    converted; ``.inf`` and ``.nan`` are floats to YAML but no usable window, rate or weight.
    """
    if isinstance(value, str) and _NUMBER_TEXT.fullmatch(value.strip()):
        number = float(value)
    else:
        _require(isinstance(value, (int, float)) and not isinstance(value, bool), key, "must be a number", value)
        try:
            number = float(value)  # type: ignore[arg-type]
        except OverflowError:
            number = math.inf
    _require(math.isfinite(number), key, "must be finite", value)
    return number


def _check_scalar(value: object, expected: type, key: str) -> object:
    """``value`` checked against, and converted to, the field type ``expected``."""
    if expected is bool:
        _require(isinstance(value, bool), key, "must be a boolean", value)
        return value
    if expected is int:
        return _as_int(value, key)
    if expected is float:
        return _as_float(value, key)
    if expected is str:
        _require(isinstance(value, str), key, "must be a string", value)
        return value
    raise ConfigError(f"{key}: unsupported field type {expected!r}")


def _convert(value: object, annotation: Any, key: str) -> object:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None:
            return None
        return _convert(value, args[0], key)
    if dataclasses.is_dataclass(annotation):
        _require(isinstance(value, Mapping), key, "must be a mapping", value)
        return build_dataclass(annotation, value, key)  # type: ignore[arg-type]
    if origin is tuple:
        _require(isinstance(value, (list, tuple)), key, "must be a list", value)
        item_type = typing.get_args(annotation)[0]
        return tuple(_check_scalar(item, item_type, f"{key}[{index}]") for index, item in enumerate(value))  # type: ignore[arg-type]
    if origin is dict:
        _require(isinstance(value, Mapping), key, "must be a mapping", value)
        return {str(k): str(v) for k, v in value.items()}  # type: ignore[union-attr]
    return _check_scalar(value, annotation, key)


def build_dataclass(cls: type[T], data: Mapping[str, object], prefix: str = "") -> T:
    """Build the frozen dataclass ``cls`` from ``data``, rejecting unknown keys.

    Args:
        cls: a dataclass type of this module.
        data: the mapping read from YAML.
        prefix: the dotted path of ``data`` inside the whole file, used in errors.
    """
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(f"{where}{unknown[0]}: unknown key (known: {', '.join(sorted(names))})")
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _convert(value, hints[name], key)
    return cls(**kwargs)


def _deep_merge(base: Mapping[str, object], override: Mapping[str, object]) -> dict[str, object]:
    merged = dict(base)
    for key, value in override.items():
        current = merged.get(key)
        if isinstance(current, Mapping) and isinstance(value, Mapping):
            merged[key] = _deep_merge(current, value)
        else:
            merged[key] = value
    return merged


def load_config(path: str | Path | None = None, overrides: Mapping[str, object] | None = None) -> AppConfig:
    """Load the dataclass defaults, then ``path`` on top, then ``overrides``.

    Args:
        path: a YAML file with any subset of the keys of ``AppConfig``; None uses the defaults.
        overrides: nested mapping applied last (the CLI uses it for flags such as ``--users``).

    Raises:
        ConfigError: a key is unknown or a value is of the wrong type or out of range.
        FileNotFoundError: ``path`` does not exist.
    """
    data: dict[str, object] = {}
    if path is not None:
        conf_path = Path(path)
        if not conf_path.is_file():
            raise FileNotFoundError(f"conf: no such file {conf_path}")
        loaded = yaml.safe_load(conf_path.read_text()) or {}
        if not isinstance(loaded, Mapping):
            raise ConfigError(f"conf: {conf_path} must hold a mapping at the top level")
        data = _deep_merge(data, loaded)
    if overrides:
        data = _deep_merge(data, overrides)
    return build_dataclass(AppConfig, data)


def replace_section(config: AppConfig, **sections: object) -> AppConfig:
    """Return ``config`` with whole sections swapped (tests and the CLI use it)."""
    return dataclasses.replace(config, **sections)
