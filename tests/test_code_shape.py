"""The shape the code keeps (issue: detection redesign): small files and functions, private
Keras/TF APIs only in the compatibility module, no aliases of old module paths (the import
graph itself is checked in test_import_graph.py)."""

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("benchmarks", "detection", "keras_resnet_suite")
COMPAT = REPO / "keras_resnet_suite" / "compat.py"


def _sources():
    for package in PACKAGES:
        yield from sorted((REPO / package).rglob("*.py"))


def test_no_file_over_400_lines_and_no_function_over_80():
    long = []
    for path in _sources():
        text = path.read_text()
        if text.count("\n") > 400:
            long.append(f"{path.relative_to(REPO)}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > 80:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}() "
                                f"{length} lines")
    assert not long, long


def test_private_keras_and_tf_apis_only_in_the_compat_module():
    private = ("keras.src", "_flatten_layers", "tf.raw_ops", ".call = ")  # class-wide patches
    found = [f"{path.relative_to(REPO)}: {word}" for path in _sources() if path != COMPAT
             for word in private if word in path.read_text()]
    assert COMPAT.is_file() and not found, found


def test_detection_submodules_load_lazily_and_old_paths_are_gone():
    code = ("import sys, detection; assert 'detection.export' not in sys.modules; "
            "assert callable(detection.export.export_saved_model); "
            "import detection.modeling as m; assert detection.FasterRCNN is m.FasterRCNN\n"
            "try:\n    import detection.faster_rcnn\nexcept ModuleNotFoundError as e:\n"
            "    print(e.name)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["detection.faster_rcnn"]  # no alias of the old flat layout


def test_no_two_detection_modules_share_a_name():
    names = {}
    for path in (REPO / "detection").rglob("*.py"):
        if path.name != "__init__.py":
            names.setdefault(path.stem, []).append(str(path.relative_to(REPO)))
    packages = {p.name for p in (REPO / "detection").rglob("*") if p.is_dir()}
    clashes = {k: v for k, v in names.items() if len(v) > 1 or k in packages}
    assert not clashes, clashes
