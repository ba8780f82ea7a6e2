"""NLU labels from users' corrections, on hand-worked chains (``feedback.gold.annotations``).

Silver (tests/support/mining_data.py: one session per chain, every turn but a successful last one
a defect, every domain "weather"):

- "play the beetles" failed and was fixed by "play the beatles" (PlayMusic, artist "the beatles")
  in 6 chains of 5 users (u1 twice), by "play beetles documentary" (PlayVideo) in 1 chain of u6,
  and not fixed in 1 chain of u7: 7 corrected chains, the label PlayMusic has 6 of them.
- "play the beatles" said twice by u8: the same wording, no label.
- "play abba now" was fixed by "play some abba" (PlayMusic, artist "abba") by 4 users: under a
  floor of 5 users it is left out.
- "play" was followed by "play the beatles" for 5 users: it says none of the values of its fix,
  so it gets no label (a false start, or a wake-up nobody meant); nor does "that's" before "that's
  good book it" (BookAppointment, no values: it has no word of its own). "turn it up" fixed by
  "volume up" (VolumeUp, no values) has words of its own and gets the label.
"""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from pyspark.testing import assertDataFrameEqual

from feedback.config import AnnotationsConfig, AppConfig, PrivacyConfig
from feedback.core.lake import LakePaths
from feedback.gold.annotations import (
    align_slots,
    align_value,
    export,
    nlu_annotations,
    run,
    score_annotation,
    similarity,
    words_of,
)

from support.mining_data import Chain, silver_frame

MUSIC = {
    "play the beatles": ("PlayMusic", {"artist": "the beatles"}),
    "play beetles documentary": ("PlayVideo", {"title": "beetles documentary"}),
    "play some abba": ("PlayMusic", {"artist": "abba"}),
    "that's good book it": ("BookAppointment", {}),
    "volume up": ("VolumeUp", {}),
}
CHAINS = (
    [Chain(f"u{i}", ("play the beetles", "play the beatles"), True, MUSIC) for i in (1, 1, 2, 3, 4, 5)]
    + [Chain("u6", ("play the beetles", "play beetles documentary"), True, MUSIC)]
    + [Chain("u7", ("play the beetles", "play the beetles please"), False, MUSIC)]
    + [Chain("u8", ("play the beatles", "play the beatles"), True, MUSIC)]
    + [Chain(f"v{i}", ("play abba now", "play some abba"), True, MUSIC) for i in range(4)]
    + [Chain(f"w{i}", ("play", "play the beatles"), True, MUSIC) for i in range(5)]
    + [Chain(f"x{i}", ("that's", "that's good book it"), True, MUSIC) for i in range(5)]
    + [Chain(f"y{i}", ("turn it up", "volume up"), True, MUSIC) for i in range(5)]
)
COLUMNS = (
    "utterance string, intent string, domain string, slots map<string,string>, slot_spans map<string,string>, "
    "alignment_score double, support_users long, support_chains long, wording_chains long, confidence double"
)
BEETLES = ("play the beetles", "PlayMusic", "weather", {"artist": "the beatles"}, {"artist": "the beetles"}, 1.0, 5, 6, 7, 6 / 7)
VOLUME = ("turn it up", "VolumeUp", "weather", {}, {}, 1.0, 5, 5, 5, 1.0)


def test_a_misheard_value_aligns_by_sound() -> None:
    # spelling: 1 - 1/11; sound: "beetles" and "beatles" are both BTLS in Metaphone
    assert similarity("the beetles", "The Beatles") == 1.0
    # sound: "B 0 BTLS" against "0 BTLS", 2 edits in 8; spelling: 4 edits in 14 (0.714)
    assert similarity("by the beetles", "the beatles") == 0.75
    span = align_value(words_of("play songs by the beetles"), "The Beatles")
    assert span is not None
    assert (span.start, span.end, span.text, span.score) == (3, 5, "the beetles", 1.0)


def test_a_value_the_failed_wording_never_said_is_no_label_for_it() -> None:
    aligned = align_slots("play something by abba please", {"artist": "Abba", "playlist": "my running mix"}, 0.6)
    assert (aligned.slots, aligned.spans, aligned.score) == ({"artist": "Abba"}, {"artist": "abba"}, 1.0)
    assert align_slots("play something", None, 0.6).slots == {}


