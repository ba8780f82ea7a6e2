"""The span detector's encoding, batching and Spark UDF on a tiny randomly initialised BERT."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.testing import assertDataFrameEqual

from feedback.rephrase.evidence import (
    Candidate,
    RephraseQuery,
    merged_counts,
    pace_words,
    pair_evidence,
    passage_text,
    query_text,
    query_texts,
    rarest_kept,
    sound_code,
    soundex,
    spelling_similarity,
    word_counts,
    words_of,
)
from feedback.rephrase.model import (
    DetectorSettings,
    SpanRephraseDetector,
    int8_linear_names,
    length_sorted_batches,
    queries_from_pandas,
    scores_frame,
)
from feedback.rephrase.spark import DetectorHandle, request_groups, score_pairs_with_detector
from feedback.rephrase.train import link_score
from feedback.silver.evaluate import Score

from support.tiny_detector import tiny_detector

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


def test_compact_text_keeps_the_pair_and_leaves_out_the_context() -> None:
    query = RephraseQuery(
        source_event_id="e1",
        source_text="play fix you by coldplay on spot if i",
        status="unhandled",
        response_text="sorry, i can't find spot if i in your library right now.",
        barge_in=True,
        terminated=False,
        previous_text="what's the weather",
        previous_gap_s=42.0,
        candidates=QUERY.candidates,
    )
    assert query_text(query) == (
        "play fix you by coldplay on spot if i | assistant did not understand, interrupted: "
        "sorry, i can't find spot if i in your library right now. | before, 42 seconds earlier: what's the weather"
    )
    assert query_text(query, text_version=2) == (
        "play fix you by coldplay on spot if i | did not understand, interrupted: sorry, i can't find spot if i in your li"
    )
    text, spans = passage_text(query, evidence=True, text_version=2)
    assert text == (
        "right away after a stop, 6 of 10 words shared, changed words sound alike, spelled alike: "
        "play fix you by coldplay on spotify ; "
        "within a minute, 0 of 12 words shared, changed words sound different, spelled differently: what's the weather"
    )
    assert [text[a:b] for a, b in spans] == ["play fix you by coldplay on spotify", "what's the weather"]
    assert passage_text(query, text_version=2)[0] == "right away after a stop: play fix you by coldplay on spotify ; within a minute: what's the weather"


def test_text_version_is_saved_with_the_detector_and_validated(detector: SpanRephraseDetector, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="text_version must be one of \\(1, 2\\), got 3"):
        DetectorSettings(text_version=3)
    (full,) = detector.encode([QUERY])
    compact_settings = DetectorSettings(**{**detector.settings.__dict__, "text_version": 2})
    compact = SpanRephraseDetector(detector.model, detector.tokenizer, compact_settings, detector.counts)
    loaded = SpanRephraseDetector.load(compact.save(tmp_path / "compact"))
    assert loaded.settings.text_version == 2
    (short,) = loaded.encode([QUERY])
    decoded = detector.tokenizer.decode(short.input_ids)
    assert decoded.startswith("[CLS] play fix you by coldplay on spot if i | did not understand, stopped : sorry, i can ' t find that. [SEP] right away after a stop")
    assert len(short.input_ids) < len(full.input_ids)


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


def test_sound_code_compares_numbers_by_their_digits() -> None:
    assert [sound_code(w) for w in ("beatles", "42", "4th", "")] == ["B342", "42", "T000", ""]
    assert soundex("1") == soundex("2") == ""  # why version 2 evidence uses sound_code


def test_word_counts_count_each_distinct_text_once() -> None:
    assert word_counts(["play jazz", "play jazz", "play the jazz jazz", "rate it"]) == {
        "it": 1, "jazz": 2, "play": 2, "rate": 1, "the": 1
    }


COUNTS = {"play": 50, "the": 90, "by": 30, "on": 40, "rate": 5, "this": 60, "stars": 8, "2": 3, "beatles": 1}


@pytest.mark.parametrize(
    ("source", "target", "kept"),
    [
        # rarest of "play the beetles by the who": beetles and who (never seen, 0), in that order
        ("play the beetles by the who", "play the beatles by the who", "both rarest words kept"),  # beetles sounds alike
        ("play the beetles by the who", "play the who", "one of two rarest words kept"),
        ("play the beetles by the who", "play the rolling stones", "neither rarest word kept"),
        ("rate this 2 stars", "rate this 3 stars", "one of two rarest words kept"),  # 2 (3) and rate (5); 2 -> 3 differs
        ("rate this 2 stars", "rate this two stars", "one of two rarest words kept"),  # a number word is another word
        ("beatles", "play beatles", "rarest word kept"),
        ("beatles", "play jazz", "rarest word not kept"),
    ],
)
def test_rarest_kept(source: str, target: str, kept: str) -> None:
    assert rarest_kept(words_of(source), words_of(target), COUNTS) == kept


def test_pair_evidence_version_2_adds_the_rarest_words() -> None:
    assert pair_evidence("rate this 1 star", "rate this 2 star") == (
        "3 of 5 words shared, changed words sound alike, spelled differently"  # version 1: "1" and "2" code alike
    )
    assert pair_evidence("rate this 1 star", "rate this 2 star", COUNTS) == (
        "3 of 5 words shared, changed words sound different, spelled differently, one of two rarest words kept"
    )
    assert pair_evidence("play the beatles", "play the beatles", COUNTS) == "same words"


def test_version_2_detector_keeps_its_word_counts(detector: SpanRephraseDetector, tmp_path: Path) -> None:
    settings = DetectorSettings(max_length=128, pair_evidence=True, evidence_version=2)
    with pytest.raises(ValueError, match="counts"):
        SpanRephraseDetector(detector.model, detector.tokenizer, settings)
    with pytest.raises(ValueError, match="evidence_version"):
        DetectorSettings(evidence_version=3)
    saved = SpanRephraseDetector(detector.model, detector.tokenizer, settings, COUNTS).save(tmp_path / "v2")
    loaded = SpanRephraseDetector.load(saved)
    assert loaded.counts == COUNTS

    def first_candidate_evidence(traffic_counts: dict[str, int] | None) -> str:
        (encoded,) = loaded.encode([QUERY], traffic_counts)
        second_segment = loaded.tokenizer.decode(encoded.input_ids[encoded.token_type_ids.index(1) :])
        return second_segment.split(" : ")[0]

    # With the saved counts only, "fix" and "you" (never seen) are the rarest, and both are kept.
    assert first_candidate_evidence({}) == (
        "7 seconds later after a stop ( right away ), 6 of 10 words shared, changed words sound alike, spelled alike, "
        "both rarest words kept"
    )
    # By default the scored texts count too: "fix" and "you" occur twice in them, "spot" and "if"
    # once (only the misheard request has them), and the rephrase replaces both.
    assert loaded.evidence_counts([QUERY], None) == {
        # COUNTS plus, per word, how many of the three distinct texts of QUERY hold it
        "play": 52, "the": 91, "by": 32, "on": 42, "rate": 5, "this": 60, "stars": 8, "2": 3, "beatles": 1,
        "fix": 2, "you": 2, "coldplay": 2, "spot": 1, "if": 1, "i": 1, "spotify": 1, "what's": 1, "weather": 1,
    }
    assert first_candidate_evidence(None).endswith("spelled alike, neither rarest word kept")


def test_query_texts_and_merged_counts() -> None:
    assert query_texts([QUERY]) == [
        "play fix you by coldplay on spot if i", "play fix you by coldplay on spotify", "what's the weather"
    ]
    assert merged_counts({"a": 1, "b": 2}, {"b": 3, "c": 1}, {}) == {"a": 1, "b": 5, "c": 1}


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


ENCODER_LINEARS = [
    f"bert.encoder.layer.{layer}.{name}"
    for layer in (0, 1)
    for name in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense", "intermediate.dense", "output.dense")
]


def test_int8_keeps_the_span_head_and_the_chosen_ffn_outputs_in_fp32(detector_dir: Path) -> None:
    """The tiny BERT has 2 layers of 6 linear layers each, and the span head ``qa_outputs``."""
    import torch

    model = SpanRephraseDetector.load(detector_dir).model
    assert int8_linear_names(model, 0) == ENCODER_LINEARS
    assert int8_linear_names(model, 1) == [n for n in ENCODER_LINEARS if n != "bert.encoder.layer.0.output.dense"]
    assert int8_linear_names(model, 2) == [n for n in ENCODER_LINEARS if not n.endswith(".output.dense") or "attention" in n]
    assert int8_linear_names(model, 9) == int8_linear_names(model, 2)
    with pytest.raises(ValueError, match="fp32_ffn_output_layers"):
        int8_linear_names(model, -1)

    quantized = SpanRephraseDetector.load(detector_dir, quantize=True, fp32_ffn_output_layers=1)
    int8 = torch.ao.nn.quantized.dynamic.Linear
    kinds = {
        name: "int8" if isinstance(module, int8) else "fp32"
        for name, module in quantized.model.named_modules()
        if name in {*ENCODER_LINEARS, "qa_outputs"}
    }
    assert kinds == {name: "int8" for name in ENCODER_LINEARS} | {"bert.encoder.layer.0.output.dense": "fp32", "qa_outputs": "fp32"}
    assert quantized.quantized


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


def test_spark_udf_ranks_words_by_the_whole_batch(spark: SparkSession, detector: SpanRephraseDetector, tmp_path: Path) -> None:
    """A version-2 detector in Spark counts the words of the whole micro-batch, not of each task's share.

    Alone, "play cool jazz by miles" has "miles" (once) and "cool" (twice) as its rarest words, and
    the follow-up keeps one; with the other session's "call miles" texts counted, "miles" is more
    common than "cool" and "jazz", which are both kept.
    """
    settings = DetectorSettings(max_length=256, n_best=256, pair_evidence=True, evidence_version=2)  # every span decoded
    folder = SpanRephraseDetector(detector.model, detector.tokenizer, settings, COUNTS).save(tmp_path / "detector")
    v2 = SpanRephraseDetector.load(folder)
    rows = [
        ("s1", "u1", "a1", "a2", "play cool jazz by miles", "play cool jazz by davis", "play cool jazz by miles",
         "play cool jazz by davis", 5.0, 1, False, "unhandled", False, False, "sorry", None, None),
        ("s2", "u2", "b1", "b2", "call miles", "call miles now", "call miles", "call miles now", 4.0, 1, False,
         "error", False, False, "sorry", None, None),
    ]
    pairs = spark.createDataFrame(rows, PAIR_COLUMNS).repartition(2)
    handle = DetectorHandle(path=str(folder), label="rephrase-detector/8", batch_size=2, threads=1)
    scored = score_pairs_with_detector(pairs, handle)
    queries = sorted(queries_from_pandas(request_groups(pairs).toPandas()), key=lambda q: q.source_event_id)
    batch_evidence = v2.tokenizer.decode(v2.encode(queries)[0].input_ids)
    alone_evidence = v2.tokenizer.decode(v2.encode(queries[:1])[0].input_ids)
    assert "both rarest words kept" in batch_evidence and "one of two rarest words kept" in alone_evidence
    direct = scores_frame(queries, v2.score(queries))  # counts the texts of every query
    expected = spark.createDataFrame(direct.assign(rephrase_detector="rephrase-detector/8"))
    assertDataFrameEqual(
        scored.select("source_event_id", "target_event_id", "rephrase_score", "rephrase_detector"), expected, atol=1e-6
    )
    alone = v2.score(queries[:1])[0][0]
    assert abs(direct["rephrase_score"].iloc[0] - alone) > 1e-4  # the counts change the score


def test_link_score_links_each_target_to_its_best_source() -> None:

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
