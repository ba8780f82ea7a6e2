"""The failure-point classifier: metadata and MiniLM sentence embeddings -> gradient boosting.

Metadata says what the modules reported (ASR and NLU confidence, status, response type), how the
user reacted (barge-in, stop, rephrase, silence) and, above all, what the user's successful fix
changed: another intent; a slot value that sounds like the one heard (speech recognition); a
value the user said the same way but the assistant resolved to another entity (the value the
fix settled on is already in the failed wording); nothing at all (the result failed). Text
embeddings of the request and of the fix, reduced by PCA, carry what the metadata misses.

Every feature is a small pure function of one input row (``metadata_features``), so the stream
and training compute them the same way. ``FailurePointModel`` saves to and loads from a folder
(the MiniLM weights, the fitted PCA and boosting, and ``settings.json``); the registry logs that
folder.
"""

from __future__ import annotations

import json
import logging
import pickle
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from feedback.core.text import normalized_words, sound_similarity, spelling_similarity

LOG = logging.getLogger(__name__)

FAILURE_CLASSES = ("false_wake", "asr", "nlu", "entity", "result")
"""What a defective request can have failed at, in the order a request flows through the assistant."""

RESPONSE_TYPES = ("speech", "media", "action", "none")
FORMAT_VERSION = 2
"""The saved layout and the features it was fitted on; a classifier of another version cannot be served by this code."""
SETTINGS_FILE = "settings.json"
ESTIMATOR_FILE = "estimator.pkl"
ENCODER_FOLDER = "encoder"
MISSING = -1.0
ODD_WORD_PIECES = 3
"""The value of a feature that does not apply (no fix, no confidence reported, no next turn)."""

METADATA_FEATURES = (
    "asr_confidence",
    "nlu_confidence",
    "status_error",
    "status_unhandled",
    *(f"response_{kind}" for kind in RESPONSE_TYPES),
    "intent_missing",
    "words",
    "slots",
    "values_not_said",
    "has_fix",
    "fix_other_intent",
    "fix_changed_values",
    "fix_added_values",
    "fix_value_spelling",
    "fix_value_sound",
    "fix_value_said",
    "own_value_said",
    "fix_word_overlap",
    "fix_spelling",
    "rephrased",
    "barge_in",
    "terminated",
    "abandoned",
    "negative_feedback",
    "next_gap_s",
    "next_stop_like",
    "has_next",
    *(f"rules_{point}" for point in FAILURE_CLASSES),
)


def _flag(value: object) -> float:
    return 1.0 if value is True or (isinstance(value, (np.bool_, int, float)) and not pd.isna(value) and bool(value)) else 0.0


def _number(value: object) -> float:
    return MISSING if value is None or pd.isna(value) else float(value)


def _slots(value: object) -> dict[str, str]:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return {}
    return dict(value) if isinstance(value, Mapping) else dict(list(value))


def said(phrase: str, text: str) -> bool:
    """Whether the words of ``phrase`` occur, in order and contiguous, among the words of ``text``."""
    words, within = normalized_words(phrase), normalized_words(text)
    if not words:
        return False
    return any(within[i : i + len(words)] == words for i in range(len(within) - len(words) + 1))


def changed_values(own: Mapping[str, str], fixed: Mapping[str, str]) -> list[tuple[str, str]]:
    """(value understood now, or "" when absent; value the fix settled on) for each slot of the fix that differs."""
    return [(own.get(key, ""), value) for key, value in sorted(fixed.items()) if own.get(key) != value]


def word_overlap(left: str, right: str) -> float:
    """Jaccard similarity of the two texts' word sets (1 for two empty texts)."""
    a, b = set(normalized_words(left)), set(normalized_words(right))
    return 1.0 if not a and not b else len(a & b) / len(a | b)


