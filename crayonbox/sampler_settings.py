"""The sampler's knobs, defined once: `SamplingSettings` and what every surface derives from it.

Each field of `SamplingSettings` carries its help text, command-line flag and request bounds as dataclass
metadata (`knob`). The generator's and the lab's flags (`add_sampler_arguments` / `sampler_overrides`), the
server's request and response schemas (crayonbox/serve/schemas.py), the lab's stored settings key
(crayonbox/lab/store.py) and a model folder's `sampler` block all read these fields, so a new knob is one
field here (plus its use in crayonbox/sample.py's decode loop).

Torch-free on purpose: `crayonbox --help` registers every command's flags, and must not import torch to do so.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import Field, asdict, dataclass, field, fields
from typing import Any

from crayonbox.config import MAX_CONDITION_SCALE, check_condition_scale
from crayonbox.errors import CrayonboxError

Number = float | int


def knob(default: Number, help: str, flag: str = "", label: str = "", **bounds: float) -> Any:
    """A `SamplingSettings` field. `bounds` are the server's request limits as pydantic constraints (ge, gt,
    le, lt); `validate()` holds the checks every caller gets. The value type is the default's type; `label`
    names it on the web page (default: the name in words)."""
    return field(default=default, metadata={"help": help, "flag": flag, "bounds": bounds, "type": type(default),
                                            "label": label})


@dataclass
class SamplingSettings:
    """How tokens are drawn. Defaults are the official dalle-mini notebook's (min-dalle: scale 16, top_k 256)."""

    condition_scale: float = knob(10.0, "guidance: uncond + scale·(cond − uncond); 1 = none",
                                  ge=0, le=MAX_CONDITION_SCALE)
    top_k: int = knob(50, "keep the k most likely codes; 0 = all", label="Top-k", ge=0)
    top_p: float = knob(1.0, "then keep the smallest set with this much probability (nucleus mass); 1 = all",
                        label="Top-p", gt=0, le=1)
    # The server caps temperature at [0.01, 10] (beyond that the images are noise or one colour); offline
    # generation only needs it > 0.
    temperature: float = knob(1.0, "divide the logits by this before drawing", ge=0.01, le=10)

    @classmethod
    def from_dict(cls, data: dict, where: str) -> SamplingSettings:
        """Settings read from a file (a model's pipeline.json), validated, with errors naming `where`."""
        unknown = sorted(set(data) - set(sampler_names()))
        if unknown:
            raise CrayonboxError(f"{where}: unknown sampler setting(s) {unknown}")
        try:
            return cls(**data).validate()
        except CrayonboxError as e:
            raise CrayonboxError(f"{where}: {e}") from None

    def validate(self) -> SamplingSettings:
        for name, value in self.to_dict().items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise CrayonboxError(f"{name} must be a number (got {value!r})")
        check_condition_scale(self.condition_scale, "condition_scale")
        if not (self.temperature > 0):
            raise CrayonboxError(f"temperature must be > 0 (got {self.temperature})")
        if self.top_k < 0 or int(self.top_k) != self.top_k:
            raise CrayonboxError(f"top_k must be a whole number ≥ 0, 0 meaning off (got {self.top_k})")
        if not (0 < self.top_p <= 1):
            raise CrayonboxError(f"top_p must be in (0, 1] (got {self.top_p})")
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    def with_overrides(self, **overrides: Number | None) -> SamplingSettings:
        """These settings with the given non-None values replaced, validated."""
        unknown = sorted(set(overrides) - set(sampler_names()))
        if unknown:
            raise CrayonboxError(f"unknown sampler setting(s) {unknown}")
        values = self.to_dict()
        values.update({k: v for k, v in overrides.items() if v is not None})
        return SamplingSettings(**values).validate()


def sampler_fields() -> tuple[Field, ...]:
    """The knobs, in declaration order."""
    return fields(SamplingSettings)


def sampler_names() -> tuple[str, ...]:
    return tuple(f.name for f in sampler_fields())


def sampler_type(f: Field) -> type:
    """A knob's value type (int or float)."""
    return f.metadata["type"]


def flag_of(f: Field) -> str:
    """A knob's command-line flag: its own, or --name-with-dashes."""
    return f.metadata["flag"] or "--" + f.name.replace("_", "-")


def canonical(values: Mapping[str, Any]) -> dict[str, Number]:
    """Every knob as its declared type (so 10 and 10.0 are the same setting); a missing knob is an error."""
    return {f.name: sampler_type(f)(values[f.name]) for f in sampler_fields()}


@dataclass(frozen=True)
class SamplerOverrides:
    """A partial `SamplingSettings`: the knobs a caller set, applied over a model's defaults. Knobs left unset
    (None) take the defaults."""

    values: Mapping[str, Number] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.values) - set(sampler_names()))
        if unknown:
            raise CrayonboxError(f"unknown sampler setting(s) {unknown}")
        object.__setattr__(self, "values", {k: v for k, v in self.values.items() if v is not None})

    @classmethod
    def of(cls, **values: Number | None) -> SamplerOverrides:
        return cls(values)  # type: ignore[arg-type]  # None values are dropped by __post_init__

    def get(self, name: str) -> Number | None:
        return self.values.get(name)

    def without(self, *names: str) -> SamplerOverrides:
        return SamplerOverrides({k: v for k, v in self.values.items() if k not in names})

    def apply(self, base: SamplingSettings) -> SamplingSettings:
        """`base` with these overrides, validated."""
        return base.with_overrides(**self.values)


def add_sampler_arguments(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """One optional flag per knob (default None: the model's own default). `skip`: knobs the command takes its
    own way (the lab probe's comma-separated --condition-scale grid)."""
    for f in sampler_fields():
        if f.name not in skip:
            parser.add_argument(flag_of(f), dest=f.name, type=sampler_type(f), default=None,
                                help=f"{f.metadata['help']} (default: the model's)")


def sampler_overrides(args: argparse.Namespace, skip: tuple[str, ...] = ()) -> SamplerOverrides:
    """The knobs given on the command line added by `add_sampler_arguments`."""
    return SamplerOverrides({f.name: getattr(args, f.name) for f in sampler_fields() if f.name not in skip})
