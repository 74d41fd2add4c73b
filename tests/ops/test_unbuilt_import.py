"""robustkit imports in a tree where the extension is not built (torchvision's extension.py pattern): the ops
module loads without registering anything, and calling an op raises the build hint."""
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]

PROBE = r"""
import torch
import robustkit._ext as ext
import robustkit.ops as ops
assert not ext.has_ops(), "the copy should have no extension"
assert ext.build_info()["built"] is False
x = torch.rand(2, 3)
calls = {
    "sign_momentum_step": lambda: ops.sign_momentum_step(x.clone(), x, x, None, step_size=0.1, eps=0.1),
    "ensemble_temperature_ce": lambda: ops.ensemble_temperature_ce(x[None], torch.zeros(2, dtype=torch.long)),
    "ensemble_temperature_ce_grad": lambda: ops.ensemble_temperature_ce_grad(x[None], torch.zeros(2, dtype=torch.long)),
    "deepfool_step": lambda: ops.deepfool_step(x, x[:, :, None]),
    "cw_l2_step": lambda: ops.cw_l2_step(x, x, x, x, x, x[:, 0], x, x, torch.ones(2, dtype=torch.bool), step=1),
    "conv2d_input_grad": lambda: ops.conv2d_input_grad(x[None, None], x[None, None], (2, 3)),
}
for name, call in calls.items():
    try:
        call()
    except RuntimeError as err:
        assert "make setup" in str(err) and "robustkit._C" in str(err), (name, str(err))
    else:
        raise AssertionError(f"{name} ran without the extension")
print("ok", len(calls))
"""


@pytest.fixture(scope="module")
def unbuilt_copy(tmp_path_factory):
    """A copy of the package without the compiled extension (and without bytecode caches)."""
    root = tmp_path_factory.mktemp("unbuilt")
    shutil.copytree(REPO / "robustkit", root / "robustkit",
                    ignore=shutil.ignore_patterns("_C*.so", "*.so.tmp*", "__pycache__"))
    assert not list((root / "robustkit").glob("_C*"))
    return root


# An editable install (pip install -e) puts a finder on sys.meta_path that resolves any robustkit.* module the
# copy lacks, robustkit._C included, to the checkout it was installed from; the probe drops it first.
_NO_EDITABLE_FINDER = ("import sys\n"
                       "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]\n")


def _run(code, root):
    env = dict(os.environ, PYTHONPATH=str(root), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-c", _NO_EDITABLE_FINDER + code], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)


def test_ops_import_without_the_extension_and_calls_give_the_build_hint(unbuilt_copy):
    result = _run(PROBE, unbuilt_copy)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok 6"


def test_unbuilt_copy_really_lacks_the_ops(unbuilt_copy):
    """The control: torch.ops.robustkit has no ops in the copy, so the probe above cannot pass by accident."""
    result = _run("import torch, robustkit._ext\n"
                  "print(hasattr(torch.ops.robustkit, 'deepfool_step'))", unbuilt_copy)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