def metadata_features(row: Mapping[str, Any]) -> list[float]:
    """``METADATA_FEATURES`` of one ``INPUTS_SCHEMA`` row (a mapping of its columns), in that order."""
    utterance = row.get("utterance") or ""
    own = _slots(row.get("slots"))
    fix_utterance = row.get("fix_utterance")
    has_fix = fix_utterance is not None and not (isinstance(fix_utterance, float) and np.isnan(fix_utterance))
    fixed = _slots(row.get("fix_slots")) if has_fix else {}
    changed = changed_values(own, fixed)
    response_type = row.get("response_type") or "none"
    next_gap = _number(row.get("next_turn_gap_s"))
    rules = row.get("rules_failure_point")
    fix_features: list[float]
    if has_fix:
        fix_features = [
            1.0,
            0.0 if row.get("intent") is not None and row.get("intent") == row.get("fix_intent") else 1.0,
            float(len(changed)),
            float(sum(1 for key in fixed if key not in own)),
            max((spelling_similarity(a, b) for a, b in changed if a), default=MISSING),
            max((sound_similarity(a, b) for a, b in changed if a), default=MISSING),
            float(any(said(b, utterance) for _, b in changed)),
            float(any(said(a, utterance) for a, _ in changed if a)),
            word_overlap(utterance, str(fix_utterance)),
            spelling_similarity(" ".join(normalized_words(utterance)), " ".join(normalized_words(str(fix_utterance)))),
        ]
    else:
        fix_features = [0.0, 0.0, 0.0, 0.0, MISSING, MISSING, 0.0, 0.0, MISSING, MISSING]
    return [
        _number(row.get("asr_confidence")),
        _number(row.get("nlu_confidence")),
        float(row.get("status") == "error"),
        float(row.get("status") == "unhandled"),
        *(float(response_type == kind) for kind in RESPONSE_TYPES),
        float(row.get("intent") is None),
        float(len(normalized_words(utterance))),
        float(len(own)),
        float(sum(1 for value in own.values() if not said(value, utterance))),
        *fix_features,
        _flag(row.get("rephrased")),
        _flag(row.get("barge_in")),
        _flag(row.get("terminated")),
        _flag(row.get("abandoned")),
        _flag(row.get("negative_feedback")),
        next_gap,
        _flag(row.get("next_stop_like")),
        float(next_gap != MISSING),
        *(float(rules == point) for point in FAILURE_CLASSES),
    ]


def word_pieces(tokenizer: Any, text: str) -> tuple[float, float]:
    """(most word pieces in one word, words of at least ``ODD_WORD_PIECES`` pieces) of ``text``.

    A word the recogniser garbled, or a name it has never heard, splits into many pieces of the
    encoder's vocabulary, where the words people say split into one or two.
    """
    counts = [len(tokenizer.tokenize(word)) for word in normalized_words(text)]
    return float(max(counts, default=0)), float(sum(1 for n in counts if n >= ODD_WORD_PIECES))


def metadata_matrix(inputs: pd.DataFrame) -> np.ndarray:
    """``metadata_features`` of every row of ``inputs``: shape (rows, len(METADATA_FEATURES))."""
    rows = [metadata_features(row) for row in inputs.to_dict("records")]
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), len(METADATA_FEATURES))


