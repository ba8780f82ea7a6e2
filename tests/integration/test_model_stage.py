"""The model stage under production input: long requests, a model that fails on some groups, the cascade."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from feedback.config import AppConfig
from feedback.core.lake import LakePaths
from feedback.gold.aggregate import fold_into_gold
from feedback.rephrase.evidence import Candidate, RephraseQuery, word_counts
from feedback.rephrase.model import DetectorSettings, SpanRephraseDetector, base_model_dir, cap_tokens, score_isolating_failures
from feedback.rephrase.spark import DetectorHandle, DetectorScorer, cascade_passes, score_pairs_with_detector
from feedback.rephrase.train import NO_REPHRASE, LabelledSet, distillation_loss, student_of, with_cascade
from feedback.silver.detect import HEURISTIC_DETECTOR
from feedback.silver.sessionize import aggregate_sessions
from feedback.silver.stream import SilverBatchWriter, ensure_silver_tables

from support.tiny_bert import tiny_bert_config
from support.turn_data import Event, events_frame

PAIR_COLUMNS = (
    "session_id string, user_id string, source_event_id string, target_event_id string, source_text string, "
    "target_text string, source_normalized string, target_normalized string, gap_s double, steps_back int, "
    "stop_between boolean, source_status string, source_barge_in boolean, source_terminated boolean, "
    "source_response_text string, source_previous_text string, source_previous_gap_s double"
)

LONG_REQUEST = ("play the extended live version of " + "the song with the very long name " * 40)[:1000]

SHORT = RephraseQuery("s1", "hi", "success", None, False, False, None, None, (Candidate("s2", "yo", 3.0, False),))
LONG = RephraseQuery(
    "l1", LONG_REQUEST, "unhandled", "sorry, i can't find that.", False, False, None, None,
    (Candidate("l2", "play the live version", 6.0, False), Candidate("l3", "what's the weather", 40.0, False)),
)


def _save_detector(folder: Path, max_positions: int) -> Path:
    """A 2-layer random BERT span detector (real tokenizer) that accepts at most ``max_positions`` tokens."""
    import torch
    from transformers import AutoTokenizer, BertForQuestionAnswering

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(str(base_model_dir()))
    config = tiny_bert_config(tokenizer.vocab_size)
    config.max_position_embeddings = max_positions
    settings = DetectorSettings(max_length=96, max_request_tokens=40)
    return SpanRephraseDetector(BertForQuestionAnswering(config), tokenizer, settings).save(folder / "detector")


@pytest.fixture(scope="module")
def working_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save_detector(tmp_path_factory.mktemp("working"), max_positions=256)


@pytest.fixture(scope="module")
def faulty_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Position embeddings for 24 tokens under sequences of up to 96: every longer sequence raises inside the model."""
    return _save_detector(tmp_path_factory.mktemp("faulty"), max_positions=24)


def test_cap_tokens_keeps_the_head_of_long_texts() -> None:
    from transformers import AutoTokenizer

    plain = AutoTokenizer.from_pretrained(str(base_model_dir()))
    assert cap_tokens(plain, ["play fix you by coldplay", "hi"], 3) == ["play fix you", "hi"]
    assert cap_tokens(plain, ["what's the weather"], 3) == ["what's"]  # what, ', s: cut after the third token
    with pytest.raises(ValueError, match="budget"):
        cap_tokens(plain, ["hi"], 0)


def test_a_1000_character_request_is_cut_to_its_budget_and_keeps_its_candidates(working_dir: Path) -> None:
    detector = SpanRephraseDetector.load(working_dir)
    (encoded,) = detector.encode([LONG])
    first_segment = encoded.token_type_ids.count(0)
    assert first_segment == 40 + 2  # [CLS] + the request's 40 tokens + [SEP]
    assert len(encoded.input_ids) <= 96
    tokens = [detector.tokenizer.decode(encoded.input_ids[a : b + 1]) for a, b in encoded.segments]  # type: ignore[misc]
    assert tokens == ["play the live version", "what ' s the weather"]
    (probabilities,) = detector.score([LONG])
    assert probabilities.shape == (2,) and 0.0 <= float(probabilities.sum()) <= 1.0


def test_a_query_the_model_fails_on_is_isolated(faulty_dir: Path) -> None:
    detector = SpanRephraseDetector.load(faulty_dir)
    with pytest.raises(RuntimeError):
        detector.score([LONG])  # the fault is real: the model cannot embed position 24
    frame = score_isolating_failures(detector, [SHORT, LONG], batch_size=8)
    assert list(frame["source_event_id"]) == ["s1", "l1", "l1"]
    assert list(frame["target_event_id"]) == ["s2", "l2", "l3"]
    assert frame["model_error"].iloc[0] is None
    assert frame["model_error"].iloc[1].startswith("RuntimeError") and frame["model_error"].iloc[2] == frame["model_error"].iloc[1]
    alone = detector.score([SHORT])[0][0]
    assert frame["rephrase_score"].iloc[0] == pytest.approx(alone, abs=1e-9)
    assert math.isnan(frame["rephrase_score"].iloc[1]) and math.isnan(frame["rephrase_score"].iloc[2])


