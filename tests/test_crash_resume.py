"""Crash and resume, stage by stage: each CLI command of the training chain and the bias lab is killed with
SIGKILL (its whole process group, workers included) at a seeded random point, run again to completion, and
what it leaves must be what an uninterrupted run makes: shards, parquet and weights byte for byte (CPU, one
thread), PNGs by hash, every row once.

The uninterrupted chain (world → captions → tokenizer → VQGAN → encode → transformer → probe → measure, at the
`smoke` recipe's toy sizes) is built once per module; each test kills one stage fed with that chain's inputs.
Set CRAYONBOX_CRASH_SEED to move the kill points (default 0).
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from crayonbox.lab.store import DB_NAME
from crayonbox.train.checkpoint import read_metrics
from tests.lab.test_probe import _key_to_sha

pytestmark = pytest.mark.slow

SEED = int(os.environ.get("CRAYONBOX_CRASH_SEED", "0"))
ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
TIMING_COLUMNS = {"samples_per_s", "elapsed_s"}  # wall-clock columns of metrics.csv: the only ones that differ
N_ITEMS, SHARD_SIZE, PROBE_N = 200, 10, 20


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "crayonbox.cli", *args]


def run(command: list[str]) -> float:
    """Run a command to completion (it must succeed); return its wall time."""
    start = time.monotonic()
    done = subprocess.run(command, env=ENV, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          timeout=600)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    return time.monotonic() - start


def kill_then_rerun(command: list[str], ready: Callable[[], bool], rng: random.Random, max_delay: float = 0.0,
                    reset: Callable[[], None] | None = None, attempts: int = 3,
                    snapshot: Callable[[], object] = lambda: None) -> object:
    """Start `command` in a session of its own, wait until `ready()`, wait a random part of `max_delay` more,
    SIGKILL its process group (worker processes too), then run the same command to completion. A run that
    ends before the kill is redone (after `reset()`) with a shorter delay. Returns `snapshot()` as it was
    right after the kill."""
    for attempt in range(attempts):
        delay = rng.uniform(0, max_delay) / (1 + 2 * attempt)
        stderr = tempfile.TemporaryFile()  # a file, not a pipe: a chatty command never blocks on it
        proc = subprocess.Popen(command, env=ENV, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr,
                                start_new_session=True)
        deadline = time.monotonic() + 300
        while proc.poll() is None and not ready() and time.monotonic() < deadline:
            time.sleep(0.005)
        if proc.poll() is None:
            time.sleep(delay)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            assert proc.wait() == -signal.SIGKILL
            stderr.close()
            at_kill = snapshot()
            break
        stderr.seek(0)
        assert proc.returncode == 0, stderr.read().decode()[-2000:]
        stderr.close()
        assert reset is not None and attempt < attempts - 1, "the command always finished before it was killed"
        reset()
    run(command)
    return at_kill


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def metric_rows(folder: Path) -> list[dict]:
    rows = [{k: v for k, v in row.items() if k not in TIMING_COLUMNS}
            for row in read_metrics(folder / "train" / "metrics.csv")]
    steps = [int(row["step"]) for row in rows]
    assert steps == list(range(1, len(steps) + 1)), steps  # every step once, in order
    return rows


def rows_in(folder: Path, table: str) -> int:
    db = folder / DB_NAME
    if not db.exists():
        return 0
    connection = sqlite3.connect(db, timeout=1)
    try:
        return connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet, or locked
        return 0
    finally:
        connection.close()


def metrics_rows_at_least(folder: Path, n: int) -> Callable[[], bool]:
    path = folder / "train" / "metrics.csv"
    return lambda: path.exists() and len(path.read_text().splitlines()) > n


def tars_at_least(folder: Path, n: int) -> Callable[[], bool]:
    return lambda: len(list(folder.glob("*.tar"))) >= n


def rng_for(case: str) -> random.Random:
    return random.Random(f"{case}:{SEED}")


# ---- the commands, with their inputs --------------------------------------------------------------------------


def world_cmd(chain: Path, out: Path) -> list[str]:
    return cli("world", "build", "--config", str(chain / "world.yaml"), "--out", str(out), "-n", str(N_ITEMS),
               "--workers", "2", "--seed", "3", "--quiet")


def captions_cmd(chain: Path, out: Path) -> list[str]:
    return cli("data", "captions", str(chain / "world"), "--out", str(out), "--workers", "2", "--quiet")


def vqgan_cmd(chain: Path, out: Path) -> list[str]:
    return cli("train", "vqgan", "--data", str(chain / "captions"), "--out", str(out), "--preset", "tiny",
               "--steps", "20", "--batch-size", "16", "--learning-rate", "3e-3", "--warmup-steps", "5",
               "--quantize-after", "10", "--kmeans-batches", "2", "--eval-every", "10", "--eval-fraction", "0.1",
               "--checkpoint-every", "5", "--threads", "1", "--no-progress", "--resume")


def encode_cmd(chain: Path, out: Path) -> list[str]:
    return cli("encode", "--data", str(chain / "captions"), "--vqgan", str(chain / "vq"), "--out", str(out),
               "--batch-size", "8", "--quiet")


def model_cmd(chain: Path, out: Path) -> list[str]:
    return cli("train", "model", "--tokens", str(chain / "tokens.parquet"), "--tokenizer", str(chain / "tok"),
               "--vqgan", str(chain / "vq"), "--out", str(out), "--preset", "tiny", "--steps", "20",
               "--batch-size", "16", "--warmup-steps", "5", "--eval-every", "10", "--sample-every", "0",
               "--eval-fraction", "0.1", "--checkpoint-every", "5", "--threads", "1", "--no-progress", "--resume")


def probe_cmd(chain: Path, out: Path) -> list[str]:
    return cli("lab", "probe", "--model", str(chain / "model"), "--prompts", "null", "-n", str(PROBE_N),
               "--condition-scale", "1,3", "--out", str(out), "--workers", "2", "--threads", "1",
               "--batch-images", "8", "--quiet")


def measure_cmd(run_folder: Path) -> list[str]:
    return cli("lab", "measure", str(run_folder), "--no-reference", "--quiet")


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, float]]:
    """The uninterrupted chain, and each stage's wall time."""
    from crayonbox.data.world.config import DEFAULT_CONFIG, parse_world_yaml

    root = tmp_path_factory.mktemp("chain")
    world = parse_world_yaml(DEFAULT_CONFIG.read_text(encoding="utf-8"))
    world.update(shard_size=SHARD_SIZE, size=16)  # 20 shards: a kill falls between two of them
    (root / "world.yaml").write_text(yaml.safe_dump(world, allow_unicode=True), encoding="utf-8")
    took = {"world": run(world_cmd(root, root / "world")),
            "captions": run(captions_cmd(root, root / "captions"))}
    run(cli("train", "tokenizer", "--data", str(root / "captions"), "--out", str(root / "tok"), "--vocab-size",
            "400", "--text-length", "16", "--quiet"))
    took["vqgan"] = run(vqgan_cmd(root, root / "vq"))
    took["encode"] = run(encode_cmd(root, root / "tokens.parquet"))
    took["model"] = run(model_cmd(root, root / "model"))
    took["probe"] = run(probe_cmd(root, root / "probe"))
    subprocess.run(["cp", "-a", str(root / "probe"), str(root / "measured")], check=True)
    took["measure"] = run(measure_cmd(root / "measured"))
    return root, took


