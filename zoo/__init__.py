"""Model zoo: the architectures (`ARCHITECTURES`, `LatentVariableModel`), `build_model`, the YAML
configurations, and the pretrained presets (`zoo.load(name)`, `zoo.list()`, `LatentVariableModel.from_preset`)."""

from zoo.base import ARCHITECTURES, LatentVariableModel, build_model
from zoo.presets import list_presets as list  # noqa: A001 (the short form: zoo.list())
from zoo.presets import load, load_preset

ARCHITECTURES.names()  # import every architecture, so `import zoo` is all keras.saving.load_model needs

__all__ = ["ARCHITECTURES", "LatentVariableModel", "build_model", "load", "load_preset", "list"]
