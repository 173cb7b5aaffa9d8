"""Moved to `layers.errors` (import-light: `zoo` imports Keras); kept until callers switch."""

from layers.errors import UserError  # noqa: F401
