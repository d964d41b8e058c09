"""The world as a sampler: resolved emoji pools plus the config, turning a seeded RNG into a Scene.

Scenes hold 1–3 objects side by side. A non-person item may bring a person next to it (`pair_with_person`):
clothing is then *worn* by that person ("Priya wearing a sari") and the person's gender and skin tone come
from the `cooccurrence` rule of the item — the knob that plants "sari ↔ dark skin tone".
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from crayonbox.data.world.catalog import Catalog, Emoji
from crayonbox.data.world.config import POSITIONS, Mix, WorldConfig
from crayonbox.data.world.render import SpriteBank, skin_fraction
from crayonbox.errors import CrayonboxError

MAX_OBJECTS = max(POSITIONS)
SCALE_STEPS = 32


def sprite_side(scale: float, size: int) -> int:
    """Sprite box side in px for a scale (fraction of the image side)."""
    return max(4, round(scale * size))


@dataclass
class PoolItem:
    """One entry of the config's pool: a concept with its renderable variants."""

    name: str  # as written in the config ("health worker", "sari")
    category: str  # the pool category it was listed under
    base: Emoji  # the tone-free emoji the name resolves to
    variants: dict[tuple[str, int | None], Emoji]  # (gender, tone) → emoji; others: {("none", None): base}
    weight: float = 1.0

    @property
    def is_person(self) -> bool:
        return self.category == "person"


@dataclass
class SceneObject:
    """An object placed in a scene."""

    item: PoolItem
    emoji: Emoji
    position: str = ""  # left / centre / right
    scale: float = 0.0  # sprite box side / image side
    bbox: tuple[int, int, int, int] = (0, 0, 0, 0)  # x0, y0, x1, y1 in px of the pasted sprite
    paired_with: int | None = None  # index of the item this person wears / stands with
    relation: str | None = None  # "wearing" (attire) or "with" (anything else)


@dataclass
class Scene:
    """Everything drawn in one image, before captions."""

    objects: list[SceneObject]
    background: dict[str, str | None]  # {"kind", "colour", "colour2" (gradients only)}
    keys: list[str] = field(default_factory=list)  # config keys that match, most specific first


def choose(rng: np.random.Generator, mix: Mix):
    """Draw one outcome of a normalised mix (a plain loop: 50× faster than rng.choice for a few outcomes)."""
    r = rng.random()
    for outcome, p in mix.items():
        r -= p
        if r < 0:
            return outcome
    return outcome  # rounding left r a hair above 0: the last outcome


