"""World config validation: the shipped default is valid; bad keys and values fail naming key and value."""

import copy

import pytest
import yaml

from crayonbox.data.world.build import make_world
from crayonbox.data.world.config import DEFAULT_CONFIG, load_world_config, parse_world_config
from crayonbox.errors import CrayonboxError

DEFAULT = yaml.safe_load(DEFAULT_CONFIG.read_text(encoding="utf-8"))


def _with(path: str, value):
    """The default config with one dotted key set (value None deletes it)."""
    data = copy.deepcopy(DEFAULT)
    *parents, last = path.split(".")
    node = data
    for key in parents:
        node = node[int(key) if key.isdigit() and int(key) in node else key]
    key = int(last) if last.isdigit() and int(last) in node else last
    if value is None:
        del node[key]
    else:
        node[key] = value
    return data


def test_default_config_is_valid_and_normalised():
    cfg = load_world_config()
    assert cfg.size == 64 and cfg.image_format == "png"
    assert abs(sum(cfg.categories.values()) - 1) < 1e-9
    assert cfg.person["skin_tone"][None] == pytest.approx(0.2)  # "none" → None, the yellow emoji
    sari = cfg.cooccurrence["sari"]["skin_tone"]
    assert sari[4] + sari[5] == pytest.approx(0.96)  # "sari drawn with tone 4–5 96 % of the time"
    assert [s.kind for s in cfg.sources] == ["cc3m", "cc12m", "yfcc"]
    assert cfg.sources[2].overrides["sari"]["language"]["hi"] == pytest.approx(0.8)


def test_default_world_is_broad_but_moderate():
    world = make_world(load_world_config())
    distinct = {e.seq for item in world.items.values() for e in item.variants.values()}
    assert 300 <= len(distinct) <= 700
    assert {"sari", "kimono", "dress", "woman with headscarf", "person wearing turban", "person in tuxedo"} \
        <= set(world.items)
    woman = world.items["person"].variants
    assert {t for g, t in woman if g == "woman"} == {None, 1, 2, 3, 4, 5}
    attires = {e.attire for item in world.items.values() for e in item.variants.values()}
    assert {"sari", "kimono", "hijab", "turban", "suit", "dress"} <= attires


@pytest.mark.parametrize("path, value, message", [
    ("colour_scheme", "dark", r"top level: unknown key\(s\) \['colour_scheme'\]"),
    ("size", 8, r"size: expected an integer ≥ 16.*got 8"),
    ("image_format", "gif", r"image_format: expected 'png' or 'jpg', got 'gif'"),
    ("objects_per_scene", {1: 1, 4: 1}, r"objects_per_scene: unknown outcome 4"),
    ("categories.vehicle", 0.2, r"categories: unknown outcome 'vehicle'"),
    ("categories.food", -1, r"categories.food: expected a non-negative weight, got -1"),
    ("person.skin_tone", {1: 1, 7: 1}, r"person.skin_tone: skin tone must be 1..5 or 'none', got 7"),
    ("person.gender", {"female": 1}, r"person.gender: unknown outcome 'female'"),
    ("cooccurrence.sari", {"tone": {5: 1}}, r"cooccurrence.sari: unknown key\(s\) \['tone'\]"),
    ("captions.synonym", 1.5, r"captions.synonym: expected a probability between 0 and 1, got 1.5"),
    ("background.colour", {"teal": 1}, r"background.colour: unknown outcome 'teal'"),
    ("layout.scale", {2: [0.6, 0.4]}, r"layout.scale.2: expected \[low, high\]"),
    ("sources.cc3m.language", {"en": 0.5, "hi": 0.5}, r"cc3m.language: a cc3m source is English-only"),
    ("sources.cc12m.style", {"short": 1, "empty": 1}, r"sources.cc12m.style: a cc12m source never has empty"),
    ("sources.yfcc.kind", "laion", r"sources.yfcc.kind: unknown kind 'laion'"),
    ("sources.yfcc.empty_title", 0.995, r"sources.yfcc: empty_title \+ filename_title must be ≤ 1"),
    ("sources.yfcc.join", "{title}", r"sources.yfcc.join: must contain \{title\} and \{description\}"),
    ("sources.yfcc.overrides.sari", {"language": {"xx": 1}}, r"sari.language: unknown outcome 'xx'"),
    ("source_mix.sari", {"laion": 1}, r"source_mix.sari: unknown outcome 'laion'"),
    ("proper_names.culture.default", None, r"proper_names.culture: needs a 'default' culture mix"),
    ("proper_names.culture.sari", {"viking": 1}, r"proper_names.culture.sari: unknown outcome 'viking'"),
])
def test_bad_values_name_key_and_value(path, value, message):
    with pytest.raises(CrayonboxError, match=message):
        parse_world_config(_with(path, value))


@pytest.mark.parametrize("path, value, message", [
    ("pool.attire", ["sarri", "kimono"], r"pool.attire: unknown emoji 'sarri'; did you mean \['sari'"),
    ("pool.person", ["person", "dog"], r"pool.person: 'dog' is not a person emoji"),
    ("source_mix.saree", {"yfcc": 1}, r"source_mix: unknown key 'saree'"),
    ("cooccurrence.saree", {"gender": {"woman": 1}}, r"cooccurrence: unknown key 'saree'; use an emoji name"),
    ("sources.yfcc.overrides.tophat", {"style": {"short": 1}}, r"yfcc.overrides: unknown key 'tophat'"),
])
def test_bad_names_fail_when_the_world_resolves(path, value, message):
    cfg = parse_world_config(_with(path, value))
    with pytest.raises(CrayonboxError, match=message):
        make_world(cfg)


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(CrayonboxError, match="world config not found"):
        load_world_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("size: [64\n", encoding="utf-8")
    with pytest.raises(CrayonboxError, match=r"broken.yaml is not valid YAML"):
        load_world_config(broken)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(yaml.safe_dump(_with("size", "big")), encoding="utf-8")
    with pytest.raises(CrayonboxError, match=r"wrong.yaml: world config: size: .*got 'big'"):
        load_world_config(wrong)
