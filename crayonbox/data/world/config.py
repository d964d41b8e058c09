"""World configuration: every knob that plants a bias, read from YAML and validated with errors that name the
bad key and value. The shipped default.yaml documents each field; `load_world_config()` reads it.

Keyed tables ("cooccurrence", "pair_with_person", "source_mix", "proper_names.rate/culture", a source's
"overrides") map a *key* to a setting. A key is an emoji name ("sari"), an attire ("hijab"), a category
("person") or "default"; for a scene, the first key that matches wins, in that order (World.rule_keys).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from crayonbox.data.world.given_names import CULTURES
from crayonbox.data.world.lexicon import LANGUAGES
from crayonbox.data.world.render import BACKGROUND_KINDS, COLOURS
from crayonbox.errors import CrayonboxError

DEFAULT_CONFIG = Path(__file__).with_name("default.yaml")
SOURCE_KINDS = ("plain", "cc3m", "cc12m", "yfcc")
STYLES = ("short", "long", "empty")
GENDERS = ("woman", "man", "neutral")
TONES = (None, 1, 2, 3, 4, 5)  # None = no modifier (the yellow default emoji)
POSITIONS = {1: ("centre",), 2: ("left", "right"), 3: ("left", "centre", "right")}

Mix = dict[Any, float]  # outcome → probability (normalised to sum 1)


@dataclass
class SourceConfig:
    """One caption source: how a share of the items gets its published caption."""

    name: str
    # plain | cc3m (English, names → hypernym) | cc12m (names → <PERSON>) | yfcc (title + description)
    kind: str = "plain"
    share: float = 1.0  # relative share of items from this source
    language: Mix = field(default_factory=lambda: {"en": 1.0})  # published caption language
    style: Mix = field(default_factory=lambda: {"short": 0.4, "long": 0.6})  # short / long / empty
    overrides: dict[str, dict[str, Mix]] = field(default_factory=dict)  # key → {"language"?, "style"?}
    hypernyms: list[str] = field(default_factory=lambda: ["person"])  # cc3m: what a given name becomes
    empty_title: float = 0.0  # yfcc: chance the title is missing
    filename_title: float = 0.0  # yfcc: chance the title is a camera file name ("IMG_4821")
    join: str = "{title}. {description}"  # yfcc: how dalle-mini assembled title and description


@dataclass
class WorldConfig:
    """The whole world. Mixes are relative weights; items within a category are uniform unless `weights`."""

    size: int = 64  # image side in px
    shard_size: int = 1000  # items per tar shard
    image_format: str = "png"  # png | jpg
    jpeg_quality: int = 90
    objects_per_scene: Mix = field(default_factory=lambda: {1: 0.5, 2: 0.35, 3: 0.15})
    categories: Mix = field(default_factory=dict)  # category → share of object slots
    pool: dict[str, list[str]] = field(default_factory=dict)  # category → English CLDR names / "subgroup:x"
    weights: dict[str, float] = field(default_factory=dict)  # item name → weight inside its category
    pair_with_person: dict[str, float] = field(default_factory=dict)  # key → chance a person joins the item
    person: dict[str, Mix] = field(default_factory=dict)  # {"gender": Mix, "skin_tone": Mix}
    cooccurrence: dict[str, dict[str, Mix]] = field(default_factory=dict)  # key → {"gender"?, "skin_tone"?}
    min_skin_fraction: float = 0.2  # person variants whose skin covers less of the sprite stay yellow-only
    background: dict[str, Mix] = field(default_factory=dict)  # {"kind": Mix, "colour": Mix}
    layout: dict[str, Any] = field(default_factory=dict)  # {"scale": {n: [lo, hi]}, "jitter": float}
    captions: dict[str, float] = field(default_factory=dict)  # mention_skin_tone, synonym, tags
    proper_names: dict[str, dict] = field(default_factory=dict)  # {"rate": key → p, "culture": key → Mix}
    sources: list[SourceConfig] = field(default_factory=list)
    source_mix: dict[str, Mix] = field(default_factory=dict)  # key → source mix replacing the shares


def _fail(where: str, message: str) -> CrayonboxError:
    return CrayonboxError(f"world config: {where}: {message}")


def _probability(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise _fail(where, f"expected a probability between 0 and 1, got {value!r}")
    return float(value)


def _mix(value: Any, where: str, allowed: tuple | None = None, convert=None) -> Mix:
    """Validate relative weights and normalise them to probabilities."""
    if not isinstance(value, dict) or not value:
        raise _fail(where, f"expected a mapping of outcome → weight, got {value!r}")
    out: Mix = {}
    for key, weight in value.items():
        key = convert(key, where) if convert else key
        if allowed is not None and key not in allowed:
            raise _fail(where, f"unknown outcome {key!r}; allowed: {list(allowed)}")
        if not _finite(weight) or weight < 0:
            raise _fail(f"{where}.{key}", f"expected a non-negative weight, got {weight!r}")
        out[key] = float(weight)
    total = sum(out.values())
    if total <= 0:
        raise _fail(where, "all weights are zero")
    return {k: w / total for k, w in out.items()}


def _finite(value: Any) -> bool:
    """A real number: YAML's .nan and .inf parse as floats, and a nan weight slips past every comparison."""
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


