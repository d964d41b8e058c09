"""`crayonbox lab blame`'s summaries and files: per prompt, the matched items broken down by group, source,
language and ground truth (Wilson intervals), what each arm moves; blame.json and blame.parquet."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from crayonbox.config import atomic_write, write_text_atomic
from crayonbox.data.caption_arms import BASELINE
from crayonbox.lab.blame import BlameResult, BlameTable, PromptBlame
from crayonbox.lab.stats import wilson_interval
from crayonbox.outdir import MARKER as MARKER  # the mark of a folder this command wrote
from crayonbox.outdir import check_output_folder, claim_output_folder

BLAME_KIND = "lab blame"

# ---- summaries --------------------------------------------------------------------------------------------


def _share(count: int, n: int) -> dict[str, Any]:
    if n == 0:
        return {"n": 0, "of": 0, "share": None, "low": None, "high": None}
    ci = wilson_interval(count, n)
    return {"n": int(count), "of": int(n), "share": ci.estimate, "low": ci.low, "high": ci.high}


def _breakdown(values: list[str], mask: np.ndarray, kept: np.ndarray | None) -> list[dict[str, Any]]:
    """Per value: its share of the masked items and, for comparison, of every kept item (Wilson 95 %)."""
    inside = Counter(v for v, m in zip(values, mask, strict=True) if m)
    if kept is None:
        return [{"value": v, **_share(c, int(mask.sum()))} for v, c in inside.most_common()]
    overall = Counter(v for v, k in zip(values, kept, strict=True) if k)
    n_in, n_all = int(mask.sum()), int(kept.sum())
    return [{"value": v, **_share(inside[v], n_in), "all_items": _share(overall[v], n_all)}
            for v in sorted(overall | inside, key=lambda v: (-inside[v], v))]


def summaries(table: BlameTable) -> list[dict[str, Any]]:
    """One JSON-ready summary per prompt (see `prompt_summary`)."""
    return [prompt_summary(table, p) for p in table.prompts]


def blame_json(result: BlameResult) -> dict[str, Any]:
    """blame.json: inputs, arms and the per-prompt summaries."""
    table = result.table
    return {"tool": "crayonbox lab blame", "captions_dir": result.captions_dir, "tokenizer_dir": result.tokenizer_dir,
            "pipeline": result.pipeline, "n_items": len(table.keys),
            "arms": [{"arm": a.name, "description": a.description} for a in table.arms],
            "baseline_disagreements": result.baseline_disagreements, "seconds": round(result.seconds, 3),
            "prompts": summaries(table)}


def prompt_summary(table: BlameTable, p: PromptBlame) -> dict[str, Any]:
    kept = ~table.dropped[BASELINE]
    matched = p.matched_baseline
    groups = np.array(p.groups)
    facets = {"group": p.groups, **table.facets}
    by_group = {g: {f: _breakdown(v, matched & (groups == g), None) for f, v in table.facets.items()}
                for g in sorted(set(groups[matched].tolist()))}
    arms = []
    for a in table.arms:
        under = p.matched[a.name]
        arms.append({"arm": a.name, "description": a.description, "prompt_ids": p.ids[a.name],
                     "matched": int(under.sum()), "moved": int((matched & ~under).sum()),
                     "moved_by_drop": int((matched & table.dropped[a.name]).sum()),
                     "new": int((under & ~matched).sum()), "dropped": int(table.dropped[a.name].sum())})
    return {"prompt": p.prompt.prompt, "label": p.prompt.label, "input_mode": p.prompt.input_mode,
            "ids": p.ids[BASELINE], "n_items": len(table.keys), "kept": int(kept.sum()),
            "matched": _share(int(matched.sum()), int(kept.sum())),
            "groups": dict(Counter(p.groups).most_common()),
            "raw_blank": int((matched & table.raw_blank).sum()),
            "sufficient": {s: int((matched & m).sum()) for s, m in table.sufficient.items()},
            "blanked_by": dict(Counter(str(b) for b, m in zip(table.blanked_by, matched, strict=True) if m)),
            "breakdown": {f: _breakdown(v, matched, kept) for f, v in facets.items()},
            "by_group": by_group, "arms": arms}


def check_out_dir(out: Path) -> None:
    """Refuse an output folder that is neither new, nor empty, nor one this command wrote."""
    check_output_folder(out, BLAME_KIND)


def write_blame(result: BlameResult, out: Path) -> dict[str, Any]:
    """Write OUT/blame.json and OUT/blame.parquet (each atomically); returns what blame.json holds."""

    out = Path(out)
    claim_output_folder(out, BLAME_KIND)
    with atomic_write(out / "blame.parquet") as tmp:
        pq.write_table(pa.table(result.table.rows()), tmp)
    data = blame_json(result)
    write_text_atomic(out / "blame.json", json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    return data
