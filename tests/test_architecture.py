"""The layout rules of docs/architecture.md, checked on the source: layers, cycles, module size, no torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "nucseg"
#: The stages, lowest first: a module may import from its own stage and the ones before it.
LAYERS = (
    "errors",
    "version",
    "io",
    "preprocess",
    "datasets",
    "models",
    "postprocess",
    "inference",
    "visualize",
    "evaluation",
    "training",
    "scale",
    "batch",
    "export",
    "cli",
    "napari",
)
MAX_MODULE_LINES = 600


def module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(("nucseg", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")
        names[name] = path
    return names


def import_graph() -> dict[str, set[str]]:
    """Module -> the nucseg modules it imports, at the top or inside functions."""
    modules = module_names()
    graph = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("nucseg"):
                candidates = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            elif isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            else:
                continue
            graph[name].update(c for c in candidates if c in modules and c != name)
    return graph


def layer(name: str) -> int:
    parts = name.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 else -1  # the package itself is the public facade


def test_every_subpackage_and_module_has_a_layer():
    assert all(layer(name) >= 0 for name in module_names() if name != "nucseg"), sorted(module_names())


def test_dependencies_point_one_way():
    upward = [(a, b) for a, targets in import_graph().items() for b in targets if layer(a) >= 0 and layer(b) > layer(a)]
    assert upward == []


def test_no_import_cycles():
    graph = import_graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycles.append(path[path.index(target) :] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_no_module_is_over_600_lines():
    lengths = {name: len(path.read_text().splitlines()) for name, path in module_names().items()}
    long = {name: n for name, n in lengths.items() if n > MAX_MODULE_LINES}
    assert long == {}


def test_segmenting_with_onnx_runtime_imports_no_torch():
    code = (
        "import sys\n"
        "import nucseg\n"
        "from nucseg.datasets.locations import sample_image_paths\n"
        "from nucseg.io import read_image\n"
        "result = nucseg.load_model().segment(read_image(sample_image_paths()[0]))\n"
        "assert result.labels.max() > 0\n"
        "print('torch' in sys.modules)\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert completed.stdout.strip() == "False"
