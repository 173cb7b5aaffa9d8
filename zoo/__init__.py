"""Model zoo: architectures (VAE, HVAE, ConvHVAE), `build_model`, and the YAML configurations."""

from zoo.builder import ARCHITECTURES, build_model

__all__ = ["ARCHITECTURES", "build_model"]
