"""Rephrase detection and defect labels on the turns of complete sessions.

Three steps, each a pure DataFrame function so a model (``feedback.rephrase.spark``) can replace the
scorer alone:

1. ``rephrase_candidates``: pairs (earlier request, later request) of one session, at most
   ``rephrase_max_back`` requests apart and ``rephrase_window_s`` seconds apart. System
   commands ("stop", "cancel") are skipped, so a "stop" between a request and its rephrase
   does not break the link.
2. ``score_pairs_heuristic``: the transparent scorer: a weighted sum of word overlap, phonetic
   (Soundex) overlap, character edit similarity, containment (the shorter request's sounds found
   in the other) and whether the earlier request visibly failed (``detect.heuristic_weights``).
3. ``link_rephrases``: each request links to its best-scoring earlier request above the
   threshold; ``label_defects`` then derives every defect reason per turn.
"""

from __future__ import annotations

from collections.abc import Callable

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from feedback.config import DetectConfig

HEURISTIC_DETECTOR = "heuristic-v2"

SCORING_MODEL = "model"
SCORING_CASCADE = "cascade"
SCORING_FALLBACK = "fallback"
SCORING_KINDS = (SCORING_MODEL, SCORING_CASCADE, SCORING_FALLBACK)
"""How a candidate pair was scored: by the model, settled by the cascade's first stage, or by the
heuristic after the model failed on its request group (a scorer's ``scoring`` column)."""

DEFECT_REASONS = ("barge_in", "terminated", "rephrased", "unhandled", "error", "negative_feedback", "abandoned")

PAIR_KEY = ("session_id", "source_event_id", "target_event_id")

PairScorer = Callable[[DataFrame, DetectConfig], DataFrame]
"""Candidate pairs -> the same pairs with ``rephrase_score`` and ``rephrase_detector`` (and, for a
model, ``scoring`` and ``model_error``): the heuristic below, or the model stage that
``feedback.pipeline`` resolves and passes in."""


def rephrase_candidates(turns: DataFrame, config: DetectConfig) -> DataFrame:
    """Candidate (source, target) pairs inside each session; only these ever reach a scorer.

    Returns:
        ``session_id``, ``user_id``, ``source_event_id``, ``target_event_id``, both texts
        (raw and normalized), ``gap_s`` between the two requests, ``steps_back`` (1 = the
        previous request), ``stop_between`` and the source's visible outcome
        (``source_status``, ``source_barge_in``, ``source_terminated``, ``source_response_text``)
        and the request before the source (``source_previous_text``, ``source_previous_gap_s``:
        context for the model detector).
    """
    requests = turns.filter(~F.col("is_system_command"))
    order = Window.partitionBy("session_id").orderBy("turn_index")
    requests = (
        requests.withColumn("_request_index", F.row_number().over(order))
        .withColumn("_previous_text", F.lag("utterance").over(order))
        .withColumn("_previous_gap_s", (F.unix_millis("ts") - F.lag(F.unix_millis("ts")).over(order)) / F.lit(1000.0))
    )
    source = requests.select(
        "session_id",
        "user_id",
        F.col("event_id").alias("source_event_id"),
        F.col("turn_index").alias("source_turn_index"),
        F.col("_request_index").alias("source_request_index"),
        F.col("ts").alias("source_ts"),
        F.col("utterance").alias("source_text"),
        F.col("normalized_utterance").alias("source_normalized"),
        F.col("status").alias("source_status"),
        F.col("barge_in").alias("source_barge_in"),
        F.col("terminated").alias("source_terminated"),
        F.col("response_text").alias("source_response_text"),
        F.col("_previous_text").alias("source_previous_text"),
        F.col("_previous_gap_s").alias("source_previous_gap_s"),
    )
    target = requests.select(
        F.col("session_id").alias("_session"),
        F.col("event_id").alias("target_event_id"),
        F.col("turn_index").alias("target_turn_index"),
        F.col("_request_index").alias("target_request_index"),
        F.col("ts").alias("target_ts"),
        F.col("utterance").alias("target_text"),
        F.col("normalized_utterance").alias("target_normalized"),
    )
    gap_s = (F.unix_millis("target_ts") - F.unix_millis("source_ts")) / F.lit(1000.0)
    steps = F.col("target_request_index") - F.col("source_request_index")
    pairs = source.join(
        target,
        (F.col("session_id") == F.col("_session"))
        & (steps >= 1)
        & (steps <= config.rephrase_max_back)
        & (gap_s <= config.rephrase_window_s),
        "inner",
    )
    return pairs.select(
        "session_id",
        "user_id",
        "source_event_id",
        "target_event_id",
        "source_text",
        "target_text",
        "source_normalized",
        "target_normalized",
        gap_s.alias("gap_s"),
        steps.alias("steps_back"),
        (F.col("target_turn_index") - F.col("source_turn_index") > steps).alias("stop_between"),
        "source_status",
        "source_barge_in",
        "source_terminated",
        "source_response_text",
        "source_previous_text",
        "source_previous_gap_s",
    )


