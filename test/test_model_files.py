"""One model lookup (name or path, every install layout) and no silent stand-in in the demo."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from distillmatch_ros import model_files
from distillmatch_ros.errors import CheckpointError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def clean_env(monkeypatch):
    monkeypatch.delenv(model_files.ENV_DIR, raising=False)
    monkeypatch.delenv("AMENT_PREFIX_PATH", raising=False)
    return monkeypatch


def test_name_or_path_rule():
    assert not model_files.is_path("distillmatch_tiny")
    assert not model_files.is_path("v2i_gan")
    for path in ("model.pt", "runs/x/best.pt", "./m", "~/models/m.pt", Path("m")):
        assert model_files.is_path(path), path


def test_env_dir_comes_first_and_names_resolve(tmp_path, clean_env):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "distillmatch_tiny.pt").write_bytes(b"x")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "custom.pt").write_bytes(b"y")
    clean_env.setenv(model_files.ENV_DIR, f"{tmp_path / 'a'}:{tmp_path / 'b'}")
    assert model_files.resolve(None) == tmp_path / "a" / "distillmatch_tiny.pt"   # overrides the checkout
    assert model_files.resolve("custom") == tmp_path / "b" / "custom.pt"
    assert model_files.resolve("", model_files.V2I_GAN) == REPO / "models" / "v2i_gan.pt"  # checkout next
    assert model_files.available()["custom"] == tmp_path / "b" / "custom.pt"


def test_missing_name_lists_every_place_looked(tmp_path, clean_env):
    clean_env.setenv(model_files.ENV_DIR, str(tmp_path / "nowhere"))
    with pytest.raises(CheckpointError) as e:
        model_files.resolve("no_such_model")
    text = str(e.value)
    assert "no_such_model" in text and "looked in" in text
    assert str(tmp_path / "nowhere" / "no_such_model.pt") in text and "$DISTILLMATCH_MODEL_DIR" in text
    assert "source checkout" in text and "sys.prefix" in text
    with pytest.raises(CheckpointError, match="model file not found"):
        model_files.resolve(tmp_path / "missing.pt")


def test_ament_index_layout(tmp_path, clean_env):
    """A colcon install space: the share folder is found through AMENT_PREFIX_PATH's index."""
    prefix = tmp_path / "install" / "distillmatch_ros"
    index = prefix / "share" / "ament_index" / "resource_index" / "packages"
    index.mkdir(parents=True)
    (index / "distillmatch_ros").write_text("")
    models = prefix / "share" / "distillmatch_ros" / "models"
    models.mkdir(parents=True)
    (models / "only_in_install.pt").write_bytes(b"z")
    with pytest.raises(CheckpointError, match="only_in_install"):
        model_files.resolve("only_in_install")
    clean_env.setenv("AMENT_PREFIX_PATH", f"{tmp_path / 'other'}:{prefix}")
    assert model_files.resolve("only_in_install") == models / "only_in_install.pt"
    assert any(why == "ament index" for _, why in model_files.search_locations())


def test_installed_prefix_layout(tmp_path, clean_env, monkeypatch):
    """A wheel install: <prefix>/share/distillmatch_ros/models found from the module's location."""
    site = tmp_path / "venv" / "lib" / "python3.11" / "site-packages" / "distillmatch_ros"
    site.mkdir(parents=True)
    models = tmp_path / "venv" / "share" / "distillmatch_ros" / "models"
    models.mkdir(parents=True)
    monkeypatch.setattr(model_files, "__file__", str(site / "model_files.py"))
    locations = model_files.search_locations()
    assert locations[0] == (models, "install prefix of the package")  # no checkout there
    with pytest.raises(CheckpointError, match="install prefix"):
        model_files.resolve("v2i_gan")
    shutil.copy(REPO / "models" / "v2i_gan.pt", models / "v2i_gan.pt")
    assert model_files.resolve("v2i_gan") == models / "v2i_gan.pt"


def test_pseudo_infrared_and_matcher_use_the_resolver(tmp_path, clean_env):
    from distillmatch_ros import PseudoInfrared
    from distillmatch_ros.matcher import resolve_model

    (tmp_path / "gan").mkdir()
    shutil.copy(REPO / "models" / "v2i_gan.pt", tmp_path / "gan" / "my_gan.pt")
    clean_env.setenv(model_files.ENV_DIR, str(tmp_path / "gan"))
    assert PseudoInfrared.from_pretrained("my_gan").card == PseudoInfrared.from_pretrained().card
    with pytest.raises(CheckpointError, match="V2I-GAN generator: shipped model 'nope' not found; looked in"):
        PseudoInfrared.from_pretrained("nope")
    assert resolve_model() == REPO / "models" / "distillmatch_tiny.pt"


def test_demo_never_substitutes_a_stand_in_silently(tmp_path, capsys, clean_env):
    from distillmatch_ros import cli
    from distillmatch_ros.bag import sample

    rc = cli.main(["demo", "--out", str(tmp_path / "d"), "--v2i-gan", "missing_gan", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: V2I-GAN generator: shipped model 'missing_gan' not found")
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "d" / "recording").exists()
    fn, how = sample.pseudo_infrared_fn(sample.SIMPLE)
    assert fn is sample.simple_pseudo_thermal and "--simple-thermal" in how
    gan, how = sample.pseudo_infrared_fn()
    assert how.startswith("V2I-GAN (") and how.endswith("v2i_gan.pt)")


def test_models_command_lists_search_order(capsys, clean_env):
    from distillmatch_ros import cli

    assert cli.main(["models"]) == 0
    out = capsys.readouterr().out
    assert "[source checkout]: distillmatch_tiny, v2i_gan" in out and "sys.prefix" in out
