"""One registry mechanism for priors, likelihoods, architectures and training procedures.

A registered class is a Keras-serializable class plus the dataclass of its config section:

    @dataclass
    class VampPriorConfig:
        components: int = option(500, minimum=1)

    @PRIORS.register("vampprior", VampPriorConfig)
    class VampPrior(Prior): ...

`register` also registers the class with `keras.saving` (package "vae_zoo"), so a saved model names
its parts and `keras.saving.load_model` finds them. A registry imports every module of its package the
first time it is asked for a name, so a new prior is one file in `layers/priors/` and nothing else.
`build(options, **context)` is `cls.from_config(section + context)`, where the context (latent size,
image shape, training-set size, seed) is what the enclosing model knows and the section does not.
"""

import dataclasses
import difflib
import importlib
import inspect
import pkgutil

import keras

KERAS_PACKAGE = "vae_zoo"


def option(default, *, choices=None, minimum=None, exclusive_minimum=None):
    """A config field with its validation: allowed values, or a lower bound (inclusive or exclusive)."""
    metadata = {"choices": choices, "minimum": minimum, "exclusive_minimum": exclusive_minimum}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def choice(registry, default):
    """A config field that is a section of one registered class, chosen by `registry.key` (e.g. `name`)."""
    return dataclasses.field(default_factory=lambda: registry.default_options(default),
                             metadata={"registry": registry})


class Registry:
    """Names -> classes of one kind, each with the dataclass of its config section.

    Args:
        kind: what is registered, for messages ("prior").
        package: the package whose modules register into it (imported on first use).
        key: the config key that names the choice ("name", or "architecture" for models).
        section: the config path of the section, for messages ("model.prior").
    """

    def __init__(self, kind, package, key="name", section=None):
        self.kind = kind
        self.package = package
        self.key = key
        self.section = section or kind
        self._classes = {}
        self._configs = {}
        self._imported = False

    def register(self, name, config=None):
        """Class decorator: register `cls` under `name` with its config dataclass (None: no options)."""
        config = config or _NO_OPTIONS

        def decorate(cls):
            if name in self._classes and self._classes[name] is not cls:
                raise ValueError(f"{self.kind} '{name}' is registered twice ({self._classes[name].__name__}, {cls.__name__})")
            keras.saving.register_keras_serializable(package=KERAS_PACKAGE)(cls)
            cls.registered_name = name
            cls.Config = config
            self._classes[name] = cls
            # the section: the options plus the key that chose them, so two sections compare equal only
            # when they name the same class
            self._configs[name] = dataclasses.make_dataclass(
                config.__name__, [(self.key, str, dataclasses.field(default=name))], bases=(config,))
            return cls

        return decorate

    def _import_all(self):
        if self._imported:
            return
        self._imported = True
        package = importlib.import_module(self.package)
        for module in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{self.package}.{module.name}")

    def names(self):
        self._import_all()
        return sorted(self._classes)

    def check_name(self, name, path=None):
        """Raise a one-line error naming the closest registered name when `name` is unknown."""
        names = self.names()
        if name not in names:
            close = difflib.get_close_matches(str(name), names, n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            where = path or f"{self.section}.{self.key}"
            raise KeyError(f"{where}: '{name}' is not a registered {self.kind} ({', '.join(names)}){hint}")

    def __getitem__(self, name):
        self.check_name(name)
        return self._classes[name]

    def __contains__(self, name):
        return name in self.names()

    def config_class(self, name):
        self.check_name(name)
        return self._configs[name]

    def owners(self, field_name):
        """Registered names whose config section has `field_name` (for 'belongs to another choice' messages)."""
        return [n for n in self.names() if field_name != self.key
                and field_name in {f.name for f in dataclasses.fields(self._configs[n])}]

    def option_names(self, name):
        """The option keys of `name`'s section (without the key that names it)."""
        return [f.name for f in dataclasses.fields(self.config_class(name)) if f.name != self.key]

    def default_options(self, name):
        return self.options(name)

    def options(self, name, **values):
        """The options of `name` with `values` set (unvalidated beyond the field names), e.g. for tests and
        notebooks: `PRIORS.build(PRIORS.options("mog", components=7), latent_dim=4)`."""
        unknown = set(values) - set(self.option_names(name))
        if unknown:
            raise TypeError(f"{self.kind} '{name}' has no option {sorted(unknown)}")
        return self.config_class(name)(**values)

    def build(self, options, **context):
        """The registered class named by `options` (a validated section), built with `from_config`.

        Context arguments its constructor does not take are not passed (a standard normal prior takes
        no image shape)."""
        cls = self[getattr(options, self.key)]
        accepted = inspect.signature(cls.__init__).parameters
        config = options_to_dict(options)
        config.pop(self.key)
        config.update({k: v for k, v in context.items() if k in accepted or k == "name"})
        return cls.from_config(config)


def layer_from_config(cls, config):
    """`cls(**config)` as Keras's `Layer.from_config` does it, without turning the constructor's own errors
    (a missing training-set size, an impossible option) into a TypeError that prints the whole config."""
    config = dict(config)
    if isinstance(config.get("dtype"), dict):
        config["dtype"] = keras.dtype_policies.deserialize(config["dtype"]).name
    return cls(**config)


@dataclasses.dataclass
class _NoOptions:
    """A registered class without options of its own."""


_NO_OPTIONS = _NoOptions


def options_to_dict(options):
    """A validated section as a plain nested dict; a chosen sub-section starts with its key (e.g. `name`)."""
    out = {}
    for f in dataclasses.fields(options):
        value = getattr(options, f.name)
        registry = f.metadata.get("registry")
        if registry is not None:
            value = options_to_dict(value)
            value = {registry.key: value.pop(registry.key), **value}
        elif dataclasses.is_dataclass(value):
            value = options_to_dict(value)
        elif isinstance(value, list):
            value = list(value)
        out[f.name] = value
    return out
