"""The failure-point classifier's features, worked by hand, and its fit, predict and save/load round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from feedback.core.text import similarity, sound_similarity, spelling_similarity
from feedback.isolation.model import (
    FAILURE_CLASSES,
    METADATA_FEATURES,
    ClassifierSettings,
    FailurePointModel,
    SentenceEncoder,
    changed_values,
    metadata_features,
    said,
    word_overlap,
    word_pieces,
)

from support.tiny_bert import tiny_encoder

# The user said "paris weather"; the assistant resolved the city to lyon; the fix "paris weathers" got paris.
ENTITY = {
    "event_id": "e1", "utterance": "paris weather", "response_text": "in lyon it is sunny", "intent": "GetWeather",
    "slots": {"city": "lyon"}, "status": "success", "response_type": "speech", "asr_confidence": 0.9, "nlu_confidence": 0.8,
    "rephrased": True, "barge_in": True, "terminated": False, "abandoned": False, "negative_feedback": False,
    "next_turn_gap_s": 2.5, "next_stop_like": False, "next_utterance": "paris weathers", "fix_intent": "GetWeather",
    "fix_slots": {"city": "paris"}, "fix_utterance": "paris weathers", "rules_failure_point": "entity",
}  # fmt: skip
# A two-word fragment heard at 0.3 that nobody followed up: no fix, no next turn, no response type.
FRAGMENT = {
    "event_id": "w1", "utterance": "play the", "response_text": None, "intent": None, "slots": None, "status": "unhandled",
    "response_type": None, "asr_confidence": 0.3, "nlu_confidence": None, "rephrased": False, "barge_in": False,
    "terminated": False, "abandoned": True, "negative_feedback": False, "next_turn_gap_s": None, "next_stop_like": None,
    "next_utterance": None, "fix_intent": None, "fix_slots": None, "fix_utterance": None, "rules_failure_point": "false_wake",
}  # fmt: skip


def test_spelling_and_sound_similarity_by_hand() -> None:
    assert spelling_similarity("pairs", "paris") == pytest.approx(0.6)  # two substitutions over five letters
    assert sound_similarity("pairs", "paris") == 1.0  # both PRS in Metaphone
    assert similarity("the beetles", "The Beatles!") == 1.0
    assert spelling_similarity("", "") == 1.0


def test_said_matches_whole_words_in_order() -> None:
    assert said("new york", "weather in New York city")
    assert not said("york new", "weather in new york city")
    assert not said("york", "weather in newyork")
    assert not said("", "anything")


def test_word_pieces_count_garbled_words() -> None:
    from transformers import AutoTokenizer

    from feedback.rephrase.model import base_model_dir

    tokenizer = AutoTokenizer.from_pretrained(str(base_model_dir()))
    assert tokenizer.tokenize("svooq") == ["sv", "##oo", "##q"]  # the MiniLM vocabulary, for the figures below
    assert word_pieces(tokenizer, "play music on svooq") == (3.0, 1.0)
    assert word_pieces(tokenizer, "play music on spotify") == (2.0, 0.0)  # spot ##ify
    assert word_pieces(tokenizer, "") == (0.0, 0.0)


def test_changed_values_and_word_overlap() -> None:
    assert changed_values({"city": "lyon", "day": "today"}, {"city": "paris", "day": "today", "unit": "celsius"}) == [
        ("lyon", "paris"),
        ("", "celsius"),
    ]
    assert changed_values({"city": "lyon"}, {"city": "lyon"}) == []
    assert word_overlap("paris weather", "paris weathers") == pytest.approx(1 / 3)
    assert word_overlap("", "") == 1.0


def test_metadata_features_of_a_wrong_entity() -> None:
    expected = [
        0.9, 0.8,  # confidences
        0.0, 0.0,  # error, unhandled
        1.0, 0.0, 0.0, 0.0,  # speech response
        0.0, 2.0, 1.0, 1.0,  # intent present, two words, one slot, whose value "lyon" was not said
        1.0, 0.0, 1.0, 0.0,  # a fix, same intent, one changed value, none added
        0.0, 0.0,  # "lyon" and "paris" share no letter in place, nor a sound
        1.0, 0.0,  # the fix's "paris" was said; "lyon" was not
        1 / 3, 1 - 1 / 14,  # word overlap, spelling of the two wordings
        1.0, 1.0, 0.0, 0.0, 0.0,  # rephrased, barged in
        2.5, 0.0, 1.0,  # the next turn 2.5 s later, not a stop
        0.0, 0.0, 0.0, 1.0, 0.0,  # the rules said entity
    ]  # fmt: skip
    assert len(expected) == len(METADATA_FEATURES)
    assert metadata_features(ENTITY) == pytest.approx(expected)


def test_metadata_features_of_a_fragment_without_fix() -> None:
    expected = [
        0.3, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 2.0, 0.0, 0.0,
        0.0, 0.0, 0.0, 0.0, -1.0, -1.0, 0.0, 0.0, -1.0, -1.0,
        0.0, 0.0, 0.0, 1.0, 0.0, -1.0, 0.0, 0.0,
        1.0, 0.0, 0.0, 0.0, 0.0,
    ]  # fmt: skip
    assert metadata_features(FRAGMENT) == pytest.approx(expected)


def _templates(copies: int) -> tuple[pd.DataFrame, list[str]]:
    """Rows whose failure point follows from one feature each: separable, so a fitted model must get them all."""
    rows, labels = [], []
    rng = np.random.default_rng(0)
    for i in range(copies):
        noise = float(rng.uniform(-0.05, 0.05))
        rows.append(FRAGMENT | {"event_id": f"w{i}", "asr_confidence": 0.3 + noise})
        labels.append("false_wake")
        rows.append(ENTITY | {"event_id": f"e{i}", "asr_confidence": 0.9 + noise})
        labels.append("entity")
        rows.append(ENTITY | {"event_id": f"a{i}", "slots": {"city": "pairs"}, "utterance": "pairs weather", "rules_failure_point": "asr"})
        labels.append("asr")
        rows.append(ENTITY | {"event_id": f"n{i}", "intent": "PlayMusic", "slots": {}, "rules_failure_point": "nlu"})
        labels.append("nlu")
        rows.append(ENTITY | {"event_id": f"r{i}", "slots": {"city": "paris"}, "status": "error", "rules_failure_point": "result"})
        labels.append("result")
    return pd.DataFrame(rows), labels


def test_fit_predict_and_round_trip_without_text(tmp_path: Path) -> None:
    inputs, labels = _templates(12)
    model = FailurePointModel(ClassifierSettings(text_components=0, max_iter=30), None).fit(inputs, labels)
    points, scores = model.predict(inputs)
    assert list(points) == labels
    assert sorted(model.estimator.classes_) == sorted(FAILURE_CLASSES)
    loaded = FailurePointModel.load(model.save(tmp_path / "classifier"))
    again, again_scores = loaded.predict(inputs)
    assert list(again) == labels
    np.testing.assert_array_equal(again_scores, scores)


def test_fit_predict_and_round_trip_with_a_tiny_encoder(tmp_path: Path) -> None:
    inputs, labels = _templates(12)
    model = FailurePointModel(ClassifierSettings(text_components=2, max_iter=30), SentenceEncoder(tiny_encoder(tmp_path / "encoder")))
    model.fit(inputs, labels)
    # word pieces (2), then 2 PCA components of the request and 2 of the fix, and their cosine
    assert model.features(inputs).shape == (60, len(METADATA_FEATURES) + 2 + 2 + 2 + 1)
    points, scores = model.predict(inputs)
    assert list(points) == labels
    loaded = FailurePointModel.load(model.save(tmp_path / "classifier"))
    again, again_scores = loaded.predict(inputs)
    assert list(again) == labels
    np.testing.assert_allclose(again_scores, scores, rtol=1e-6)


def test_bad_labels_and_an_unfitted_model_are_refused() -> None:
    inputs, labels = _templates(1)
    model = FailurePointModel(ClassifierSettings(text_components=0, max_iter=5), None)
    with pytest.raises(ValueError, match="labels: \\['none'\\] are not failure classes"):
        model.fit(inputs, ["none", *labels[1:]])
    with pytest.raises(ValueError, match="labels: 4 labels for 5 inputs"):
        model.fit(inputs, labels[:4])
    with pytest.raises(ValueError, match="not fitted"):
        model.predict(inputs)
    with pytest.raises(ValueError, match="text_components must be >= 0"):
        ClassifierSettings(text_components=-1)