class SentenceEncoder:
    """Mean-pooled, L2-normalised BERT sentence embeddings (how all-MiniLM-L6-v2 is meant to be read)."""

    def __init__(self, folder: Path, device: str = "cpu", batch_size: int = 64, max_length: int = 64) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.folder = folder
        self.device = device
        self.batch_size = batch_size
        self.max_length = max_length
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self.model = AutoModel.from_pretrained(str(folder)).to(device).eval()
        self._torch = torch

    @property
    def dimension(self) -> int:
        return int(self.model.config.hidden_size)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings of ``texts`` (shape (len, dimension)); each distinct text is encoded once."""
        distinct = sorted(set(texts))
        vectors: dict[str, np.ndarray] = {}
        torch = self._torch
        with torch.inference_mode():
            for start in range(0, len(distinct), self.batch_size):
                chunk = distinct[start : start + self.batch_size]
                batch = self.tokenizer(chunk, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
                batch = {key: value.to(self.device) for key, value in batch.items()}
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled, dim=1)
                for text, vector in zip(chunk, pooled.cpu().numpy(), strict=True):
                    vectors[text] = vector
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.stack([vectors[text] for text in texts]).astype(np.float32)


class IncompatibleClassifier(ValueError):
    """A saved classifier of another ``FORMAT_VERSION``: its features are not the ones this code computes."""


def saved_format(folder: Path) -> int | None:
    """The ``format_version`` of the classifier saved in ``folder``."""
    value = json.loads((folder / SETTINGS_FILE).read_text(encoding="utf-8")).get("format_version")
    return int(value) if isinstance(value, int) else None


@dataclass(frozen=True)
class ClassifierSettings:
    """How the classifier was built; saved beside it so that it is read back the same way.

    ``text_components``: PCA components kept from each text's embedding (the request and the
    fix); 0 uses metadata only. The boosting settings are scikit-learn's
    ``HistGradientBoostingClassifier``'s.
    """

    text_components: int = 16
    max_iter: int = 300
    learning_rate: float = 0.08
    max_leaf_nodes: int = 31
    l2_regularization: float = 1.0
    balanced: bool = True
    seed: int = 0
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.text_components < 0:
            raise ValueError(f"text_components must be >= 0, got {self.text_components}")
        if self.max_iter < 1:
            raise ValueError(f"max_iter must be >= 1, got {self.max_iter}")
        if not 0.0 < self.learning_rate <= 1.0:
            raise ValueError(f"learning_rate must be in (0, 1], got {self.learning_rate}")


@dataclass
class FailurePointModel:
    """An encoder, a PCA per text and a gradient-boosted classifier over ``FAILURE_CLASSES``."""

    settings: ClassifierSettings
    encoder: SentenceEncoder | None
    estimator: Any = None
    projections: dict[str, Any] | None = None

    def _text_blocks(self, inputs: pd.DataFrame, fit: bool) -> list[np.ndarray]:
        """What the encoder reads: how the request's words split into word pieces, then (with
        ``text_components``) the PCA-reduced embeddings of the request and of its fix and their cosine."""
        if self.encoder is None:
            return []
        utterances = [str(t or "") for t in inputs["utterance"]]
        blocks = [np.asarray([word_pieces(self.encoder.tokenizer, text) for text in utterances], dtype=np.float64).reshape(-1, 2)]
        if self.settings.text_components == 0:
            return blocks
        from sklearn.decomposition import PCA

        has_fix = inputs["fix_utterance"].notna().to_numpy()
        fixes = [str(t) if ok else "" for t, ok in zip(inputs["fix_utterance"], has_fix, strict=True)]
        own = self.encoder.encode(utterances)
        fix = self.encoder.encode(fixes) * has_fix[:, None]
        cosine = np.where(has_fix, (own * fix).sum(1), MISSING)[:, None]
        if fit:
            components = min(self.settings.text_components, len(inputs), own.shape[1])
            self.projections = {"utterance": PCA(components, random_state=self.settings.seed).fit(own)}
            self.projections["fix"] = PCA(components, random_state=self.settings.seed).fit(fix[has_fix] if has_fix.sum() > components else fix)
        if self.projections is None:
            raise ValueError("the classifier is not fitted")
        fix_part = self.projections["fix"].transform(fix) * has_fix[:, None]
        return [*blocks, self.projections["utterance"].transform(own), fix_part, cosine]

    def features(self, inputs: pd.DataFrame, fit: bool = False) -> np.ndarray:
        """Metadata, then the text blocks: one row per input row."""
        return np.hstack([metadata_matrix(inputs), *self._text_blocks(inputs, fit)])

    def fit(self, inputs: pd.DataFrame, labels: Sequence[str]) -> FailurePointModel:
        """Fit the PCA and the boosting on ``inputs`` (``INPUTS_SCHEMA`` rows) and their true failure points."""
        from sklearn.ensemble import HistGradientBoostingClassifier

        unknown = sorted(set(labels) - set(FAILURE_CLASSES))
        if unknown:
            raise ValueError(f"labels: {unknown} are not failure classes {FAILURE_CLASSES}")
        if len(labels) != len(inputs):
            raise ValueError(f"labels: {len(labels)} labels for {len(inputs)} inputs")
        self.estimator = HistGradientBoostingClassifier(
            max_iter=self.settings.max_iter,
            learning_rate=self.settings.learning_rate,
            max_leaf_nodes=self.settings.max_leaf_nodes,
            l2_regularization=self.settings.l2_regularization,
            class_weight="balanced" if self.settings.balanced else None,
            early_stopping=False,
            random_state=self.settings.seed,
        )
        self.estimator.fit(self.features(inputs, fit=True), np.asarray(labels))
        return self

    def predict(self, inputs: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(failure point, its probability) per row of ``inputs``."""
        if self.estimator is None:
            raise ValueError("the classifier is not fitted")
        if inputs.empty:
            return np.array([], dtype=object), np.array([], dtype=np.float64)
        probabilities = self.estimator.predict_proba(self.features(inputs))
        best = probabilities.argmax(1)
        return np.asarray(self.estimator.classes_, dtype=object)[best], probabilities[np.arange(len(best)), best].astype(np.float64)

    def save(self, folder: Path) -> Path:
        """Write settings, the fitted estimator and projections, and the encoder's files under ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        (folder / SETTINGS_FILE).write_text(json.dumps(asdict(self.settings), indent=2) + "\n", encoding="utf-8")
        with (folder / ESTIMATOR_FILE).open("wb") as handle:
            pickle.dump({"estimator": self.estimator, "projections": self.projections}, handle)
        if self.encoder is not None:
            target = folder / ENCODER_FOLDER
            if target.exists():
                shutil.rmtree(target)
            self.encoder.model.save_pretrained(str(target))
            self.encoder.tokenizer.save_pretrained(str(target))
        return folder

    @classmethod
    def load(cls, folder: Path, device: str = "cpu") -> FailurePointModel:
        """Read back a folder written by ``save`` (the estimator is a pickle: load only folders you trust)."""
        data = json.loads((folder / SETTINGS_FILE).read_text(encoding="utf-8"))
        if data.get("format_version") != FORMAT_VERSION:
            raise IncompatibleClassifier(
                f"{folder}: failure-point classifier format {data.get('format_version')}, this code serves {FORMAT_VERSION}"
            )
        settings = ClassifierSettings(**data)
        with (folder / ESTIMATOR_FILE).open("rb") as handle:
            fitted = pickle.load(handle)  # noqa: S301 (the registry's own artifact)
        encoder = SentenceEncoder(folder / ENCODER_FOLDER, device=device) if (folder / ENCODER_FOLDER).is_dir() else None
        return cls(settings, encoder, fitted["estimator"], fitted["projections"])
