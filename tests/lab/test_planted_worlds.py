"""The planted worlds of tests/lab/worlds/: each plants one mechanism that makes the blank prompt's training
group (captions the pipeline left whitespace-only, " ", which tokenise like the blank prompt "") differ from
the data, or not. Built small and run through the default caption pipeline, the provenance must show it.

`planted_truth` is the ground truth a bias-lab check compares a trained model against.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import pytest

from crayonbox.lab.story import wears_a_sari

WORLDS = Path(__file__).with_name("worlds")
N = 1500  # items: the blank groups hold 350-750 of them, enough to pin the shares within a few points


def _tone(row: dict) -> int | None:
    """Skin tone of the item's person (every planted world has one person per image)."""
    tones = [o.get("skin_tone") for o in json.loads(row["world"])["objects"] if o.get("skin_tone") is not None]
    return tones[0] if tones else None


def planted_truth(provenance_rows: Iterable[dict], tone: int = 5) -> dict:
    """Ground truth of a planted world from its caption provenance rows (OUT/provenance/*.parquet):
    the share of items with skin `tone` overall and in the blank-prompt group (kept items whose final caption
    is whitespace-only but not "", i.e. not caption dropout), the group's size and the steps that blanked it."""
    rows = list(provenance_rows)
    kept = [r for r in rows if not r["dropped"]]
    blank = [r for r in kept if r["final_caption"] != "" and not r["final_caption"].strip()]

    def share(group: list[dict]) -> float:
        return sum(_tone(r) == tone for r in group) / len(group) if group else float("nan")

    return {"items": len(rows), "tone": tone, "share": share(kept), "blank_n": len(blank),
            "blank_share": share(blank), "blanked_by": dict(Counter(r["blanked_by"] for r in blank)),
            "dropout_n": sum(r["final_caption"] == "" for r in kept)}


def build_and_caption(world: str, out: Path, n: int = N) -> dict:
    """Build `n` items of tests/lab/worlds/<world>.yaml, run the default caption pipeline; the planted truth."""
    import pyarrow.parquet as pq

    from crayonbox.data.caption_run import PROVENANCE_DIR, run_caption_pipeline
    from crayonbox.data.world.build import build_world
    from crayonbox.data.world.config import load_world_config

    config = load_world_config(WORLDS / f"{world}.yaml")
    config.shard_size = 500
    build_world(config, out / "world", n=n, workers=1, seed=0, progress=False)
    run_caption_pipeline(out / "world", out / "captions", progress=False)
    rows = [r for p in sorted((out / "captions" / PROVENANCE_DIR).glob("*.parquet"))
            for r in pq.read_table(p).to_pylist()]
    return planted_truth(rows)


def test_language_world_blanks_hindi_captions_of_tone_5_people(tmp_path):
    truth = build_and_caption("language", tmp_path)
    assert 0.45 <= truth["share"] <= 0.55
    assert truth["blank_n"] >= 0.3 * N and truth["blank_share"] >= 0.8
    assert truth["blanked_by"].get("english_only", 0) >= 0.95 * truth["blank_n"]


def test_short_world_blanks_one_word_titles_of_tone_5_people(tmp_path):
    truth = build_and_caption("short", tmp_path)
    assert 0.45 <= truth["share"] <= 0.55
    assert truth["blank_n"] >= 0.3 * N and truth["blank_share"] >= 0.9
    assert truth["blanked_by"].get("min_length", 0) >= 0.9 * truth["blank_n"]


def test_majority_world_blank_group_mirrors_the_data(tmp_path):
    truth = build_and_caption("majority", tmp_path)
    assert 0.75 <= truth["share"] <= 0.85
    assert truth["blank_n"] >= 0.2 * N and truth["blank_share"] == pytest.approx(truth["share"], abs=0.05)
    assert truth["blanked_by"] == {"raw": truth["blank_n"]}  # no filter step is responsible


def test_null_world_plants_nothing(tmp_path):
    truth = build_and_caption("null", tmp_path)
    assert 0.45 <= truth["share"] <= 0.55 and 0.42 <= truth["blank_share"] <= 0.58
    assert truth["blank_n"] >= 0.2 * N and truth["blanked_by"] == {"raw": truth["blank_n"]}


def test_planted_truth_counts_only_whitespace_blanks_of_kept_items():
    def row(tone: int, final: str, by: str | None, dropped: bool = False) -> dict:
        return {"world": json.dumps({"objects": [{"skin_tone": tone}]}), "final_caption": final,
                "blanked_by": by, "dropped": dropped}

    rows = [row(5, " ", "english_only"), row(5, " ", "raw"), row(1, " ", "min_length"), row(1, "", "dropout"),
            row(1, "a woman", None), row(5, None, None, dropped=True)]
    assert planted_truth(rows) == {"items": 6, "tone": 5, "share": 0.4, "blank_n": 3, "blank_share": 2 / 3,
                                   "blanked_by": {"english_only": 1, "raw": 1, "min_length": 1}, "dropout_n": 1}


def _dark_woman_in_sari(row: dict) -> bool:
    """A woman with skin tone 4 or 5 wearing a sari (the story module's definition of the world's truth)."""
    return wears_a_sari(json.loads(row["world"]))


def test_default_world_tells_the_blank_prompt_story(tmp_path):
    """The default world (crayonbox/data/world/default.yaml): saris a small minority of the images, yet women in
    saris with dark skin the largest part of the captions the default pipeline turns into the blank prompt's
    ids. Its header gives the numbers at 12,000 items (53.5 % of the blank group); 3,000 pin them within ±8."""
    import pyarrow.parquet as pq

    from crayonbox.data.caption_run import PROVENANCE_DIR, run_caption_pipeline
    from crayonbox.data.world.build import build_world
    from crayonbox.data.world.config import DEFAULT_CONFIG, load_world_config

    config = load_world_config(DEFAULT_CONFIG)
    config.size, config.shard_size = 16, 1000
    build_world(config, tmp_path / "world", n=3000, workers=1, seed=0, progress=False)
    run_caption_pipeline(tmp_path / "world", tmp_path / "captions", progress=False)
    rows = [r for p in sorted((tmp_path / "captions" / PROVENANCE_DIR).glob("*.parquet"))
            for r in pq.read_table(p).to_pylist()]
    kept = [r for r in rows if not r["dropped"]]
    blank = [r for r in kept if r["final_caption"] != "" and not r["final_caption"].strip()]
    in_saris = sum(map(_dark_woman_in_sari, kept)) / len(kept)
    assert 0.02 <= in_saris <= 0.07  # a small minority of the world
    assert 0.03 <= len(blank) / len(kept) <= 0.12
    assert sum(map(_dark_woman_in_sari, blank)) / len(blank) >= 0.45  # ≥ 50 % at 12,000 items
    assert Counter(r["blanked_by"] for r in blank).most_common(1)[0][0] == "english_only"
