"""The layer rule of docs/architecture.md, checked on every import statement of the library (parsed with ast,
so imports inside functions count too), and the promise that the modules needing no kernel import without
the compiled extension."""
from __future__ import annotations

import ast
import pathlib
import subprocess
import sys
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "robustkit"

#: Lowest first; a module may import robustkit modules of lower layers and of its own top-level unit only.
LAYERS = (
    {"_C", "_version"},               # the compiled extension and the version string
    {"_ext", "nn", "metrics"},
    {"ops"},
    {"attacks", "datasets", "models"},
    {"training"},
    {"zoo"},
    {"defenses"},
    {"eval"},
    {"reproduce"},
    {"cli"},
    {"__main__"},
)
LEVEL = {unit: level for level, units in enumerate(LAYERS) for unit in units}
#: Stricter than the layers: architectures depend on the shared modules only.
ONLY = {"models": {"nn"}}
#: Modules only the command line may import.
CLI_ONLY = {"argparse"}


def _unit(module: str) -> str:
    """``robustkit.eval.runner`` -> ``eval``; ``robustkit`` itself -> ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(source: str, module: str, is_package: bool) -> list:
    """``(line, imported module)`` of every import statement in ``source`` (relative imports resolved)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[:len(base) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            if prefix == "robustkit":   # ``from robustkit import eval`` names the submodule
                found += [(node.lineno, f"robustkit.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, prefix))
    return found


def violations(module: str, source: str, is_package: bool = False) -> list:
    unit = _unit(module)
    if unit == "":        # the package root: the public facade, which loads every layer lazily
        return []
    if unit not in LEVEL:
        return [f"{module}: top-level unit {unit!r} has no layer in tests/test_layers.py LAYERS"]
    problems = []
    for line, target in imports_of(source, module, is_package):
        top = target.split(".")[0]
        if top in CLI_ONLY and LEVEL[unit] < LEVEL["cli"]:
            problems.append(f"{module}:{line} imports {target} (only robustkit.cli may)")
        if top != "robustkit":
            continue
        other = _unit(target)
        if other == unit or other == "" and target == "robustkit":
            continue
        if other == "" or other not in LEVEL:
            problems.append(f"{module}:{line} imports {target}, which has no layer")
        elif unit in ONLY and other not in ONLY[unit]:
            problems.append(f"{module}:{line} imports {target}: {unit} may import only {sorted(ONLY[unit])}")
        elif LEVEL[other] >= LEVEL[unit]:
            problems.append(f"{module}:{line} imports {target}: {other} is not below {unit}")
    return problems


def test_every_library_import_follows_the_layer_rule():
    problems = []
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 40
    for path in files:
        problems += violations(_module_name(path), path.read_text(), path.name == "__init__.py")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("module, source, expected", [
    ("robustkit.models.lenet", "from robustkit.attacks import Normalize", "models may import only"),
    ("robustkit.models.lenet", "def f():\n    import robustkit.datasets", "models may import only"),
    ("robustkit.defenses.x", "from robustkit.eval.metrics import fooling_ratio", "eval is not below defenses"),
    ("robustkit.attacks.x", "from robustkit.datasets import mnist", "datasets is not below attacks"),
    ("robustkit.eval.x", "import argparse", "only robustkit.cli may"),
    ("robustkit.eval.x", "from robustkit import cli", "cli is not below eval"),
    ("robustkit.eval.runner", "from ..cli.specs import SpecError", "cli is not below eval"),
    ("robustkit.metrics", "from robustkit.ops import x", "ops is not below metrics"),
    ("robustkit.newthing", "import torch", "has no layer"),
])
def test_the_checker_flags_each_kind_of_violation(module, source, expected):
    found = violations(module, source)
    assert found and expected in found[0]


@pytest.mark.parametrize("module, source", [
    ("robustkit.cli.eval", "from robustkit.eval import evaluate\nimport argparse"),
    ("robustkit.eval.runner", "from robustkit.attacks.base import Attack\nfrom . import records"),
    ("robustkit.models.mnist", "from robustkit.nn import Normalize\nfrom robustkit.models.resnet import x"),
    ("robustkit.defenses.retrain", "from robustkit.training import train_classifier\nfrom robustkit import metrics"),
])
def test_the_checker_accepts_imports_from_below(module, source):
    assert violations(module, source) == []


def test_modules_that_need_no_kernel_import_without_the_extension():
    # a finder that makes `robustkit._C` fail to import, as in a tree where the extension was never built
    script = textwrap.dedent("""
        import importlib, importlib.abc, sys
        class NotBuilt(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name == "robustkit._C":
                    raise ImportError("not built")
        sys.meta_path.insert(0, NotBuilt())
        import robustkit
        for name in ("datasets", "metrics", "models", "nn", "eval.records", "eval.summary", "eval.report",
                     "eval.metrics", "cli", "cli.specs"):
            importlib.import_module("robustkit." + name)
        robustkit.models.LeNet()(__import__("torch").zeros(1, 1, 28, 28))
        assert "robustkit._ext" not in sys.modules, "something imported the extension"
        assert robustkit.__version__
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_help_parses_without_importing_torch():
    script = ("import sys\nfrom robustkit.cli import build_parser\n"
              "for argv in (['--help'], ['eval', '--help'], ['retrain', '--help']):\n"
              "    try:\n        build_parser().parse_args(argv)\n    except SystemExit:\n        pass\n"
              "assert 'torch' not in sys.modules, 'torch imported'\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "deepfool" in proc.stdout and "--target" in proc.stdout
    assert "``" not in proc.stdout and ":mod:" not in proc.stdout and ":func:" not in proc.stdout   # no raw reST


def test_root_package_attributes_load_lazily():
    import robustkit as rk
    assert rk.attacks.FGSM.__name__ == "FGSM" and rk.Normalize is rk.nn.Normalize and rk.defenses.KNNLabeler
    assert rk.eval.evaluate is rk.eval.runner.evaluate
    with pytest.raises(AttributeError, match="no_such_thing"):
        rk.no_such_thing


def test_one_module_device_helper():
    import torch

    from robustkit.nn import module_device
    assert module_device(torch.nn.Linear(2, 2)) == torch.device("cpu")
    holder = torch.nn.Module()
    holder.register_buffer("b", torch.zeros(1, dtype=torch.float64))
    assert module_device(holder) == torch.device("cpu")
    assert module_device(torch.nn.ReLU()) == torch.device("cpu") and module_device(torch.nn.ReLU(), None) is None
