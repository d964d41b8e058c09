"""Hostile and careless input at the command line: every case ends with exit code 1, exactly one stderr line
(`crayonbox: error: …`), no traceback, and no file outside the command's output folder created or changed.

Each case is a setup function: it builds its inputs under `tmp` and returns (argv, output folder or None,
whether the output folder must stay untouched too). The tree under `tmp` is hashed before and after.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import sqlite3
import struct
import subprocess
import sys
import tarfile
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml

from crayonbox.cli import main
from crayonbox.data.world.config import DEFAULT_CONFIG

Case = tuple[list[str], Path | None, bool]


def tree_digest(root: Path, skip: Path | None = None) -> dict[str, str]:
    """relative path → sha256 (or "dir") of everything under root, except `skip` and what lies in it."""
    out = {}
    for path in sorted(root.rglob("*")):
        if skip is not None and (path == skip or skip in path.parents):
            continue
        out[str(path.relative_to(root))] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def foreign_shards(folder: Path) -> Path:
    """Someone's folder: shards and a half-written tmp, no crayonbox marker or manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "00000.tar").write_bytes(b"their tar")
    (folder / "00000.parquet").write_bytes(b"their parquet")
    (folder / "00007.tar.tmp").write_bytes(b"their tmp")
    return folder


def world_yaml(tmp: Path, text: str) -> Path:
    path = tmp / "world.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def world_with(tmp: Path, change: Callable[[dict], None]) -> Path:
    data = yaml.safe_load(DEFAULT_CONFIG.read_text(encoding="utf-8"))
    change(data)
    return world_yaml(tmp, yaml.safe_dump(data, allow_unicode=True))


def model_copy(tmp: Path, model: Path) -> Path:
    return Path(shutil.copytree(model, tmp / "model"))


# ---- the cases ---------------------------------------------------------------------------------------------

def world_into_foreign(tmp: Path, model: Path) -> Case:
    out = foreign_shards(tmp / "theirs")
    return ["world", "build", "--out", str(out), "-n", "2", "--workers", "1", "--quiet"], out, True


def world_damaged_manifest(tmp: Path, model: Path) -> Case:
    out = tmp / "world"
    out.mkdir()
    (out / "_world.json").write_text('{"seed": 0, "config": {', encoding="utf-8")
    return ["world", "build", "--out", str(out), "-n", "2", "--seed", "7", "--workers", "1", "--quiet"], out, True


def world_config_not_utf8(tmp: Path, model: Path) -> Case:
    config = tmp / "world.yaml"
    config.write_bytes(b"size: 64\n\xff\xfe\x00bad")
    return ["world", "build", "--config", str(config), "--out", str(tmp / "w"), "-n", "1", "--quiet"], tmp / "w", False


def world_config_folder(tmp: Path, model: Path) -> Case:
    (tmp / "conf").mkdir()
    return ["world", "build", "--config", str(tmp / "conf"), "--out", str(tmp / "w"), "-n", "1", "--quiet"], \
        tmp / "w", False


def _world_build(config: Path, tmp: Path) -> Case:
    return ["world", "build", "--config", str(config), "--out", str(tmp / "w"), "-n", "1", "--workers", "1",
            "--quiet"], tmp / "w", False


def world_nan_weight(tmp: Path, model: Path) -> Case:
    return _world_build(world_with(tmp, lambda d: d["weights"].update(sari=float("nan"))), tmp)


def world_inf_mix(tmp: Path, model: Path) -> Case:
    return _world_build(world_with(tmp, lambda d: d["objects_per_scene"].update({3: float("inf")})), tmp)


def world_unknown_weight_emoji(tmp: Path, model: Path) -> Case:
    return _world_build(world_with(tmp, lambda d: d["weights"].update(sarri=2.0)), tmp)