def test_labels_pool_users_and_stay_under_the_user_floor(spark: SparkSession) -> None:
    turns = silver_frame(spark, CHAINS)
    config = AnnotationsConfig()
    assertDataFrameEqual(nlu_annotations(turns, 5, config), spark.createDataFrame([BEETLES, VOLUME], COLUMNS))
    abba = ("play abba now", "PlayMusic", "weather", {"artist": "abba"}, {"artist": "abba"}, 1.0, 4, 4, 4, 1.0)
    assertDataFrameEqual(nlu_annotations(turns, 4, config), spark.createDataFrame([BEETLES, VOLUME, abba], COLUMNS))
    # users who meant different things: at a confidence floor above 6/7 the wording gets no label
    assertDataFrameEqual(nlu_annotations(turns, 5, AnnotationsConfig(min_confidence=0.9)), spark.createDataFrame([VOLUME], COLUMNS))


def test_a_row_is_scored_against_what_the_user_meant() -> None:
    assert score_annotation("PlayMusic", {"artist": "The Beatles"}, "PlayMusic", {"artist": "the beatles", "playlist": "x"}) == (
        True, True, 1, 2,
    )  # fmt: skip
    assert score_annotation("PlayVideo", {"artist": "the beetles"}, "PlayMusic", {"artist": "the beatles"}) == (False, False, 1, 1)
    assert score_annotation("PlayMusic", {}, None, None) == (False, True, 0, 0)


def test_annotate_writes_the_table_and_exports_training_examples(spark: SparkSession, tmp_path: Path) -> None:
    lake = LakePaths.at(tmp_path / "lake")
    turns = silver_frame(spark, CHAINS)
    turns.write.format("delta").save(lake.silver_turns)
    truth = tmp_path / "ground_truth.jsonl"
    meant = {"play the beetles": ("PlayMusic", {"artist": "The Beatles"}), "turn it up": ("VolumeDown", {})}  # one label wrong
    lines = [
        {"event_id": row["event_id"], "intended_intent": intent, "intended_slots": slots, "is_system_command": False}
        for wording, (intent, slots) in meant.items()
        for row in turns.filter(f"normalized_utterance = '{wording}'").collect()
    ]
    truth.write_text("".join(json.dumps(line) + "\n" for line in lines))
    config = dataclasses.replace(AppConfig(), privacy=PrivacyConfig(min_users=5))

    result = run(spark, config, lake, truth)
    assert (result.rows, result.silver_version) == (2, 0)
    assert result.quality is not None and result.quality.as_dict() == pytest.approx(
        {"rows": 2, "intent_correct": 1, "slots_correct": 2, "slots_kept": 1, "slots_meant": 1,
         "intent_accuracy": 0.5, "slot_accuracy": 1.0, "slot_coverage": 1.0}
    )  # fmt: skip
    table = spark.read.format("delta").load(lake.nlu_annotations)
    assertDataFrameEqual(table.drop("built_at", "silver_version"), spark.createDataFrame([BEETLES, VOLUME], COLUMNS))
    assert [row["silver_version"] for row in table.collect()] == [0, 0]

    again = run(spark, config, lake)  # a rerun rebuilds the same rows in one more commit
    assert (again.rows, again.table_version) == (2, result.table_version + 1)

    out = io.StringIO()
    assert export(spark, lake, out) == 2
    assert [json.loads(line) for line in out.getvalue().splitlines()] == [
        {
            "text": "play the beetles",
            "intent": "PlayMusic",
            "domain": "weather",
            "slots": [{"slot": "artist", "value": "the beatles", "text": "the beetles", "start": 5, "end": 16}],
            "support_users": 5,
            "support_chains": 6,
            "confidence": pytest.approx(6 / 7),
        },
        {
            "text": "turn it up",
            "intent": "VolumeUp",
            "domain": "weather",
            "slots": [],
            "support_users": 5,
            "support_chains": 5,
            "confidence": 1.0,
        },
    ]
    with pytest.raises(ValueError, match="fmt"):
        export(spark, lake, io.StringIO(), "csv")
