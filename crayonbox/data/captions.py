"""The caption pipeline: an ordered, configurable list of steps, each recording what it did to every item.

A step sees one item's current caption (plus its key, metadata and detected language) and returns the new
caption, a reason code when it acted, and whether the item is dropped. `CaptionPipeline.process` runs all
steps over a batch and returns provenance rows: the raw caption, every step's output and reason, the detected
language, the final caption, and which step dropped or blanked the item. Running it over shards on disk
(resumable, with provenance parquet) is `crayonbox.data.caption_run.run_caption_pipeline`.

The default pipeline (`DEFAULT_PIPELINE`) mirrors the DALL·E mini era. CC3M, CC12M and YFCC15M were filtered
to English on their raw text, and CC12M replaced names with <PERSON>; dalle-mini then normalised captions and
blanked 10 % for classifier-free guidance *after* normalisation (commit 7939874). So dropout blanks stay ""
(the unconditional tokens) while captions emptied by a filter become the normaliser's " ". Language ID runs
before the normaliser because unidecode romanises Devanagari into text detectors call English
(docs/langid-quirks.md).

The steps and their reason codes are in `crayonbox.data.caption_steps`; a step after the one that dropped an
item records the reason `skipped_dropped`.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from crayonbox.data.caption_steps import STEP_TYPES, CaptionState, is_blank
from crayonbox.errors import CrayonboxError
from crayonbox.text.normalize import NormalizerConfig

SKIPPED = "skipped_dropped"  # reason recorded for steps after the one that dropped the item

DEFAULT_PIPELINE: dict[str, Any] = {"steps": [
    {"step": "unicode_fix"},
    {"step": "langid", "detector": "py3langid"},  # on the raw text: unidecode would make Hindi look English
    {"step": "english_only", "policy": "blank"},
    {"step": "names", "style": "cc12m"},
    {"step": "normalize", "mode": "official"},
    {"step": "min_length", "minimum": 2, "unit": "words", "policy": "blank"},
    {"step": "dropout", "p": 0.1, "seed": 0},
]}


# ---- configuration -----------------------------------------------------------------------------------------


def _type_ok(value: Any, hint: Any) -> bool:
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if typing.get_origin(hint) is list:
        return isinstance(value, list) and all(_type_ok(v, typing.get_args(hint)[0]) for v in value)
    args = typing.get_args(hint)  # `X | None`
    return any(_type_ok(value, a) if a is not type(None) else value is None for a in args)


def _build_step(index: int, entry: Any) -> Any:
    where = f"pipeline step {index + 1}"
    if not isinstance(entry, dict) or "step" not in entry:
        raise CrayonboxError(f"{where}: write each step as a mapping with a `step:` key, e.g. "
                             f"{{step: langid}}; got {entry!r}")
    options = dict(entry)
    kind = options.pop("step")
    if not isinstance(kind, str) or kind not in STEP_TYPES:
        raise CrayonboxError(f"{where}: unknown step {kind!r}; known steps: {sorted(STEP_TYPES)}")
    cls = STEP_TYPES[kind]
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise CrayonboxError(f"{where} ({kind}): unknown option(s) {unknown}; options: {sorted(fields)}")
    for attr, value in options.items():
        if not _type_ok(value, hints[attr]):
            raise CrayonboxError(f"{where} ({kind}): {attr} should be {hints[attr]}, not {value!r}")
    step = cls(**options)
    if hasattr(step, "validate"):
        step.validate()
    return step


def load_pipeline_config(path: str | Path) -> dict[str, Any]:
    """Read a pipeline config from a YAML (or JSON) file."""

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf8"))
    except FileNotFoundError as e:
        raise CrayonboxError(f"pipeline config {path} does not exist") from e
    except UnicodeDecodeError as e:
        raise CrayonboxError(f"pipeline config {path} is not UTF-8 text (byte {e.start})") from e
    except OSError as e:  # a folder, no permission
        raise CrayonboxError(f"cannot read pipeline config {path}: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise CrayonboxError(f"pipeline config {path} is not valid YAML: {' '.join(str(e).split())}") from e
    return data


def build_steps(config: dict[str, Any] | None = None) -> list[Any]:
    """Validate a `{"steps": [...]}` config (None = DEFAULT_PIPELINE) and build its steps, in order."""
    config = DEFAULT_PIPELINE if config is None else config
    if not isinstance(config, dict) or set(config) != {"steps"} or not isinstance(config["steps"], list):
        raise CrayonboxError("a caption pipeline config is a mapping with one key, `steps:`, holding a list "
                             "of steps (see `crayonbox data captions --print-default-config`)")
    if not config["steps"]:
        raise CrayonboxError("the caption pipeline has no steps; list at least one under `steps:`")
    steps = [_build_step(i, entry) for i, entry in enumerate(config["steps"])]
    names = [s.name for s in steps]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise CrayonboxError(f"step name(s) {repeated} appear twice; give repeated steps distinct `name:`s")
    for i, step in enumerate(steps):
        if step.kind == "english_only" and not any(s.kind == "langid" for s in steps[:i]):
            raise CrayonboxError(f"step {step.name!r} needs a langid step before it")
    return steps


def pipeline_normalizer(config: dict[str, Any]) -> NormalizerConfig:
    """The normaliser a pipeline config's `normalize` step applies (official when it has none): the
    tokenizer trained on its captions normalises prompts the same way."""
    for step in config.get("steps", []):
        if step.get("step") == "normalize":
            return NormalizerConfig(step.get("mode", "official"), tuple(step.get("disabled_steps", ())))
    return NormalizerConfig()


def step_config(step: Any) -> dict[str, Any]:
    """The full config entry of a built step (every option spelled out), for manifests and reports."""
    return {"step": step.kind, **dataclasses.asdict(step)}


# ---- running the steps ------------------------------------------------------------------------------------


class CaptionPipeline:
    """Runs the configured steps over items and returns one provenance row per item."""

    def __init__(self, config: dict[str, Any] | None = None):
        self.steps = build_steps(config)
        self.config = {"steps": [step_config(s) for s in self.steps]}

    def columns(self) -> list[str]:
        """The provenance columns, in order."""
        cols = ["key", "source", "raw_caption"]
        for step in self.steps:
            cols += [f"{step.name}.caption", f"{step.name}.reason"]
            if step.kind == "langid":
                cols += [f"{step.name}.language", f"{step.name}.confidence"]
        return cols + ["language", "language_confidence", "final_caption", "dropped", "dropped_by",
                       "blanked_by", "caption_dropout", "world"]

    def process_item(self, key: str, caption: str, meta: dict) -> dict[str, Any]:
        """Run every step on one item; return its provenance row (see `columns`)."""
        world = meta.get("world") or {}
        row: dict[str, Any] = {"key": key, "source": world.get("source", meta.get("source")),
                               "raw_caption": caption}
        state = CaptionState(key, caption, meta)
        dropped_by = None
        blanked_by = "raw" if is_blank(caption) else None
        for step in self.steps:
            if dropped_by:
                row[f"{step.name}.caption"], row[f"{step.name}.reason"] = None, SKIPPED
            else:
                result = step(state)
                if result.dropped:
                    dropped_by = step.name
                elif blanked_by is None and is_blank(result.caption):
                    blanked_by = step.name
                state.caption = None if result.dropped else result.caption
                row[f"{step.name}.caption"], row[f"{step.name}.reason"] = state.caption, result.reason
            if step.kind == "langid":
                row[f"{step.name}.language"] = None if dropped_by else state.language
                row[f"{step.name}.confidence"] = None if dropped_by else state.language_confidence
        row.update(language=state.language, language_confidence=state.language_confidence,
                   final_caption=state.caption, dropped=dropped_by is not None, dropped_by=dropped_by,
                   blanked_by=None if dropped_by else blanked_by, caption_dropout=blanked_by == "dropout",
                   world=json.dumps(world, ensure_ascii=False, sort_keys=True) if world else None)
        return row

    def process(self, keys: Sequence[str], captions: Sequence[str], metas: Sequence[dict]) -> list[dict]:
        """Run every step on a batch of items; return their provenance rows."""
        return [self.process_item(k, c, m) for k, c, m in zip(keys, captions, metas, strict=True)]
