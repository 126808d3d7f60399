"""The import graph of keras_resnet_suite/ and detection/ (issue 21): no circles, and imports
inside functions only of optional dependencies and heavy backends, read from the source with
`ast` (module-level and function-local imports alike; `if TYPE_CHECKING:` blocks excepted)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("keras_resnet_suite", "detection")

# Imported where they are used: extras of pyproject.toml (torch, jax, tfds, coco, interop,
# export), and TensorFlow, the heavy backend, inside backend-agnostic code.
OPTIONAL_OR_HEAVY = {
    "tensorflow", "torch", "torchvision", "jax", "jaxlib", "onnx", "onnxruntime", "openvino",
    "ai_edge_litert", "tf2onnx", "keras_hub", "keras_cv", "tensorflow_datasets", "pycocotools",
    "scipy", "tensorboard", "matplotlib", "nncf",
}
HEAVY_MODULES = ("keras.src.backend.tensorflow",)  # Keras' TensorFlow trainer loads TensorFlow
# The entry points set TF_ENABLE_ONEDNN_OPTS (runtime.default_for_our_commands) before
# TensorFlow loads, so what they run is imported after that, inside them.
ENTRY_POINTS = {"keras_resnet_suite/cli.py", "keras_resnet_suite/__main__.py",
                "detection/__main__.py"}
# Importable without Keras/TensorFlow, and importing Keras only where a function needs it:
# config validation reads the loaders' and the builder's signatures when a config is read
# (detection/cli.py parses arguments with it); the checkpoint registry and readers list and
# read published checkpoints (tests/detection/checkpoints asserts they load no TensorFlow).
LIGHT_BY_DESIGN = {"detection/config.py", "detection/checkpoints/readers.py",
                   "detection/checkpoints/registry.py"}


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(tree: ast.AST, in_function: bool = False):
    """(import node, inside a function) for every import of the module."""
    for node in ast.iter_child_nodes(tree):
        if _is_type_checking(node):
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, in_function
        inner = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                 ast.Lambda))
        yield from _imports(node, inner)


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool,
             modules: dict[str, Path]) -> list[str]:
    """The project modules an import statement names: `from a import b` is the module a.b
    where that is one, else a itself."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = module if is_package else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        base = base.rpartition(".")[0]
    source = ".".join(p for p in (base if node.level else "", node.module or "") if p)
    return [f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source
            for a in node.names]


def _graph() -> tuple[dict[str, set[str]], list[tuple[str, int, str]]]:
    """(module -> project modules it imports, [(file, line, module)] of imports inside
    functions)."""
    modules = _modules()
    graph, local = {}, []
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        graph[name] = set()
        for node, in_function in _imports(tree):
            targets = _targets(node, name, path.name == "__init__.py", modules)
            graph[name].update(t for t in targets if t in modules and t != name)
            if in_function:
                local += [(str(path.relative_to(REPO)), node.lineno, t) for t in targets]
    return graph, local


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_the_graph_finds_a_planted_circle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_circles():
    graph, _ = _graph()
    assert "keras_resnet_suite.models" in graph and "detection.config" in graph
    assert "keras_resnet_suite.weights" in graph["keras_resnet_suite.models"]  # edges are read
    circle = _cycle(graph)
    assert circle is None, "import circle: " + " -> ".join(circle)


def _optional_or_heavy(module: str) -> bool:
    return module.split(".")[0] in OPTIONAL_OR_HEAVY or module.startswith(HEAVY_MODULES)


def test_function_local_imports_only_of_optional_dependencies_and_heavy_backends():
    _, local = _graph()
    allowed = {(f, n) for f, n, m in local if _optional_or_heavy(m)}
    exempt = {(f, n) for f, n, m in local if not _optional_or_heavy(m) and
              f in ENTRY_POINTS | LIGHT_BY_DESIGN}
    wrong = sorted({f"{f}:{n} imports {m} inside a function" for f, n, m in local
                    if not _optional_or_heavy(m) and (f, n) not in exempt})
    print(f"function-local import statements: {len(allowed)} of optional dependencies or heavy "
          f"backends, {len(exempt)} exempt (entry points, light by design)")
    assert local and not wrong, "\n".join(wrong)