def _tone(key: Any, where: str) -> int | None:
    if key in ("none", None):
        return None
    if isinstance(key, int) and 1 <= key <= 5:
        return key
    raise _fail(where, f"skin tone must be 1..5 or 'none', got {key!r}")


def _mapping(data: dict, key: str, where: str) -> dict:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise _fail(f"{where}.{key}" if where else key, f"expected a mapping, got {value!r}")
    return value


def _check_keys(data: dict, known: set[str], where: str) -> None:
    unknown = sorted(str(k) for k in set(data) - known)
    if unknown:
        raise _fail(where or "top level", f"unknown key(s) {unknown}; known: {sorted(known)}")


def _attribute_mixes(value: Any, where: str) -> dict[str, Mix]:
    """{"gender": Mix, "skin_tone": Mix}, either optional."""
    if not isinstance(value, dict):
        raise _fail(where, f"expected a mapping with gender and/or skin_tone, got {value!r}")
    _check_keys(value, {"gender", "skin_tone"}, where)
    out = {}
    if "gender" in value:
        out["gender"] = _mix(value["gender"], f"{where}.gender", GENDERS)
    if "skin_tone" in value:
        out["skin_tone"] = _mix(value["skin_tone"], f"{where}.skin_tone", TONES, _tone)
    return out


def _source(name: str, data: Any) -> SourceConfig:
    where = f"sources.{name}"
    if not isinstance(data, dict):
        raise _fail(where, f"expected a mapping, got {data!r}")
    _check_keys(data, set(SourceConfig.__dataclass_fields__) - {"name"}, where)
    src = SourceConfig(name=name, **data)
    if src.kind not in SOURCE_KINDS:
        raise _fail(f"{where}.kind", f"unknown kind {src.kind!r}; use one of {SOURCE_KINDS}")
    if not _finite(src.share) or src.share < 0:
        raise _fail(f"{where}.share", f"expected a non-negative weight, got {src.share!r}")
    src.language = _mix(src.language, f"{where}.language", LANGUAGES)
    src.style = _mix(src.style, f"{where}.style", STYLES)
    overrides = {}
    for key, over in _mapping(data, "overrides", where).items():
        owhere = f"{where}.overrides.{key}"
        if not isinstance(over, dict):
            raise _fail(owhere, f"expected a mapping with language and/or style, got {over!r}")
        _check_keys(over, {"language", "style"}, owhere)
        overrides[key] = {}
        if "language" in over:
            overrides[key]["language"] = _mix(over["language"], f"{owhere}.language", LANGUAGES)
        if "style" in over:
            overrides[key]["style"] = _mix(over["style"], f"{owhere}.style", STYLES)
    src.overrides = overrides
    if src.kind in ("cc3m", "cc12m"):
        # Both come from English alt-text filtered to 3+ words: never another language, never empty.
        mixes = [src.language] + [o["language"] for o in overrides.values() if "language" in o]
        if any(set(m) - {"en"} for m in mixes):
            raise _fail(f"{where}.language", f"a {src.kind} source is English-only; remove other languages")
        styles = [src.style] + [o["style"] for o in overrides.values() if "style" in o]
        if any(m.get("empty", 0) > 0 for m in styles):
            raise _fail(f"{where}.style", f"a {src.kind} source never has empty captions; set empty to 0")
    if not isinstance(src.hypernyms, list) or not src.hypernyms or not all(isinstance(h, str) for h in
                                                                             src.hypernyms):
        raise _fail(f"{where}.hypernyms", f"expected a non-empty list of words, got {src.hypernyms!r}")
    src.empty_title = _probability(src.empty_title, f"{where}.empty_title")
    src.filename_title = _probability(src.filename_title, f"{where}.filename_title")
    if src.empty_title + src.filename_title > 1:
        total = src.empty_title + src.filename_title
        raise _fail(where, f"empty_title + filename_title must be ≤ 1, got {total}")
    if "{title}" not in src.join or "{description}" not in src.join:
        raise _fail(f"{where}.join", f"must contain {{title}} and {{description}}, got {src.join!r}")
    return src


