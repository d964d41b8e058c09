"""Bad input to `lab blame`, `lab ablate` and `lab explain`: one clear line, exit 1, nothing written."""

import hashlib
import json
from pathlib import Path

import pytest

from crayonbox.cli import main
from crayonbox.data.captions import CaptionPipeline
from crayonbox.data.world.config import DEFAULT_CONFIG


def tree_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        digest.update(str(path.relative_to(folder)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


@pytest.fixture
def fake_run(tmp_path) -> Path:
    """A run folder with a recipe record (no trained parts): enough to reach every input check."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "world.yaml").write_bytes(DEFAULT_CONFIG.with_name("planted.yaml").read_bytes())
    (run / "recipe.json").write_text(json.dumps({
        "recipe": "planted", "seed": 0, "world_config": {"path": "planted.yaml", "sha256": "x", "copy": "world.yaml"},
        "caption_pipeline": CaptionPipeline().config, "recipe_config": {"model": {}}, "stages": []}))
    return run


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.mark.parametrize("argv, message", [
    (["lab", "ablate", "{empty}", "--arms", "english_only:drop", "--out", "{out}"], "no recipe record"),
    (["lab", "ablate", "{run}", "--arms", "ban_list:off", "--out", "{out}"], "has no step 'ban_list'"),
    (["lab", "ablate", "{run}", "--arms", "normalize:off", "--out", "{out}"], "can be changed to"),
    (["lab", "ablate", "{run}", "--arms", "english_only", "--out", "{out}"], "write STEP:CHANGE"),
    (["lab", "ablate", "{run}", "--arms", "english_only:drop", "--seeds", "0", "--out", "{out}"], "--seeds ≥ 1"),
    (["lab", "explain", "{empty}", "--out", "{out}"], "no recipe record"),
    (["lab", "explain", "{run}", "--ablation", "{other}", "--out", "{out}"], "is an ablation of"),
    (["lab", "explain", "{run}", "--ablation", "{empty}", "--out", "{out}"], "not an ablation folder"),
    (["lab", "blame", "{empty}", "--tokenizer", "{empty}", "--out", "{out}"], "no tokenizer in"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, fake_run, capsys, argv, message):
    empty, other = tmp_path / "empty", tmp_path / "other-abl"
    empty.mkdir()
    other.mkdir()
    (other / "ablation.json").write_text(json.dumps({"run": "/somewhere/else", "run_identity": "abc",
                                                     "arms": ["baseline"], "seeds": [0]}))
    before = tree_digest(tmp_path)
    paths = {"run": fake_run, "empty": empty, "other": other, "out": tmp_path / "out"}
    code, err = run_cli([a.format(**paths) for a in argv], capsys)
    assert code == 1
    assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err, err
    assert tree_digest(tmp_path) == before  # nothing written, nothing changed
