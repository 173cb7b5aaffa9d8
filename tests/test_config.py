"""Config validation: unknown keys suggest the closest one, bad values name their path, and each registered
class's section accepts its own options only."""

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
        config_lib.from_dict({"model": {"prior": {"name": "mog", "componets": 3}}})


def test_wrong_type_and_range_name_the_path():
    with pytest.raises(config_lib.ConfigError, match=r"model.prior.components: expected an integer"):
        config_lib.from_dict({"model": {"prior": {"name": "vampprior", "components": "many"}}})
    with pytest.raises(config_lib.ConfigError, match=r"train.batch_size: must be >= 1, got 0"):
        config_lib.from_dict({"train": {"batch_size": 0}})
    with pytest.raises(config_lib.ConfigError, match=r"model.prior.pseudo_inputs_std: must be > 0"):
        config_lib.from_dict({"model": {"prior": {"name": "vampprior", "pseudo_inputs_std": 0.0}}})
    with pytest.raises(config_lib.ConfigError, match=r"model.prior.coreset.schedule: 'restrat' is not one of .*'restart'"):
        config_lib.from_dict({"model": {"prior": {"name": "bype", "coreset": {"schedule": "restrat"}}}})
    with pytest.raises(config_lib.ConfigError, match=r"train.gradient_normalization: expected true or false"):
        config_lib.from_dict({"train": {"gradient_normalization": "yes"}})
    with pytest.raises(config_lib.ConfigError, match=r"model.prior.name: 'vamprior' is not a registered prior .*did you mean 'vampprior'"):
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


def test_an_option_of_another_choice_names_where_it_belongs():
    with pytest.raises(config_lib.ConfigError, match=r"model.prior.learn_weights is an option of mog, not of prior 'vampprior'"):
        config_lib.from_dict({"model": {"prior": {"name": "vampprior", "learn_weights": True}}})
    with pytest.raises(config_lib.ConfigError, match=r"model.likelihood.variance is an option of gaussian, not of likelihood 'bernoulli'"):
        config_lib.from_dict({"model": {"likelihood": {"name": "bernoulli", "variance": 0.5}}})
    with pytest.raises(config_lib.ConfigError, match=r"model.prior.components is an option of .*vampprior.*not of prior 'standard_normal'"):
        config_lib.from_dict({"model": {"prior": {"name": "standard_normal", "components": 5}}})


def test_moved_keys_say_where_they_are_now():
    with pytest.raises(config_lib.ConfigError, match=r"'model.gaussian_variance' has moved: it is now model.likelihood.variance"):
        config_lib.from_dict({"model": {"likelihood": "gaussian", "gaussian_variance": 0.5}})
    with pytest.raises(config_lib.ConfigError, match=r"'model.prior.exemplar' has moved: it is now model.prior itself"):
        config_lib.from_dict({"model": {"prior": {"name": "exemplar", "exemplar": {"mode": "retrieval"}}}})


def test_a_name_is_short_for_a_section_and_overrides_expand_it(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  likelihood: gaussian\n  prior: mog\n")
    c = config_lib.load(path, ["model.likelihood.variance=0.25", "model.prior.components=7"])
    assert (c.model.likelihood.name, c.model.likelihood.variance) == ("gaussian", 0.25)
    assert (c.model.prior.name, c.model.prior.components) == ("mog", 7)
    assert config_lib.to_dict(c)["model"]["prior"] == {"name": "mog", "components": 7, "learn_weights": False}
    assert c.train.procedure.name == "elbo"  # today's training step is the default procedure
    with pytest.raises(config_lib.ConfigError, match=r"train.procedure.name: 'evlo' is not a registered procedure .*'elbo'"):
        config_lib.from_dict({"train": {"procedure": "evlo"}})
    with pytest.raises(config_lib.ConfigError, match=r"model.prior: missing 'name'"):
        config_lib.from_dict({"model": {"prior": {"components": 3}}})


def test_sections_naming_different_classes_differ():
    """Two likelihoods without options are different sections (equality, saved YAML)."""
    a = config_lib.from_dict({"model": {"likelihood": "discretized_logistic"}, "data": {"preprocessing": "continuous"}})
    b = config_lib.from_dict({"model": {"likelihood": "squared_error"}, "data": {"preprocessing": "continuous"}})
    assert a != b and config_lib.to_dict(a) != config_lib.to_dict(b)


def test_the_configs_page_lists_every_registered_choice():
    """docs/configs.md's tables are generated from the registries; a new class must show up there."""
    from training import schema

    page = Path(__file__).resolve().parents[1] / "docs" / "configs.md"
    text = page.read_text()
    assert schema.render_page(text) == text, "stale: run python -m training.schema --write docs/configs.md"
    from layers.priors import PRIORS

    for name in PRIORS.names():
        assert f"| `{name}` |" in text
