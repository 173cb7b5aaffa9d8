"""Config validation: unknown keys suggest the closest one, bad values name their path."""

from pathlib import Path

import pytest

from training import config as config_lib

ZOO = Path(__file__).resolve().parents[1] / "zoo"


@pytest.mark.parametrize("path", sorted(ZOO.glob("*.yaml")), ids=lambda p: p.name)
def test_every_zoo_config_validates(path):
    config = config_lib.load(path)
    assert config.name == path.stem


def test_paper_defaults_in_vamp_vae():
    c = config_lib.load(ZOO / "vamp_vae.yaml")
    assert (c.model.latent_dim, c.model.hidden_units, c.train.batch_size) == (40, 300, 100)
    assert (c.train.learning_rate, c.train.warmup_epochs, c.train.early_stopping_patience) == (5e-4, 100, 50)
    assert c.train.gradient_normalization and c.evaluate.num_samples == 5000
    assert (c.data.name, c.data.preprocessing, c.model.prior.components) == ("mnist", "dynamic_binarization", 500)


def test_unknown_key_suggests_closest():
    with pytest.raises(config_lib.ConfigError, match=r"unknown config key 'train.epohs'; did you mean 'train.epochs'"):
        config_lib.from_dict({"train": {"epohs": 3}})
    with pytest.raises(config_lib.ConfigError, match=r"'model.prior.componets'; did you mean 'model.prior.components'"):
        config_lib.from_dict({"model": {"prior": {"componets": 3}}})


def test_wrong_type_and_range_name_the_path():
    with pytest.raises(config_lib.ConfigError, match=r"model.prior.components: expected an integer"):
        config_lib.from_dict({"model": {"prior": {"components": "many"}}})
    with pytest.raises(config_lib.ConfigError, match=r"train.batch_size: must be > 0"):
        config_lib.from_dict({"train": {"batch_size": 0}})
    with pytest.raises(config_lib.ConfigError, match=r"train.gradient_normalization: expected true or false"):
        config_lib.from_dict({"train": {"gradient_normalization": "yes"}})
    with pytest.raises(config_lib.ConfigError, match=r"model.prior.name: 'vamprior' is not one of .*did you mean 'vampprior'"):
        config_lib.from_dict({"model": {"prior": {"name": "vamprior"}}})
    with pytest.raises(config_lib.ConfigError, match=r"data: expected a mapping"):
        config_lib.from_dict({"data": 3})


def test_bernoulli_needs_binary_data():
    with pytest.raises(config_lib.ConfigError, match="bernoulli"):
        config_lib.from_dict({"data": {"preprocessing": "continuous"}, "model": {"likelihood": "bernoulli"}})


def test_overrides_parse_yaml_scalars_and_validate(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: x\ntrain:\n  epochs: 10\n")
    c = config_lib.load(path, ["train.epochs=3", "model.prior.name=vampprior", "train.learning_rate=1e-3",
                               "data.image_size=[28, 28]"])
    assert (c.train.epochs, c.model.prior.name, c.train.learning_rate, c.data.image_size) == (3, "vampprior", 1e-3, [28, 28])
    with pytest.raises(config_lib.ConfigError, match="did you mean 'train.epochs'"):
        config_lib.load(path, ["train.epoch=3"])
    with pytest.raises(config_lib.ConfigError, match="expected KEY=VALUE"):
        config_lib.load(path, ["train.epochs"])


def test_save_load_round_trip(tmp_path):
    c = config_lib.load(ZOO / "vamp_hvae.yaml", ["train.epochs=7"])
    config_lib.save(c, tmp_path / "config.yaml")
    assert config_lib.load(tmp_path / "config.yaml") == c
