"""The normaliser: each official step alone, the whole pipeline on the reference's examples, the modes."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from crayonbox.errors import CrayonboxError
from crayonbox.text import normalize as n
from crayonbox.text.hashtags import split_hashtag, word_costs
from crayonbox.text.normalize import (
    STEP_NAMES,
    NormalizerConfig,
    TextNormalizer,
    normalize,
    normalize_with_trace,
)

OFFICIAL = NormalizerConfig()
MULTILINGUAL = NormalizerConfig("multilingual")
RAW = NormalizerConfig("raw")


def test_steps_run_in_the_official_order():
    assert STEP_NAMES == (
        "fix_text", "fix_html", "demojize", "unidecode", "lower", "replace_person_token", "remove_wiki_ref",
        "remove_html_tags", "remove_urls", "remove_comma_numbers", "protect", "handle_special_chars",
        "expand_hashtags", "ignore_chars", "simplify_quotes", "replace_punctuation_with_commas", "unprotect",
        "remove_repeating_chars", "merge_quotes", "merge_commas", "remove_extra_spaces", "strip_commas",
        "add_leading_space",
    )


@pytest.mark.parametrize(
    "step, text, expected",
    [
        (n.fix_text, "schÃ¶n", "schön"),  # mojibake repaired
        (n.fix_text, "“quoted”", '"quoted"'),
        (n.fix_html, "fish &amp;amp; chips", "fish & chips"),  # unescaped twice
        (n.fix_html, "&lt;b&gt;", "<b>"),
        (n.demojize, "i ❤️ you", "i :red_heart: you"),
        (n.transliterate, "café", "cafe"),
        (n.transliterate, "महिला", "mhilaa"),
        (n.transliterate, "Женщина", "Zhenshchina"),
        (n.lower, "A Red CAR", "a red car"),
        (n.replace_person_token, "<person> and <person> dance", " people  dance"),
        (n.replace_person_token, "<person>, <person> and <person>", " people "),
        (n.remove_wiki_ref, "[12] paris [3]", " paris "),
        (n.remove_wiki_ref, "paris [3] france", "paris [3] france"),  # only at the ends
        (n.remove_html_tags, "<b>bold</b> text", " bold  text"),
        (n.remove_urls, "see https://x.com/a?b=1 now", "see  now"),
        (n.remove_comma_numbers, "1,000,000 people", "1000000 people"),
        (n.remove_comma_numbers, "1,2 and a,b", "1,2 and a,b"),
        (n.handle_special_chars, "well-known", "well known"),
        (n.handle_special_chars, "50% off $5", "50 %  off  $ 5"),
        (n.handle_special_chars, "*", " * "),
        (n.expand_hashtags, "#ilovenewyork", "i love new york"),
        (n.expand_hashtags, "at #sunsetbeach!", "at sunset beach!"),
        (n.expand_hashtags, "#ny2022", "ny 2022"),  # digits glued back together
        (n.expand_hashtags, "#महिला", "#महिला"),  # non-ASCII hashtag left for ignore_chars
        (n.ignore_chars, "a_b#c\\d", "a b c d"),
        (n.simplify_quotes, "it`s 'x' \"y\"", 'it " s  " x "   " y " '),
        (n.replace_punctuation_with_commas, "a.b(c)[d]{e}|f:g;h?i!j=k+l~m-n/o",
         "a,b,c,,d,,e,,f,g,h,i,j,k,l,m,n,o"),
        (n.replace_punctuation_with_commas, "$ * % &", "$ * % &"),  # these survive as words
        (n.remove_repeating_chars, "sooooo good!!!!", "so good!"),
        (n.remove_repeating_chars, "viii 1111 sooo", "viii 1111 sooo"),  # 3 repeats and digits stay
        (n.merge_quotes, 'a  "  " b', 'a " b'),
        (n.merge_commas, "a , ,, b", "a, b"),
        (n.remove_extra_spaces, "a \t\n  b", "a b"),
        (n.strip_commas, " , a, b , ", "a, b"),
        (n.strip_commas, ",", ""),  # what '.', '?' ... have become by now
        (n.add_leading_space, "", " "),
        (n.add_leading_space, "a red car", " a red car"),
    ],
)
def test_each_step(step, text, expected):
    assert step(text) == expected


def test_protection_hides_dots_quotes_and_dates_from_the_punctuation_pass():
    text = "e.g 3.5 kg on 12/05, it's"
    hidden = n.protect(text)
    assert "." not in hidden and "/" not in hidden and "'" not in hidden
    assert n.unprotect(n.replace_punctuation_with_commas(hidden)) == "e.g 3.5 kg on 12/05, it's"
    assert n.replace_punctuation_with_commas(text) == "e,g 3,5 kg on 12,05, it's"  # without protection


# The reference's list: all of these become the same text, a lone space.
BLANKS = ["", " ", ".", ":", ";", ",", "?", "!", "-", "#", "_", "/", "+", "=", "https://example.com/a?b=1",
          "<b></b>", "  \t\n", "...", "?!"]


@pytest.mark.parametrize("text", BLANKS)
def test_blank_like_prompts_all_become_a_lone_space(text):
    assert normalize(text) == " "


@pytest.mark.parametrize(
    "text, expected",
    [
        ("$", " $"),
        ("*", " *"),
        ("'", ' "'),
        ("1,000,000", " 1000000"),
        ("I ❤️ you", " i, red heart, you"),
        ("#ilovenewyork sunset", " i love new york sunset"),
        ("A photo of a CAT.", " a photo of a cat"),
        ("e.g. 3.5 kg on 12/05 it's", " e.g, 3.5 kg on 12/05 it's"),
        ("[12] Paris, France [3]", " paris, france"),
        ("fish &amp;amp; chips", " fish & chips"),
        ("café 中文", " cafe zhong wen"),
    ],
)
def test_official_pipeline_examples(text, expected):
    assert normalize(text) == expected


def test_emoji_become_their_english_names():
    assert "red heart" in normalize("❤️")


def test_raw_mode_passes_text_unchanged():
    for text in ["", " ", ".", "Hello, World!", "साड़ी पहने एक महिला", "<person> #tag"]:
        final, trace = normalize_with_trace(text, RAW)
        assert final == text and trace == []


def test_multilingual_mode_keeps_devanagari_and_official_transliterates_it():
    hindi = "साड़ी पहने एक महिला"  # "a woman wearing a sari"
    assert normalize(hindi, MULTILINGUAL) == " " + hindi
    assert normalize(hindi, OFFICIAL) == ' saadd " ii phne ek mhilaa'  # unidecode's apostrophe became a quote
    assert normalize("#महिला at the beach!", MULTILINGUAL) == " महिला at the beach"
    assert "unidecode" not in MULTILINGUAL.enabled_steps
    assert len(MULTILINGUAL.enabled_steps) == len(STEP_NAMES) - 1


def test_disabled_steps_are_skipped():
    config = NormalizerConfig(disabled_steps=("add_leading_space", "remove_urls"))
    assert normalize("", config) == ""
    assert normalize("see http://x.com", config) == "see http, x.com"  # the URL is now kept, as words
    assert config.enabled_steps == tuple(s for s in STEP_NAMES if s not in config.disabled_steps)
    assert len(config.enabled_steps) == len(STEP_NAMES) - 2


@pytest.mark.parametrize(
    "kwargs",
    [{"mode": "english"}, {"disabled_steps": ("no_such_step",)}, {"disabled_steps": ("protect",)}],
)
def test_bad_configs_are_refused(kwargs):
    with pytest.raises(CrayonboxError):
        NormalizerConfig(**kwargs)


def test_config_round_trips_through_normalizer_json(tmp_path):
    config = NormalizerConfig("multilingual", ("expand_hashtags",))
    path = config.save(tmp_path)
    assert path.name == "normalizer.json"
    assert NormalizerConfig.load(tmp_path) == config
    assert NormalizerConfig.load(tmp_path / "elsewhere") == NormalizerConfig()  # no file: official
    path.write_text('{"mode": "raw", "typo": 1}')
    with pytest.raises(CrayonboxError):
        NormalizerConfig.load(tmp_path)


def test_trace_shows_each_step_output():
    final, trace = normalize_with_trace(".")
    assert final == " "
    assert [name for name, _ in trace] == list(STEP_NAMES)
    outputs = dict(trace)
    assert outputs["replace_punctuation_with_commas"] == ","
    assert outputs["merge_commas"] == ", "
    assert outputs["strip_commas"] == ""
    assert outputs["add_leading_space"] == " "


def test_person_token_is_repeatable_for_the_same_prompt():
    prompt = "A photo of <PERSON> on a bike"
    first = normalize(prompt)
    assert all(TextNormalizer()(prompt) == first for _ in range(5))
    assert first in {" a photo of a person on a bike", " a photo of someone on a bike",
                     " a photo of somebody on a bike"}


def test_person_token_keeps_the_official_proportions_across_prompts():
    # 3000 different prompts, each seeded by its own text: the words should follow 282265:121194:12219.
    counts = Counter()
    for i in range(3000):
        text = n.replace_person_token(f"<person> number {i}")
        counts[next(w for w, _ in n.PERSON_WORDS if text.startswith(f" {w} "))] += 1
    total = sum(weight for _, weight in n.PERSON_WORDS)
    for word, weight in n.PERSON_WORDS:
        assert abs(counts[word] / 3000 - weight / total) < 0.035, (word, counts)


def test_person_token_can_use_an_explicit_rng():
    texts = {TextNormalizer(rng=random.Random(7))("<person> smiles") for _ in range(3)}
    assert len(texts) == 1  # the same seed, the same words
    draws = {n.replace_person_token("<person> x", rng=random.Random(seed)) for seed in range(300)}
    assert draws == {" a person  x", " someone  x", " somebody  x"}  # the rng, not the text, decides


def test_hashtag_word_costs_come_from_the_ranked_wordfreq_list():
    costs, longest = word_costs()
    assert costs["the"] == 0.0  # rank 0 → log(1)
    assert costs["to"] == pytest.approx(math.log(2))
    assert len(costs) > 100_000 and longest >= 20
    assert split_hashtag("sunsetbeach") == "sunset beach"
    assert split_hashtag("It'sFine") == "It's Fine"
