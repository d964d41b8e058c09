"""crayonbox installs like a library: the core is the generator, each extra's modules load only in its commands.

- crayonbox/extras.py (import name -> extra, used for the CLI's one-line error) agrees with pyproject.toml, and
  every third-party module the package imports is declared in pyproject;
- with every extra's modules made unimportable, `import crayonbox`, `crayonbox --help`, the Pipeline and
  `crayonbox generate` on the shipped model still work, and an extra's command prints one line naming the
  extra to install;
- (slow) the built wheel, installed with only its core dependencies in a fresh venv, generates a grid.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

import crayonbox
from crayonbox import extras
from crayonbox.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(crayonbox.__file__).parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
OPTIONAL = PYPROJECT["project"]["optional-dependencies"]
# Test tools only ([dev]); the package never imports them.
DEV_MODULES = ("pytest", "hypothesis", "httpx", "openai", "min_dalle", "playwright", "ruff")


def dist(name: str) -> str:
    """A distribution name in PEP 503 form."""
    return re.sub(r"[-_.]+", "-", name).lower()


def split(requirements: list[str]) -> tuple[set[str], set[str]]:
    """(distributions, crayonbox extras included) of a requirement list."""
    dists, included = set(), set()
    for req in requirements:
        m = re.match(r"\s*([A-Za-z0-9._-]+)\s*(?:\[([^\]]*)\])?", req)
        assert m, req
        if dist(m[1]) == "crayonbox":
            included |= {e.strip() for e in m[2].split(",")}
        else:
            dists.add(dist(m[1]))
    return dists, included


CORE = split(PYPROJECT["project"]["dependencies"])[0]


# --- the table and pyproject agree -------------------------------------------------------------------------------


def test_extras_table_matches_pyproject():
    assert set(OPTIONAL) == set(extras.EXTRAS) | {"all", "dev"}
    for extra, modules in extras.EXTRAS.items():
        dists, included = split(OPTIONAL[extra])
        assert dists == {dist(d) for d in modules.values()}, f"[{extra}] in pyproject.toml vs crayonbox/extras.py"
        assert included == set(extras.INCLUDES.get(extra, ())), f"[{extra}] includes"
        assert not dists & CORE, f"[{extra}] repeats core dependencies {dists & CORE}"
    # [all] is every runtime extra but [clip] (pyproject.toml says why)
    dists, included = split(OPTIONAL["all"])
    assert not dists and set().union(*map(extras.provides, included)) == set(extras.EXTRAS) - {"clip"}


def test_commands_of_the_table_exist():
    parser = build_parser()
    top = next(a for a in parser._actions if a.dest == "command").choices
    for command, extra in extras.COMMANDS.items():
        assert extra in extras.EXTRAS, command
        first, *rest = command.split()
        assert first in top, command
        if rest:
            sub = next(a for a in top[first]._actions if a.dest == f"{first}_command").choices
            assert rest[0] in sub, command


def third_party_imports() -> dict[str, str]:
    """Every top-level module the package imports (at module level or in a function), with one place each."""
    found: dict[str, str] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in ("crayonbox", "__future__"):
                    found.setdefault(top, f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_every_import_is_declared():
    installed = packages_distributions()
    undeclared = []
    for module, where in third_party_imports().items():
        if module in extras.MODULES:
            continue
        if not {dist(d) for d in installed.get(module, [])} & CORE:
            undeclared.append(f"{module} ({where})")
    assert not undeclared, ("imported but neither a core dependency in pyproject.toml nor in an extra of "
                            "crayonbox/extras.py: " + ", ".join(undeclared))


# --- the one-line error -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("module", "command", "extra"), [
    ("pyarrow", "world build", "data"),
    ("pyarrow.parquet", "lab report", "lab"),  # [lab] brings [data]: one install for the whole command
    ("pyarrow", "train model", "train"),
    ("matplotlib", "data audit", "lab"),
    ("pyarrow", "data audit", "lab"),
    ("uvicorn", "serve", "serve"),
    ("scipy", "generate", "lab"),
    ("numpy", "lab report", None),
])
def test_extra_for(module, command, extra):
    assert extras.extra_for(module, command) == extra


def test_main_names_the_extra(monkeypatch, capsys):
    import crayonbox.generate_cli as generate_cli

    def missing(name):
        def handler(_args):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return handler

    monkeypatch.setattr(generate_cli, "run_generate", missing("statsmodels"))
    assert main(["generate", "x"]) == 1
    assert capsys.readouterr().err == ("crayonbox: error: this command needs the [lab] extra: "
                                       "pip install 'crayonbox[lab]' (missing module statsmodels)\n")
    with pytest.raises(ModuleNotFoundError):  # --debug keeps the traceback
        main(["--debug", "generate", "x"])
    monkeypatch.setattr(generate_cli, "run_generate", missing("no_such_core_module"))
    with pytest.raises(ModuleNotFoundError):  # not an optional dependency: a broken install, shown in full
        main(["generate", "x"])


# --- a core install, simulated: every extra's modules blocked ------------------------------------------------------

BLOCKED_RUN = textwrap.dedent("""
    import contextlib, importlib.machinery, io, json, sys
    from pathlib import Path

    BLOCKED = set(sys.argv[1].split(","))
    out = Path(sys.argv[2])
    assert not BLOCKED & {m.split(".")[0] for m in sys.modules}, "already imported at start-up"

    # Hide the modules from the path finder, as if not installed: an import raises ModuleNotFoundError and
    # importlib.util.find_spec answers None (torch probes optional modules that way).
    class Hidden(importlib.machinery.PathFinder):
        @classmethod
        def find_spec(cls, name, path=None, target=None):
            return None if name.split(".")[0] in BLOCKED else super().find_spec(name, path, target)

    sys.meta_path[sys.meta_path.index(importlib.machinery.PathFinder)] = Hidden

    import crayonbox
    from crayonbox.cli import build_parser, main
    from crayonbox.pipeline import Pipeline

    build_parser()
    assert crayonbox.Pipeline is Pipeline
    results = {}

    def run(name, argv):
        err, std = io.StringIO(), io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(std):
            try:
                rc = main(argv)
            except SystemExit as e:
                rc = e.code
        results[name] = {"rc": rc, "stderr": err.getvalue(), "stdout": std.getvalue()}

    run("help", ["--help"])
    run("serve --help", ["serve", "--help"])
    run("tokens", ["tokens", "a red apple"])
    run("generate", ["generate", "a red apple", "-n", "1", "--seed", "0", "-o", str(out / "grid.png")])
    results["load_default"] = type(crayonbox.load_default()).__name__
    run("serve", ["serve"])
    run("lab report", ["lab", "report", str(out / "no-run")])
    run("world build", ["world", "build", "--out", str(out / "world"), "-n", "1"])
    run("data audit", ["data", "audit", str(out / "no-captions")])
    run("encode", ["encode", "--data", "d", "--vqgan", "v", "--out", str(out / "t.parquet")])
    results["loaded"] = sorted(BLOCKED & {m.split(".")[0] for m in sys.modules})
    print(json.dumps(results))
