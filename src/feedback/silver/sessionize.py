"""Bronze events -> sessions -> ordered turns with barge-in and termination flags.

Sessions are gap-based session windows per (user_id, device_id) under an event-time
watermark, so state is bounded: a session is emitted once the watermark passes its end and
its state is dropped. A session never crosses a UTC boundary of ``max_session_duration``
(epoch-aligned), so a device that never pauses still has its sessions emitted and its state
dropped; the cost is that a conversation running across a boundary is cut in two. Everything after the aggregation works on whole sessions, so the
per-turn logic (what came next on the device, how long the response played) is a plain
window over one session, identical in the stream and in ``feedback backfill``.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from feedback.config import SessionizeConfig, interval_seconds

TURN_FIELDS = (
    "ts",
    "event_id",
    "event_date",
    "device_type",
    "locale",
    "utterance",
    "domain",
    "intent",
    "slots",
    "status",
    "response_type",
    "response_text",
    "response_latency_ms",
    "response_duration_ms",
    "asr_confidence",
    "nlu_confidence",
    "explicit_feedback",
)


def normalize_utterance(utterance: Column) -> Column:
    """Lower case, punctuation to spaces (apostrophes kept), whitespace collapsed: the key that pools users."""
    lowered = F.lower(utterance)
    spaced = F.regexp_replace(lowered, r"[^\p{L}\p{N}']+", " ")
    return F.trim(F.regexp_replace(spaced, r"\s+", " "))


def is_stop_like(normalized: Column, intent: Column, config: SessionizeConfig) -> Column:
    """A request that ends or skips what is playing ("stop", "cancel", "skip", ...)."""
    return normalized.isin(*config.stop_phrases) | F.coalesce(intent.isin(*config.stop_intents), F.lit(False))


def is_termination(normalized: Column, intent: Column, config: SessionizeConfig) -> Column:
    """A request that ends the response ("stop", "cancel"; not "skip" or "next", which move on)."""
    return normalized.isin(*config.termination_phrases) | F.coalesce(
        intent.isin(*config.termination_intents), F.lit(False)
    )


def is_system_command(normalized: Column, intent: Column, domain: Column, config: SessionizeConfig) -> Column:
    """Control of the assistant itself rather than a need: never a defect, never a rephrase."""
    return is_stop_like(normalized, intent, config) | F.coalesce(domain == F.lit("system"), F.lit(False))


def aggregate_sessions(events: DataFrame, config: SessionizeConfig) -> DataFrame:
    """Group events into gap-based sessions per user and device (streaming-safe, append mode).

    Args:
        events: bronze rows (a streaming or a static DataFrame).
        config: the gap and the watermark delay.

    Returns:
        One row per session: ``user_id``, ``device_id``, ``session`` (start, end) and ``turns``,
        the session's events as structs (in no particular order; ``explode_sessions`` orders them).
        No session spans a boundary of ``config.max_session_duration``.
    """
    missing = {"user_id", "device_id", *TURN_FIELDS} - set(events.columns)
    if missing:
        raise ValueError(f"events is missing column(s) {sorted(missing)}")
    span = F.floor(F.unix_seconds("ts") / F.lit(interval_seconds(config.max_session_duration))).alias("session_span")
    return (
        events.withWatermark("ts", config.watermark)
        .groupBy("user_id", "device_id", span, F.session_window("ts", config.session_gap).alias("session"))
        .agg(F.collect_list(F.struct(*TURN_FIELDS)).alias("turns"))
        .drop("session_span")
    )


def _earlier_first(left: Column, right: Column) -> Column:
    """Comparator for ``array_sort``: by ts, then event_id (turn structs hold a map, which has no order)."""
    return (
        F.when(left["ts"] < right["ts"], F.lit(-1))
        .when(left["ts"] > right["ts"], F.lit(1))
        .when(left["event_id"] < right["event_id"], F.lit(-1))
        .when(left["event_id"] > right["event_id"], F.lit(1))
        .otherwise(F.lit(0))
    )


def explode_sessions(sessions: DataFrame) -> DataFrame:
    """One row per turn, with a stable ``session_id`` and the turn's position in its session."""
    session_id = F.substring(
        F.sha2(F.concat_ws("|", "user_id", "device_id", F.date_format("session.start", "yyyy-MM-dd'T'HH:mm:ss.SSSSSS")), 256),
        1,
        32,
    )
    return sessions.select(
        "user_id",
        "device_id",
        session_id.alias("session_id"),
        F.col("session.start").alias("session_start"),
        F.posexplode(F.array_sort("turns", _earlier_first)).alias("turn_index", "turn"),
    ).select("user_id", "device_id", "session_id", "session_start", "turn_index", "turn.*")