def _pair(source_id: str, target_id: str, source: str, target: str, status: str, steps: int = 1) -> tuple[object, ...]:
    return (
        "s-" + source_id, "u1", source_id, target_id, source, target, source, target, 5.0, steps, False,
        status, False, False, "sorry" if status != "success" else "done", None, None,
    )


def test_cascade_settles_an_unrelated_pair_and_passes_a_rephrase(spark: SparkSession) -> None:
    """Heuristic-v2 scores by hand (weights 0.5 containment, 0.2 visible failure):

    - "jazz" -> "news" after a success: no shared Soundex code (J200 / N200), no failure: 0.0,
      settled at 0.15;
    - "play jazz" -> "play some jazz" after "unhandled": both codes of {P400, J200} are in
      {P400, S500, J200}, containment 1 -> 0.5; failure 0.2: 0.7, passed on;
    - "jazz" -> "news" after "unhandled": the failure alone, 0.2: passed at 0.15, settled at 0.35.
    """
    from feedback.config import DetectConfig
    from feedback.silver.detect import score_pairs_heuristic

    pairs = spark.createDataFrame(
        [
            _pair("a1", "a2", "jazz", "news", "success"),
            _pair("b1", "b2", "play jazz", "play some jazz", "unhandled"),
            _pair("c1", "c2", "jazz", "news", "unhandled"),
        ],
        PAIR_COLUMNS,
    )
    scored = score_pairs_heuristic(pairs, DetectConfig())
    decided = scored.select(
        "source_event_id",
        F.round("rephrase_score", 5).alias("score"),
        cascade_passes(F.col("rephrase_score"), 0.15).alias("passes_015"),
        cascade_passes(F.col("rephrase_score"), 0.35).alias("passes_035"),
        cascade_passes(F.col("rephrase_score"), 0.0).alias("passes_0"),
    )
    expected = spark.createDataFrame(
        [("a1", 0.0, False, False, True), ("b1", 0.7, True, True, True), ("c1", 0.2, True, False, True)],
        "source_event_id string, score double, passes_015 boolean, passes_035 boolean, passes_0 boolean",
    )
    assertDataFrameEqual(decided, expected)
    with pytest.raises(ValueError, match="min_score"):
        cascade_passes(F.col("rephrase_score"), 1.5)


def test_the_request_scope_passes_a_requests_candidates_together(spark: SparkSession) -> None:
    """At 0.21, request x has one candidate above (0.3) and one below (0.1): with the request scope
    both go to the model, with the pair scope only the first. Request y has none above: settled."""
    scores = spark.createDataFrame(
        [("x", "x1", 0.3), ("x", "x2", 0.1), ("y", "y1", 0.2), ("y", "y2", 0.0)],
        "source_event_id string, target_event_id string, score double",
    )
    decided = scores.select(
        "target_event_id",
        cascade_passes(F.col("score"), 0.21, "pair").alias("pair"),
        cascade_passes(F.col("score"), 0.21, "request").alias("request"),
    )
    expected = spark.createDataFrame(
        [("x1", True, True), ("x2", False, True), ("y1", False, False), ("y2", False, False)],
        "target_event_id string, pair boolean, request boolean",
    )
    assertDataFrameEqual(decided, expected)
    with pytest.raises(ValueError, match="scope"):
        cascade_passes(F.col("score"), 0.21, "session")


