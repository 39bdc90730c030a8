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
        mean = report["results"]["jittered"]["dife-base"]["groups"]["all"]["err70"]["mean"]
        assert f"all {mean:.2f}" in card
    assert (trained / "model.safetensors").is_file()  # the input folder is left alone