def test_world_build(chain, tmp_path):
    root, _ = chain
    out = tmp_path / "world"
    done = kill_then_rerun(world_cmd(root, out), tars_at_least(out, rng_for("world").randint(1, 12)),
                           rng_for("world"), max_delay=0.05, snapshot=lambda: len(list(out.glob("*.tar"))),
                           reset=lambda: subprocess.run(["rm", "-rf", str(out)], check=True))
    assert 1 <= done < N_ITEMS // SHARD_SIZE  # killed between shards
    assert files(out) == files(root / "world")


def test_data_captions(chain, tmp_path):
    root, _ = chain
    out = tmp_path / "captions"
    done = kill_then_rerun(captions_cmd(root, out), tars_at_least(out, rng_for("captions").randint(1, 12)),
                           rng_for("captions"), max_delay=0.02, snapshot=lambda: len(list(out.glob("*.tar"))),
                           reset=lambda: subprocess.run(["rm", "-rf", str(out)], check=True))
    assert 1 <= done < N_ITEMS // SHARD_SIZE  # killed between shards
    assert files(out) == files(root / "captions")  # shards, parquet, provenance, the pipeline record


def test_vqgan_training(chain, tmp_path):
    root, _ = chain
    out = tmp_path / "vq"
    exported = kill_then_rerun(vqgan_cmd(root, out), metrics_rows_at_least(out, rng_for("vqgan").randint(1, 18)),
                               rng_for("vqgan"), snapshot=lambda: (out / "vqgan").exists())
    assert not exported  # killed mid-training
    assert files(out / "vqgan") == files(root / "vq" / "vqgan")  # weights bit for bit
    assert metric_rows(out) == metric_rows(root / "vq") and len(metric_rows(out)) == 20
    report, reference = (json.loads((f / "report.json").read_text()) for f in (out, root / "vq"))
    for key in ("eval_psnr", "eval_usage", "eval_perplexity", "steps", "images", "restarted_codes"):
        assert report[key] == reference[key], key


