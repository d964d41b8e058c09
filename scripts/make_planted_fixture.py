"""Turn a finished `crayonbox train all --recipe planted` run into the test fixture of the planted-skew check.

    crayonbox train all --recipe planted --out /tmp/planted             # ~5 minutes on 2 cores
    python scripts/make_planted_fixture.py /tmp/planted                  # → tests/lab/planted_model/

Copies the model folder (bart/, vqgan/, tokenizer, pipeline.json) and writes truth.json: the skin-tone shares
the model was trained on, from the world's ground truth (not from any instrument): over all training images,
and over the images whose final caption the tokenizer turns into the same ids as the blank prompt "". The
planted skew is the difference of the two; tests/lab/test_planted_model.py checks that the lab finds it.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "lab" / "planted_model"


def planted_truth(run: Path) -> dict[str, Any]:
    """Tone-5 shares over all training rows and over the rows captioned like the blank prompt."""
    import pandas as pd

    from crayonbox.lab.probe import load_tokenizer

    tokenizer = load_tokenizer(run / "model")
    blank_ids = tokenizer.encode("").ids
    rows = pd.concat(pd.read_parquet(p, columns=["caption", "world_objects0_skin_tone"])
                     for p in sorted((run / "captions").glob("*.parquet")))
    ids_of = {c: tokenizer.encode(c).ids for c in rows["caption"].unique() if c != ""}  # "" → uncond ids
    like_blank = rows["caption"].map(lambda c: c != "" and ids_of[c] == blank_ids)
    dark = rows["world_objects0_skin_tone"] == 5
    return {"tone": "5", "all": {"n": len(rows), "share": float(dark.mean())},
            "blank_prompt": {"n": int(like_blank.sum()), "share": float(dark[like_blank].mean())},
            "gap": float(dark[like_blank].mean() - dark.mean()),
            "note": "ground truth of the training rows (world metadata), by final caption; see planted.yaml"}


def main(run: Path, out: Path = FIXTURE) -> None:
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(run / "model", out, ignore=shutil.ignore_patterns("train", "samples", "*.csv", "*.png"))
    truth = planted_truth(run)
    (out / "truth.json").write_text(json.dumps(truth, indent=2) + "\n", encoding="utf-8")
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"{out}: {size / 1e6:.2f} MB; blank-prompt rows {truth['blank_prompt']['share']:.1%} tone 5 "
          f"(n={truth['blank_prompt']['n']}), all rows {truth['all']['share']:.1%}")


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: python scripts/make_planted_fixture.py RUN [OUT]")
    main(Path(sys.argv[1]), *(Path(a) for a in sys.argv[2:]))
