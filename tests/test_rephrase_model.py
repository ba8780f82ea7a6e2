"""The span detector's encoding, batching and Spark UDF on a tiny randomly initialised BERT."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.testing import assertDataFrameEqual

from feedback.evaluate import Score
from feedback.rephrase_model import (
    Candidate,
    DetectorSettings,
    RephraseQuery,
    SpanRephraseDetector,
    length_sorted_batches,
    pace_words,
    pair_evidence,
    passage_text,
    queries_from_pandas,
    scores_frame,
    soundex,
    spelling_similarity,
)
from feedback.rephrase_spark import DetectorHandle, request_groups, score_pairs_with_detector
from feedback.train_rephrase import link_score
from tiny_detector import tiny_detector

PAIR_COLUMNS = (
    "session_id string, user_id string, source_event_id string, target_event_id string, source_text string, "
    "target_text string, source_normalized string, target_normalized string, gap_s double, steps_back int, "
    "stop_between boolean, source_status string, source_barge_in boolean, source_terminated boolean, "
    "source_response_text string, source_previous_text string, source_previous_gap_s double"
)


@pytest.fixture(scope="module")
def detector_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _, folder = tiny_detector(tmp_path_factory.mktemp("tiny"))
    return folder


@pytest.fixture(scope="module")
def detector(detector_dir: Path) -> SpanRephraseDetector:
    return SpanRephraseDetector.load(detector_dir)


QUERY = RephraseQuery(
    source_event_id="e1",
    source_text="play fix you by coldplay on spot if i",
    status="unhandled",
    response_text="sorry, i can't find that.",
    barge_in=False,
    terminated=True,
    previous_text=None,
    previous_gap_s=None,
    candidates=(
        Candidate("e3", "play fix you by coldplay on spotify", 7.4, True),
        Candidate("e4", "what's the weather", 31.0, False),
    ),
)


def test_passage_marks_each_candidate_utterance() -> None:
    text, spans = passage_text(QUERY)
    assert text == "7 seconds later after a stop: play fix you by coldplay on spotify ; 31 seconds later: what's the weather"
    assert [text[a:b] for a, b in spans] == ["play fix you by coldplay on spotify", "what's the weather"]


def test_passage_with_evidence_introduces_each_candidate() -> None:
    text, spans = passage_text(QUERY, evidence=True)
    assert text == (
        "7 seconds later after a stop (right away), 6 of 10 words shared, changed words sound alike, spelled alike: "
        "play fix you by coldplay on spotify ; "
        "31 seconds later (within a minute), 0 of 12 words shared, changed words sound different, spelled differently: what's the weather"
    )
    assert [text[a:b] for a, b in spans] == ["play fix you by coldplay on spotify", "what's the weather"]


@pytest.mark.parametrize(
    ("word", "code"),
    [
        ("Robert", "R163"),
        ("Rupert", "R163"),
        ("Rubin", "R150"),
        ("Ashcraft", "A261"),  # h does not separate the two 2s (s, c)
        ("Tymczak", "T522"),
        ("Pfister", "P236"),  # f codes like the first letter p, so it is dropped
        ("Honeyman", "H555"),
        ("Lee", "L000"),
        ("42", ""),
    ],
)
def test_soundex_matches_the_standard_codes(word: str, code: str) -> None:
    assert soundex(word) == code


@pytest.mark.parametrize(
    ("gap_s", "words"),
    [(0.0, "right away"), (9.99, "right away"), (10.0, "soon after"), (59.9, "within a minute"), (60.0, "minutes later"),
     (float("nan"), "unknown delay")],
)
def test_pace_words(gap_s: float, words: str) -> None:
    assert pace_words(gap_s) == words


def test_spelling_similarity() -> None:
    assert spelling_similarity("kitten", "sitting") == pytest.approx(1 - 3 / 7)  # k->s, e->i, +g
    assert spelling_similarity("", "") == 1.0
    assert spelling_similarity("abc", "") == 0.0


@pytest.mark.parametrize(
    ("source", "target", "evidence"),
    [
        ("play the beetles", "Play the Beatles!", "2 of 4 words shared, changed words sound alike, spelled alike"),
        ("weather in paris", "weather in london", "2 of 4 words shared, changed words sound different, spelled differently"),
        ("play spot if i", "play spotify", "1 of 5 words shared, changed words sound alike, spelled alike"),  # a split word
        ("play jazz", "play jazz", "same words"),
        ("play jazz", "play jazz now", "2 of 3 words shared, words added"),
        ("play jazz now", "play jazz", "2 of 3 words shared, words dropped"),
    ],
)
def test_pair_evidence(source: str, target: str, evidence: str) -> None:
    assert pair_evidence(source, target) == evidence


def test_segments_cover_exactly_the_candidate_tokens(detector: SpanRephraseDetector) -> None:
    (encoded,) = detector.encode([QUERY])
    tokens = [detector.tokenizer.decode(encoded.input_ids[a : b + 1]) for a, b in encoded.segments]  # type: ignore[misc]
    assert tokens == ["play fix you by coldplay on spotify", "what ' s the weather"]  # the tokenizer splits the apostrophe
    assert set(encoded.token_type_ids[encoded.segments[0][0] :]) == {1}  # type: ignore[index]


def test_settings_switch_the_evidence_on(detector: SpanRephraseDetector) -> None:
    with_evidence = SpanRephraseDetector(detector.model, detector.tokenizer, DetectorSettings(max_length=128, pair_evidence=True))
    (plain,) = detector.encode([QUERY])
    (evidenced,) = with_evidence.encode([QUERY])
    second_segment = evidenced.input_ids[evidenced.token_type_ids.index(1) :]
    assert detector.tokenizer.decode(second_segment).startswith(
        "7 seconds later after a stop ( right away ), 6 of 10 words shared, changed words sound alike, spelled alike :"
    )
    assert len(evidenced.input_ids) - len(plain.input_ids) == 37  # the evidence tokens of both candidates
    tokens = [with_evidence.tokenizer.decode(evidenced.input_ids[a : b + 1]) for a, b in evidenced.segments]  # type: ignore[misc]
    assert tokens == ["play fix you by coldplay on spotify", "what ' s the weather"]


def test_truncated_candidate_has_no_segment(detector: SpanRephraseDetector) -> None:
    long_tail = Candidate("e5", " ".join(["weather"] * 80), 50.0, False)
    query = RephraseQuery(**{**QUERY.__dict__, "candidates": (QUERY.candidates[0], long_tail)})
    (encoded,) = detector.encode([query])
    assert len(encoded.input_ids) == 96
    assert encoded.segments[0] is not None and encoded.segments[1] is None
    (probabilities,) = detector.score([query])
    assert probabilities[1] == 0.0


def test_length_sorted_batches() -> None:
    assert length_sorted_batches([3, 5, 1, 5, 2], 2) == [[1, 3], [0, 4], [2]]
    with pytest.raises(ValueError, match="batch_size"):
        length_sorted_batches([1], 0)


def test_scores_do_not_depend_on_batching(detector: SpanRephraseDetector) -> None:
    queries = [QUERY, RephraseQuery(**{**QUERY.__dict__, "source_event_id": "e9", "candidates": QUERY.candidates[:1]})]
    one_by_one = [detector.score([q], batch_size=1)[0] for q in queries]
    together = detector.score(queries, batch_size=2)
    for alone, batched in zip(one_by_one, together, strict=True):
        np.testing.assert_allclose(alone, batched, atol=1e-5)
        assert 0.0 <= batched.sum() <= 1.0


def _pairs(spark: SparkSession) -> DataFrame:
    rows = [
        ("s1", "u1", "a1", "a2", "play jazz", "play some jazz", "play jazz", "play some jazz", 5.0, 1, False,
         "unhandled", False, False, "sorry", None, None),
        ("s1", "u1", "a1", "a3", "play jazz", "turn it up", "play jazz", "turn it up", 40.0, 2, True,
         "unhandled", False, False, "sorry", None, None),
        ("s1", "u1", "a2", "a3", "play some jazz", "turn it up", "play some jazz", "turn it up", 35.0, 1, True,
         "success", True, True, "playing jazz", "play jazz", 5.0),
        ("s2", "u2", "b1", "b2", "weather in paris", "weather in paris france", "weather in paris",
         "weather in paris france", 9.0, 1, False, "success", True, False, "it is sunny in paris", None, None),
    ]
    return spark.createDataFrame(rows, PAIR_COLUMNS)


def test_request_groups_orders_candidates_by_distance(spark: SparkSession) -> None:
    groups = request_groups(_pairs(spark)).toPandas().sort_values("source_event_id")
    assert list(groups["source_event_id"]) == ["a1", "a2", "b1"]
    assert [[c["target_event_id"] for c in cands] for cands in groups["candidates"]] == [["a2", "a3"], ["a3"], ["b2"]]
    queries = {q.source_event_id: q for q in queries_from_pandas(groups)}
    assert queries["a2"].previous_text == "play jazz" and queries["a2"].previous_gap_s == 5.0
    assert queries["a1"].previous_text is None and queries["a1"].candidates[1] == Candidate("a3", "turn it up", 40.0, True)


def test_spark_udf_scores_like_the_detector_called_directly(
    spark: SparkSession, detector_dir: Path, detector: SpanRephraseDetector
) -> None:
    pairs = _pairs(spark)
    handle = DetectorHandle(path=str(detector_dir), label="rephrase-detector/7", batch_size=2, threads=1)
    scored = score_pairs_with_detector(pairs, handle)
    groups = request_groups(pairs).toPandas()
    queries = queries_from_pandas(groups)
    direct = scores_frame(queries, detector.score(queries))
    expected = spark.createDataFrame(direct.assign(rephrase_detector="rephrase-detector/7"))
    assertDataFrameEqual(
        scored.select("source_event_id", "target_event_id", "rephrase_score", "rephrase_detector"), expected, atol=1e-5
    )
    assert scored.count() == 4


def test_link_score_links_each_target_to_its_best_source() -> None:
    import pandas as pd

    pairs = pd.DataFrame(
        {
            "source_event_id": ["a1", "a2", "a1", "b1", "c1"],
            "target_event_id": ["a3", "a3", "a2", "b2", "c2"],
            "steps_back": [2, 1, 1, 1, 1],
            "score": [0.7, 0.7, 0.9, 0.4, 0.8],
        }
    )
    truth = {("a3", "a1"), ("a2", "a1"), ("b2", "b1"), ("d2", "d1")}
    # a3 -> a2 (tie, nearest: wrong), a2 -> a1 (right), b2 below threshold, c2 -> c1 (not a rephrase)
    assert link_score(pairs, "score", truth, 0.5) == Score(true_positives=1, false_positives=2, false_negatives=3)
    with pytest.raises(ValueError, match="threshold"):
        link_score(pairs, "score", truth, 1.5)
