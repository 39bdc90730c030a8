"""Pair protocol of dife.eval: determinism, counts, groups."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pytest

from dife.errors import InputError
from dife.eval.pairs import GROUP_ORDER, INTRA, PAPER_COUNTS, make_pairs, species_group

EYES_NOSE = frozenset({"eye_left_img", "eye_right_img", "nose"})
HUMAN5 = EYES_NOSE | {"mouth_left_img", "mouth_right_img"}


@dataclass
class S:
    species: str
    names: frozenset[str] = EYES_NOSE


def _dataset(n_human=30, n_dog=30, n_cat=12, n_horse=3, n_cow=2, n_quokka=1):
    return (
        [S("human", HUMAN5) for _ in range(n_human)]
        + [S("dog") for _ in range(n_dog)]
        + [S("cat") for _ in range(n_cat)]
        + [S("horse") for _ in range(n_horse)]
        + [S("cow") for _ in range(n_cow)]
        + [S("quokka") for _ in range(n_quokka)]
    )


def test_pairs_are_deterministic_and_seed_dependent():
    data = _dataset()
    a = make_pairs(data, seed=3)
    assert a == make_pairs(data, seed=3)
    assert a != make_pairs(data, seed=4)


def test_paper_counts_where_the_data_allows():
    data = _dataset()
    c = Counter(p.group for p in make_pairs(data))
    assert c["human->dog"] == PAPER_COUNTS["human->dog"] == 100
    assert c["human->cat"] == 89 and c["dog->cat"] == 89
    assert c["cat->dog"] == 47
    # 30 humans x 5 livestock faces = 150 possible pairs >= 100
    assert c["human->livestock"] == 100
    # fewer possible pairs than asked: all of them, each once
    small = _dataset(n_human=4, n_dog=5, n_cat=2, n_horse=1, n_cow=0)
    c2 = Counter(p.group for p in make_pairs(small))
    assert c2["human->dog"] == 20 and c2["dog->cat"] == 10 and c2["human->livestock"] == 4


def test_groups_have_the_right_species_and_shared_names():
    data = _dataset()
    pairs = make_pairs(data, counts=40, seed=1)
    assert [g for g in GROUP_ORDER if any(p.group == g for p in pairs)] == list(GROUP_ORDER)
    for p in pairs:
        s, t = data[p.src].species, data[p.tgt].species
        assert p.src != p.tgt
        assert set(p.names) == set(data[p.src].names & data[p.tgt].names)
        assert "quokka" not in (s, t)  # 'other' species are in no group
        if p.group == INTRA:
            assert s == t
        else:
            src_sp, tgt_sp = p.group.split("->")
            assert s == src_sp
            assert species_group(t) == tgt_sp
    assert len({(p.group, p.src, p.tgt) for p in pairs}) == len(pairs)  # no repeats
    human_pairs = [p for p in pairs if data[p.src].species == data[p.tgt].species == "human"]
    assert all(len(p.names) == 5 for p in human_pairs)


def test_a_group_does_not_depend_on_the_others():
    data = _dataset()
    alone = make_pairs(data, groups=["dog->cat"], counts=30, seed=5)
    together = [p for p in make_pairs(data, counts=30, seed=5) if p.group == "dog->cat"]
    assert alone == together


def test_pairs_need_a_shared_keypoint():
    data = [S("human", frozenset({"mouth_left_img"})) for _ in range(3)] + [S("dog") for _ in range(3)]
    assert [p for p in make_pairs(data) if p.group == "human->dog"] == []


def test_species_group_and_errors():
    assert species_group("Horse") == "livestock" and species_group("cat") == "cat"
    assert species_group("quokka") == "other"
    with pytest.raises(InputError, match="unknown pair group"):
        make_pairs(_dataset(), groups=["human->fish"])
    with pytest.raises(InputError):
        make_pairs(_dataset(), counts=-1)
    with pytest.raises(InputError):
        make_pairs(_dataset(), counts="many")  # type: ignore[arg-type]
    assert make_pairs([]) == []


@pytest.mark.shared_data
def test_real_faces_pairs(dev_faces_dir):
    from dife.eval.readers import read_faces_folder

    samples = read_faces_folder(dev_faces_dir)
    pairs = make_pairs(samples, counts=100, seed=0)
    c = Counter(p.group for p in pairs)
    assert all(c[g] == 100 for g in GROUP_ORDER)
    assert all(samples[p.src].species != "quokka" and samples[p.tgt].species != "quokka" for p in pairs)
