"""Caption sources: how an item's published caption is made, imitating the datasets DALL·E mini trained on:

- cc3m  — English only, never empty; given names are hypernymised ("Priya" → "actor" / "person").
- cc12m — English only, never empty; given names become the token <PERSON>.
- yfcc  — title + description in any language, assembled like dalle-mini's `title + ". " + description`;
          titles are sometimes missing or camera file names, and both parts can be empty (→ ". ").
- plain — the described caption as is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from crayonbox.data.world.config import SourceConfig
from crayonbox.data.world.describe import CaptionPlan, describe, plan_caption
from crayonbox.data.world.lexicon import LANGUAGES
from crayonbox.data.world.world import Scene, World, choose


@dataclass
class Published:
    """The caption an item ships with, and how it came about."""

    caption: str
    source: str
    language: str  # language the caption was written in (ground truth, not detected)
    style: str  # short | long | empty
    captions_all: dict[str, str]  # the same caption in every language, given names kept
    names: list[dict] = field(default_factory=list)  # [{"object", "name", "culture", "shown_as"}]
    title: str | None = None  # yfcc only
    description: str | None = None  # yfcc only


def _pick_source(rng: np.random.Generator, world: World, scene: Scene) -> SourceConfig:
    """The scene's source: from `source_mix` when a key matches (saris come mostly from Flickr-like
    sources), else by the sources' shares."""
    sources = world.config.sources
    mix = world.lookup(world.config.source_mix, scene.keys)
    if mix is None:
        total = sum(s.share for s in sources)
        mix = {s.name: s.share / total for s in sources}
    name = choose(rng, mix)
    return next(s for s in sources if s.name == name)


def _person_words(rng: np.random.Generator, source: SourceConfig, plan: CaptionPlan) -> dict[int, str]:
    """What each given name becomes in this source."""
    if source.kind == "cc3m":
        return {i: source.hypernyms[int(rng.integers(len(source.hypernyms)))] for i in plan.names}
    if source.kind == "cc12m":
        return dict.fromkeys(plan.names, "<PERSON>")
    return {}


def _yfcc_parts(world: World, scene: Scene, plan: CaptionPlan, lang: str, style: str,
                title_kind: str, filename: str, words: dict[int, str]) -> tuple[str, str]:
    """(title, description) of a YFCC-like item: a short title and a long description."""
    if style == "empty":
        return "", ""
    if title_kind == "text":
        title = describe(world, scene, plan, lang, "short", words)
    else:
        title = filename if title_kind == "filename" else ""
    description = describe(world, scene, plan, lang, "long", words) if style == "long" else ""
    return title, description


def publish(rng: np.random.Generator, world: World, scene: Scene) -> Published:
    """Choose a source, language and style for the scene, and write its caption."""
    source = _pick_source(rng, world, scene)
    override = world.lookup(source.overrides, scene.keys, {})
    language = choose(rng, override.get("language", source.language))
    style = choose(rng, override.get("style", source.style))
    plan = plan_caption(rng, world, scene)
    words = _person_words(rng, source, plan)
    names = [{"object": i, "name": g.spelling["en"], "culture": g.culture,
              "shown_as": words.get(i, g.spelling[language])} for i, g in plan.names.items()]
    if source.kind != "yfcc":
        captions_all = {lang: describe(world, scene, plan, lang, style) for lang in LANGUAGES}
        caption = describe(world, scene, plan, language, style, words) if words else captions_all[language]
        return Published(caption, source.name, language, style, captions_all, _shown(names, caption))
    draw = rng.random()
    title_kind = ("missing" if draw < source.empty_title else
                  "filename" if draw < source.empty_title + source.filename_title else "text")
    filename = f"{['IMG_', 'DSC', 'P'][int(rng.integers(3))]}{int(rng.integers(10000)):04d}"
    captions_all = {lang: source.join.format(title=t, description=d) for lang in LANGUAGES
                    for t, d in [_yfcc_parts(world, scene, plan, lang, style, title_kind, filename, {})]}
    title, description = _yfcc_parts(world, scene, plan, language, style, title_kind, filename, words)
    caption = source.join.format(title=title, description=description)
    return Published(caption, source.name, language, style, captions_all, _shown(names, caption), title,
                     description)


def _shown(names: list[dict], caption: str) -> list[dict]:
    """The given names that made it into the caption (an empty caption or file-name title shows none)."""
    return [n for n in names if n["shown_as"] in caption]