def _jaccard(left: Column, right: Column) -> Column:
    union = F.size(F.array_union(left, right))
    return F.when(union == 0, F.lit(0.0)).otherwise(F.size(F.array_intersect(left, right)) / union)


def _overlap(left: Column, right: Column) -> Column:
    """Overlap coefficient: shared items over the smaller set's size (1 when one set holds the other)."""
    smaller = F.least(F.size(left), F.size(right))
    return F.when(smaller == 0, F.lit(0.0)).otherwise(F.size(F.array_intersect(left, right)) / smaller)


def _words(normalized: Column) -> Column:
    return F.array_distinct(F.filter(F.split(normalized, " "), lambda w: w != F.lit("")))


HEURISTIC_FEATURES = ("lexical", "phonetic", "characters", "visible_failure", "containment")


def spelling_similarity_column(left: Column, right: Column, both_empty: float) -> Column:
    """1 - Levenshtein distance / the longer length, in [0, 1] (``core.text.spelling_similarity`` as a
    column); ``both_empty`` when both strings are empty."""
    longest = F.greatest(F.length(left), F.length(right))
    return F.when(longest == 0, F.lit(both_empty)).otherwise(F.lit(1.0) - F.levenshtein(left, right) / longest)


def heuristic_features(pairs: DataFrame) -> DataFrame:
    """Add the baseline's features to candidate pairs, each in [0, 1].

    ``lexical``: word Jaccard overlap. ``phonetic``: Jaccard overlap of the words' Soundex
    codes (catches "spot if i" for "spotify"). ``characters``: 1 - Levenshtein / longer
    length. ``visible_failure``: 1 when the source was not ``success``, barged into or
    terminated. ``containment``: the share of the shorter request's Soundex codes that the
    other one has (1 for "no i said X" after "X", or "weather in X" after "tell me the weather
    in X": a follow-up that adds or drops words around the same request).
    """
    source_words = _words(F.col("source_normalized"))
    target_words = _words(F.col("target_normalized"))
    source_codes = F.array_distinct(F.transform(source_words, lambda w: F.soundex(w)))
    target_codes = F.array_distinct(F.transform(target_words, lambda w: F.soundex(w)))
    return (
        pairs.withColumn("lexical", _jaccard(source_words, target_words))
        .withColumn("phonetic", _jaccard(source_codes, target_codes))
        .withColumn("containment", _overlap(source_codes, target_codes))
        .withColumn("characters", spelling_similarity_column(F.col("source_normalized"), F.col("target_normalized"), both_empty=0.0))
        .withColumn(
            "visible_failure",
            (
                (F.col("source_status") != F.lit("success")) | F.col("source_barge_in") | F.col("source_terminated")
            ).cast("double"),
        )
    )


