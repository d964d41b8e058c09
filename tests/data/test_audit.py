"""The audit on a small planted world: its numbers must be the planted ones."""

from __future__ import annotations

import json
import re

import pytest

from crayonbox.data.audit import (
    ALL,
    ENGLISH,
    compute_audit,
    headline_sentences,
    render_html,
    wilson_interval,
    write_audit,
)
from crayonbox.data.captions import CaptionPipeline

COLOURS_EN = ["red", "blue", "green", "yellow", "black"]
COLOURS_HI = ["लाल", "नीली", "हरी", "पीली", "काली"]
SOURCES = ["cc3m", "cc12m", "yfcc"]
PIPELINE = {"steps": [{"step": "unicode_fix"},
                      {"step": "langid", "languages": ["en", "hi", "es", "zh", "ar"]},
                      {"step": "english_only", "policy": "blank"}, {"step": "normalize"}]}


def planted_world(n: int = 200) -> list[tuple[str, str, dict]]:
    """(key, caption, meta): half the images show a woman (tone 4) in a sari, exactly 60 % of those captioned
    in Hindi; the other half a man (tone 1) with a dog, captioned in English."""
    items = []
    for i in range(n):
        colour = i % len(COLOURS_EN)
        if i < n // 2:
            hindi = i % 10 < 6
            objects = [{"emoji": "👩🏾", "name": "woman: medium-dark skin tone", "category": "person",
                        "gender": "woman", "skin_tone": 4, "attire": None},
                       {"emoji": "🥻", "name": "sari", "category": "attire", "gender": "none",
                        "skin_tone": None, "attire": "sari"}]
            caption = (f"{COLOURS_HI[colour]} पृष्ठभूमि पर साड़ी पहने एक महिला" if hindi
                       else f"a woman wearing a sari on a {COLOURS_EN[colour]} background")
            language = "hi" if hindi else "en"
        else:
            objects = [{"emoji": "👨🏻", "name": "man: light skin tone", "category": "person",
                        "gender": "man", "skin_tone": 1, "attire": None},
                       {"emoji": "🐕", "name": "dog", "category": "animal", "gender": "none",
                        "skin_tone": None, "attire": None}]
            caption, language = f"a man and a dog on a {COLOURS_EN[colour]} background", "en"
        world = {"objects": objects, "background": {"kind": "plain", "colour": COLOURS_EN[colour]},
                 "source": SOURCES[i % 3], "caption_language": language}
        items.append((f"{i:09d}", caption, {"world": world}))
    return items


def audit_of(items, config=PIPELINE):
    pipeline = CaptionPipeline(config)
    rows = pipeline.process(*zip(*items, strict=True))
    steps = [s.name for s in pipeline.steps]
    return compute_audit(rows, steps), {s.name: s.kind for s in pipeline.steps}


def find(audit, attribute, value, step="english_only", among=ALL):
    (share,) = [s for s in audit["shares"]
                if (s.step, s.among, s.attribute, s.value) == (step, among, attribute, value)]
    return share


def test_wilson_interval_matches_scipy():
    from scipy.stats import binomtest

    for k, n in [(60, 100), (0, 20), (20, 20), (4500, 5000), (8, 9)]:
        expected = binomtest(k, n).proportion_ci(method="wilson")
        assert wilson_interval(k, n) == pytest.approx((expected.low, expected.high), abs=1e-9)
    assert wilson_interval(8, 9) == pytest.approx((0.565, 0.980), abs=1e-3)  #


def test_audit_recovers_the_planted_shares():
    audit, _ = audit_of(planted_world())
    (overall,) = [e for e in audit["effects"] if e.step == "english_only"]
    assert (overall.step, overall.action, overall.reason, overall.k, overall.n) == \
        ("english_only", "blanked", "non_english", 60, 200)
    for attribute, value in [("attire", "sari"), ("gender × skin tone", "woman, medium-dark"),
                             ("skin tone", "medium-dark"), ("gender", "woman")]:
        share = find(audit, attribute, value)
        assert (share.k, share.n, share.share) == (60, 100, 0.6)
        assert (share.low, share.high) == pytest.approx(wilson_interval(60, 100))
    assert (find(audit, "gender × skin tone", "man, light").k, find(audit, "category", "animal").k) == (0, 0)
    assert find(audit, "caption language", "hi").share == 1
    assert find(audit, "caption language", "en").share == 0
    assert sum(find(audit, "source", s).n for s in SOURCES) == 200
    assert audit["ground_truth"] is True
    # among the 140 English captions the filter blanked none, sari or not
    assert find(audit, "all", "all", among=ENGLISH).k == 0
    assert find(audit, "attire", "sari", among=ENGLISH).n == 40