def parse_world_config(data: Any) -> WorldConfig:
    """Build a validated WorldConfig from a parsed YAML mapping."""
    if not isinstance(data, dict):
        raise _fail("top level", f"expected a mapping, got {type(data).__name__}")
    _check_keys(data, set(WorldConfig.__dataclass_fields__), "")
    cfg = WorldConfig(**{k: v for k, v in data.items() if k != "sources"})
    if not isinstance(cfg.size, int) or isinstance(cfg.size, bool) or cfg.size < 16:
        raise _fail("size", f"expected an integer ≥ 16 (pixels), got {cfg.size!r}")
    if not isinstance(cfg.shard_size, int) or isinstance(cfg.shard_size, bool) or cfg.shard_size < 1:
        raise _fail("shard_size", f"expected a positive integer, got {cfg.shard_size!r}")
    if cfg.image_format not in ("png", "jpg"):
        raise _fail("image_format", f"expected 'png' or 'jpg', got {cfg.image_format!r}")
    quality = cfg.jpeg_quality
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise _fail("jpeg_quality", f"expected an integer from 1 to 100, got {quality!r}")
    cfg.objects_per_scene = _mix(cfg.objects_per_scene, "objects_per_scene", tuple(POSITIONS))
    if not isinstance(cfg.pool, dict) or not cfg.pool:
        raise _fail("pool", "expected a mapping of category → list of emoji names")
    for category, names in cfg.pool.items():
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise _fail(f"pool.{category}", f"expected a non-empty list of emoji names, got {names!r}")
    cfg.categories = _mix(cfg.categories, "categories", tuple(cfg.pool))
    for name, weight in _mapping(data, "weights", "").items():
        if not _finite(weight) or weight <= 0:
            raise _fail(f"weights.{name}", f"expected a positive weight, got {weight!r}")
    cfg.pair_with_person = {k: _probability(v, f"pair_with_person.{k}")
                            for k, v in _mapping(data, "pair_with_person", "").items()}
    person = _mapping(data, "person", "")
    _check_keys(person, {"gender", "skin_tone"}, "person")
    cfg.person = {
        "gender": _mix(person.get("gender", dict.fromkeys(GENDERS, 1)), "person.gender", GENDERS),
        "skin_tone": _mix(person.get("skin_tone", dict.fromkeys(TONES, 1)), "person.skin_tone", TONES, _tone),
    }
    cfg.cooccurrence = {k: _attribute_mixes(v, f"cooccurrence.{k}")
                        for k, v in _mapping(data, "cooccurrence", "").items()}
    cfg.min_skin_fraction = _probability(cfg.min_skin_fraction, "min_skin_fraction")
    bg = _mapping(data, "background", "")
    _check_keys(bg, {"kind", "colour"}, "background")
    cfg.background = {"kind": _mix(bg.get("kind", {"plain": 1}), "background.kind", BACKGROUND_KINDS),
                      "colour": _mix(bg.get("colour", dict.fromkeys(COLOURS, 1)), "background.colour",
                                     tuple(COLOURS))}
    cfg.layout = _layout(_mapping(data, "layout", ""))
    captions = _mapping(data, "captions", "")
    _check_keys(captions, {"mention_skin_tone", "synonym", "tags"}, "captions")
    cfg.captions = {k: _probability(captions.get(k, d), f"captions.{k}")
                    for k, d in (("mention_skin_tone", 0.5), ("synonym", 0.1), ("tags", 0.0))}
    cfg.proper_names = _proper_names(_mapping(data, "proper_names", ""))
    sources = _mapping(data, "sources", "")
    if not sources:
        raise _fail("sources", "define at least one caption source")
    cfg.sources = [_source(name, value) for name, value in sources.items()]
    if sum(s.share for s in cfg.sources) <= 0:
        raise _fail("sources", "all source shares are zero")
    names = tuple(s.name for s in cfg.sources)
    cfg.source_mix = {k: _mix(v, f"source_mix.{k}", names)
                      for k, v in _mapping(data, "source_mix", "").items()}
    return cfg


