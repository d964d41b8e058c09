"""The shipped default model carries what the lab needs: its size limit, its reference table (matching the
data hash in its provenance and its own tokenizer and judge), the planted-world table and the blank prompt's
story in its card, and the sample grids the card names."""

from __future__ import annotations

import json

import pyarrow.parquet as pq

from crayonbox import default_model_dir
from crayonbox.lab.measure import file_digest
from crayonbox.lab.reference import blank_ids
from crayonbox.lab.reference_table import TableConfig, instruments_for
from crayonbox.model_folder import ModelFolder
from crayonbox.train.recipe import RECIPES

MODEL = default_model_dir()


def test_the_folder_fits_the_size_limit():
    size = sum(p.stat().st_size for p in MODEL.rglob("*") if p.is_file())
    assert size <= 40 * 2**20, f"{size / 2**20:.1f} MiB"


def test_the_reference_table_is_this_models_training_data():
    folder = ModelFolder(MODEL)
    manifest = json.loads((MODEL / "reference" / "manifest.json").read_text(encoding="utf-8"))
    groups = json.loads((MODEL / "reference" / "groups.json").read_text(encoding="utf-8"))
    assert folder.provenance["training_data_sha256"] == manifest["data_sha256"]
    items = RECIPES["default"].world_items  # the shipped weights are the current recipe's
    assert manifest["items"] == folder.provenance["training_items"] == items  # every item, not a sample
    assert manifest["tokenizer_sha256"] == file_digest(MODEL / "tokenizer")
    assert groups["blank_ids"] == blank_ids(folder.tokenizer)
    # the keys `lab measure` will compute for the shipped meter and judge are the ones the table was made with
    keys = {instrument.name: key for instrument, key in instruments_for(MODEL, TableConfig())}
    assert {name: entry["key"] for name, entry in manifest["instruments"].items()} == keys
    rows = pq.read_table(MODEL / "reference" / "labels.parquet", columns=["group"]).column("group").to_pylist()
    assert len(rows) == items and rows.count(groups["blank"]) >= 1000  # the blank group is big enough to measure


def test_the_card_tells_the_planted_story_and_names_its_grids():
    card = (MODEL / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\n")  # the Hub's YAML header
    for section in ("## The planted world (ground truth by caption group)", "## Prompt adherence",
                    "## The judge", "## The blank prompt's story"):
        assert section in card
    assert "| blank prompt's ids |" in card and "| all training items |" in card
    for name in ("sample0.png", "blank_scale1.png", "blank_scale3.png", "blank_scale10.png"):
        assert (MODEL / name).is_file() and name in card
