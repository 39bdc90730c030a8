"""The pair protocol: fixed-seed source -> target face pairs per species group.

Groups ([GROUPS][dife.eval.pairs.GROUPS]): ``human->dog``, ``human->cat``, ``dog->cat``,
``cat->dog``, ``human->livestock`` (livestock = horse, sheep, cow) and
``intra-species`` (two different faces of one species among human, dog, cat
and the livestock species). Species outside these (e.g. the single quokka of
the faces set, or AP-10K's other families) fall under [OTHER][dife.eval.pairs.OTHER] and are
left out of every group.

Pairs of a group are drawn uniformly, without repetition, from all ordered
(source, target) pairs of the group that share at least one keypoint name,
with a generator seeded by ``(seed, crc32(group name))``: a group's pairs do
not change when other groups or counts change, and the same seed always gives
the same pairs. The default counts ([PAPER_COUNTS][dife.eval.pairs.PAPER_COUNTS]) are the paper's for
the first four groups (100 / 89 / 89 / 47) and 100 for the others; a group
gets fewer when the data has fewer valid pairs.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from dife.checks import is_int
from dife.errors import InputError

__all__ = [
    "LIVESTOCK",
    "OTHER",
    "INTRA",
    "GROUPS",
    "GROUP_ORDER",
    "PAPER_COUNTS",
    "Pair",
    "species_group",
    "make_pairs",
]

#: Species pooled as ``livestock``.
LIVESTOCK: tuple[str, ...] = ("horse", "sheep", "cow")

#: Label of species that belong to no group.
OTHER = "other"

#: Name of the intra-species group.
INTRA = "intra-species"

#: Cross-species groups: name -> (source species, target species).
GROUPS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "human->dog": (("human",), ("dog",)),
    "human->cat": (("human",), ("cat",)),
    "dog->cat": (("dog",), ("cat",)),
    "cat->dog": (("cat",), ("dog",)),
    "human->livestock": (("human",), LIVESTOCK),
}

#: Every group, in report order.
GROUP_ORDER: tuple[str, ...] = (*GROUPS, INTRA)

#: Pairs per group: the paper's counts for its four groups, 100 otherwise.
PAPER_COUNTS: dict[str, int] = {
    "human->dog": 100,
    "human->cat": 89,
    "dog->cat": 89,
    "cat->dog": 47,
    "human->livestock": 100,
    INTRA: 100,
}

_INTRA_SPECIES: tuple[str, ...] = ("human", "dog", "cat", *LIVESTOCK)

#: Above this many candidate pairs, sampling switches from a permutation to rejection.
_ENUMERATE_LIMIT = 2_000_000


class _Sample(Protocol):
    species: str

    @property
    def names(self) -> frozenset[str]: ...


@dataclass(frozen=True)
class Pair:
    """One evaluation pair.

    Attributes:
        group: Group name (a key of [GROUPS][dife.eval.pairs.GROUPS] or [INTRA][dife.eval.pairs.INTRA]).
        src: Index of the source sample.
        tgt: Index of the target sample.
        names: Keypoint names present in both, sorted.
    """

    group: str
    src: int
    tgt: int
    names: tuple[str, ...]


def species_group(species: str) -> str:
    """``"horse"`` -> ``"livestock"``; human / dog / cat -> themselves; anything else -> [OTHER][dife.eval.pairs.OTHER]."""
    s = species.lower()
    if s in LIVESTOCK:
        return "livestock"
    if s in ("human", "dog", "cat"):
        return s
    return OTHER


def _rng(seed: int, group: str) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(group.encode("utf-8"))])


def _draw(
    rng: np.random.Generator,
    blocks: Sequence[tuple[np.ndarray, np.ndarray]],
    n: int,
    names: Sequence[frozenset[str]],
    group: str,
) -> list[Pair]:
    """Up to ``n`` distinct valid pairs, uniform over the union of the blocks' ``src x tgt`` products.

    A pair is valid when source and target differ and share a keypoint name.
    """
    blocks = [(s, t) for s, t in blocks if len(s) and len(t)]
    sizes = [len(s) * len(t) for s, t in blocks]
    total = sum(sizes)
    out: list[Pair] = []
    if total == 0 or n <= 0:
        return out
    offsets = np.cumsum([0, *sizes])

    def make(k: int) -> Pair | None:
        b = int(np.searchsorted(offsets, k, side="right")) - 1
        src, tgt = blocks[b]
        r = k - int(offsets[b])
        i, j = int(src[r // len(tgt)]), int(tgt[r % len(tgt)])
        if i == j:
            return None
        shared = names[i] & names[j]
        return Pair(group, i, j, tuple(sorted(shared))) if shared else None

    if total <= _ENUMERATE_LIMIT:
        for k in rng.permutation(total):
            p = make(int(k))
            if p is not None:
                out.append(p)
                if len(out) == n:
                    break
        return out
    seen: set[int] = set()
    for _ in range(50 * n):
        if len(out) == n:
            break
        k = int(rng.integers(total))
        if k in seen:
            continue
        seen.add(k)
        p = make(k)
        if p is not None:
            out.append(p)
    return out


def make_pairs(
    samples: Sequence[_Sample],
    *,
    counts: int | Mapping[str, int] | None = None,
    groups: Iterable[str] | None = None,
    seed: int = 0,
) -> list[Pair]:
    """Draw the evaluation pairs.

    Args:
        samples: Objects with ``species`` and ``names`` (the keypoint names),
            e.g. [dife.eval.readers.FaceSample][dife.eval.readers.FaceSample].
        counts: Pairs per group: one int for every group, a dict (missing
            groups get [PAPER_COUNTS][dife.eval.pairs.PAPER_COUNTS]), or None ([PAPER_COUNTS][dife.eval.pairs.PAPER_COUNTS]).
        groups: Group names to draw (default [GROUP_ORDER][dife.eval.pairs.GROUP_ORDER]).
        seed: Seed; the same seed and samples give the same pairs.

    Returns:
        The pairs, group by group in [GROUP_ORDER][dife.eval.pairs.GROUP_ORDER]; a group with no
        valid pair is absent.

    Raises:
        InputError: an unknown group name or a negative count.
    """
    wanted = list(GROUP_ORDER if groups is None else groups)
    unknown = [g for g in wanted if g not in GROUP_ORDER]
    if unknown:
        raise InputError(f"unknown pair group(s) {unknown}; known: {', '.join(GROUP_ORDER)}")
    if counts is None:
        per = dict(PAPER_COUNTS)
    elif isinstance(counts, Mapping):
        per = {**PAPER_COUNTS, **{str(k): int(v) for k, v in counts.items()}}
    else:
        if not is_int(counts):
            raise InputError(f"counts must be an int or a dict group -> int, got {counts!r}")
        per = {g: int(counts) for g in GROUP_ORDER}
    bad = {g: c for g, c in per.items() if c < 0}
    if bad:
        raise InputError(f"pair counts must be >= 0, got {bad}")

    species = np.array([s.species.lower() for s in samples], dtype=object)
    names = [frozenset(s.names) for s in samples]
    out: list[Pair] = []
    for g in GROUP_ORDER:
        if g not in wanted:
            continue
        if g == INTRA:
            blocks = [(p, p) for p in (np.flatnonzero(species == sp) for sp in _INTRA_SPECIES)]
        else:
            src_sp, tgt_sp = GROUPS[g]
            blocks = [(np.flatnonzero(np.isin(species, list(src_sp))), np.flatnonzero(np.isin(species, list(tgt_sp))))]
        out.extend(_draw(_rng(seed, g), blocks, per[g], names, g))
    return out
