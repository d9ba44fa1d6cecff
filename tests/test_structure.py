"""The package's shape: layers that import only the layers below them, no import
circles (lazy imports inside functions included), and no module over 600 lines."""
import ast
import fnmatch
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "zoo"

# The layer order, lowest first: a module may import modules of its own layer or below.
LAYERS = [
    ("zoo", "zoo._version", "zoo.errors", "zoo.settings", "zoo.papers"),
    ("zoo.registry", "zoo.layers", "zoo.costs", "zoo.plots", "zoo.metrics", "zoo.schema",
     "zoo.memory"),
    ("zoo.data", "zoo.hub", "zoo.hub.*", "zoo.index"),
    ("zoo.models", "zoo.models.*"),
    ("zoo.api",),
    ("zoo.preprocessing",),
    ("zoo.runs",),
    ("zoo.augment", "zoo.augment.*"),
    ("zoo.training", "zoo.training.*"),
    ("zoo.ssl", "zoo.ssl.*", "zoo.search", "zoo.search.*", "zoo.deploy", "zoo.publish", "zoo.predict"),
    ("zoo.imports", "zoo.imports.*"),
    ("zoo.cli", "zoo.cli.*"),
]
MAX_LINES = 600
# one paper's architecture in one file may be longer (the guide's exception)
LONG_MODEL_FILES = ("zoo.models.*",)


def _modules():
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(module: str, path: Path):
    """Every zoo module ``module`` imports (top-level and inside functions): for
    ``from P import name``, P.name when that is a module, else P."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in MODULES)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                if f"{base}.{alias.name}" in MODULES:
                    found.add(f"{base}.{alias.name}")
                elif base in MODULES:
                    found.add(base)
    found.discard(module)
    return found


GRAPH = {module: _imports(module, path) for module, path in MODULES.items()}


def _rank(module: str) -> int:
    for rank, patterns in enumerate(LAYERS):
        if any(fnmatch.fnmatchcase(module, pattern) for pattern in patterns):
            return rank
    raise AssertionError(f"{module} is in no layer: add it to LAYERS in {__file__}.")


def test_every_module_has_a_layer():
    for module in MODULES:
        _rank(module)


def test_imports_follow_the_layer_order():
    upward = sorted(f"{module} -> {target}" for module, targets in GRAPH.items()
                    for target in targets if _rank(target) > _rank(module))
    assert not upward, "imports against the layer order:\n" + "\n".join(upward)


def test_the_facade_is_imported_by_no_module():
    users = sorted(module for module, targets in GRAPH.items() if "zoo" in targets)
    assert not users, f"modules importing the top-level package instead of a module: {users}"


def _cycle(graph):
    """One import circle of ``graph`` (a list of modules), or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_circles():
    cycle = _cycle(GRAPH)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_the_checks_can_fail():
    """The walkers see what they must: a circle, and a lazy import inside a function."""
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
    assert "zoo.hub.loading" in GRAPH["zoo.api"]  # a top-level import
    assert "zoo.training.distill" in GRAPH["zoo.training.loop"]  # a lazy one, inside train()
    assert _rank("zoo.cli.training") > _rank("zoo.training.loop") > _rank("zoo.api")


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_size(module):
    lines = len(MODULES[module].read_text().splitlines())
    if any(fnmatch.fnmatchcase(module, pattern) for pattern in LONG_MODEL_FILES):
        return
    assert lines <= MAX_LINES, f"{module} has {lines} lines (more than {MAX_LINES}): split it by concern."


def _environment_readers():
    """Modules that touch ``os.environ`` / ``os.getenv`` (or import ``environ``/``getenv``)."""
    readers = set()
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv"):
                readers.add(module)
            elif isinstance(node, ast.ImportFrom) and node.module == "os" and any(
                    alias.name in ("environ", "getenv") for alias in node.names):
                readers.add(module)
    return readers


def test_environment_variables_are_read_in_settings_only():
    assert _environment_readers() == {"zoo.settings"}


@pytest.mark.parametrize("value, expected", [
    ("1", True), ("true", True), ("YES", True), (" on ", True),
    ("0", False), ("", False), ("off", False), ("no", False),
])
def test_zoo_offline_accepts_the_same_spellings_everywhere(monkeypatch, value, expected):
    """One reader: the weights cache, the datasets and the attentive extractor all ask
    settings.offline(), so ZOO_OFFLINE=yes means offline for every one of them."""
    from zoo import settings

    monkeypatch.setenv("ZOO_OFFLINE", value)
    assert settings.offline() is expected


def test_the_cli_group_starts_without_tensorflow():
    """`zoo --help` imports no TensorFlow (measured: 0.1 s instead of 7 s)."""
    import subprocess
    import sys

    code = ("import sys; from zoo.cli import cli; "
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'; "
            "assert 'zoo.api' not in sys.modules, 'the models imported'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
