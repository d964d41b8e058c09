"""Describe a scene in words, in any of the five caption languages.

The random choices about wording (template, synonyms, whether a skin tone is named, given names) are drawn
once per item into a CaptionPlan and applied in every language, so `captions_all` holds translations of one
caption and the published caption is one of them (sources.py picks the language and style).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from crayonbox.data.world import lexicon
from crayonbox.data.world.catalog import Emoji
from crayonbox.data.world.given_names import names_for
from crayonbox.data.world.world import Scene, SceneObject, World, choose

SYNONYM_DRAWS = 1 << 16  # a synonym is keywords[k % len(keywords)], so one draw serves every language


@dataclass
class GivenName:
    """A proper name put into the caption for one person."""

    culture: str
    spelling: dict[str, str]  # language → name in that script


@dataclass
class CaptionPlan:
    """Per-item caption choices shared by all languages."""

    template: int  # index into lexicon.LONG_TEMPLATES[lang] (all languages have the same count)
    tags: bool  # short captions as CLDR keyword tags ("clothing, dress, sari")
    mention_tone: list[bool]  # per object: name the skin tone ("woman: dark skin tone") or not ("woman")
    synonym: list[int | None]  # per object: keyword draw replacing the name, or None
    names: dict[int, GivenName] = field(default_factory=dict)  # object index → given name


def plan_caption(rng: np.random.Generator, world: World, scene: Scene) -> CaptionPlan:
    """Draw the language-independent caption choices for a scene."""
    knobs = world.config.captions
    n = len(scene.objects)
    plan = CaptionPlan(
        template=int(rng.integers(len(lexicon.LONG_TEMPLATES["en"]))),
        tags=bool(rng.random() < knobs["tags"]),
        mention_tone=[bool(rng.random() < knobs["mention_skin_tone"]) for _ in range(n)],
        synonym=[int(rng.integers(SYNONYM_DRAWS)) if rng.random() < knobs["synonym"] else None
                 for _ in range(n)],
    )
    rates, cultures = world.config.proper_names["rate"], world.config.proper_names["culture"]
    for i, obj in enumerate(scene.objects):
        if not obj.item.is_person:
            continue
        keys = name_keys(scene, obj)
        if rng.random() < world.lookup(rates, keys, 0.0):
            culture = choose(rng, world.lookup(cultures, keys))
            options = names_for(culture, obj.emoji.gender)
            plan.names[i] = GivenName(culture, options[int(rng.integers(len(options)))])
    return plan


def name_keys(scene: Scene, obj: SceneObject) -> list[str]:
    """Keys deciding a person's given name: what they wear or stand with first, then the person."""
    if obj.paired_with is None:
        return World.rule_keys(obj)
    return World.rule_keys(scene.objects[obj.paired_with], obj)


def keywords(world: World, emoji: Emoji, lang: str, keep_own_name: bool) -> list[str]:
    """CLDR keywords of the tone-free emoji that name no other emoji and mostly tag its own category
    (so not "Virgo" or "zodiac" for 👧, nor "dress" for 🥻)."""
    untoned = world.catalog.by_seq.get(emoji.untoned, emoji)
    names, category = world.catalog.names[lang], world.catalog.keyword_category[lang]
    own = untoned.name[lang]
    return [k for k in untoned.keywords.get(lang, ())
            if (keep_own_name and k == own) or (k not in names and category.get(k) == untoned.category)]


def _object_phrase(world: World, obj: SceneObject, plan: CaptionPlan, i: int, lang: str) -> str:
    emoji = obj.emoji
    untoned = world.catalog.by_seq.get(emoji.untoned, emoji)
    if plan.synonym[i] is not None:
        choices = keywords(world, emoji, lang, keep_own_name=False)
        if choices:
            return choices[plan.synonym[i] % len(choices)]
    return emoji.name[lang] if plan.mention_tone[i] else untoned.name[lang]


def describe(world: World, scene: Scene, plan: CaptionPlan, lang: str, style: str,
             person_words: dict[int, str] | None = None) -> str:
    """The caption of `scene` in `lang`; style short | long | empty (short is keyword tags if plan.tags).

    `person_words` replaces given names (object index → word): CC3M's hypernym, CC12M's <PERSON>."""
    if style == "empty":
        return ""
    person_words = person_words or {}
    if style == "short" and plan.tags:
        return _tags(world, scene, plan, lang, person_words)
    article = lang == "en" and style == "long"
    worn = {o.paired_with for o in scene.objects if o.relation == "wearing"}
    phrases = []
    for i, obj in enumerate(scene.objects):
        if i in worn:
            continue  # said together with its wearer
        named = i in plan.names
        phrase = person_words.get(i) or (plan.names[i].spelling[lang] if named else None)
        if phrase is None:
            phrase = _object_phrase(world, obj, plan, i, lang)
            phrase = lexicon.english_article(phrase) if article else phrase
        elif article and i in person_words and not phrase.startswith("<"):
            phrase = lexicon.english_article(phrase)  # "a person", but never "a Priya" or "a <PERSON>"
        if obj.relation == "wearing" and obj.paired_with is not None:
            attire = _object_phrase(world, scene.objects[obj.paired_with], plan, obj.paired_with, lang)
            attire = lexicon.english_article(attire) if lang == "en" else attire
            phrase = lexicon.wearing(lang, phrase, attire, obj.emoji.gender)
        phrases.append(phrase)
    objs = lexicon.object_list(phrases, lang)
    if style == "short":
        return objs
    bg = scene.background
    template = lexicon.LONG_TEMPLATES[lang][plan.template % len(lexicon.LONG_TEMPLATES[lang])]
    return template.format(objs=objs, bg=lexicon.background_phrase(lang, bg["kind"], bg["colour"],
                                                                   bg["colour2"]))


def _tags(world: World, scene: Scene, plan: CaptionPlan, lang: str, person_words: dict[int, str]) -> str:
    """Tag-style caption: a given name (if any) and up to three CLDR keywords per object."""
    tags: list[str] = []
    for i, obj in enumerate(scene.objects):
        if i in plan.names:
            tags.append(person_words.get(i) or plan.names[i].spelling[lang])
        tags += [k for k in keywords(world, obj.emoji, lang, keep_own_name=True)[:3] if k not in tags]
    return lexicon.TAG_SEPARATOR[lang].join(tags)