def world_duplicate_key(tmp: Path, model: Path) -> Case:
    text = DEFAULT_CONFIG.read_text(encoding="utf-8") + "\nsize: 32\n"
    return _world_build(world_yaml(tmp, text), tmp)


def captions_into_foreign(tmp: Path, model: Path) -> Case:
    source = tmp / "in"
    source.mkdir()
    _tiny_shard(source)
    out = foreign_shards(tmp / "theirs")
    return ["data", "captions", str(source), "--out", str(out), "--workers", "1", "--quiet"], out, True


def inspect_over_a_summary(tmp: Path, model: Path) -> Case:
    source = tmp / "in"
    source.mkdir()
    _tiny_shard(source)
    out = tmp / "notes"
    out.mkdir()
    (out / "summary.json").write_text('{"mine": true}', encoding="utf-8")
    return ["data", "inspect", str(source), "--out", str(out), "--quiet"], out, True


def encode_into_a_folder(tmp: Path, model: Path) -> Case:
    (tmp / "tokens.parquet").mkdir()
    return ["encode", "--data", str(tmp), "--vqgan", str(model), "--out", str(tmp / "tokens.parquet"), "--quiet"], \
        None, False


def vqgan_into_foreign(tmp: Path, model: Path) -> Case:
    out = foreign_shards(tmp / "theirs")
    return ["train", "vqgan", "--data", str(tmp), "--out", str(out), "--preset", "tiny"], out, True


def model_into_foreign(tmp: Path, model: Path) -> Case:
    out = foreign_shards(tmp / "theirs")
    return ["train", "model", "--tokens", str(tmp / "t.parquet"), "--tokenizer", str(tmp), "--vqgan", str(model),
            "--out", str(out)], out, True


def judge_into_foreign(tmp: Path, model: Path) -> Case:
    out = foreign_shards(tmp / "theirs")
    return ["train", "judge", "--world", str(DEFAULT_CONFIG), "--out", str(out)], out, True


def _probe(model: Path, out: Path, *extra: str) -> list[str]:
    return ["lab", "probe", "--model", str(model), "--prompts", "null", "-n", "1", "--workers", "1", "--out",
            str(out), "--quiet", *extra]


def probe_into_foreign(tmp: Path, model: Path) -> Case:
    out = foreign_shards(tmp / "theirs")
    return _probe(model, out), out, True


def probe_foreign_database(tmp: Path, model: Path) -> Case:
    out = tmp / "run"
    out.mkdir()
    db = sqlite3.connect(out / "lab.sqlite")
    db.execute("CREATE TABLE customers (name TEXT)")
    db.execute("INSERT INTO customers VALUES ('ada')")
    db.commit()
    db.close()
    return _probe(model, out), out, True


def probe_corrupt_model(tmp: Path, model: Path) -> Case:
    broken = model_copy(tmp, model)
    weights = broken / "bart" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return _probe(broken, tmp / "run"), tmp / "run", False  # and the run folder must not exist: see below


def probe_infinite_scale(tmp: Path, model: Path) -> Case:
    return _probe(model, tmp / "run", "--condition-scale", "1,inf"), tmp / "run", False


def _generate(model: Path, *extra: str) -> list[str]:
    return ["generate", "a cat", "-n", "1", "--seed", "0", "--model", str(model), *extra]


def generate_unwritable(tmp: Path, model: Path) -> Case:
    return _generate(model, "-o", "/proc/crayonbox-grid.png"), None, False


def generate_onto_a_folder(tmp: Path, model: Path) -> Case:
    (tmp / "grid.png").mkdir()
    return _generate(model, "-o", str(tmp / "grid.png")), None, False


def generate_under_a_file(tmp: Path, model: Path) -> Case:
    (tmp / "notes").write_text("mine", encoding="utf-8")
    return _generate(model, "-o", str(tmp / "notes" / "grid.png")), None, False