""")


def test_core_works_with_every_extra_blocked(tmp_path):
    blocked = sorted(set(extras.MODULES) | set(DEV_MODULES))
    proc = subprocess.run([sys.executable, "-c", BLOCKED_RUN, ",".join(blocked), str(tmp_path)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.splitlines()[-1])
    assert results["loaded"] == []

    for name in ("help", "serve --help"):
        assert results[name]["rc"] == 0 and "usage: crayonbox" in results[name]["stdout"], results[name]
    assert results["tokens"]["rc"] == 0, results["tokens"]
    assert results["generate"]["rc"] == 0, results["generate"]
    assert (tmp_path / "grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert results["load_default"] == "Pipeline"

    expected = {"serve": "serve", "lab report": "lab", "world build": "data", "data audit": "lab",
                "encode": "train"}
    for command, extra in expected.items():
        r = results[command]
        lines = r["stderr"].splitlines()
        assert r["rc"] == 1 and len(lines) == 1, r
        m = re.fullmatch(rf"crayonbox: error: this command needs the \[{extra}\] extra: "
                         rf"pip install 'crayonbox\[{extra}\]' \(missing module (\w+)\)", lines[0])
        assert m, r
        assert extras.MODULES[m[1]] in extras.provides(extra), r


# --- the real thing: wheel -> fresh venv with the core dependencies only ---------------------------------------


@pytest.mark.slow
def test_wheel_installs_and_generates_with_core_dependencies_only(tmp_path):
    """About a minute on 2 CPU cores, most of it installing torch. Needs a package index (pip's configuration)
    that has the dev venv's torch build; TORCH_INDEX adds one (e.g. PyTorch's CPU index)."""
    import torch
    from PIL import Image

    start = time.monotonic()
    src = tmp_path / "src"  # a copy, so that building leaves no build/ or egg-info in the work tree
    shutil.copytree(PACKAGE, src / "crayonbox", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}

    def sh(*cmd, **kw):
        p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env, cwd=tmp_path, **kw)
        assert p.returncode == 0, f"{cmd}\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}"
        return p.stdout

    sh(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp_path / "dist", src)
    (wheel,) = (tmp_path / "dist").glob("crayonbox-*.whl")
    venv = tmp_path / "venv"
    sh(sys.executable, "-m", "venv", venv)  # no --system-site-packages: nothing of the dev venv is visible
    assert "include-system-site-packages = false" in (venv / "pyvenv.cfg").read_text()
    py = venv / "bin" / "python"
    # the dev venv's torch build (the CPU one), so that pip does not pick another build for `torch>=`
    (tmp_path / "constraints.txt").write_text(f"torch=={torch.__version__}\n")
    index = ["--extra-index-url", os.environ["TORCH_INDEX"]] if os.environ.get("TORCH_INDEX") else []
    sh(py, "-m", "pip", "install", "-q", "-c", tmp_path / "constraints.txt", *index, wheel, timeout=1200)
    installed = time.monotonic()

    for module in extras.MODULES:  # only the core came along
        sh(py, "-c", f"import importlib.util, sys; sys.exit(importlib.util.find_spec({module!r}) is not None)")
    sh(py, "-c", "import crayonbox; crayonbox.Pipeline; assert 'site-packages' in crayonbox.__file__")
    sh(venv / "bin" / "crayonbox", "generate", "a red apple", "--seed", "0", "-o", tmp_path / "grid.png")
    with Image.open(tmp_path / "grid.png") as grid:
        assert grid.format == "PNG" and grid.width == grid.height and grid.width % 3 == 0
        assert any(lo < hi for lo, hi in grid.convert("RGB").getextrema()), "a blank grid"
    p = subprocess.run([venv / "bin" / "crayonbox", "serve"], capture_output=True, text=True, env=env,
                       cwd=tmp_path, timeout=120)
    assert p.returncode == 1 and len(p.stderr.splitlines()) == 1, p.stderr
    assert p.stderr.startswith("crayonbox: error: this command needs the [serve] extra: "
                               "pip install 'crayonbox[serve]' (missing module "), p.stderr
    dists = sh(py, "-m", "pip", "list", "--format=freeze").split()
    print(f"wheel + venv + core install {installed - start:.0f} s ({len(dists)} distributions), checks and "
          f"generate {time.monotonic() - installed:.0f} s")


def test_the_pipeline_loads_without_importing_wordfreq():
    """wordfreq (57 MB of word lists, ~0.16 s to import) loads on the first hashtag, not with every command; so
    bench/gpu_check.sh can leave it off a GPU machine."""
    code = ("import sys; import crayonbox.pipeline, crayonbox.text.normalize as n; assert 'wordfreq' not in "
            "sys.modules; n.split_hashtag('sunsetbeach'); print('wordfreq' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


def test_gpu_check_carries_every_core_dependency_the_gpu_image_lacks():
    """A new core dependency fails this until bench/gpu_check.sh says where the GPU machine gets it."""
    script = (ROOT / "bench" / "gpu_check.sh").read_text(encoding="utf-8")
    listed = {name: set(re.search(rf'^{name}="([^"]*)"', script, re.M).group(1).split())
              for name in ("THERE", "WHEELS")}
    core = {re.split(r"[<>=!~ \[]", req, maxsplit=1)[0].lower().replace("-", "_")
            for req in PYPROJECT["project"]["dependencies"]}
    assert core - listed["THERE"] - listed["WHEELS"] == {"wordfreq"}
