"""Command-line options from a config dataclass: each field becomes `--field-name`, its default and type come from
the default, its help from the comment after it. Used by `crayonbox train vqgan|model|judge` (train/cli.py) and by
`python -m crayonbox.train.model`, the entry point torchrun relaunches, which is why it is its own module: the
trainer and the CLI both read it without importing each other.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib.util
from pathlib import Path
from typing import Any

REQUIRED = {"data", "out", "tokens", "tokenizer", "vqgan"}


def config_spec(module: str, class_name: str) -> list[tuple[str, Any, str]]:
    """(name, default, comment) of each field of a config dataclass, read from its source with `ast`.

    Reading the source instead of importing the module keeps `crayonbox --help` from importing torch (seconds
    on a busy machine); the dataclass stays the one place where options and their documentation live.
    """
    origin = importlib.util.find_spec(module).origin
    source = Path(origin).read_text(encoding="utf-8")
    lines = source.splitlines()
    node = next(n for n in ast.parse(source).body if isinstance(n, ast.ClassDef) and n.name == class_name)
    spec = []
    for field in node.body:
        if isinstance(field, ast.AnnAssign) and isinstance(field.target, ast.Name) and field.value:
            line = lines[field.lineno - 1]
            comment = line.split("#", 1)[1].strip() if "#" in line else ""
            spec.append((field.target.id, ast.literal_eval(field.value), comment))
    return spec


def add_config_arguments(parser: argparse.ArgumentParser, spec: list[tuple[str, Any, str]]) -> None:
    """One option per config field (type and default from the field's default, help from its comment)."""
    for name, default, comment in spec:
        flag = "--" + name.replace("_", "-")
        if isinstance(default, bool):
            if default:
                parser.add_argument("--no-" + name.replace("_", "-"), dest=name, action="store_false",
                                    help=f"turn off: {comment}")
            else:
                parser.add_argument(flag, dest=name, action="store_true", help=comment)
            continue
        required = name in REQUIRED
        parser.add_argument(flag, dest=name, type=type(default), default=default, required=required,
                            metavar=name.upper() if required else None,
                            help=comment if required else f"{comment} (default: {default})")


def config_from_args(cls: type, args: argparse.Namespace) -> Any:
    """The config dataclass filled from parsed options (fields without an option keep their default)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in vars(args).items() if k in names})


def config_to_argv(cfg: Any) -> list[str]:
    """Options that `add_config_arguments` parses back into `cfg` (used to relaunch under torchrun)."""
    argv = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(f.default, bool):
            if value != f.default:
                argv.append(("--no-" if f.default else "--") + f.name.replace("_", "-"))
        elif value != f.default:
            argv += ["--" + f.name.replace("_", "-"), str(value)]
    return argv