def test_the_request_scope_shows_the_model_the_whole_request(spark: SparkSession, working_dir: Path) -> None:
    """b1's candidates score 0.7 and 0.0 by hand (see above; b3 is two requests back: 0.2 failure
    - 0.2 step penalty): at 0.35 the pair scope settles the second, the request scope sends both,
    in one sequence, to the model."""
    pairs = spark.createDataFrame(
        [
            _pair("b1", "b2", "play jazz", "play some jazz", "unhandled"),
            _pair("b1", "b3", "play jazz", "news", "unhandled", 2),
            _pair("a1", "a2", "jazz", "news", "success"),
        ],
        PAIR_COLUMNS,
    )
    handle = DetectorHandle(
        path=str(working_dir), label="rephrase-detector/3", batch_size=4, threads=1, cascade_min_score=0.35, cascade_scope="request"
    )
    scored = score_pairs_with_detector(pairs, handle)
    detector = SpanRephraseDetector.load(working_dir)
    query = RephraseQuery(
        "b1", "play jazz", "unhandled", "sorry", False, False, None, None,
        (Candidate("b2", "play some jazz", 5.0, False), Candidate("b3", "news", 5.0, False)),
    )
    both = [float(p) for p in detector.score([query], traffic_counts=word_counts(["play jazz", "play some jazz", "news", "jazz"]))[0]]
    expected = spark.createDataFrame(
        [("a1", "a2", 0.0, "cascade"), ("b1", "b2", both[0], "model"), ("b1", "b3", both[1], "model")],
        "source_event_id string, target_event_id string, rephrase_score double, scoring string",
    )
    assertDataFrameEqual(scored.select("source_event_id", "target_event_id", "rephrase_score", "scoring"), expected, atol=1e-6)
    with pytest.raises(ValueError, match="cascade_scope"):
        DetectorHandle(path=str(working_dir), label="x", cascade_scope="everything")


def test_the_model_scores_only_what_the_cascade_passes_on(spark: SparkSession, working_dir: Path) -> None:
    pairs = spark.createDataFrame(
        [_pair("a1", "a2", "jazz", "news", "success"), _pair("b1", "b2", "play jazz", "play some jazz", "unhandled")],
        PAIR_COLUMNS,
    )
    handle = DetectorHandle(path=str(working_dir), label="rephrase-detector/3", batch_size=4, threads=1, cascade_min_score=0.15)
    scored = score_pairs_with_detector(pairs, handle)
    detector = SpanRephraseDetector.load(working_dir)
    query = RephraseQuery("b1", "play jazz", "unhandled", "sorry", False, False, None, None, (Candidate("b2", "play some jazz", 5.0, False),))
    alone = float(detector.score([query], traffic_counts=None)[0][0])
    expected = spark.createDataFrame(
        [("a1", "a2", 0.0, "rephrase-detector/3", "cascade", None), ("b1", "b2", alone, "rephrase-detector/3", "model", None)],
        "source_event_id string, target_event_id string, rephrase_score double, rephrase_detector string, scoring string, "
        "model_error string",
    )
    assertDataFrameEqual(
        scored.select("source_event_id", "target_event_id", "rephrase_score", "rephrase_detector", "scoring", "model_error"),
        expected,
        atol=1e-6,
    )


def test_a_1000_character_request_goes_through_the_champion_path(spark: SparkSession, working_dir: Path) -> None:
    pairs = spark.createDataFrame(
        [_pair("l1", "l2", LONG_REQUEST, "play the live version", "unhandled"), _pair("l1", "l3", LONG_REQUEST, "what's the weather", "unhandled", 2)],
        PAIR_COLUMNS,
    )
    handle = DetectorHandle(path=str(working_dir), label="rephrase-detector/3", batch_size=4, threads=1)
    rows = score_pairs_with_detector(pairs, handle).select("target_event_id", "scoring", "model_error").orderBy("target_event_id").collect()
    assert [tuple(r) for r in rows] == [("l2", "model", None), ("l3", "model", None)]


def test_a_failing_group_falls_back_to_the_heuristic_and_is_counted(
    spark: SparkSession, app_config: AppConfig, faulty_dir: Path, tmp_path: Path
) -> None:
    paths = LakePaths.at(tmp_path / "lake")
    ensure_silver_tables(spark, paths)
    events = [
        Event("a1", 0, "hi"),
        Event("a2", 3, "yo"),
        Event("b1", 0, LONG_REQUEST, status="unhandled", user_id="u2", device_id="d2"),
        Event("b2", 6, "play the live version", user_id="u2", device_id="d2"),
    ]
    sessions = aggregate_sessions(events_frame(spark, events), app_config.sessionize)
    handle = DetectorHandle(path=str(faulty_dir), label="rephrase-detector/9", batch_size=4, threads=1)
    SilverBatchWriter(paths, "test-app", app_config, fold_gold=fold_into_gold, scorer=DetectorScorer(handle))(sessions, 0)

    batch = spark.read.format("delta").load(paths.silver_batches).select(
        "batch_id", "turns", "candidate_pairs", "model_pairs", "cascade_pairs", "fallback_pairs", "fallback_groups"
    )
    assertDataFrameEqual(
        batch,
        spark.createDataFrame(
            [(0, 4, 2, 1, 0, 1, 1)],
            "batch_id long, turns long, candidate_pairs long, model_pairs long, cascade_pairs long, fallback_pairs long, "
            "fallback_groups long",
        ),
    )
    detectors = spark.read.format("delta").load(paths.silver_turns).select("event_id", "rephrase_detector")
    assertDataFrameEqual(
        detectors,
        spark.createDataFrame(
            [("a1", None), ("a2", "rephrase-detector/9"), ("b1", None), ("b2", HEURISTIC_DETECTOR)], "event_id string, rephrase_detector string"
        ),
    )


