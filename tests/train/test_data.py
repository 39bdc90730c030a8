"""Tests of dife.train.data: real face folders, balanced sampling, sources, training pairs."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from dife.coords import grid_to_normalized
from dife.errors import ImageError, InputError, ShapeError, UnknownDomainError
from dife.train.augment import pixel_centres, warp_images
from dife.train.data import (
    MixedSource,
    RealFaceFolder,
    RealSource,
    SpeciesBalancedSampler,
    SyntheticSource,
    make_loader,
    pair_batch,
)

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _noise(w: int, h: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def face_folder(tmp_path_factory) -> Path:
    """7 images: human x3 (one PNG with known colours), dog x2, cat x1, one without a species prefix."""
    root = tmp_path_factory.mktemp("faces")
    stripes = np.zeros((30, 60, 3), dtype=np.uint8)  # W=60, H=30: the centre square is the green middle
    stripes[:, :15] = RED
    stripes[:, 15:45] = GREEN
    stripes[:, 45:] = BLUE
    Image.fromarray(stripes).save(root / "human_00001.png")
    _noise(40, 40, 1).save(root / "human_00002.jpg", quality=90)
    _noise(30, 50, 2).save(root / "human_00003.jpg", quality=90)
    _noise(32, 32, 3).save(root / "dog_00001.jpg", quality=90)
    _noise(32, 32, 4).save(root / "dog_00002.jpeg", quality=90)
    _noise(32, 32, 5).save(root / "cat_00001.JPG", quality=90)
    _noise(20, 20, 6).save(root / "face.png")
    (root / "notes.txt").write_text("not an image")
    _noise(8, 8, 7).save(root / ".hidden_00001.jpg")
    return root


# --------------------------------------------------------------- RealFaceFolder
def test_folder_mode_lists_species_from_file_names(face_folder):
    ds = RealFaceFolder(face_folder, size=16)
    assert len(ds) == 7
    assert ds.counts() == {"cat": 1, "dog": 2, "human": 3, "unknown": 1}
    assert ds.species == ("cat", "dog", "human", "unknown")
    names = [p.name for p in ds.paths]
    assert "notes.txt" not in names and ".hidden_00001.jpg" not in names
    item = ds[names.index("human_00001.png")]
    assert set(item) == {"image", "species", "path"}
    assert item["species"] == "human" and item["path"].endswith("human_00001.png")
    img = item["image"]
    assert img.shape == (3, 16, 16) and img.dtype == torch.float32
    # centre square of the 60x30 stripes: pure green, in [-1, 1]
    torch.testing.assert_close(img, torch.tensor([-1.0, 1.0, -1.0]).view(3, 1, 1).expand(3, 16, 16), atol=1e-5, rtol=0)
    for i in range(len(ds)):
        x = ds[i]["image"]
        assert x.shape == (3, 16, 16) and x.min() >= -1 and x.max() <= 1
    assert ds[np.int64(1)]["path"] == ds[1]["path"]  # numpy integer indices work


def test_species_filter(face_folder):
    assert RealFaceFolder(face_folder, species="dog", size=8).labels == ["dog", "dog"]
    both = RealFaceFolder(face_folder, species=["dog", "cat"], size=8)
    assert sorted(both.labels) == ["cat", "dog", "dog"] and both.species == ("cat", "dog")
    with pytest.raises(UnknownDomainError, match=r"horse.*cat \(1\), dog \(2\), human \(3\)"):
        RealFaceFolder(face_folder, species="horse")
    with pytest.raises(InputError):
        RealFaceFolder(face_folder, species=[])


def test_index_csv_and_txt_modes(face_folder, tmp_path):
    # CSV: the species column wins over the file name; relative paths are relative to root; extra columns ignored
    (face_folder / "idx.csv").write_text(
        "image,species,source\nhuman_00002.jpg,human,x\ndog_00001.jpg,wolf,y\nface.png,,z\n", encoding="utf-8"
    )
    ds = RealFaceFolder(face_folder, index_file="idx.csv", size=8)
    assert [p.name for p in ds.paths] == ["human_00002.jpg", "dog_00001.jpg", "face.png"]
    assert ds.labels == ["human", "wolf", "unknown"]
    assert ds[1]["species"] == "wolf" and ds[1]["image"].shape == (3, 8, 8)
    # txt without root: paths relative to the index file, tab or comma species, comments, absolute paths
    lst = tmp_path / "list.txt"
    lst.write_text(
        f"# my list\n{face_folder / 'cat_00001.JPG'}\n\n{face_folder / 'human_00003.jpg'}\thuman\n"
        f"{face_folder / 'face.png'},fox\n",
        encoding="utf-8",
    )
    ds2 = RealFaceFolder(None, index_file=lst, size=8)
    assert ds2.labels == ["cat", "human", "fox"]
    assert RealFaceFolder(None, index_file=lst, species="fox").paths == [face_folder / "face.png"]


def test_broken_index_and_folder_errors(face_folder, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("image,species\nhuman_00002.jpg,human\nmissing_00009.jpg,dog\n", encoding="utf-8")
    with pytest.raises(ImageError, match=r"line 3.*missing_00009\.jpg"):
        RealFaceFolder(face_folder, index_file=bad)
    nocol = tmp_path / "nocol.csv"
    nocol.write_text("name,species\nhuman_00002.jpg,human\n", encoding="utf-8")
    with pytest.raises(InputError, match="no image column"):
        RealFaceFolder(face_folder, index_file=nocol)
    empty_idx = tmp_path / "empty.txt"
    empty_idx.write_text("# nothing\n", encoding="utf-8")
    with pytest.raises(InputError, match="lists no images"):
        RealFaceFolder(face_folder, index_file=empty_idx)
    with pytest.raises(InputError, match="index file not found"):
        RealFaceFolder(face_folder, index_file="nope.csv")
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    (empty / "readme.txt").write_text("x")
    with pytest.raises(InputError, match="no images"):
        RealFaceFolder(empty)
    with pytest.raises(InputError, match="not found"):
        RealFaceFolder(tmp_path / "does_not_exist")
    with pytest.raises(InputError, match="size"):
        RealFaceFolder(face_folder, size=0)


def test_unreadable_image_raises_image_error_naming_the_file(tmp_path):
    (tmp_path / "dog_00001.jpg").write_bytes(b"this is not a jpeg")
    _noise(16, 16, 0).save(tmp_path / "dog_00002.jpg")
    ds = RealFaceFolder(tmp_path, size=8)  # listing does not decode
    assert len(ds) == 2 and ds[1]["image"].shape == (3, 8, 8)
    with pytest.raises(ImageError, match="dog_00001.jpg"):
        ds[0]
    with pytest.raises(IndexError):
        ds[2]


@pytest.mark.shared_data
def test_shared_unlabeled_pool(unlabeled_dir):
    root = unlabeled_dir
    by_index = RealFaceFolder(root, index_file="index.csv")
    by_name = RealFaceFolder(root)
    assert len(by_index) == len(by_name) > 1000
    assert dict(zip(map(str, by_index.paths), by_index.labels, strict=True)) == dict(
        zip(map(str, by_name.paths), by_name.labels, strict=True)
    )
    counts = by_index.counts()
    assert counts["human"] > 10 * counts["horse"] > 0  # unbalanced, as documented
    horses = RealFaceFolder(root, index_file="index.csv", species="horse")
    for i in (0, len(horses) - 1):
        item = horses[i]
        x = item["image"]
        assert item["species"] == "horse" and x.shape == (3, 96, 96)
        assert x.min() >= -1 and x.max() <= 1 and x.std() > 0.05


# -------------------------------------------------------------------- sampler
LABELS = ["human"] * 60 + ["horse"] * 3 + ["cat"] * 9


def test_sampler_balances_species_per_batch():
    s = SpeciesBalancedSampler(LABELS, batch_size=6, num_batches=20, seed=0)
    batches = list(s.batches())
    assert len(batches) == 20 and len(s) == 120 and list(s) == [i for b in batches for i in b]
    for b in batches:
        assert Counter(LABELS[i] for i in b) == {"human": 2, "horse": 2, "cat": 2}
    # small species are cycled through without replacement: every image is drawn equally often (+-1)
    for sp, n in (("horse", 3), ("cat", 9)):
        drawn = Counter(i for b in batches for i in b if LABELS[i] == sp)
        assert len(drawn) == n and max(drawn.values()) - min(drawn.values()) <= 1
    # batch sizes that do not divide evenly: every species gets 1 or 2, 1/3 overall
    s4 = SpeciesBalancedSampler(LABELS, batch_size=4, num_batches=300, seed=1)
    total = Counter()
    for b in s4.batches():
        c = Counter(LABELS[i] for i in b)
        assert set(c.values()) <= {1, 2} and len(c) == 3
        total.update(c)
    for sp in ("human", "horse", "cat"):
        assert abs(total[sp] / 1200 - 1 / 3) < 0.03


def test_sampler_weights_seed_and_errors():
    s = SpeciesBalancedSampler(LABELS, batch_size=3, species_weights={"human": 2, "cat": 1}, num_batches=10)
    for b in s.batches():
        assert Counter(LABELS[i] for i in b) == {"human": 2, "cat": 1}
    a = list(SpeciesBalancedSampler(LABELS, batch_size=4, seed=3))
    assert a == list(SpeciesBalancedSampler(LABELS, batch_size=4, seed=3))
    assert len(a) == (72 // 4) * 4
    s2 = SpeciesBalancedSampler(LABELS, batch_size=4, seed=3)
    s2.set_epoch(1)
    assert list(s2) != a
    with pytest.raises(UnknownDomainError, match="dog"):
        SpeciesBalancedSampler(LABELS, batch_size=4, species_weights={"dog": 1.0})
    with pytest.raises(InputError, match="positive weight"):
        SpeciesBalancedSampler(LABELS, batch_size=4, species_weights={"cat": 0})
    with pytest.raises(InputError, match="batch_size"):
        SpeciesBalancedSampler(LABELS, batch_size=0)
    with pytest.raises(InputError, match="labels"):
        SpeciesBalancedSampler(object(), batch_size=2)


def test_make_loader_on_a_folder(face_folder):
    ds = RealFaceFolder(face_folder, species=["human", "dog"], size=8)
    loader = make_loader(ds, batch_size=4, num_batches=3, seed=0)
    batches = list(loader)
    assert len(batches) == 3
    for b in batches:
        assert b["image"].shape == (4, 3, 8, 8)
        assert Counter(b["species"]) == {"human": 2, "dog": 2}
        assert len(b["path"]) == 4
    plain = list(make_loader(ds, batch_size=2, balanced=False))
    assert len(plain) == 2 and plain[0]["image"].shape == (2, 3, 8, 8)


# -------------------------------------------------------------------- sources
@pytest.fixture(scope="module")
def tiny_gan(fixtures_dir):
    from dife.train.teachers import StyleGAN2

    path = fixtures_dir / "stylegan2_rosinality_tiny64.pt"
    if not path.exists():
        pytest.skip(f"{path} not found")
    return StyleGAN2.load(path)


def test_synthetic_source(tiny_gan):
    src = SyntheticSource(tiny_gan, "human", batch_size=2, size=24, layers=(5, 7), seed=0)
    b = next(iter(src))
    assert b["image"].shape == (2, 3, 24, 24) and b["image"].min() >= -1 and b["image"].max() <= 1
    assert b["species"] == ["human", "human"] and b["w"].shape == (2, tiny_gan.w_dim)
    assert sorted(b["features"]) == [5, 7]
    assert b["features"][7].shape == (2, *tiny_gan.feature_shape(7))
    assert b["features"][5].shape == (2, *tiny_gan.feature_shape(5))
    # the batch is exactly the teacher's output for its latents, resized with anti-aliasing
    with torch.no_grad():
        image, feats = tiny_gan.synthesis(b["w"], return_features=True, layers=(7,))
    torch.testing.assert_close(b["features"][7], feats[7])
    ref = F.interpolate(image, size=(24, 24), mode="bilinear", align_corners=False, antialias=True).clamp(-1, 1)
    torch.testing.assert_close(b["image"], ref)
    # truncation 0.7 about w_avg; reproducible from the seed
    again = SyntheticSource(tiny_gan, "human", batch_size=2, size=24, seed=0).sample()
    torch.testing.assert_close(again["w"], b["w"])
    other = SyntheticSource(tiny_gan, "human", batch_size=2, size=24, seed=1).sample()
    assert not torch.allclose(other["w"], b["w"])
    z = torch.randn(2, tiny_gan.z_dim, generator=gen(0))
    torch.testing.assert_close(b["w"], tiny_gan.mapping(z, truncation=0.7))
    assert next(src)["w"].shape == (2, tiny_gan.w_dim)  # endless


def test_synthetic_source_errors(tiny_gan):
    with pytest.raises(InputError, match="layers"):
        SyntheticSource(tiny_gan, "human", batch_size=2, layers=(8,))
    with pytest.raises(InputError, match="truncation"):
        SyntheticSource(tiny_gan, "human", batch_size=2, truncation=1.5)
    with pytest.raises(InputError, match="generator teacher"):
        SyntheticSource(object(), "human", batch_size=2)
    with pytest.raises(InputError, match="batch_size"):
        SyntheticSource(tiny_gan, "human", batch_size=0)


def test_real_source_cycles_one_species(face_folder):
    ds = RealFaceFolder(face_folder, size=8)
    src = RealSource(ds, batch_size=3, species="dog", seed=0)
    batches = list(itertools.islice(src, 4))
    paths = [p for b in batches for p in b["path"]]
    assert all(b["species"] == ["dog"] * 3 for b in batches) and len(paths) == 12
    assert Counter(Path(p).name for p in paths) == {"dog_00001.jpg": 6, "dog_00002.jpeg": 6}
    with pytest.raises(UnknownDomainError):
        RealSource(ds, batch_size=2, species="horse")


def test_mixed_source(tiny_gan, face_folder):
    ds = RealFaceFolder(face_folder, size=16)
    mix = MixedSource(
        {
            "human": [SyntheticSource(tiny_gan, "human", batch_size=2, size=16)],
            "dog": [RealSource(ds, batch_size=3, species="dog")],
            "cat": [
                RealSource(ds, batch_size=1, species="cat"),
                SyntheticSource(tiny_gan, "cat", batch_size=2, size=16),
            ],
        },
        {"cat": [1.0, 0.0]},
        seed=0,
    )
    b = next(mix)
    assert b["image"].shape == (6, 3, 16, 16)
    assert b["species"] == ["human"] * 2 + ["dog"] * 3 + ["cat"]
    assert b["synthetic"].tolist() == [True, True, False, False, False, False]
    assert b["source_index"].tolist() == [0] * 6
    human = b["parts"][0]
    assert (human["species"], human["start"], human["stop"]) == ("human", 0, 2)
    assert human["batch"]["features"][7].shape[0] == 2
    torch.testing.assert_close(b["image"][:2], human["batch"]["image"])
    # weights choose the source: cat only from the synthetic one now
    mix2 = MixedSource(
        {"cat": [RealSource(ds, batch_size=1, species="cat"), SyntheticSource(tiny_gan, "cat", batch_size=2, size=16)]},
        {"cat": [0, 1]},
    )
    for _ in range(3):
        assert next(mix2)["synthetic"].tolist() == [True, True]
    # a finite source (a list of batches, a DataLoader...) starts again when exhausted
    b1 = {"image": torch.zeros(1, 3, 16, 16)}
    b2 = {"image": torch.ones(2, 3, 16, 16)}
    finite = MixedSource({"dog": [[b1, b2]]})
    assert [next(finite)["image"].shape[0] for _ in range(3)] == [1, 2, 1]
    with pytest.raises(InputError, match="yields no batch"):
        next(MixedSource({"dog": [[]]}))
    with pytest.raises(InputError, match="weights"):
        MixedSource({"cat": [RealSource(ds, batch_size=1, species="cat")]}, {"cat": [1, 2]})
    with pytest.raises(UnknownDomainError):
        MixedSource({"cat": [RealSource(ds, batch_size=1, species="cat")]}, {"dog": [1]})
    bad = MixedSource(
        {
            "dog": [RealSource(ds, batch_size=1, species="dog")],
            "cat": [RealSource(RealFaceFolder(face_folder, size=8), batch_size=1, species="cat")],
        }
    )
    with pytest.raises(ShapeError, match="different sizes"):
        next(bad)


# ----------------------------------------------------------------------- pairs
def _ramp_batch(species: list[str], size: int = 32) -> dict:
    p = pixel_centres(size).permute(2, 0, 1)
    image = torch.cat([p, torch.zeros(1, size, size)])[None].repeat(len(species), 1, 1, 1)
    image[:, 2] = torch.arange(len(species), dtype=torch.float32).view(-1, 1, 1) / 10  # identifies the sample
    feats = pixel_centres(12).permute(2, 0, 1)[None].repeat(len(species), 1, 1, 1)
    return {"image": image, "species": species, "features": feats, "teacher": {7: feats * 2}}


def test_pair_batch_views_correspond_and_aux_is_cross_species():
    size = 32
    species = ["human", "human", "dog", "cat"]
    batch = _ramp_batch(species, size)
    out = pair_batch(batch, generator=gen(0), maps=("features", "teacher"))
    for key in ("image_a", "image_b", "aux"):
        assert out[key].shape == (4, 3, size, size)
    assert out["grid_ab"].shape == (4, size, size, 2) and out["valid_ab"].shape == (4, size, size)
    assert out["mask_a"].shape == (4, size, size) and out["mask_a"].dtype == torch.bool
    # image_b sampled at grid_ab shows what image_a shows (interior pixels, 2 px margin)
    sampled = F.grid_sample(out["image_b"], grid_to_normalized(out["grid_ab"], size), align_corners=False)
    lim = 1 - 4 / size
    keep = out["valid_ab"] & (out["warp_a"].grid(size).abs() <= lim).all(-1)
    keep &= ((out["grid_ab"] >= 1.5) & (out["grid_ab"] <= size - 2.5)).all(-1)
    assert keep.float().mean() > 0.4
    err_px = (sampled[:, :2] - out["image_a"][:, :2]).norm(dim=1)[keep] * size / 2
    assert err_px.max() < 0.1
    # dense maps are warped jointly, at their own resolution
    assert out["features_a"].shape == (4, 2, 12, 12)
    torch.testing.assert_close(out["features_a"], warp_images(batch["features"], out["warp_a"]))
    torch.testing.assert_close(out["teacher_b"][7], warp_images(batch["teacher"][7], out["warp_b"]))
    # auxiliary: another species, warped by its own warp
    assert out["aux_cross"].all()
    assert all(a != s for a, s in zip(out["aux_species"], out["species"], strict=True))
    idx = out["aux_index"]
    torch.testing.assert_close(out["aux"], warp_images(batch["image"][idx], out["warp_aux"]))


def test_pair_batch_single_species_fallback_and_determinism():
    batch = _ramp_batch(["dog"] * 3, 16)
    out = pair_batch(batch, generator=gen(1))
    assert not out["aux_cross"].any()
    assert all(int(j) != i for i, j in enumerate(out["aux_index"]))
    assert pair_batch(_ramp_batch(["dog"], 16), generator=gen(1))["aux_index"].tolist() == [0]
    again = pair_batch(batch, generator=gen(1))
    assert torch.equal(out["grid_ab"], again["grid_ab"]) and torch.equal(out["image_a"], again["image_a"])
    # jitter draws come after the geometry: same warps, different colours
    jit = pair_batch(batch, generator=gen(1), jitter={"brightness": 0.5})
    assert torch.equal(jit["grid_ab"], out["grid_ab"]) and not torch.equal(jit["image_a"], out["image_a"])
    # match_size: correspondence for maps of another size
    small = pair_batch(batch, generator=gen(1), match_size=8)
    assert small["grid_ab"].shape == (3, 8, 8, 2) and small["mask_a"].shape == (3, 8, 8)


def test_pair_batch_errors():
    batch = _ramp_batch(["dog", "cat"], 16)
    with pytest.raises(InputError, match="species"):
        pair_batch({"image": batch["image"]})
    with pytest.raises(InputError, match="2 species names"):
        pair_batch({"image": batch["image"], "species": ["dog"]})
    with pytest.raises(ShapeError, match="square"):
        pair_batch({"image": torch.zeros(2, 3, 8, 6), "species": ["a", "b"]})
    with pytest.raises(InputError, match="nothere"):
        pair_batch(batch, maps=("nothere",))
    with pytest.raises(InputError, match="jitter"):
        pair_batch(batch, jitter={"sparkle": 1.0})