def mark_turns(turns: DataFrame, config: SessionizeConfig) -> DataFrame:
    """Add normalized text, response timing, ``barge_in`` and ``terminated`` from the next turn on the device.

    Barge-in: the next request starts while the response still plays (before
    ts + latency + duration); for media that keeps playing (no duration), a next request,
    stop-like or not, within ``media_barge_in_window_s`` of playback start.
    Termination: the next request is a stop or cancel and comes while the response plays or within
    ``termination_window_s`` of its end; for media that keeps playing, within
    ``media_barge_in_window_s`` of playback start (a "stop" after minutes of music is the
    user being done, not a failure).
    """
    in_session = Window.partitionBy("session_id").orderBy("turn_index")
    normalized = normalize_utterance(F.col("utterance"))
    ts_ms = F.unix_millis("ts")
    start_ms = ts_ms + F.coalesce(F.col("response_latency_ms").cast("long"), F.lit(0))
    has_duration = F.col("response_duration_ms").isNotNull()
    playing_media = (F.col("response_type") == F.lit("media")) & ~has_duration
    end_ms = F.when(has_duration, start_ms + F.col("response_duration_ms").cast("long"))

    staged = (
        turns.withColumn("normalized_utterance", normalized)
        .withColumn("stop_like", is_stop_like(F.col("normalized_utterance"), F.col("intent"), config))
        .withColumn(
            "is_system_command",
            is_system_command(F.col("normalized_utterance"), F.col("intent"), F.col("domain"), config),
        )
        .withColumn("_ts_ms", ts_ms)
        .withColumn("_start_ms", start_ms)
        .withColumn("_end_ms", end_ms)
        .withColumn("_media", F.coalesce(playing_media, F.lit(False)))
        .withColumn("_next_ms", F.lead("_ts_ms").over(in_session))
        .withColumn("_ends_response", is_termination(F.col("normalized_utterance"), F.col("intent"), config))
        .withColumn("_next_stop", F.lead("_ends_response").over(in_session))
    )
    media_window = F.lit(int(config.media_barge_in_window_s * 1000))
    termination_window = F.lit(int(config.termination_window_s * 1000))
    next_ms = F.col("_next_ms")
    barge_in = (
        F.when(next_ms.isNull(), F.lit(False))
        .when(F.col("_end_ms").isNotNull(), next_ms < F.col("_end_ms"))
        .when(F.col("_media"), next_ms < F.col("_start_ms") + media_window)
        .otherwise(F.lit(False))
    )
    window_end_ms = F.when(F.col("_end_ms").isNotNull(), F.col("_end_ms") + termination_window).when(
        F.col("_media"), F.col("_start_ms") + media_window
    )
    terminated = F.coalesce(F.col("_next_stop"), F.lit(False)) & (next_ms < window_end_ms)
    return (
        staged.withColumn("barge_in", barge_in)
        .withColumn("terminated", F.coalesce(terminated, F.lit(False)))
        .withColumn("response_end_ts", F.timestamp_millis(F.col("_end_ms")))
        .withColumn("next_turn_gap_s", (next_ms - F.col("_ts_ms")) / F.lit(1000.0))
        .drop("_ts_ms", "_start_ms", "_end_ms", "_media", "_next_ms", "_next_stop", "_ends_response")
    )
