"""Blame: which caption-pipeline step made an item reach the model as a probe prompt's ids (planted truth)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from crayonbox.cli import main
from crayonbox.data.caption_steps import CaptionDropout
from crayonbox.data.captions import DEFAULT_PIPELINE
from crayonbox.errors import CrayonboxError
from crayonbox.lab.blame import blame_items, blame_run, caption_ids_batch, load_tokenizer
from crayonbox.lab.blame_report import MARKER, summaries
from crayonbox.lab.families import UNCONDITIONAL
from crayonbox.lab.reference import caption_ids
from crayonbox.text.normalize import NormalizerConfig
from crayonbox.text.tokenizer import Tokenizer

TOKENIZER = Path(__file__).parents[2] / "crayonbox" / "assets" / "default" / "tokenizer"
PLANTED = Path(__file__).parents[2] / "crayonbox" / "data" / "world" / "planted.yaml"
DROPOUT = CaptionDropout()  # the default pipeline's dropout: p 0.1, seed 0
KEPT_KEYS = [f"kept{i}" for i in range(100) if DROPOUT.draw(f"kept{i}") >= DROPOUT.p]
DROPPED_KEY = next(f"drop{i}" for i in range(100) if DROPOUT.draw(f"drop{i}") < DROPOUT.p)

HINDI, EMPTY, DOT, WORD, DROPOUT_ITEM, CAPTIONED, SNAIL = range(7)


@pytest.fixture(scope="module")
def hand() -> tuple:
    captions = ["लाल साड़ी में महिला", "", ".", "woman", "a woman in a red sari", "a woman in a red sari", "snail"]
    keys = KEPT_KEYS[:4] + [DROPPED_KEY, KEPT_KEYS[4], KEPT_KEYS[5]]
    items = [(k, c, {}) for k, c in zip(keys, captions, strict=True)]
    table = blame_items(items, DEFAULT_PIPELINE, load_tokenizer(TOKENIZER), ["", UNCONDITIONAL], progress=False)
    return table, table.prompts[0], table.prompts[1]


def necessary(prompt, i: int) -> set[str]:
    return {arm for arm, mask in prompt.necessary.items() if mask[i]}


def sufficient(table, i: int) -> set[str]:
    return {step for step, mask in table.sufficient.items() if mask[i]}


def test_hindi_caption_is_blank_because_of_english_only(hand):
    table, blank, _ = hand
    assert blank.matched_baseline[HINDI] and table.blanked_by[HINDI] == "english_only"
    # Without English-only the official normaliser romanises it ("laal saadd'ii ..."): no longer the blank ids.
    assert not blank.matched["english_only:off"][HINDI] and not table.dropped["english_only:off"][HINDI]
    # normalize:raw also separates it: the filter's " " stays <s> Ġ </s> while raw "" is <s></s>.
    assert necessary(blank, HINDI) == {"english_only:off", "english_only:drop", "normalize:raw"}
    assert sufficient(table, HINDI) == {"english_only"}
    assert blank.groups[HINDI] == "blank via english_only"  # the normaliser arm moves every " " (see below)


def test_raw_empty_caption_needs_no_step(hand):
    table, blank, uncond = hand
    assert table.raw_blank.tolist() == [False, True, True, False, False, False, False]  # "" and "." say nothing
    assert blank.matched_baseline[EMPTY] and necessary(blank, EMPTY) == set() and sufficient(table, EMPTY) == set()
    assert blank.groups[EMPTY] == "blank via raw" and table.blanked_by[EMPTY] == "raw"
    # In raw mode "" stays "" on both sides (the unconditional ids), so it still matches the blank prompt and
    # starts matching the unconditional input.
    assert blank.matched["normalize:raw"][EMPTY] and uncond.matched["normalize:raw"][EMPTY]
    assert blank.ids["normalize:raw"] == uncond.ids["baseline"] == [0, 2]


def test_lone_dot_is_overdetermined(hand):
    table, blank, _ = hand
    # langid calls "." undetermined, so English-only blanks it first, but the normaliser would blank it anyway:
    # switching English-only off changes nothing; only the raw normaliser (or dropping it) moves it.
    assert table.blanked_by[DOT] == "english_only" and blank.matched["english_only:off"][DOT]
    assert necessary(blank, DOT) == {"english_only:drop", "normalize:raw"}
    assert sufficient(table, DOT) == {"english_only", "normalize", "min_length"}
    assert blank.groups[DOT] == "blank via raw"  # the drop arm removes the item: no cause of its blank


def test_one_word_caption_is_blank_because_of_min_length(hand):
    table, blank, _ = hand
    assert {"min_length:off", "min_length:drop"} <= necessary(blank, WORD)
    assert not {"english_only:off", "names:off", "dropout:off"} & necessary(blank, WORD)
    assert sufficient(table, WORD) == {"min_length"}
    assert blank.groups[WORD] == "blank via min_length"
    assert table.dropped["min_length:drop"][WORD] and not table.dropped["baseline"][WORD]


def test_dropout_item_matches_the_unconditional_ids_not_the_blank_prompt(hand):
    table, blank, uncond = hand
    assert table.finals[DROPOUT_ITEM] == "" and table.finals[CAPTIONED] == " a woman in a red sari"
    assert uncond.matched_baseline.tolist() == [False, False, False, False, True, False, False]
    assert not blank.matched_baseline[DROPOUT_ITEM] and blank.groups[DROPOUT_ITEM] == "captioned"
    assert necessary(uncond, DROPOUT_ITEM) == {"dropout:off"} and uncond.groups[DROPOUT_ITEM] == "blank via dropout"
    assert sufficient(table, DROPOUT_ITEM) == {"dropout"} and sufficient(table, CAPTIONED) == set()
    summary = summaries(table)
    assert summary[0]["matched"]["n"] == 5 and summary[1]["matched"]["n"] == 1
    arms = {a["arm"]: a for a in summary[0]["arms"]}
    assert arms["normalize:raw"]["moved"] == 4 and arms["normalize:raw"]["new"] == 1  # the dropout item
    assert arms["english_only:drop"]["moved_by_drop"] == 3  # the Hindi caption, "." and "snail"


def test_overdetermined_blank_names_each_sufficient_step(hand):
    table, blank, _ = hand
    # py3langid calls the lone word "snail" non-English; without English-only, min_length blanks it anyway.
    assert table.blanked_by[SNAIL] == "english_only" and blank.matched["english_only:off"][SNAIL]
    assert necessary(blank, SNAIL) == {"english_only:drop", "normalize:raw"}
    assert sufficient(table, SNAIL) == {"english_only", "min_length"}
    assert blank.groups[SNAIL] == "blank via english_only|min_length"


@pytest.mark.parametrize("mode", ["official", "multilingual", "raw"])
def test_batched_ids_are_the_training_ids(mode):
    base = load_tokenizer(TOKENIZER)
    tok = Tokenizer(base.backend, NormalizerConfig(mode), base.text_length)
    captions = ["", " ", ".", "लाल साड़ी में महिला", "🙂 a <person> at https://x.y", "red " * 200, "Ünïcode 中文"]
    assert caption_ids_batch(tok, captions) == [tuple(caption_ids(tok, c)) for c in captions]
    assert len(caption_ids_batch(tok, ["red " * 200])[0]) == tok.text_length  # cut, </s> kept


@pytest.fixture(scope="module")
def planted_run(tmp_path_factory) -> Path:
    from crayonbox.data.caption_run import run_caption_pipeline
    from crayonbox.data.world.build import build_world
    from crayonbox.data.world.config import load_world_config

    root = tmp_path_factory.mktemp("blame")
    config = load_world_config(PLANTED)
    config.size, config.shard_size = 16, 300
    build_world(config, root / "world", n=600, workers=1, seed=0, progress=False)
    run_caption_pipeline(root / "world", root / "caps", progress=False)
    return root / "caps"


def test_planted_world_blank_prompt_subset(planted_run):
    result = blame_run(planted_run, TOKENIZER, ["", UNCONDITIONAL], progress=False)
    assert result.baseline_disagreements == 0  # the recomputed baseline is the caption run's
    blank, uncond = summaries(result.table)
    tones = {row["value"]: row for row in blank["breakdown"]["skin_tone"]}
    # planted.yaml: 80 % of tone-5 people and 10 % of tone-1 have empty Flickr captions → 89 % tone 5.
    assert tones["5"]["share"] > 0.85 and tones["5"]["low"] > tones["5"]["all_items"]["high"]
    assert 0.40 < tones["5"]["all_items"]["share"] < 0.60
    n = blank["matched"]["n"]
    # An empty Flickr title and description join to ". ": unlabeled, blanked first by English-only
    # (undetermined), but the normaliser alone blanks it too, so English-only is never necessary.
    assert blank["raw_blank"] == n and blank["blanked_by"] == {"english_only": n}
    assert blank["sufficient"]["english_only"] == blank["sufficient"]["normalize"] == n
    assert blank["groups"] == {"captioned": 600 - n, "blank via raw": n}
    raw_tones = {row["value"]: row["n"] for row in blank["by_group"]["blank via raw"]["skin_tone"]}
    assert raw_tones["5"] == tones["5"]["n"]
    arms = {a["arm"]: a for a in blank["arms"]}
    assert arms["english_only:off"]["moved"] == arms["english_only:off"]["new"] == 0
    assert arms["min_length:off"]["moved"] == arms["names:off"]["moved"] == 0
    # Dropping instead of blanking removes the whole blank-prompt subset; the raw normaliser separates " "
    # from "" (and the dropout items join the blank prompt).
    assert arms["english_only:drop"]["moved"] == arms["english_only:drop"]["moved_by_drop"] == n
    assert arms["normalize:raw"]["moved"] == n and arms["normalize:raw"]["new"] == uncond["matched"]["n"]
    assert uncond["groups"]["blank via dropout"] == uncond["matched"]["n"] > 0


def test_cli_writes_json_and_parquet_and_reruns_into_its_own_folder(planted_run, tmp_path, capsys):
    out = tmp_path / "blame"
    args = ["lab", "blame", str(planted_run), "--tokenizer", str(TOKENIZER), "--arms", "english_only:drop",
            "--out", str(out), "--quiet"]
    assert main(args) == 0 and main(args) == 0  # the second run overwrites its own output
    data = json.loads((out / "blame.json").read_text(encoding="utf8"))
    (summary,) = data["prompts"]
    assert [a["arm"] for a in data["arms"]] == ["english_only:drop"] and (out / MARKER).exists()
    rows = pq.read_table(out / "blame.parquet").to_pylist()
    assert len(rows) == data["n_items"] == 600
    matched = [r for r in rows if r["matched"]]
    assert len(matched) == summary["matched"]["n"] and not any(r["matched.english_only:drop"] for r in matched)
    assert {r["group"] for r in matched} == {"blank via raw"}  # a drop arm names no cause
    assert all(r["necessary"] == ["english_only:drop"] for r in matched)
    assert "'': " in capsys.readouterr().out


@pytest.mark.parametrize("extra, message", [
    (["--arms", "bogus:off"], "no step 'bogus'"),
    (["--arms", "normalize:off"], "can be changed to"),
    (["--prompts", "nosuchfamily"], "unknown prompt family"),
])
def test_bad_arguments_are_one_line_errors_and_write_nothing(planted_run, tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    assert main(["lab", "blame", str(planted_run), "--tokenizer", str(TOKENIZER), "--out", str(out),
                 "--quiet", *extra]) != 0
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and not out.exists()


def test_bad_folders_are_refused(planted_run, tmp_path, capsys):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    for caps, out, message in [(planted_run, busy, "was not written by"),
                               (planted_run.parent / "world", tmp_path / "new", "not a caption run")]:
        assert main(["lab", "blame", str(caps), "--tokenizer", str(TOKENIZER), "--out", str(out), "--quiet"]) != 0
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "new").exists() and [p.name for p in busy.iterdir()] == ["notes.txt"]
    with pytest.raises(CrayonboxError, match="no such folder"):
        blame_run(planted_run, tmp_path / "missing", progress=False)
