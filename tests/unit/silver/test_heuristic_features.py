"""The heuristic scorer's features on hand-worked pairs."""

from __future__ import annotations

from pyspark.sql import SparkSession
from pyspark.testing import assertDataFrameEqual

from feedback.silver.detect import heuristic_features

PAIRS = "pair string, source_normalized string, target_normalized string, source_status string, source_barge_in boolean, source_terminated boolean"


def test_containment_is_one_when_a_follow_up_adds_or_drops_words_around_the_request(spark: SparkSession) -> None:
    pairs = spark.createDataFrame(
        [
            # 5 Soundex codes, all among the 8 of the lead-in version: containment 5/5, Jaccard 5/8
            ("lead-in", "play songs by the beetles", "no i said play songs by the beatles", "success", True, False),
            # 6 codes and 3 shared: the terse form is contained, Jaccard 3/6
            ("shortened", "tell me the weather in paris", "weather in paris", "unhandled", False, False),
            ("unrelated", "play jazz", "set a timer", "success", False, False),
        ],
        PAIRS,
    )
    result = heuristic_features(pairs).select("pair", "containment", "phonetic", "visible_failure")
    expected = spark.createDataFrame(
        [("lead-in", 1.0, 5 / 8, 1.0), ("shortened", 1.0, 3 / 6, 1.0), ("unrelated", 0.0, 0.0, 0.0)],
        "pair string, containment double, phonetic double, visible_failure double",
    )
    assertDataFrameEqual(result, expected)
