"""Variants of a caption pipeline ("arms"): one decision changed, everything else as configured.

The bias lab asks "which step of the caption pipeline put these items where they are?". The answer is a
counterfactual: run the pipeline again with one step switched off, or its blank/drop policy flipped, or the
normaliser in raw mode, and see what changes (`crayonbox lab blame` for the captions alone, `crayonbox lab
ablate` with a retrained transformer). An arm is written `STEP:CHANGE`:

    english_only:off      the step removed (for dropout: no caption dropout; for names: names kept)
    english_only:drop     its policy set to drop (or blank, or strip for a ban list)
    normalize:raw         the normaliser's mode (raw or multilingual); the tokenizer follows it

`STEP` is the step's `name` in the pipeline config (its kind unless renamed). `baseline` is the pipeline as
configured.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from crayonbox.data.captions import build_steps
from crayonbox.errors import CrayonboxError

BASELINE = "baseline"
NORMALIZER_MODES = ("official", "multilingual", "raw")


@dataclass(frozen=True)
class Arm:
    """One variant of the caption pipeline."""

    name: str  # "baseline" or "STEP:CHANGE"
    step: str | None  # the step's name (None for the baseline)
    kind: str | None  # the step's kind (langid, english_only, …)
    change: str  # "baseline", "off", a policy (blank | drop | strip) or a normaliser mode

    @property
    def description(self) -> str:
        """The arm in words, for reports."""
        if self.step is None:
            return "the pipeline as configured"
        if self.change == "off":
            return {"dropout": "no caption dropout", "names": "names kept"}.get(self.kind or "",
                                                                              f"{self.step} switched off")
        if self.kind == "normalize":
            return f"the normaliser in {self.change} mode"
        return f"{self.step} policy set to {self.change}"


def _steps_by_name(config: dict[str, Any]) -> dict[str, Any]:
    return {step.name: step for step in build_steps(config)}


def parse_arm(spec: str, config: dict[str, Any]) -> Arm:
    """The arm `spec` ("STEP:CHANGE" or "baseline") of the pipeline `config`; a CrayonboxError names what is
    wrong (an unknown step, a change the step does not have)."""
    spec = spec.strip()
    if spec == BASELINE:
        return Arm(BASELINE, None, None, BASELINE)
    name, sep, change = spec.partition(":")
    if not sep or not name or not change:
        raise CrayonboxError(f"arm {spec!r}: write STEP:CHANGE, e.g. english_only:off, english_only:drop or "
                             "normalize:raw")
    steps = _steps_by_name(config)
    if name not in steps:
        raise CrayonboxError(f"arm {spec!r}: the caption pipeline has no step {name!r}; its steps are "
                             f"{', '.join(steps)}")
    step = steps[name]
    allowed = _changes(step, steps)
    if change not in allowed:
        raise CrayonboxError(f"arm {spec!r}: step {name!r} ({step.kind}) can be changed to "
                             f"{', '.join(allowed) or 'nothing'}, not {change!r}")
    return Arm(f"{name}:{change}", name, step.kind, change)


def _changes(step: Any, steps: dict[str, Any]) -> list[str]:
    """What can be done to `step`: off (unless a later step needs it, or it is the normaliser), its other
    policies, the normaliser's other modes."""
    out = []
    needed = step.kind == "langid" and any(s.kind == "english_only" for s in steps.values())
    if step.kind != "normalize" and not needed:
        out.append("off")
    if hasattr(step, "policy"):
        choices = ("drop", "blank", "strip") if step.kind == "ban_list" else ("drop", "blank")
        out += [c for c in choices if c != step.policy]
    if step.kind == "normalize":
        out += [m for m in NORMALIZER_MODES if m != step.mode]
    return out


def candidate_arms(config: dict[str, Any]) -> list[Arm]:
    """Every single-change arm of `config`: each step off, each policy flipped, the normaliser's other
    modes (langid is left on where english_only reads it; unicode_fix is a repair, not a decision)."""
    steps = _steps_by_name(config)
    return [Arm(f"{name}:{change}", name, step.kind, change)
            for name, step in steps.items() if step.kind != "unicode_fix"
            for change in _changes(step, steps)]


def arm_config(config: dict[str, Any], arm: Arm) -> dict[str, Any]:
    """The pipeline config of `arm`: `config` with the arm's one change."""
    out = {"steps": copy.deepcopy(config["steps"])}
    if arm.step is None:
        return out
    named = [(i, entry) for i, entry in enumerate(out["steps"]) if entry.get("name", entry["step"]) == arm.step]
    if not named:
        raise CrayonboxError(f"arm {arm.name!r}: the caption pipeline has no step {arm.step!r}")
    index, entry = named[0]
    if arm.change == "off":
        del out["steps"][index]
    elif entry["step"] == "normalize":
        entry["mode"] = arm.change
    else:
        entry["policy"] = arm.change
    build_steps(out)  # the variant must itself be a valid pipeline
    return out
