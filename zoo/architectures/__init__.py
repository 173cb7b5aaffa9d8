"""Architectures, each registered in `zoo.base.ARCHITECTURES` by the module that defines it.

A new architecture is one module here: a `LatentVariableModel` subclass, its config dataclass (a
`ModelConfig` subclass when it has options of its own) and `@ARCHITECTURES.register(name, Config)`.
"""