def _labelled(groups: list[tuple[str, list[tuple[str, float]], int]]) -> LabelledSet:
    """A labelled set from (source, [(target, heuristic score)], label) rows."""
    rows = [
        {"source_event_id": source, "candidates": [{"target_event_id": t, "target_text": t, "gap_s": 5.0, "stop_between": False} for t, _ in cands], "label": label}
        for source, cands, label in groups
    ]
    pairs = pd.DataFrame(
        [(source, t, score) for source, cands, _ in groups for t, score in cands],
        columns=["source_event_id", "target_event_id", "heuristic_score"],
    )
    return LabelledSet(pd.DataFrame(rows), pairs, {("t2", "g1")}, 0, {"t": 1})


def test_with_cascade_keeps_the_candidates_the_model_is_served_and_follows_the_labels() -> None:
    data = _labelled(
        [
            ("g1", [("t1", 0.1), ("t2", 0.6)], 1),  # the rephrase t2 is kept and becomes candidate 0
            ("g2", [("t3", 0.05)], NO_REPHRASE),  # nothing left: dropped
            ("g3", [("t4", 0.21), ("t5", 0.2)], 1),  # the rephrase t5 is settled: no rephrase left to point at
        ]
    )
    cascaded = with_cascade(data, 0.21)
    assert list(cascaded.groups["source_event_id"]) == ["g1", "g3"]
    assert [[c["target_event_id"] for c in cands] for cands in cascaded.groups["candidates"]] == [["t2"], ["t4"]]
    assert list(cascaded.groups["label"]) == [0, NO_REPHRASE]
    assert cascaded.pairs is data.pairs and cascaded.truth_links == data.truth_links and cascaded.traffic == {"t": 1}
    assert with_cascade(data, 0.0) is data
    with pytest.raises(ValueError, match="min_score"):
        with_cascade(data, -0.1)


def test_with_cascade_in_request_scope_keeps_a_passing_request_whole() -> None:
    data = _labelled(
        [
            ("g1", [("t1", 0.1), ("t2", 0.6)], 1),  # t2 passes: t1 stays beside it, the label stays 1
            ("g2", [("t3", 0.05)], NO_REPHRASE),  # nothing passes: dropped
            ("g3", [("t4", 0.21), ("t5", 0.2)], 1),  # t4 passes: the rephrase t5 is kept, so the label is 1
        ]
    )
    cascaded = with_cascade(data, 0.21, "request")
    assert list(cascaded.groups["source_event_id"]) == ["g1", "g3"]
    assert [[c["target_event_id"] for c in cands] for cands in cascaded.groups["candidates"]] == [["t1", "t2"], ["t4", "t5"]]
    assert list(cascaded.groups["label"]) == [1, 1]
    with pytest.raises(ValueError, match="scope"):
        with_cascade(data, 0.21, "group")


def test_a_student_keeps_evenly_spaced_teacher_layers(working_dir: Path) -> None:
    import torch

    teacher = SpanRephraseDetector.load(working_dir)  # 2 layers
    student = student_of(teacher, 1, teacher.settings)
    assert len(student.model.base_model.encoder.layer) == 1 and student.model.config.num_hidden_layers == 1
    kept = student.model.base_model.encoder.layer[0].state_dict()
    last = teacher.model.base_model.encoder.layer[1].state_dict()
    assert all(torch.equal(kept[name], last[name]) for name in last)  # 2 -> 1 keeps the last layer
    assert len(teacher.model.base_model.encoder.layer) == 2  # the teacher is untouched
    with pytest.raises(ValueError, match="layers"):
        student_of(teacher, 2, teacher.settings)


def test_distillation_loss_by_hand() -> None:
    """Teacher logits (ln 3, 0) -> p = (0.75, 0.25); student (0, 0) -> q = (0.5, 0.5); a padded third position.

    KL(p || q) = 0.75 ln 1.5 + 0.25 ln 0.5 = 0.130812 for start and for end; T = 1.
    """
    import torch

    mask = torch.tensor([[1, 1, 0]])
    teacher = torch.tensor([[math.log(3.0), 0.0, 5.0]])  # the padded 5.0 must not count
    student = torch.tensor([[0.0, 0.0, 9.0]])
    loss = distillation_loss(student, student, teacher, teacher, mask, temperature=1.0)
    assert float(loss) == pytest.approx(0.130812, abs=1e-6)
    assert float(distillation_loss(teacher, teacher, teacher, teacher, mask, temperature=2.0)) == pytest.approx(0.0, abs=1e-7)