def test_encode(chain, tmp_path):
    root, took = chain
    out = tmp_path / "tokens.parquet"
    parts = out.with_name(out.name + ".parts")
    kill_then_rerun(encode_cmd(root, out), lambda: len(list(parts.glob("0*.parquet"))) >= 1, rng_for("encode"),
                    max_delay=0.3 * took["encode"], reset=lambda: out.unlink())
    assert out.read_bytes() == (root / "tokens.parquet").read_bytes() and not parts.exists()
    from crayonbox.train.data import read_token_parquet

    keys = read_token_parquet(out).keys
    assert len(keys) == len(set(keys)) == N_ITEMS


def test_transformer_training(chain, tmp_path):
    root, _ = chain
    out = tmp_path / "model"
    exported = kill_then_rerun(model_cmd(root, out), metrics_rows_at_least(out, rng_for("model").randint(1, 18)),
                               rng_for("model"), snapshot=lambda: (out / "pipeline.json").exists())
    assert not exported  # killed mid-training
    assert (out / "bart" / "model.safetensors").read_bytes() == (root / "model" / "bart" /
                                                                 "model.safetensors").read_bytes()
    assert metric_rows(out) == metric_rows(root / "model") and len(metric_rows(out)) == 20
    for name in ("bart/config.json", "vqgan/model.safetensors", "tokenizer/tokenizer.json"):
        assert (out / name).read_bytes() == (root / "model" / name).read_bytes(), name


def test_lab_probe(chain, tmp_path):
    root, _ = chain
    out = tmp_path / "probe"
    planned = 10 * 2 * PROBE_N  # ten null prompts, two scales
    threshold = rng_for("probe").randint(1, planned // 2)
    stored = kill_then_rerun(probe_cmd(root, out), lambda: rows_in(out, "images") >= threshold, rng_for("probe"),
                             reset=lambda: subprocess.run(["rm", "-rf", str(out)], check=True),
                             snapshot=lambda: rows_in(out, "images"))
    assert threshold <= stored < planned  # killed mid-probe
    assert _key_to_sha(out) == _key_to_sha(root / "probe")  # every image once, the same PNG bytes
    assert rows_in(out, "images") == planned
    pngs = [p for p in (out / "images").rglob("*.png")]
    assert Counter(p.stem for p in pngs) == Counter(p.stem for p in (root / "probe" / "images").rglob("*.png"))


def _labels(folder: Path) -> list[tuple]:
    with sqlite3.connect(folder / DB_NAME) as db:
        rows = db.execute("SELECT sha256, instrument, attribute, label FROM labels ORDER BY 1, 2, 3").fetchall()
    db.close()
    return rows


def test_lab_measure(chain, tmp_path):
    root, took = chain
    out = tmp_path / "measured"
    subprocess.run(["cp", "-a", str(root / "probe"), str(out)], check=True)
    rng = rng_for("measure")
    at = rng.uniform(0.2, 0.7) * took["measure"]  # measure writes nothing early to wait for: a share of its time
    started = [time.monotonic()]

    def reset() -> None:
        subprocess.run(["rm", "-rf", str(out)], check=True)
        subprocess.run(["cp", "-a", str(root / "probe"), str(out)], check=True)
        started[0] = time.monotonic()

    metrics = out / "metrics.json"
    finished = kill_then_rerun(measure_cmd(out), lambda: time.monotonic() - started[0] >= at, rng, reset=reset,
                               snapshot=metrics.exists)
    assert not finished  # killed before it wrote its metrics
    measured, reference = (json.loads((f / "metrics.json").read_text()) for f in (out, root / "measured"))
    assert measured["run"].pop("folder") == str(out)  # where the run is: the one field that may differ
    del reference["run"]["folder"]
    assert measured == reference
    assert _labels(out) == _labels(root / "measured")
    assert rows_in(out, "features") == rows_in(root / "measured", "features")
