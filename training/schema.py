"""What a run config may say, read from the config dataclasses and the registries themselves.

    python -m training.schema                      # every section and registered choice, as Markdown
    python -m training.schema --write docs/configs.md   # refresh the generated tables of that page
    python -m training.schema --check docs/configs.md   # exit 1 when the page is stale
    python -m training.schema --snapshot                # refresh training/config_schema.json

A newly registered prior, likelihood, architecture or procedure is listed here (and in the docs, after
`--write`) with its options, defaults and the docstrings of its config fields, without editing a list.
"""

import argparse
import ast
import dataclasses
import inspect
import json
import re
import sys
import textwrap
from pathlib import Path

from layers.likelihoods import LIKELIHOODS
from layers.priors import PRIORS
from training import config as config_lib
from training.config_check import SNAPSHOT, sources_digest
from training.procedures import PROCEDURES
from zoo import atomic
from zoo.base import ARCHITECTURES

def snapshot_text():
    """training/config_schema.json: the live schema and the digest of the sources it was read from."""
    return json.dumps({"sources": sources_digest(), "schema": config_lib.schema()}, indent=1, sort_keys=True) + "\n"


MARKER = re.compile(r"^<!-- (BEGIN|END) GENERATED: schema-([\w-]+) -->$")


def field_docs(cls):
    """{field: docstring} from the string literal under each field of a dataclass (and its bases)."""
    docs = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass) or klass.__module__ == "types":
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):  # classes made at run time (a registry's section) have no source
            continue
        body = tree.body[0].body
        for node, following in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)):
                docs[node.target.id] = _cell(str(following.value.value))
    return docs


def _cell(text):
    """One Markdown table cell: a single line, pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|")


def _default(f):
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return ""
    registry = f.metadata.get("registry")
    if registry is not None:
        return f"`{getattr(value, registry.key)}`"
    if dataclasses.is_dataclass(value):
        return "section"
    return "none" if value is None else f"`{str(value).lower() if isinstance(value, bool) else value}`"


def _checks(f):
    checks = f.metadata
    if checks.get("choices"):
        return "one of " + ", ".join(f"`{c}`" for c in checks["choices"])
    if checks.get("minimum") is not None:
        return f">= {checks['minimum']}"
    if checks.get("exclusive_minimum") is not None:
        return f"> {checks['exclusive_minimum']}"
    return ""


def _rows(cls, skip=(), prefix=""):
    docs = field_docs(cls)
    rows = []
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        rows.append(f"| `{prefix}{f.name}` | {_default(f)} | {_checks(f)} | {docs.get(f.name, '')} |")
        value = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(value) and "registry" not in f.metadata:
            rows.extend(_rows(type(value), prefix=f"{prefix}{f.name}."))
    return rows


HEADER = "| key | default | allowed | meaning |\n|---|---|---|---|"


def section_table(cls, skip=()):
    return "\n".join([HEADER, *_rows(cls, skip)])


def registry_table(registry, skip=()):
    """One row block per registered name: its class, then its options."""
    lines = ["| name | class | key | default | allowed | meaning |", "|---|---|---|---|---|---|"]
    for name in registry.names():
        cls = registry[name]
        summary = _cell((inspect.getdoc(cls) or "").split("\n\n")[0])
        lines.append(f"| `{name}` | `{cls.__name__}` | | | | {summary} |")
        section = registry.config_class(name)
        options = [row for row in _rows(section, skip=(registry.key, *skip))]
        lines.extend(f"| | {row}" for row in options)
    return "\n".join(lines)


def blocks():
    """The generated tables by name (the `schema-NAME` markers of docs/configs.md)."""
    return {
        "run": section_table(config_lib.RunConfig, skip=("data", "model", "train", "evaluate")),
        "data": section_table(config_lib.DataConfig),
        "architectures": registry_table(ARCHITECTURES, skip=("likelihood", "prior")),
        "likelihoods": registry_table(LIKELIHOODS),
        "priors": registry_table(PRIORS),
        "train": section_table(config_lib.TrainConfig),
        "procedures": registry_table(PROCEDURES),
        "evaluate": section_table(config_lib.EvaluateConfig),
    }


def render_page(text):
    """`text` with every generated block replaced by its current content."""
    tables, out, skipping = blocks(), [], None
    for line in text.splitlines():
        match = MARKER.match(line)
        if match and match.group(1) == "BEGIN":
            skipping = match.group(2)
            if skipping not in tables:
                raise ValueError(f"unknown generated block schema-{skipping} (known: {', '.join(tables)})")
            out.extend([line, tables[skipping]])
            continue
        if match and match.group(1) == "END":
            skipping = None
        if skipping is None:
            out.append(line)
    return "\n".join(out) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", type=Path, metavar="PAGE", help="rewrite the generated blocks of PAGE")
    group.add_argument("--check", type=Path, metavar="PAGE", help="exit 1 if PAGE's generated blocks are stale")
    group.add_argument("--snapshot", action="store_true",
                       help=f"write the schema the CLIs check configs with before importing Keras to {SNAPSHOT}")
    args = parser.parse_args(argv)
    if args.snapshot:
        atomic.write_text(SNAPSHOT, snapshot_text())
        return 0
    if args.write or args.check:
        page = args.write or args.check
        current = page.read_text()
        fresh = render_page(current)
        if args.write:
            page.write_text(fresh)
        elif fresh != current:
            print(f"{page} is stale: run python -m training.schema --write {page}", file=sys.stderr)
            return 1
        return 0
    for name, table in blocks().items():
        print(f"## {name}\n\n{table}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
