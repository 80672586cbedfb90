"""The import direction of DEVELOPERS.md holds: cli → measure → server / exports / trainer → zoo (the three in the
middle import none of each other), and no gptzoo module imports another in a cycle. Every import counts, wherever it
sits: module level, inside a function, or under `if TYPE_CHECKING:` (a cycle of type hints is still a cycle to a
reader). The imports are read from the source (ast), so the check also guards modules no test imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

LAYERS = {"zoo": 0, "trainer": 1, "exports": 1, "server": 1, "measure": 2, "cli": 3}

# Known exceptions, (importer, imported) modules: each names why it is allowed for now. Empty: the whole tree holds.
KNOWN: set[tuple[str, str]] = set()


def modules(root: Path) -> dict[str, Path]:
    """gptzoo module name -> source file, for every subpackage folder of `root`."""
    out = {}
    for package in LAYERS:
        for path in sorted((root / package).rglob("*.py")):
            parts = ["gptzoo", *path.relative_to(root).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def imports(root: Path) -> dict[str, set[str]]:
    """module -> the gptzoo modules it imports (`from gptzoo.zoo import generate` imports gptzoo.zoo.generate;
    `from gptzoo.zoo.generate import Batch` imports gptzoo.zoo.generate)."""
    mods = modules(root)
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: resolved against the importing package
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            else:
                continue
            for name in names:
                while name and name not in mods:  # `import gptzoo.zoo.generate.x`: the module part
                    name = name.rpartition(".")[0]
                if name and name != mod:
                    graph[mod].add(name)
    return graph


def layer(module: str) -> str:
    return module.split(".")[1]


def against_direction(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """(importer, imported) pairs where a module imports one of its own layer in another folder or one above it."""
    return sorted((a, b) for a, targets in graph.items() for b in targets
                  if layer(a) != layer(b) and LAYERS[layer(b)] >= LAYERS[layer(a)])


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles: every strongly connected component of more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def test_imports_follow_the_direction():
    bad = [pair for pair in against_direction(imports(REPO)) if pair not in KNOWN]
    assert bad == [], "imports against cli → measure → server / exports / trainer → zoo: " + ", ".join(
        f"{a} imports {b}" for a, b in bad)


def test_no_import_cycles():
    graph = imports(REPO)
    for a, b in KNOWN:
        graph[a].discard(b)
    assert cycles(graph) == []


def test_known_exceptions_are_still_needed():
    """An exception that the tree no longer needs goes, so it cannot hide a new import later."""
    graph = imports(REPO)
    assert [pair for pair in sorted(KNOWN) if pair[1] not in graph.get(pair[0], ())] == []


def write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    for package in LAYERS:
        (root / package).mkdir(exist_ok=True)
    return root


def test_the_check_finds_a_wrong_direction_and_a_cycle(tmp_path):
    """The checks themselves, on a small tree: an import up, one across the middle layer, a cycle hidden in a
    function and under TYPE_CHECKING, and a relative import."""
    root = write(tmp_path, {
        "zoo/__init__.py": "",
        "zoo/a.py": "def f():\n    from gptzoo.zoo import b\n",
        "zoo/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from gptzoo.zoo.a import f\n",
        "zoo/c.py": "import gptzoo.trainer.loop\n",
        "trainer/loop.py": "from gptzoo.server import worker\nfrom ..zoo.c import x\n",
        "server/worker.py": "from gptzoo.zoo import a\n",
        "cli/main.py": "from gptzoo.measure.bench import run\nfrom gptzoo.zoo.a import f\n",
        "measure/bench.py": "",
    })
    graph = imports(root)
    assert graph["gptzoo.trainer.loop"] == {"gptzoo.server.worker", "gptzoo.zoo.c"}
    assert against_direction(graph) == [("gptzoo.trainer.loop", "gptzoo.server.worker"),
                                        ("gptzoo.zoo.c", "gptzoo.trainer.loop")]
    assert cycles(graph) == [["gptzoo.trainer.loop", "gptzoo.zoo.c"], ["gptzoo.zoo.a", "gptzoo.zoo.b"]]


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_every_folder_is_read(package):
    assert any(layer(m) == package for m in modules(REPO))


# The registry and the workers answer domain outcomes; only the HTTP side of server/ knows statuses (issue 24).
DOMAIN = {"gptzoo.server.worker", "gptzoo.server.engine", "gptzoo.server.job", "gptzoo.server.refusals",
          "gptzoo.server.registry", "gptzoo.server.routing", "gptzoo.server.reload", "gptzoo.server.events"}


def http_words(path: Path) -> list[str]:
    """What in a module's code speaks HTTP: the name ApiError, a Retry-After header, a status attribute."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        name = node.id if isinstance(node, ast.Name) else node.name if isinstance(node, ast.alias) else ""
        if name == "ApiError":
            found.append("ApiError")
        elif isinstance(node, ast.Constant) and node.value == "Retry-After":
            found.append("Retry-After")
        elif isinstance(node, ast.Attribute) and node.attr in ("status", "status_code"):
            found.append(f".{node.attr}")
    return found


def test_http_stays_in_the_http_side_of_the_server():
    mods = modules(REPO)
    # the load client (measure/) reads statuses: it is an HTTP client; server/'s HTTP side may raise ApiError
    outside = {m: w for m, p in mods.items() if not m.startswith(("gptzoo.server.", "gptzoo.measure."))
               and "ApiError" in (w := http_words(p))}
    assert outside == {}
    engine = {m: w for m in DOMAIN if (w := http_words(mods[m]))}
    assert engine == {}


def test_the_http_check_finds_an_api_error(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("from gptzoo.server.errors import ApiError\n"
                    "raise ApiError(503, 'x', headers={'Retry-After': '1'})\n")
    assert sorted(http_words(path)) == ["ApiError", "ApiError", "Retry-After"]
