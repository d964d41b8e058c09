"""What a training run keeps on disk so that `--resume` after `kill -9` loses and repeats nothing.

Two things, both written so that a kill at any instant leaves a usable state:
- the checkpoint (`save_checkpoint` / `load_checkpoint`): model, optimizer, scheduler, RNG states and data
  position in one `torch.save` dict, written to a temporary file and renamed over the old one. It holds only
  tensors, numbers, strings, lists and dicts, so it loads with `torch.load(weights_only=True)`: nothing is
  unpickled;
- the metrics log (`MetricsLog`): a CSV with one row per step. Rows written after the last checkpoint are
  recomputed after a resume, so a resumed log first drops them: the final CSV holds every step exactly once.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from crayonbox.config import atomic_write
from crayonbox.errors import CrayonboxError


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write `state` to `path` atomically, fsync'd (a checkpoint is what a resume trusts)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, fsync=True) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint with `weights_only=True`: tensors and plain containers only, never arbitrary code."""
    path = Path(path)
    if not path.exists():
        raise CrayonboxError(f"no checkpoint at {path}: drop --resume to start a new run")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for truncated or foreign files
        raise CrayonboxError(f"cannot read checkpoint {path} ({type(e).__name__}: {e}); delete it to start "
                             "over") from None


def check_same_run(state: dict[str, Any], identity: dict[str, Any]) -> None:
    """Refuse to resume a checkpoint made with other data, batch size or seed: the data order would differ."""
    if {k: state["data"].get(k) for k in identity} != identity:
        raise CrayonboxError(f"cannot resume: the checkpoint was made with {state['data']}, this run has "
                             f"{identity}; resume with the same data and options (--batch-size, --seed, …)")


def capture_rng() -> dict[str, Any]:
    """Every global RNG state (torch, CUDA, numpy, python) as tensors and plain numbers."""
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    version, mt_state, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
        "python": {"version": int(version), "state": torch.tensor(mt_state, dtype=torch.int64),
                   "gauss_next": gauss_next},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Put back the RNG states `capture_rng` returned."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(x) for x in p["state"].tolist()), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class MetricsLog:
    """Append-only CSV of training metrics (plus TensorBoard event files when `tensorboard` is installed).

    Floats are written with `repr`, so the CSV holds the exact values: an interrupted-and-resumed run's log
    can be compared bit for bit with an uninterrupted one.
    """

    def __init__(self, path: str | Path, columns: list[str], resume_step: int | None = None,
                 tensorboard: bool = True):
        """Start a new log, or continue one keeping only rows with `step <= resume_step`."""
        self.path, self.columns = Path(path), list(columns)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept: list[dict[str, str]] = []
        if resume_step is not None and self.path.exists():
            with open(self.path, newline="", encoding="utf-8") as f:
                kept = [row for row in csv.DictReader(f) if int(row["step"]) <= resume_step]
        with atomic_write(self.path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, self.columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(kept)
        self._file = open(self.path, "a", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._file, self.columns, extrasaction="ignore")
        board = self.path.parent / "tensorboard"
        self._board = _tensorboard_writer(board, resume_step) if tensorboard else None

    def write(self, row: dict[str, Any]) -> None:
        """Append one row (missing columns stay empty) and flush it to disk."""
        self._writer.writerow({k: repr(v) if isinstance(v, float) else v for k, v in row.items()})
        self._file.flush()
        if self._board is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, int | float):
                    self._board.add_scalar(key, value, int(row["step"]))

    def close(self) -> None:
        """Flush and close the CSV (and TensorBoard) files."""
        self._file.close()
        if self._board is not None:
            self._board.close()


def read_metrics(path: str | Path) -> list[dict[str, str]]:
    """The rows of a metrics CSV, as strings (use `float(row[...])`, which round-trips `repr` exactly)."""
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _tensorboard_writer(folder: Path, resume_step: int | None):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional: the CSV is the log of record
        return None
    # purge_step drops events past the checkpoint, as the CSV drops its rows.
    return SummaryWriter(str(folder), purge_step=None if resume_step is None else resume_step + 1)
