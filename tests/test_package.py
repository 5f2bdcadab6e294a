"""The package's shape: light imports, the lazy public API, no import cycles, layering, extras."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

import deepautodnn

FIXTURE_MODEL = Path(__file__).parent / "fixtures" / "model_v0.1.0"  # a small valid model directory
HEAVY = ("torch", "numpy", "sklearn", "scipy", "PIL", "fastapi", "onnxruntime", "matplotlib")


def python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_import_and_help_load_nothing_heavy():
    proc = python(
        "import sys, deepautodnn\n"
        "from deepautodnn.cli import get_args_parser\n"
        "get_args_parser().format_help()\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_help_importtime_shows_no_torch():
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "deepautodnn", "--help"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and "usage: deepautodnn" in proc.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "deepautodnn.cli" in imported  # the check reads the right output
    assert not imported & {"torch", "numpy"}


# What `from deepautodnn import ...` offered before the API became lazy; none may go missing.
OLD_PUBLIC_NAMES = {
    "CLASS_NAMES",
    "Config",
    "DeepAutoDNNClassifier",
    "ImageError",
    "UnknownDetector",
    "load_image",
    "ConvAutoencoder",
    "DeepAutoDNN",
    "DeepClassifier",
    "ModelConfig",
    "TrainConfig",
    "classification_metrics",
    "evaluate_model",
    "get_preset",
    "load_fashion_mnist",
    "load_model",
    "predict_files",
    "predict_proba",
    "run_ablation",
    "run_baselines",
    "save_model",
    "train_run",
    "write_paper_report",
}


def test_the_three_lists_of_public_names_agree():
    import ast

    tree = ast.parse(Path(deepautodnn.__file__).read_text())
    type_checked = {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING"
        for stmt in node.body
        for alias in stmt.names
    }
    lazy = set(deepautodnn._EXPORTS)
    assert lazy == type_checked == set(deepautodnn.__all__) - {"__version__"}
    assert OLD_PUBLIC_NAMES <= lazy


def test_public_api_resolves_lazily():
    for name in deepautodnn.__all__:
        assert getattr(deepautodnn, name) is not None, name
    assert set(deepautodnn.__all__) <= set(dir(deepautodnn))
    with pytest.raises(AttributeError):
        deepautodnn.no_such_name  # noqa: B018


def test_version_comes_from_the_installed_metadata():
    assert deepautodnn.__version__ == importlib.metadata.version("deepautodnn")


def _cycles(graph, modules: set[str]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, out, counter = {}, {}, set(), [], [], [0]
    for root in sorted(modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root) & modules)))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        out.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = counter[0]
                counter[0] += 1
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child) & modules))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return out


def test_no_import_cycles_even_through_functions():
    grimp = pytest.importorskip("grimp")  # comes with import-linter ([dev])
    graph = grimp.build_graph("deepautodnn", exclude_type_checking_imports=True)  # inside functions too
    modules = set(graph.modules)
    assert len(modules) > 30
    assert _cycles(graph, modules) == []


def test_cycle_finder_finds_a_cycle():
    class Graph:  # a -> b -> c -> a, d alone
        edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}

        def find_modules_directly_imported_by(self, m):
            return self.edges[m]

    assert _cycles(Graph(), {"a", "b", "c", "d"}) == [["a", "b", "c"]]


def test_layering_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    if not lint.exists():
        pytest.skip("import-linter is not installed ([dev])")
    proc = subprocess.run([str(lint)], capture_output=True, text=True, timeout=300, cwd=Path(__file__).parents[1])
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "0 broken" in proc.stdout


@pytest.mark.parametrize(
    "blocked, call, extra",
    [
        ("fastapi", "from deepautodnn.cli import main; sys.exit(main(['serve', 'some-model']))", "serve"),
        ("prometheus_client", "from deepautodnn.cli import main; sys.exit(main(['serve', 'some-model']))", "serve"),
        (
            "matplotlib",
            "from deepautodnn.cli import main; sys.exit(main(['preprocess', 'x.png', '--steps', 'y.png']))",
            "report",
        ),
        ("onnx", "from deepautodnn.cli import main; sys.exit(main(['export', 'some-model']))", "onnx"),
        (
            "onnxruntime",
            "from deepautodnn.cli import main; sys.exit(main(['predict', MODEL, 'x.png', '--backend', 'onnx']))",
            "onnx",
        ),
    ],
)
def test_a_missing_extra_is_one_line_naming_it(blocked, call, extra, tmp_path):
    from PIL import Image

    Image.new("L", (32, 32), 200).save(tmp_path / "x.png")
    proc = subprocess.run(
        [sys.executable, "-c", f"import sys; sys.modules[{blocked!r}] = None\nMODEL = {str(FIXTURE_MODEL)!r}\n{call}"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode != 0
    assert f"pip install 'deepautodnn[{extra}]'" in proc.stderr
    if "cli" in call:  # the command line prints one line, no traceback
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_the_core_imports_with_every_extra_missing():
    """Everything but the service imports with no extra installed: a core install trains,
    evaluates, predicts and fits the estimator (figures and ONNX fail later, in one line)."""
    from deepautodnn.utils.extras import EXTRAS

    blocked = [m for modules in EXTRAS.values() for m in modules]
    src = Path(deepautodnn.__file__).parent
    modules = sorted(
        "deepautodnn." + ".".join(p.relative_to(src).with_suffix("").parts)
        for p in src.rglob("*.py")
        if p.name != "__main__.py" and "serve" not in p.relative_to(src).parts
    )
    proc = python(
        f"import sys, importlib\nfor m in {blocked!r}: sys.modules[m] = None\n"
        f"for m in {modules!r}: importlib.import_module(m.removesuffix('.__init__'))\nprint('ok')"
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
    assert len(modules) > 40