def score_pairs_heuristic(pairs: DataFrame, config: DetectConfig) -> DataFrame:
    """Add ``rephrase_score`` in [0, 1] and ``rephrase_detector`` to candidate pairs (the baseline).

    A weighted sum of ``heuristic_features`` minus a penalty per request skipped, which
    favours the nearest earlier request; weights in ``detect.heuristic_weights``.
    """
    weights = config.heuristic_weights
    featured = heuristic_features(pairs)
    score = (
        F.lit(weights.lexical) * F.col("lexical")
        + F.lit(weights.phonetic) * F.col("phonetic")
        + F.lit(weights.characters) * F.col("characters")
        + F.lit(weights.visible_failure) * F.col("visible_failure")
        + F.lit(weights.containment) * F.col("containment")
        - F.lit(weights.step_penalty) * (F.col("steps_back") - 1)
    )
    bounded = F.least(F.lit(1.0), F.greatest(F.lit(0.0), score))
    return (
        featured.withColumn("rephrase_score", bounded.cast("double"))
        .withColumn("rephrase_detector", F.lit(HEURISTIC_DETECTOR))
        .drop(*HEURISTIC_FEATURES)
    )


def link_rephrases(turns: DataFrame, scored_pairs: DataFrame, threshold: float) -> DataFrame:
    """Set ``rephrase_of``/``rephrase_score``/``rephrase_detector`` on each turn from its best pair.

    A turn links to the earlier request with the highest score at or above ``threshold``
    (ties go to the nearest). ``rephrase_score`` is that score, or the best score seen when
    below the threshold, or null when the turn had no candidate.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    best = Window.partitionBy("target_event_id").orderBy(F.desc("rephrase_score"), F.asc("steps_back"))
    top = (
        scored_pairs.withColumn("_rank", F.row_number().over(best))
        .filter(F.col("_rank") == 1)
        .select(
            F.col("target_event_id").alias("event_id"),
            F.when(F.col("rephrase_score") >= F.lit(threshold), F.col("source_event_id")).alias("rephrase_of"),
            F.col("rephrase_score"),
            F.col("rephrase_detector"),
        )
    )
    return turns.join(top, on="event_id", how="left")


def label_defects(turns: DataFrame) -> DataFrame:
    """Add ``rephrased``, ``abandoned``, ``defect`` and ``defect_reasons`` to linked turns.

    ``rephrased``: a later turn rephrases this one. ``abandoned``: the turn failed visibly
    (unhandled, error, barged into, terminated), was not rephrased, and no other request
    followed in the session. System commands are never defects.
    """
    rephrased_ids = (
        turns.filter(F.col("rephrase_of").isNotNull()).select(F.col("rephrase_of").alias("event_id")).distinct()
    ).withColumn("rephrased", F.lit(True))
    later = Window.partitionBy("session_id").orderBy("turn_index").rowsBetween(1, Window.unboundedFollowing)
    linked = turns.join(rephrased_ids, on="event_id", how="left").withColumn(
        "rephrased", F.coalesce(F.col("rephrased"), F.lit(False))
    )
    requests_after = F.max(F.when(~F.col("is_system_command"), F.lit(1)).otherwise(F.lit(0))).over(later)
    visibly_failed = (
        F.col("status").isin("unhandled", "error") | F.col("barge_in") | F.col("terminated")
    )
    abandoned = visibly_failed & ~F.col("rephrased") & (F.coalesce(requests_after, F.lit(0)) == 0)
    request = ~F.col("is_system_command")
    reasons = F.array_compact(
        F.array(
            F.when(request & F.col("barge_in"), F.lit("barge_in")),
            F.when(request & F.col("terminated"), F.lit("terminated")),
            F.when(request & F.col("rephrased"), F.lit("rephrased")),
            F.when(request & (F.col("status") == F.lit("unhandled")), F.lit("unhandled")),
            F.when(request & (F.col("status") == F.lit("error")), F.lit("error")),
            F.when(request & (F.col("explicit_feedback") == F.lit("negative")), F.lit("negative_feedback")),
            F.when(request & abandoned, F.lit("abandoned")),
        )
    )
    return (
        linked.withColumn("abandoned", request & abandoned)
        .withColumn("defect_reasons", reasons)
        .withColumn("defect", F.size("defect_reasons") > 0)
    )