def generate_save_each_a_file(tmp: Path, model: Path) -> Case:
    (tmp / "each").write_text("mine", encoding="utf-8")
    return _generate(model, "-o", str(tmp / "out" / "grid.png"), "--save-each", str(tmp / "each")), tmp / "out", False


def generate_infinite_scale(tmp: Path, model: Path) -> Case:
    return _generate(model, "-o", str(tmp / "out" / "g.png"), "--condition-scale", "inf"), tmp / "out", False


def generate_huge_scale(tmp: Path, model: Path) -> Case:
    return _generate(model, "-o", str(tmp / "out" / "g.png"), "--condition-scale", "1e308"), tmp / "out", False


def generate_model_is_a_file(tmp: Path, model: Path) -> Case:
    (tmp / "model.bin").write_bytes(b"weights?")
    return _generate(tmp / "model.bin", "-o", str(tmp / "out" / "g.png")), tmp / "out", False


def generate_config_is_a_list(tmp: Path, model: Path) -> Case:
    copy = model_copy(tmp, model)
    (copy / "bart" / "config.json").write_text("[]", encoding="utf-8")
    return _generate(copy, "-o", str(tmp / "out" / "g.png")), tmp / "out", False


def generate_config_wrong_type(tmp: Path, model: Path) -> Case:
    copy = model_copy(tmp, model)
    config = json.loads((copy / "bart" / "config.json").read_text(encoding="utf-8"))
    (copy / "bart" / "config.json").write_text(json.dumps({**config, "d_model": "big"}), encoding="utf-8")
    return _generate(copy, "-o", str(tmp / "out" / "g.png")), tmp / "out", False


def generate_unknown_device(tmp: Path, model: Path) -> Case:
    return _generate(model, "-o", str(tmp / "out" / "g.png"), "--device", "gpu7"), tmp / "out", False


def generate_absent_gpu(tmp: Path, model: Path) -> Case:
    # the only case that needs the machine to lack CUDA (skipped below where it has one)
    return _generate(model, "-o", str(tmp / "out" / "g.png"), "--device", "cuda:3"), tmp / "out", False


CASES = [world_into_foreign, world_damaged_manifest, world_config_not_utf8, world_config_folder, world_nan_weight,
         world_inf_mix, world_unknown_weight_emoji, world_duplicate_key, captions_into_foreign,
         inspect_over_a_summary, encode_into_a_folder, vqgan_into_foreign, model_into_foreign, judge_into_foreign,
         probe_into_foreign, probe_foreign_database, probe_corrupt_model, probe_infinite_scale, generate_unwritable,
         generate_onto_a_folder, generate_under_a_file, generate_save_each_a_file, generate_infinite_scale,
         generate_huge_scale, generate_model_is_a_file, generate_config_is_a_list, generate_config_wrong_type,
         generate_unknown_device, generate_absent_gpu]

EXPECTED = {  # what the one line must name, so the user knows what to fix
    "world_damaged_manifest": "_world.json", "world_config_not_utf8": "not UTF-8",
    "world_nan_weight": "weights.sari", "world_inf_mix": "objects_per_scene.3", "world_unknown_weight_emoji": "sarri",
    "world_duplicate_key": "duplicate key 'size'", "probe_foreign_database": "not a crayonbox lab run",
    "probe_corrupt_model": "model.safetensors", "probe_infinite_scale": "--condition-scale",
    "generate_infinite_scale": "--condition-scale", "generate_huge_scale": "--condition-scale",
    "generate_config_is_a_list": "config.json", "generate_config_wrong_type": "d_model",
    "generate_unwritable": "/proc", "generate_under_a_file": "is a file",
    "generate_unknown_device": "unknown device 'gpu7'", "generate_absent_gpu": "cuda:3",
}


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_hostile_input_is_one_line_and_touches_nothing(case, tmp_path, tiny_model_dir, capsys):
    if case is generate_absent_gpu and torch.cuda.device_count() > 3:
        pytest.skip("this machine has a cuda:3")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    argv, out, untouched = case(tmp, tiny_model_dir)
    before = tree_digest(tmp, None if untouched else out)
    capsys.readouterr()

    code = main(argv)

    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 1, captured.err
    assert len(lines) == 1 and lines[0].startswith("crayonbox: error: "), captured.err
    assert "Traceback" not in captured.err + captured.out
    assert case.__name__ not in EXPECTED or EXPECTED[case.__name__] in lines[0], lines[0]
    assert tree_digest(tmp, None if untouched else out) == before
    if case is probe_corrupt_model:
        assert not (tmp / "run").exists()  # no run bound to a model that cannot be loaded