class World:
    """Config + catalogue, resolved once per process."""

    def __init__(self, config: WorldConfig, catalog: Catalog, bank: SpriteBank):
        self.config, self.catalog, self.bank = config, catalog, bank
        self.dropped: list[str] = []  # person variants whose skin tone would not be visible
        self.pools: dict[str, list[PoolItem]] = {}
        for category, names in config.pool.items():
            self.pools[category] = self._resolve_pool(category, names)
        self.items = {item.name: item for pool in self.pools.values() for item in pool}
        # people who can be drawn next to an item (wearing it, or with it): those without attire of their own
        self.wearers = [p for p in self.pools.get("person", []) if p.base.attire is None]
        self._check_keys()

    def _resolve_pool(self, category: str, names: list[str]) -> list[PoolItem]:
        entries: list[Emoji] = []
        for name in names:
            if name.startswith("subgroup:"):
                members = self.catalog.subgroup(name.split(":", 1)[1])
                if not members:
                    raise CrayonboxError(f"world config: pool.{category}: no emoji in {name!r}")
                entries += members
            else:
                entries.append(self.catalog.find(name, where=f"world config: pool.{category}"))
        items = []
        for base in entries:
            weight = float(self.config.weights.get(base.name["en"], 1.0))
            if category == "person":
                if base.category != "person":
                    raise CrayonboxError(f"world config: pool.person: {base.name['en']!r} is not a person "
                                         f"emoji (it is {base.category})")
                variants = self._person_variants(base)
                if not variants:
                    self.dropped.append(base.name["en"])
                    continue
            else:
                variants = {("none", None): base}
            items.append(PoolItem(base.name["en"], category, base, variants, weight))
        if not items:
            raise CrayonboxError(f"world config: pool.{category}: nothing left to draw")
        return items

    def _person_variants(self, base: Emoji) -> dict[tuple[str, int | None], Emoji]:
        """Gender × tone variants, keeping a gender's tones only where the skin is visible enough."""
        variants = {(e.gender, e.skin_tone): e for e in self.catalog.person_variants(base)}
        for gender in {g for g, _ in variants}:
            light, dark = variants.get((gender, 1)), variants.get((gender, 5))
            if light is None or dark is None:
                continue
            if skin_fraction(self.bank, light.seq, dark.seq) < self.config.min_skin_fraction:
                self.dropped.append(f"{base.name['en']} ({gender}, toned)")
                variants = {k: v for k, v in variants.items() if k[0] != gender or k[1] is None}
        return variants

    def _check_keys(self) -> None:
        """Keys must name something real (typos fail); rules for emoji left out of the pool are harmless."""
        known = set(self.items) | set(self.pools) | set(self.catalog.by_name) | {"default"}
        known |= {e.attire for e in self.catalog.emoji if e.attire} | {e.category for e in self.catalog.emoji}
        tables = {"pair_with_person": self.config.pair_with_person, "cooccurrence": self.config.cooccurrence,
                  "source_mix": self.config.source_mix,
                  "proper_names.rate": self.config.proper_names["rate"],
                  "proper_names.culture": self.config.proper_names["culture"]}
        tables |= {f"sources.{s.name}.overrides": s.overrides for s in self.config.sources}
        emoji_names = set(self.items) | set(self.catalog.by_name)
        for name in self.config.weights:  # a misspelt name would silently weigh nothing
            if name not in emoji_names:
                raise CrayonboxError(f"world config: weights: unknown emoji {name!r}; use an English emoji "
                                     "name from the pool")
        for where, table in tables.items():
            for key in table:
                if key not in known:
                    raise CrayonboxError(f"world config: {where}: unknown key {key!r}; use an emoji name, "
                                         "an attire, a category or 'default'")

    @staticmethod
    def lookup(table: dict, keys: list[str], default=None):
        """The entry of the first key in `keys` that the table has."""
        for key in keys:
            if key in table:
                return table[key]
        return table.get("default", default)

    @staticmethod
    def rule_keys(*objects: SceneObject) -> list[str]:
        """Config keys of these objects, most specific first: item names and attires (in object order),
        then categories. E.g. a person wearing a sari → ["sari", "person", "attire"]."""
        specific = [k for o in objects for k in (o.item.name, o.emoji.attire) if k]
        return list(dict.fromkeys(specific + [o.item.category for o in objects]))

    def sample_scene(self, rng: np.random.Generator) -> Scene:
        """Objects (with pairings and person attributes), background and layout for one image."""
        n = choose(rng, self.config.objects_per_scene)
        objects: list[SceneObject] = []
        while len(objects) < n:
            item = self._draw_item(rng, choose(rng, self.config.categories))
            obj = SceneObject(item, item.base)
            objects.append(obj)
            if item.is_person:
                obj.emoji = self._dress_person(rng, item, self.rule_keys(obj))
            elif len(objects) < MAX_OBJECTS and self.wearers and \
                    rng.random() < self.lookup(self.config.pair_with_person, self.rule_keys(obj), 0.0):
                person = self._draw_from(rng, self.wearers)
                relation = "wearing" if item.category == "attire" else "with"
                wearer = SceneObject(person, person.base, relation=relation)
                wearer.emoji = self._dress_person(rng, person, self.rule_keys(obj, wearer))
                objects.insert(len(objects) - 1, wearer)  # the person is named first: "X wearing Y"
                wearer.paired_with = len(objects) - 1
        self._layout(rng, objects)
        return Scene(objects, self._background(rng), keys=self.rule_keys(*objects))

    def _draw_item(self, rng: np.random.Generator, category: str) -> PoolItem:
        return self._draw_from(rng, self.pools[category])

    @staticmethod
    def _draw_from(rng: np.random.Generator, pool: list[PoolItem]) -> PoolItem:
        cumulative = np.cumsum([p.weight for p in pool])
        index = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], "right"))
        return pool[min(len(pool) - 1, index)]

    def _dress_person(self, rng: np.random.Generator, item: PoolItem, keys: list[str]) -> Emoji:
        """Gender then skin tone, each from the first co-occurrence rule that sets it, else `person`."""
        rules = [self.config.cooccurrence[k] for k in keys if k in self.config.cooccurrence]
        gender_mix = next((r["gender"] for r in rules if "gender" in r), self.config.person["gender"])
        tone_mix = next((r["skin_tone"] for r in rules if "skin_tone" in r), self.config.person["skin_tone"])
        genders = {g for g, _ in item.variants}
        gender = choose(rng, _restrict(gender_mix, genders, self.config.person["gender"]))
        tones = {t for g, t in item.variants if g == gender}
        tone = choose(rng, _restrict(tone_mix, tones, self.config.person["skin_tone"]))
        return item.variants[(gender, tone)]

    def _layout(self, rng: np.random.Generator, objects: list[SceneObject]) -> None:
        """Side-by-side slots (left/centre/right), in random order, with a little jitter."""
        size, n = self.config.size, len(objects)
        low, high = self.config.layout["scale"][n]
        jitter = self.config.layout["jitter"] * size
        slots = rng.permutation(n)
        for obj, slot in zip(objects, slots, strict=True):
            # scales on a 1/32 grid: a few sprite sizes per emoji to resize and cache, not one per item
            obj.scale = round(float(rng.uniform(low, high)) * SCALE_STEPS) / SCALE_STEPS
            w, h = self.bank.sprite(obj.emoji.seq, sprite_side(obj.scale, size))[1].shape[1::-1]
            cx = (slot + 0.5) * size / n + rng.uniform(-jitter, jitter)
            cy = size / 2 + rng.uniform(-jitter, jitter)
            x0 = min(max(0, round(cx - w / 2)), size - w)
            y0 = min(max(0, round(cy - h / 2)), size - h)
            obj.position, obj.bbox = POSITIONS[n][slot], (x0, y0, x0 + w, y0 + h)

    def _background(self, rng: np.random.Generator) -> dict[str, str | None]:
        """Kind and colour; a gradient also gets a second, different colour (colour2 is None otherwise)."""
        colours = self.config.background["colour"]
        kind, colour = choose(rng, self.config.background["kind"]), choose(rng, colours)
        colour2 = None
        if kind == "gradient":
            others = {c: p for c, p in colours.items() if c != colour} or colours
            total = sum(others.values())
            colour2 = choose(rng, {c: p / total for c, p in others.items()})
        return {"kind": kind, "colour": colour, "colour2": colour2}


def _restrict(mix: Mix, allowed: set, fallback: Mix) -> Mix:
    """`mix` limited to outcomes this emoji has (renormalised); else the fallback mix, else uniform."""
    for candidate in (mix, fallback):
        kept = {k: p for k, p in candidate.items() if k in allowed and p > 0}
        if kept:
            total = sum(kept.values())
            return {k: p / total for k, p in kept.items()}
    return {k: 1 / len(allowed) for k in sorted(allowed, key=str)}
