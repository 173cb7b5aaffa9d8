"""Reading and checking a run config without Keras: the YAML file, `--set` overrides, and the schema.

The command-line tools call this before their slow imports (TensorFlow takes seconds), so a typo in a
config is a one-line error at once. The schema is a plain description of the config dataclasses and
registries (`training.config.schema()` builds it from the live classes; `training/config_schema.json` is
a snapshot of it, refreshed with `python -m training.schema --snapshot`). `training.config` validates every
config with the same `check`, then builds its dataclasses from the checked dict, so the messages here are
the messages everywhere.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
from pathlib import Path

import yaml

from layers.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
SNAPSHOT = Path(__file__).with_name("config_schema.json")
# The sources that define config sections: a snapshot older than any of them is not used.
SCHEMA_SOURCES = ("training/config.py", "layers/registry.py", "layers/priors", "layers/likelihoods",
                  "zoo/architectures", "zoo/base.py", "training/procedures")
# Keys that moved when each registered class came to own its section: old path -> where it is now.
MOVED = {
    "model.gaussian_variance": "model.likelihood.variance (an option of the gaussian likelihood: "
                               "model.likelihood: {name: gaussian, variance: ...})",
    "model.prior.exemplar": "model.prior itself (the exemplar prior's mode, k, leave_one_out and chunk_size "
                            "are keys of model.prior)",
}


class ConfigError(UserError, ValueError):
    """A configuration value is missing, unknown, or of the wrong type or range."""


# --- the YAML file and the overrides ---------------------------------------------------------------------

class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's last-one-wins on a repeated key hides a mistake: refuse it."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key '{key}' appears twice (lines {seen[key] + 1} and {key_node.start_mark.line + 1})",
                    key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def _yaml_problem(error):
    mark = getattr(error, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return f"{getattr(error, 'problem', None) or error}{where}".replace("\n", " ")


def read_yaml(path) -> dict:
    """The mapping of a config file, or a one-line error naming the file and what is wrong with it."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file not found: {path} (shipped configs are in zoo/*.yaml)")
    if path.is_dir():
        hint = f" (it is a run directory: continue it with --resume {path})" if (path / "config.yaml").exists() else ""
        raise ConfigError(f"{path} is a directory, not a config file; give a YAML file such as "
                          f"zoo/quickstart.yaml{hint}")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a text file (not UTF-8); give a YAML config such as zoo/quickstart.yaml") from None
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror}") from None
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(error)}") from None
    if raw is None:
        raise ConfigError(f"{path} is empty; a config needs at least one key (e.g. `name: my_run`; "
                          "start from zoo/quickstart.yaml)")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values at the top, got {type(raw).__name__} {raw!r:.60}")
    return raw


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply `a.b.c=value` strings (values parsed as YAML) to a nested dict, in place.

    A registered choice given by name alone (`likelihood: gaussian`) becomes `{name: gaussian}` when an
    override sets one of its options."""
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. train.epochs=3")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"--set {item!r}: empty key part in '{key}'; write e.g. train.epochs=3")
        node = raw
        for part in parts[:-1]:
            if isinstance(node.get(part), str):
                node[part] = {"name": node[part]}
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: '{part}' is a value, not a section")
        try:
            node[parts[-1]] = yaml.load(text, Loader=_UniqueKeyLoader)
        except yaml.YAMLError as error:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({_yaml_problem(error)}); "
                              "quote it or close its brackets") from None
    return raw


def load_raw(path, overrides=None) -> dict:
    """The config file with its overrides applied, not yet checked against the schema."""
    return apply_overrides(read_yaml(path), overrides or [])


# --- the schema ------------------------------------------------------------------------------------------

def _check_type(value, spec, path):
    """Validate one value against its type spec (with int -> float widening); return it normalised."""
    kind = spec["kind"]
    if kind == "optional":
        return None if value is None else _check_type(value, spec["inner"], path)
    if kind == "list":
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        return [_check_type(v, spec["item"], f"{path}[{i}]") for i, v in enumerate(value)]
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {value!r}")
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if kind == "float":
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                raise ConfigError(f"{path}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if kind == "str":
        if isinstance(value, bool):  # YAML reads an unquoted true/false as a boolean
            value = str(value).lower()
        elif isinstance(value, (int, float)):
            value = str(value)
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{path}: unsupported schema type {spec!r}")


def _check_bounds(value, spec, path):
    """The field's `option(...)` checks: allowed values, lower bounds (of a list's items too)."""
    allowed = spec.get("choices")
    if allowed is not None and value not in allowed:
        close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1, cutoff=0.5)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"{path}: '{value}' is not one of {list(allowed)}{hint}")
    if value is None:
        return
    for i, item in enumerate(value if isinstance(value, list) else [value]):
        where = f"{path}[{i}]" if isinstance(value, list) else path
        if spec.get("minimum") is not None and item < spec["minimum"]:
            raise ConfigError(f"{where}: must be >= {spec['minimum']}, got {item}")
        if spec.get("exclusive_minimum") is not None and item <= spec["exclusive_minimum"]:
            raise ConfigError(f"{where}: must be > {spec['exclusive_minimum']}, got {item}")


def _owners(registry, field_name):
    return [n for n, section in registry["names"].items() if field_name in section["fields"]]


def _unknown_key(key, names, path, registry=None, chosen=None):
    full = f"{path}.{key}" if path else str(key)
    for old, new in MOVED.items():
        if full == old or full.startswith(old + "."):
            raise ConfigError(f"'{full}' has moved: it is now {new}")
    if registry is not None:
        owners = [n for n in _owners(registry, key) if n != chosen]
        if owners:
            raise ConfigError(
                f"{full} is an option of {' / '.join(owners)}, not of {registry['kind']} '{chosen}' "
                f"(options of '{chosen}': {', '.join(names) or 'none'}); remove it or set {path}.{registry['key']}")
    close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.5)
    hint = f"; did you mean '{(path + '.') if path else ''}{close[0]}'?" if close else ""
    raise ConfigError(f"unknown config key '{full}'{hint} (valid keys here: {', '.join(names) or 'none'})")


def _check_choice(schema, registry_id, raw, path):
    """A section of a registered class: its key (e.g. `name`) picks the class, the rest is its options."""
    registry = schema["registries"][registry_id]
    key = registry["key"]
    if isinstance(raw, str):
        raw = {key: raw}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a {registry['kind']} name or a mapping with '{key}', got {raw!r}")
    raw = dict(raw)
    if key not in raw:
        raise ConfigError(f"{path}: missing '{key}' (one of: {', '.join(registry['names'])})")
    name = _check_type(raw.pop(key), {"kind": "str"}, f"{path}.{key}")
    if name not in registry["names"]:
        names = sorted(registry["names"])
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"{path}.{key}: '{name}' is not a registered {registry['kind']} ({', '.join(names)}){hint}")
    return {key: name, **_check_section(schema, registry["names"][name], raw, path, registry, name)}


def _check_section(schema, section, raw, path, registry=None, chosen=None):
    if not isinstance(raw, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping of keys to values, got {raw!r}")
    fields = section["fields"]
    checked = {}
    for key, value in raw.items():
        full = f"{path}.{key}" if path else str(key)
        if key not in fields:
            _unknown_key(key, list(fields), path, registry, chosen)
        spec = fields[key]
        if "registry" in spec:
            checked[key] = _check_choice(schema, spec["registry"], value, full)
        elif "section" in spec:
            checked[key] = _check_section(schema, spec["section"], value, full)
        else:
            value = _check_type(value, spec["type"], full)
            _check_bounds(value, spec, full)
            checked[key] = value
    return checked


def check(raw: dict, schema: dict) -> dict:
    """`raw` checked against `schema`: unknown keys (with the closest valid one, or the choice they belong
    to), types and bounds; returns the normalised dict (numbers widened, a choice given by name expanded)."""
    raw = dict(raw or {})
    if isinstance(raw.get("model"), dict):
        raw["model"] = {"architecture": "vae", **raw["model"]}  # the default architecture, as before
    checked = _check_section(schema, schema["root"], raw, "")
    image_size = (checked.get("data") or {}).get("image_size")
    if image_size is not None and len(image_size) != 2:
        raise ConfigError(f"data.image_size: expected [height, width], got {image_size}")
    return checked


def sources_digest(root=ROOT) -> str:
    """SHA-256 over the files that define config sections (names and contents)."""
    digest = hashlib.sha256()
    for source in SCHEMA_SOURCES:
        path = Path(root) / source
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(str(file.relative_to(root)).encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()


def cached_schema():
    """The snapshot schema, or None when it is missing or older than the sources (then only the full
    validation after the imports checks the config)."""
    try:
        snapshot = json.loads(SNAPSHOT.read_text())
    except (OSError, ValueError):
        return None
    return snapshot["schema"] if snapshot.get("sources") == sources_digest() else None


def precheck(path, overrides=None) -> dict:
    """Read `path` with `overrides` and check it against the snapshot schema where it is current."""
    raw = load_raw(path, overrides)
    schema = cached_schema()
    if schema is not None:
        check(raw, schema)
    return raw


# --- resuming a run --------------------------------------------------------------------------------------

# What may change when a run resumes: how long it trains, how it reports and evaluates, where its data
# lies. Everything else (the model, the data, the seed, the optimiser) would not continue the same run.
RESUMABLE = ("train.epochs", "train.early_stopping_patience", "train.checkpoint_every", "train.verbose",
             "train.eval_batch_size", "evaluate.", "data.path", "data.tfds_data_dir")


def _leaves(node, prefix=""):
    if isinstance(node, dict):
        return {k: v for key, value in node.items() for k, v in _leaves(value, f"{prefix}{key}.").items()}
    return {prefix[:-1]: node}


def resume_overrides(saved_path, overrides) -> dict:
    """The saved config of a run with `overrides` applied, refused when they change what resuming keeps."""
    saved = read_yaml(saved_path)
    raw = apply_overrides(copy.deepcopy(saved), overrides)
    before, after = _leaves(saved), _leaves(raw)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k, _MISSING) != after.get(k, _MISSING))
    refused = [k for k in changed if not any(k == r or (r.endswith(".") and k.startswith(r)) for r in RESUMABLE)]
    if refused:
        raise ConfigError(
            f"--resume cannot change {', '.join(refused)} (the checkpoint was trained with "
            f"{', '.join(f'{k}={before.get(k, _MISSING)}' for k in refused)}); on resume only "
            f"{', '.join(k.rstrip('.') + ('.*' if k.endswith('.') else '') for k in RESUMABLE)} may change. "
            f"Start a new run for a different model: python -m training.fit {saved_path} --set ...")
    schema = cached_schema()
    if schema is not None:
        check(raw, schema)
    return raw


class _Missing:
    def __repr__(self):
        return "(unset)"


_MISSING = _Missing()
