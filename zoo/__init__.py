"""Model zoo: architectures (VAE, HVAE, ConvHVAE), `build_model`, the YAML configurations, and the
pretrained presets (`zoo.load(name)`, `zoo.list()`; see zoo/presets.py)."""

from zoo.builder import ARCHITECTURES, build_model
from zoo.presets import list_presets as list  # noqa: A001 (the issue's API: zoo.list())
from zoo.presets import load, load_preset

__all__ = ["ARCHITECTURES", "build_model", "load", "load_preset", "list"]
