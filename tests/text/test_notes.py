"""Notes: nothing the normaliser does to non-Latin text, emoji, URLs or blank prompts goes unsaid."""

from __future__ import annotations

from crayonbox.text.normalize import NormalizerConfig, TextNormalizer
from crayonbox.text.notes import normalize_with_notes, script_names

MULTILINGUAL = TextNormalizer(NormalizerConfig("multilingual"))


def test_unidecode_transliteration_is_reported_with_the_script():
    report = normalize_with_notes("एक महिला")
    assert report.final == " ek mhilaa"
    assert report.notes == ["unidecode transliterated Devanagari 'एक महिला' → 'ek mhilaa'"]


def test_characters_unidecode_deletes_are_reported():
    report = normalize_with_notes("ꙮ eye")
    assert report.final == " eye"
    assert report.notes == ["unidecode deleted Cyrillic 'ꙮ' (it has no ASCII spelling)"]


def test_multilingual_mode_says_what_it_kept():
    report = normalize_with_notes("a woman, एक महिला", MULTILINGUAL)
    assert report.final == " a woman, एक महिला"
    assert report.notes == ["kept Devanagari 'एक महिला' as written (multilingual mode: unidecode is off)"]
    assert normalize_with_notes("café", MULTILINGUAL).notes == []  # accented Latin is not worth a note


def test_blank_prompts_say_they_collapsed_to_a_lone_space():
    for text in ["", " ", ".", ",", "<b></b>"]:
        notes = normalize_with_notes(text).notes
        assert notes[-1].startswith("text normalised to a lone space: the same input as '', ' ', '.', ','")
    assert normalize_with_notes("", TextNormalizer(NormalizerConfig("raw"))).notes == []


def test_emoji_urls_tags_and_hashtags_are_reported():
    report = normalize_with_notes("I ❤️ it http://x.com <i>hi</i> #sunsetbeach")
    assert report.final == " i, red heart, it hi sunset beach"
    assert report.notes == [
        "demojize spelled emoji '❤️' as ':red_heart:'",
        "remove_html_tags deleted '<i>', '</i>'",
        "remove_urls deleted 'http://x.com'",
        "expand_hashtags split '#sunsetbeach' → 'sunset beach'",
    ]


def test_person_placeholder_rewrite_is_reported():
    notes = normalize_with_notes("<PERSON> smiles").notes
    assert len(notes) == 1 and notes[0].startswith("replace_person_token rewrote the CC12M '<person>'")


def test_report_trace_matches_the_steps():
    report = normalize_with_notes("Hi!")
    assert report.trace[-1] == ("add_leading_space", " hi")
    assert report.final == " hi" and report.text == "Hi!"


def test_script_names():
    assert script_names("महिला") == "Devanagari"
    assert script_names("中文 ひらがな") == "CJK/Hiragana"
    assert script_names("café") == "Latin"
    assert script_names("☃") == "symbols"
