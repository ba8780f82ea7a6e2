"""The numeric core of rewrite mining: absorbing Markov chains over utterances, solved with scipy.

No Spark here: ``solve_components`` is the pandas function that ``feedback.rewrites.mine`` runs
per group of connected components with ``applyInPandas``; everything else is plain numpy/scipy
with hand-worked tests (``tests/unit/rewrites/test_mine.py``). The model is described in ``feedback.rewrites.mine``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.sparse.linalg import SuperLU, splu

KIND_NEXT = "next"
KIND_SUCCESS = "success"
KIND_FAILURE = "failure"
KIND_VETO = "veto"
TRANSITION_KINDS = (KIND_NEXT, KIND_SUCCESS, KIND_FAILURE)
PROBABILITY_DECIMALS = 12
"""Probabilities are rounded so that equal paths solved in another order tie exactly (ties: first state by name)."""

CANDIDATE_SCHEMA = (
    "component long, source_utterance string, rewrite_utterance string, probability double, "
    "own_probability double, other_probability double, component_states long"
)


@dataclass(frozen=True)
class AbsorbingChain:
    """One absorbing Markov chain: transient states, ``Q``, and the absorption vectors ``s`` and ``f``.

    ``states[i]`` is transient state ``i`` and also names the success state ``S(states[i])``.
    Rows of ``[Q | s | f]`` sum to one.
    """

    states: tuple[str, ...]
    transient: sp.csr_matrix
    success: np.ndarray
    failure: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.states)
        if self.transient.shape != (n, n):
            raise ValueError(f"transient must be {n}x{n} for {n} states, got {self.transient.shape}")
        for name in ("success", "failure"):
            vector = getattr(self, name)
            if vector.shape != (n,):
                raise ValueError(f"{name} must have shape ({n},), got {vector.shape}")
        totals = np.asarray(self.transient.sum(axis=1)).ravel() + self.success + self.failure
        if n and not np.allclose(totals, 1.0, atol=1e-9):
            raise ValueError(f"rows of [Q | s | f] must sum to 1, got {totals.tolist()}")


def build_chain(transitions: Iterable[tuple[str, str | None, str, float]]) -> AbsorbingChain:
    """An ``AbsorbingChain`` from counted outcomes ``(source, target, kind, weight)``.

    ``kind`` is ``next`` (``source -> target``), ``success`` or ``failure`` (``target`` None);
    weights are counts of visits, normalised per source. A state seen only as a target has no
    visits of its own; with nothing known about it, it counts as a failure.

    Example:
        >>> chain = build_chain([("a", "b", "next", 1.0), ("a", None, "failure", 1.0), ("b", None, "success", 1.0)])
        >>> chain.states, chain.transient.toarray().tolist(), chain.success.tolist()
        (('a', 'b'), [[0.0, 0.5], [0.0, 0.0]], [0.0, 1.0])
    """
    rows = list(transitions)
    names: set[str] = set()
    for source, target, kind, weight in rows:
        if kind not in TRANSITION_KINDS:
            raise ValueError(f"transitions: kind must be one of {TRANSITION_KINDS}, got {kind!r}")
        if not isinstance(source, str) or not source:
            raise ValueError(f"transitions: source must be a non-empty string, got {source!r}")
        if kind == KIND_NEXT and (not isinstance(target, str) or not target):
            raise ValueError(f"transitions: a next step needs a target, got {target!r} from {source!r}")
        if not weight >= 0:
            raise ValueError(f"transitions: weight must be >= 0, got {weight!r}")
        names.add(source)
        if kind == KIND_NEXT:
            names.add(str(target))
    states = tuple(sorted(names))
    index = {name: i for i, name in enumerate(states)}
    n = len(states)
    totals = np.zeros(n)
    success = np.zeros(n)
    failure = np.zeros(n)
    q_rows: list[int] = []
    q_cols: list[int] = []
    q_vals: list[float] = []
    for source, target, kind, weight in rows:
        i = index[source]
        totals[i] += weight
        if kind == KIND_NEXT:
            q_rows.append(i)
            q_cols.append(index[str(target)])
            q_vals.append(weight)
        elif kind == KIND_SUCCESS:
            success[i] += weight
        else:
            failure[i] += weight
    unseen = totals == 0
    scale = np.where(unseen, 1.0, totals)
    q = sp.csr_matrix((np.array(q_vals) / scale[q_rows] if q_vals else [], (q_rows, q_cols)), shape=(n, n))
    return AbsorbingChain(states, q, success / scale, np.where(unseen, 1.0, failure / scale))


def absorption_probabilities(chain: AbsorbingChain) -> tuple[np.ndarray, np.ndarray]:
    """``B = (I - Q)^-1 [diag(s) | f]`` as (success part ``n x n``, failure column ``n``), by one sparse LU.

    Dense output: for small chains and tests; ``solve_components`` does the same per block.

    Raises:
        ValueError: ``I - Q`` is singular (some states can never be absorbed).
    """
    n = len(chain.states)
    if n == 0:
        return np.zeros((0, 0)), np.zeros(0)
    lu = _factorize(sp.identity(n, format="csc") - chain.transient.tocsc())
    fundamental = lu.solve(np.eye(n))
    return fundamental * chain.success[np.newaxis, :], lu.solve(chain.failure)


def _factorize(matrix: sp.csc_matrix) -> SuperLU:
    """``splu`` of ``I - Q``, with a message that says what a singular matrix means here."""
    try:
        return splu(matrix)
    except RuntimeError as error:
        raise ValueError(f"I - Q is singular ({error}): some states never reach an absorbing state") from error


@dataclass(frozen=True)
class BestTargets:
    """Per state ``u`` of a batch: the best other success state (index, -1 for none) and the probabilities.

    ``probability`` is ``B[u, S(best)]``, ``own_probability`` ``B[u, S(u)]`` and
    ``other_probability`` the sum of ``B[u, S(w)]`` over every ``w != u`` (vetoed ones included).
    """

    target: np.ndarray
    probability: np.ndarray
    own_probability: np.ndarray
    other_probability: np.ndarray


def best_targets(
    transient: sp.csr_matrix,
    success: np.ndarray,
    block_start: np.ndarray,
    block_size: np.ndarray,
    vetoed: tuple[np.ndarray, np.ndarray] | None = None,
    max_cells: int = 4_000_000,
) -> BestTargets:
    """For every state ``u`` of a block-diagonal chain, ``argmax_{w != u} B[u, S(w)]`` and ``B[u, S(u)]``.

    Args:
        transient: ``Q`` of the whole batch, block diagonal: the states of one block are the
            contiguous indices ``block_start[u] .. block_start[u] + block_size[u] - 1``.
        success: ``s`` of every state.
        block_start: per state, the first index of its block.
        block_size: per state, the size of its block.
        vetoed: (rows, columns) of pairs ``(u, w)`` that may not be chosen.
        max_cells: how many states x columns one solve may hold (memory bound).

    Why it stacks: column ``j`` of the right-hand side is the unit vector of the ``j``-th state
    of every block at once; blocks do not interact, so one solve yields column ``j`` of every
    block's fundamental matrix. Ties go to the lower index (states are sorted by name).
    """
    n = transient.shape[0]
    for name, array in (("success", success), ("block_start", block_start), ("block_size", block_size)):
        if array.shape != (n,):
            raise ValueError(f"{name} must have shape ({n},), got {array.shape}")
    if max_cells < 1:
        raise ValueError(f"max_cells must be >= 1, got {max_cells}")
    best = np.full(n, -1, dtype=np.int64)
    best_p = np.zeros(n)
    own = np.zeros(n)
    other = np.zeros(n)
    if n == 0:
        return BestTargets(best, best_p, own, other)
    local = np.arange(n) - block_start
    if np.any(local < 0) or np.any(local >= block_size):
        raise ValueError("block_start and block_size must describe contiguous blocks containing each state")
    lu = _factorize(sp.identity(n, format="csc") - transient.tocsc())
    widest = int(block_size.max())
    chunk = max(1, min(widest, max_cells // n))
    veto_rows = vetoed[0] if vetoed is not None else np.zeros(0, dtype=np.int64)
    veto_local = (vetoed[1] - block_start[veto_rows]) if vetoed is not None else np.zeros(0, dtype=np.int64)
    if np.any((veto_local < 0) | (veto_local >= block_size[veto_rows])):
        raise ValueError("vetoed pairs must lie inside one block")
    rows = np.arange(n)
    for first in range(0, widest, chunk):
        last = min(widest, first + chunk)
        columns = np.arange(first, last)
        in_chunk = (local >= first) & (local < last)
        rhs = np.zeros((n, last - first))
        rhs[rows[in_chunk], local[in_chunk] - first] = 1.0
        solved = lu.solve(rhs)
        valid = columns[np.newaxis, :] < block_size[:, np.newaxis]
        state_of_column = np.where(valid, block_start[:, np.newaxis] + columns[np.newaxis, :], 0)
        values = np.where(valid, np.round(solved * success[state_of_column], PROBABILITY_DECIMALS), 0.0)
        own[in_chunk] = values[rows[in_chunk], local[in_chunk] - first]
        values[rows[in_chunk], local[in_chunk] - first] = 0.0
        other += values.sum(axis=1)
        values[rows[in_chunk], local[in_chunk] - first] = -1.0
        hit = (veto_local >= first) & (veto_local < last)
        values[veto_rows[hit], veto_local[hit] - first] = -1.0
        pick = np.argmax(values, axis=1)
        picked = values[rows, pick]
        better = picked > best_p
        best_p[better] = picked[better]
        best[better] = block_start[better] + first + pick[better]
    return BestTargets(best, best_p, own, np.round(other, PROBABILITY_DECIMALS))


def _batches(sizes: np.ndarray, max_cells: int) -> Iterator[tuple[int, int]]:
    """Consecutive component ranges ``[lo, hi)`` (sorted by size) whose states x widest block fit ``max_cells``."""
    lo = 0
    states = 0
    for i, size in enumerate(sizes.tolist()):
        if i > lo and (states + size) * size > max_cells:
            yield lo, i
            lo, states = i, 0
        states += size
    if lo < len(sizes):
        yield lo, len(sizes)


def solve_components(frame: pd.DataFrame, max_cells: int = 4_000_000, max_component_states: int = 100_000) -> pd.DataFrame:
    """The best rewrite candidate of every state with a rephrase, for all components in ``frame``.

    Args:
        frame: columns ``component`` (int), ``kind`` (next/success/failure/veto), ``source``,
            ``target`` (None unless next/veto), ``weight`` (visits): one group of ``applyInPandas``.
        max_cells: memory bound of one solve (see ``best_targets``).
        max_component_states: larger components are skipped (their rows come back with a null
            rewrite and ``component_states`` set, so the caller can count them).

    Returns:
        ``CANDIDATE_SCHEMA`` columns, one row per state that has at least one rephrase step.
    """
    columns = [
        "component",
        "source_utterance",
        "rewrite_utterance",
        "probability",
        "own_probability",
        "other_probability",
        "component_states",
    ]
    missing = {"component", "kind", "source", "target", "weight"} - set(frame.columns)
    if missing:
        raise ValueError(f"frame is missing columns {sorted(missing)}")
    moves = frame[frame["kind"] != KIND_VETO]
    vetoes = frame[(frame["kind"] == KIND_VETO) & frame["target"].notna()]
    nexts = moves[moves["kind"] == KIND_NEXT]
    states = (
        pd.concat(
            [
                moves[["component", "source"]].rename(columns={"source": "state"}),
                nexts[["component", "target"]].rename(columns={"target": "state"}),
            ]
        )
        .drop_duplicates()
        .astype({"component": "int64"})
    )
    if states.empty:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(columns, ["int64", object, object, float, float, float, "int64"])})
    sizes = states.groupby("component").size().rename("size")
    states = states.join(sizes, on="component").sort_values(["size", "component", "state"], kind="stable")
    oversized = states[states["size"] > max_component_states]
    states = states[(states["size"] >= 2) & (states["size"] <= max_component_states)].reset_index(drop=True)
    states["index"] = np.arange(len(states), dtype=np.int64)
    n = len(states)
    lookup = states.set_index(["component", "state"])["index"]

    def locate(part: pd.DataFrame, column: str) -> np.ndarray:
        keys = pd.MultiIndex.from_arrays([part["component"].astype("int64"), part[column]])
        return lookup.reindex(keys).to_numpy()

    moves = moves[moves["component"].isin(states["component"].unique())]
    src = locate(moves, "source").astype(np.int64)
    weight = moves["weight"].to_numpy(dtype=float)
    kind = moves["kind"].to_numpy()
    totals = np.bincount(src, weights=weight, minlength=n)
    unseen = totals == 0
    scale = np.where(unseen, 1.0, totals)
    is_next = kind == KIND_NEXT
    tgt = locate(moves[is_next], "target").astype(np.int64)
    transient = sp.csr_matrix((weight[is_next] / scale[src[is_next]], (src[is_next], tgt)), shape=(n, n))
    success = np.bincount(src[kind == KIND_SUCCESS], weights=weight[kind == KIND_SUCCESS], minlength=n) / scale
    has_step = np.bincount(src[is_next], minlength=n) > 0

    component_ids = states["component"].to_numpy()
    starts = np.flatnonzero(np.r_[True, component_ids[1:] != component_ids[:-1]])
    block_sizes = np.diff(np.r_[starts, n])
    block_start = np.repeat(starts, block_sizes)
    block_size = np.repeat(block_sizes, block_sizes)
    veto_src = locate(vetoes, "source")
    veto_tgt = locate(vetoes, "target")
    keep = ~(np.isnan(veto_src) | np.isnan(veto_tgt)) if len(vetoes) else np.zeros(0, dtype=bool)
    veto_src = veto_src[keep].astype(np.int64) if len(vetoes) else np.zeros(0, dtype=np.int64)
    veto_tgt = veto_tgt[keep].astype(np.int64) if len(vetoes) else np.zeros(0, dtype=np.int64)

    target = np.full(n, -1, dtype=np.int64)
    probability = np.zeros(n)
    own = np.zeros(n)
    other = np.zeros(n)
    for lo, hi in _batches(block_sizes, max_cells):
        first, last = int(starts[lo]), int(starts[hi]) if hi < len(starts) else n
        in_batch = (veto_src >= first) & (veto_src < last)
        result = best_targets(
            transient[first:last, first:last],
            success[first:last],
            block_start[first:last] - first,
            block_size[first:last],
            (veto_src[in_batch] - first, veto_tgt[in_batch] - first),
            max_cells,
        )
        target[first:last] = np.where(result.target >= 0, result.target + first, -1)
        probability[first:last] = result.probability
        own[first:last] = result.own_probability
        other[first:last] = result.other_probability

    names = states["state"].to_numpy()
    chosen = np.flatnonzero(has_step)
    out = pd.DataFrame(
        {
            "component": component_ids[chosen].astype("int64"),
            "source_utterance": names[chosen],
            "rewrite_utterance": np.where(target[chosen] >= 0, names[np.maximum(target[chosen], 0)], None),
            "probability": probability[chosen],
            "own_probability": own[chosen],
            "other_probability": other[chosen],
            "component_states": block_size[chosen].astype("int64"),
        }
    )
    if not oversized.empty:
        skipped = oversized.drop_duplicates("state")
        out = pd.concat(
            [
                out,
                pd.DataFrame(
                    {
                        "component": skipped["component"].astype("int64").to_numpy(),
                        "source_utterance": skipped["state"].to_numpy(),
                        "rewrite_utterance": None,
                        "probability": 0.0,
                        "own_probability": 0.0,
                        "other_probability": 0.0,
                        "component_states": skipped["size"].astype("int64").to_numpy(),
                    }
                ),
            ],
            ignore_index=True,
        )
    return out[columns]
