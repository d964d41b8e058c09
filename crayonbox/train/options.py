"""Command-line options from a config dataclass: each field becomes `--field-name`, its default and type come from
the default, its help from the field's `metadata["help"]` (train/configs.py). Used by `crayonbox train
vqgan|model|judge` (train/cli.py) and by `python -m crayonbox.train.model`, the entry point torchrun relaunches,
which is why it is its own module: the trainer and the CLI both read it without importing each other.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
from typing import Any

REQUIRED = {"data", "out", "tokens", "tokenizer", "vqgan"}


def config_spec(module: str, class_name: str) -> list[tuple[str, Any, str]]:
    """(name, default, help) of each field of the config dataclass `module.class_name`.

    The CLI names train/configs.py, which imports nothing heavy, so `crayonbox --help` does not import torch; the
    trainers re-export their config, so `config_spec("crayonbox.train.model", "TrainConfig")` reads the same.
    """
    return fields_spec(getattr(importlib.import_module(module), class_name))


def fields_spec(cls: type) -> list[tuple[str, Any, str]]:
    """(name, default, help) of each field of a config dataclass, the help from `metadata["help"]`."""
    return [(f.name, f.default, f.metadata.get("help", "")) for f in dataclasses.fields(cls)
            if f.default is not dataclasses.MISSING]


def add_config_arguments(parser: argparse.ArgumentParser, spec: list[tuple[str, Any, str]]) -> None:
    """One option per config field (type and default from the field's default, help from its metadata)."""
    for name, default, text in spec:
        flag = "--" + name.replace("_", "-")
        if isinstance(default, bool):
            if default:
                parser.add_argument("--no-" + name.replace("_", "-"), dest=name, action="store_false",
                                    help=f"turn off: {text}")
            else:
                parser.add_argument(flag, dest=name, action="store_true", help=text)
            continue
        required = name in REQUIRED
        parser.add_argument(flag, dest=name, type=type(default), default=default, required=required,
                            metavar=name.upper() if required else None,
                            help=text if required else f"{text} (default: {default})")


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
