"""Prompt families the lab probes, and prompt files users bring.

A probe names what to send with `--prompts`: built-in family names ("null", "neutral", "attire", …),
paths of UTF-8 files with one prompt per line, or several of either separated by commas.

The null family is the blank-prompt mystery: "", " " and lone punctuation all
normalise to " " and reach the model as `<s> Ġ </s>`, while the unconditional branch of guidance is the raw
`<s></s>`. Its last member, `UNCONDITIONAL`, sends exactly the unconditional ids as the conditional input,
bypassing the normaliser, so guidance has nothing to amplify: the control that separates "the model's blank
mode" from "guidance pushing away from nothing".

The attire, person, animal, food and object families come from the world config's pool (the default world
unless a config is given), so every concept the default model was trained on can be probed by name.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from crayonbox.data.world.config import load_world_config
from crayonbox.data.world.lexicon import english_article
from crayonbox.errors import CrayonboxError

NORMALISED = "normalised"  # the prompt goes through the model's normaliser and BPE, as any user prompt
UNCONDITIONAL_IDS = "unconditional-ids"  # the conditional ids are the unconditional branch's own ids

NULL_PROMPTS = ("", " ", ".", ",", ":", ";", "?", "!", "🙂")
NEUTRAL_PROMPTS = ("a person", "someone", "a woman", "a man", "a photo")
WORLD_FAMILIES = ("attire", "person", "animal", "food", "object")  # pool categories of the world config
FAMILIES = ("null", "neutral", *WORLD_FAMILIES)


@dataclass(frozen=True)
class PromptSpec:
    """One probe input: the raw text and how it becomes ids."""

    prompt: str  # exactly what a user would type ("" for the blank prompt)
    family: str  # the family (or file name) it came from
    input_mode: str = NORMALISED  # NORMALISED, or UNCONDITIONAL_IDS for the raw unconditional control

    @property
    def label(self) -> str:
        """A readable name: the prompt in quotes, or <unconditional ids> for the control."""
        return "<unconditional ids>" if self.input_mode == UNCONDITIONAL_IDS else repr(self.prompt)

    @property
    def key(self) -> str:
        """Unique, stable text key of this input (prompt and mode), used in stats and reports."""
        return f"{self.input_mode}:{self.prompt}"


UNCONDITIONAL = PromptSpec("", "null", UNCONDITIONAL_IDS)


def _world_pool(world_config: Path | None) -> dict[str, list[str]]:

    return load_world_config(world_config).pool


def world_family(category: str, world_config: Path | None = None) -> list[str]:
    """Prompts for one pool category of a world config: "a person wearing a sari" for attire, "a dog" for
    animals ("a cat", …), the CLDR name with an article for everything else."""

    pool = _world_pool(world_config)
    if category not in pool:
        raise CrayonboxError(f"the world config has no '{category}' pool (it has {sorted(pool)})")
    names = [name for name in pool[category] if not name.startswith("subgroup:")]
    if category == "attire":
        return [f"a person wearing {english_article(name)}" for name in names]
    return [english_article(name) for name in names]


def family(name: str, world_config: Path | None = None) -> list[PromptSpec]:
    """The prompts of one built-in family."""
    if name == "null":
        return [PromptSpec(p, "null") for p in NULL_PROMPTS] + [UNCONDITIONAL]
    if name == "neutral":
        return [PromptSpec(p, "neutral") for p in NEUTRAL_PROMPTS]
    if name in WORLD_FAMILIES:
        return [PromptSpec(p, name) for p in world_family(name, world_config)]
    raise CrayonboxError(f"unknown prompt family {name!r}: use one of {', '.join(FAMILIES)}, or the path of "
                         "a UTF-8 text file with one prompt per line")


def read_prompt_file(path: Path) -> list[PromptSpec]:
    """Prompts of a user file: one per line, UTF-8, line endings stripped, empty lines skipped (probe the
    blank prompt with the "null" family, which logs how it is encoded)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise CrayonboxError(f"cannot read prompt file {path}: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8-sig")  # tolerate a BOM written by Windows editors
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise CrayonboxError(f"prompt file {path} is not UTF-8 (bad byte {raw[e.start]:#04x} on line "
                             f"{line}); re-save it as UTF-8") from None
    prompts = [line for line in text.splitlines() if line.strip()]
    if not prompts:
        raise CrayonboxError(f"prompt file {path} has no prompts: write one prompt per line")
    return [PromptSpec(p, path.name) for p in prompts]


def expand_prompts(names: str | Iterable[str | PromptSpec],
                   world_config: Path | None = None) -> list[PromptSpec]:
    """Family names, prompt files and PromptSpecs (a list, or one comma-separated string) → unique
    PromptSpecs, in order.

    A name is read as a file when such a file exists, else as a family; an unknown family that is not a file
    either is an error naming both possibilities. PromptSpecs pass through (for exact prompts from code)."""
    if isinstance(names, str):
        names = [names]
    parts: list[str | PromptSpec] = []
    for name in names:
        parts += [name] if isinstance(name, PromptSpec) else [p.strip() for p in name.split(",") if p.strip()]
    if not parts:
        raise CrayonboxError("no prompts given: pass --prompts with a family (e.g. null) or a prompt file")
    specs: list[PromptSpec] = []
    seen: set[str] = set()
    for part in parts:
        if isinstance(part, PromptSpec):
            batch = [part]
        else:
            path = Path(part).expanduser()
            batch = read_prompt_file(path) if path.is_file() else family(part, world_config)
        for spec in batch:
            if spec.key not in seen:
                seen.add(spec.key)
                specs.append(spec)
    return specs