def _layout(data: dict) -> dict[str, Any]:
    _check_keys(data, {"scale", "jitter"}, "layout")
    scale = {1: (0.6, 0.8), 2: (0.42, 0.5), 3: (0.3, 0.33)}
    for n, bounds in _mapping(data, "scale", "layout").items():
        if n not in POSITIONS:
            raise _fail(f"layout.scale.{n}", f"object counts are {list(POSITIONS)}")
        ok = isinstance(bounds, list) and len(bounds) == 2 and all(_finite(b) for b in bounds)
        if not ok or not 0.05 <= bounds[0] <= bounds[1] <= 1.0:
            raise _fail(f"layout.scale.{n}", f"expected [low, high] fractions of the side, got {bounds!r}")
        scale[n] = (float(bounds[0]), float(bounds[1]))
    return {"scale": scale, "jitter": _probability(data.get("jitter", 0.04), "layout.jitter")}


def _proper_names(data: dict) -> dict[str, dict]:
    _check_keys(data, {"rate", "culture"}, "proper_names")
    rate = {k: _probability(v, f"proper_names.rate.{k}")
            for k, v in _mapping(data, "rate", "proper_names").items()}
    culture = {k: _mix(v, f"proper_names.culture.{k}", CULTURES)
               for k, v in _mapping(data, "culture", "proper_names").items()}
    if any(rate.values()) and "default" not in culture:
        raise _fail("proper_names.culture", "needs a 'default' culture mix when any rate is above 0")
    return {"rate": rate, "culture": culture}


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (plain YAML keeps the last one silently, so a
    pasted second `sari:` rule would quietly replace the first)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: the base constructor reports it
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def parse_world_yaml(text: str) -> Any:
    """YAML text → data, with duplicate keys an error (yaml.YAMLError)."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


def load_world_config(path: Path | str | None = None) -> WorldConfig:
    """Read and validate a world config (the shipped default.yaml when `path` is None)."""
    path = Path(path) if path else DEFAULT_CONFIG
    try:
        data = parse_world_yaml(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CrayonboxError(f"world config not found: {path}") from None
    except IsADirectoryError:
        raise CrayonboxError(f"world config {path} is a folder: give the YAML file") from None
    except UnicodeDecodeError as e:
        raise CrayonboxError(f"world config {path} is not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise CrayonboxError(f"cannot read world config {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise CrayonboxError(f"world config {path} is not valid YAML: {' '.join(str(e).split())}") from None
    try:
        return parse_world_config(data)
    except CrayonboxError as e:
        raise CrayonboxError(f"{path}: {e}") from None
