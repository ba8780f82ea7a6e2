"""Where a defect failed first, by the rules baseline, one hand-worked turn per rule."""

from __future__ import annotations

from pyspark.sql import SparkSession
from pyspark.testing import assertDataFrameEqual

from feedback.config import FailurePointsConfig
from feedback.silver.failure_points import RULES_CLASSIFIER, failure_points_by_rules

COLUMNS = (
    "event_id string, chain_id string, chain_success boolean, turn_index int, defect boolean, is_system_command boolean, "
    "status string, intent string, slots map<string,string>, asr_confidence double, nlu_confidence double, "
    "utterance string, rephrased boolean"
)
MUSIC = "PlayMusic"
TURNS = [
    # a user's fix: a misheard value ("beetles" -> "beatles", 10/11 alike), another intent, another entity, the same meaning
    ("a1", "c1", True, 0, True, False, "success", MUSIC, {"artist": "the beetles"}, 0.95, 0.95, "say it in many words", True),
    ("a2", "c1", True, 1, False, False, "success", MUSIC, {"artist": "the beatles"}, 0.95, 0.95, "say it in many words", False),
    ("b1", "c2", True, 0, True, False, "success", "AddToPlaylist", {"artist": "abba"}, 0.95, 0.95, "say it in many words", True),
    ("b2", "c2", True, 1, False, False, "success", MUSIC, {"artist": "abba"}, 0.95, 0.95, "say it in many words", False),
    ("e1", "c3", True, 0, True, False, "success", "GetWeather", {"city": "springfield"}, 0.95, 0.95, "say it in many words", True),
    ("e2", "c3", True, 1, False, False, "success", "GetWeather", {"city": "paris"}, 0.95, 0.95, "say it in many words", False),
    ("r1", "c4", True, 0, True, False, "unhandled", MUSIC, {"artist": "abba"}, 0.95, 0.95, "say it in many words", True),
    ("r2", "c4", True, 1, False, False, "success", MUSIC, {"artist": "abba"}, 0.95, 0.95, "say it in many words", False),
    # a chain that never succeeded gives no fix: its turns fall to the rules without one
    ("f1", "c5", False, 0, True, False, "success", MUSIC, {"artist": "abba"}, 0.95, 0.95, "say it in many words", True),
    ("f2", "c5", False, 1, True, False, "success", MUSIC, {"artist": "abba"}, 0.5, 0.95, "say it in many words", False),
    # no fix: the status, then the confidences
    ("x1", None, None, 0, True, False, "error", MUSIC, {"artist": "abba"}, 0.95, 0.95, "say it in many words", False),
    ("n1", None, None, 0, True, False, "unhandled", None, None, 0.95, None, "say it in many words", False),
    ("m1", None, None, 0, True, False, "success", MUSIC, None, 0.95, 0.6, "say it in many words", False),
    ("u1", None, None, 0, True, False, "unhandled", MUSIC, None, 0.95, 0.95, "say it in many words", False),
    # a short fragment heard with low confidence that nobody rephrased: a wake-up nobody meant
    ("w1", None, None, 0, True, False, "unhandled", None, None, 0.3, 0.2, "play the", False),
    ("w2", None, None, 0, True, False, "unhandled", None, None, 0.3, 0.2, "play the song", False),
    ("s1", None, None, 0, False, True, "success", "Stop", None, 0.95, 0.95, "say it in many words", False),
    ("ok", None, None, 0, False, False, "success", MUSIC, None, 0.5, 0.5, "say it in many words", False),
]


def test_each_rule_names_its_failure_point(spark: SparkSession) -> None:
    turns = spark.createDataFrame(TURNS, COLUMNS)
    result = failure_points_by_rules(turns, FailurePointsConfig()).select(
        "event_id", "failure_point", "failure_point_score", "failure_point_classifier"
    )
    rules = RULES_CLASSIFIER
    expected = spark.createDataFrame(
        [
            ("a1", "asr", 0.8, rules), ("a2", "none", None, None),
            ("b1", "nlu", 0.8, rules), ("b2", "none", None, None),
            ("e1", "entity", 0.6, rules), ("e2", "none", None, None),
            ("r1", "result", 0.6, rules), ("r2", "none", None, None),
            ("f1", "nlu", 0.3, rules), ("f2", "asr", 0.5, rules),
            ("x1", "result", 0.9, rules),
            ("n1", "nlu", 0.6, rules),
            ("m1", "nlu", 0.5, rules),
            ("u1", "result", 0.5, rules),
            ("w1", "false_wake", 0.6, rules), ("w2", "nlu", 0.6, rules),
            ("s1", "none", None, None),
            ("ok", "none", None, None),
        ],
        "event_id string, failure_point string, failure_point_score double, failure_point_classifier string",
    )  # fmt: skip
    assertDataFrameEqual(result, expected)


def test_the_similarity_that_tells_a_mishearing_from_another_entity_is_configured(spark: SparkSession) -> None:
    turns = spark.createDataFrame(TURNS[:2], COLUMNS)
    strict = failure_points_by_rules(turns, FailurePointsConfig(min_value_similarity=0.95))
    assert [r["failure_point"] for r in strict.orderBy("event_id").collect()] == ["entity", "none"]