# ---- inspect: bad members are counted problems, not crashes ---------------------------------------------------

def _tiny_shard(folder: Path) -> None:
    from PIL import Image

    from crayonbox.data.shards import Item, write_shard

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buf, format="PNG")
    write_shard(folder / "00000.tar", [Item("000000000", buf.getvalue(), "png", "a red square", {})])


def _bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width × height pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


class _Zeros(io.RawIOBase):
    def __init__(self, size: int):
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self.left)
        buffer[:n] = b"\0" * n
        self.left -= n
        return n


def test_inspect_counts_a_bomb_and_a_huge_member(tmp_path, capsys):
    from crayonbox.data.shards import MAX_IMAGE_BYTES

    data = tmp_path / "data"
    data.mkdir()
    with gzip.open(data / "00000.tar", "wb", compresslevel=1) as raw, tarfile.open(fileobj=raw, mode="w") as tar:
        for name, payload in (("000000000.png", _bomb_png(60000, 60000)), ("000000000.txt", b"a bomb")):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
        info = tarfile.TarInfo("000000001.png")
        info.size = MAX_IMAGE_BYTES + 1  # declared (and stored) past the cap: skipped unread
        tar.addfile(info, io.BufferedReader(_Zeros(info.size)))
        info = tarfile.TarInfo("000000001.txt")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"huge"))
    assert (data / "00000.tar").stat().st_size < 1_000_000

    code = main(["data", "inspect", str(data), "--out", str(tmp_path / "report"), "--quiet"])

    assert code == 0
    assert "Traceback" not in capsys.readouterr().err
    summary = json.loads((tmp_path / "report" / "summary.json").read_text(encoding="utf-8"))
    assert summary["items"] == 2
    assert summary["problems"]["counts"]["bad_image"] == 1
    assert summary["problems"]["counts"]["member_too_large"] == 1
    assert "3600000000 pixels" in summary["problems"]["examples"]["bad_image"][0]


def test_inspect_reruns_into_its_own_folder(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    _tiny_shard(data)
    out = tmp_path / "report"
    assert main(["data", "inspect", str(data), "--out", str(out), "--quiet"]) == 0
    assert main(["data", "inspect", str(data), "--out", str(out), "--quiet"]) == 0
    assert json.loads((out / "summary.json").read_text(encoding="utf-8"))["items"] == 1


# ---- workers die with their parent -----------------------------------------------------------------------------

@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_die_with_parent_asks_the_kernel_for_sigkill():
    code = ("import ctypes, signal; from crayonbox.procs import die_with_parent; die_with_parent(); "
            "sig = ctypes.c_int(); ctypes.CDLL('libc.so.6').prctl(2, ctypes.byref(sig)); "  # 2 = PR_GET_PDEATHSIG
            "print(sig.value == signal.SIGKILL)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "True"


def test_probe_workers_die_with_their_parent(monkeypatch):
    from crayonbox.lab import probe

    calls = []
    monkeypatch.setattr(probe, "die_with_parent", lambda: calls.append("die_with_parent"))
    monkeypatch.setattr(probe, "ProbeWorker", lambda *args: calls.append("worker"))
    probe._init_worker((), 1)
    assert calls == ["die_with_parent", "worker"]