def test_audit_sentences_name_the_groups_hit_harder_than_everyone():
    audit, kinds = audit_of(planted_world())
    sentences = headline_sentences(audit, kinds)
    assert sentences[:4] == [
        "the English-only filter blanked 30 % of all captions (60 of 200; reason non_english)",
        "the English-only filter blanked 100 % of captions written in Hindi (hi) (95 % CI 94–100 %, "
        "60 of 60; reason non_english), against 30 % of all captions",
        "the English-only filter blanked 60 % of captions of images showing women with medium-dark skin "
        "(95 % CI 50–69 %, 60 of 100; reason non_english), against 30 % of all captions",
        "the English-only filter blanked 60 % of captions of images showing people with medium-dark skin "
        "(95 % CI 50–69 %, 60 of 100; reason non_english), against 30 % of all captions"]
    assert not any("detected as" in s for s in sentences)  # tautological for a language filter
    # the normaliser touched every caption still there (not the 60 blanked ones): no group stands out
    assert sentences[4:] == [
        "the official normaliser changed 100 % of all captions (140 of 140; reason normalized)"]


def test_audit_of_shards_without_ground_truth_uses_language_and_source_only():
    items = [(k, c, {"source": "forum" if int(k) < 20 else "news"}) for k, c, _ in planted_world(60)]
    audit, kinds = audit_of(items)
    assert audit["ground_truth"] is False
    assert {s.attribute for s in audit["shares"]} == {"all", "detected language", "source"}
    assert {s.among for s in audit["shares"]} == {ALL}
    assert find(audit, "detected language", "hi").share == 1.0
    assert (find(audit, "source", "forum").k, find(audit, "source", "news").k) == (12, 6)
    assert headline_sentences(audit, kinds)[:2] == [
        "the English-only filter blanked 30 % of all captions (18 of 60; reason non_english)",
        "the English-only filter blanked 60 % of captions from forum (95 % CI 39–78 %, 12 of 20; "
        "reason non_english), against 30 % of all captions"]


def test_short_english_loanword_captions_show_up_among_english_captions():
    kimono = {"category": "attire", "gender": "none", "skin_tone": None, "attire": "kimono"}
    dog = {"category": "animal", "gender": "none", "skin_tone": None, "attire": None}
    items = [(f"{i:09d}", "kimono" if i < 20 else f"a dog on a {COLOURS_EN[i % 5]} background",
              {"world": {"objects": [kimono if i < 20 else dog], "caption_language": "en", "source": "yfcc"}})
             for i in range(40)]
    audit, kinds = audit_of(items)
    assert find(audit, "attire", "kimono", among=ENGLISH).share == 1.0
    assert find(audit, "category", "animal", among=ENGLISH).share == 0.0
    assert ("the English-only filter blanked 100 % of English captions of images showing a kimono (95 % CI "
            "84–100 %, 20 of 20; reason non_english), against 50 % of all English captions"
            ) in headline_sentences(audit, kinds)


def test_chance_differences_make_no_headline():
    # dropout hits items at random: among ~100 groups none may be reported as hit harder
    items = [(k, "a man and a dog on a green background", m) for k, _, m in planted_world(400)]
    for i, (_, _, meta) in enumerate(items):
        meta["world"]["objects"][0]["skin_tone"] = 1 + i % 5
    audit, kinds = audit_of(items, {"steps": [{"step": "dropout", "p": 0.3, "seed": 3}]})
    assert headline_sentences(audit, kinds) == [
        f"the caption dropout blanked {100 * audit['effects'][0].share:.0f} % of all captions "
        f"({audit['effects'][0].k} of 400; reason dropout)"]


def test_counts_cross_step_reason_language_and_attribute():
    audit, _ = audit_of(planted_world())
    counts = {(c["step"], c["reason"], c["language"], c["attribute"], c["value"]): c["count"]
              for c in audit["counts"]}
    assert counts[("english_only", "non_english", "hi", "attire", "sari")] == 60
    assert counts[("normalize", "normalized", "en", "category", "animal")] == 100
    assert ("english_only", "non_english", "en", "attire", "sari") not in counts


def test_html_is_self_contained_and_escaped():
    items = planted_world(40)
    for _, _, meta in items[:20]:
        meta["world"]["objects"][1]["attire"] = "<script>alert(1)</script>"
    audit, kinds = audit_of(items)
    page = render_html(audit, headline_sentences(audit, kinds), kinds, "<run>")
    assert "<script>" not in page and "&lt;script&gt;" in page and "&lt;run&gt;" in page
    assert page.count("data:image/png;base64,") == len(audit["effects"]) == 2  # english_only + normalize
    assert not re.search(r"(src|href)=['\"]https?:", page)


def test_write_audit_end_to_end_from_shards(tmp_path):
    from crayonbox.data.caption_run import run_caption_pipeline
    from crayonbox.data.shards import Item, write_shard

    items = [Item(key=k, image=None, image_ext="png", caption=c, meta=m) for k, c, m in planted_world()]
    (tmp_path / "in").mkdir()
    write_shard(tmp_path / "in" / "00000.tar", items[:100])
    write_shard(tmp_path / "in" / "00001.tar", items[100:])
    run_caption_pipeline(tmp_path / "in", tmp_path / "out", PIPELINE, progress=False)
    html_path, json_path = write_audit(tmp_path / "out")
    report = json.loads(json_path.read_text(encoding="utf8"))
    (sari,) = [s for s in report["shares"] if (s["step"], s["among"], s["attribute"], s["value"]) ==
               ("english_only", ALL, "attire", "sari")]
    assert (sari["k"], sari["n"]) == (60, 100)
    assert "women with medium-dark skin" in html_path.read_text(encoding="utf8")
