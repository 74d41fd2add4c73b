"""The build configuration is defined once: the CUDA architectures in csrc/cuda_archs.txt, read by setup.py,
CMakeLists.txt and tools/cuda_check.sh; the hand-written CUDA glue shim names the torch it mirrors."""
import pathlib
import re
import subprocess

import torch

REPO = pathlib.Path(__file__).resolve().parents[2]
SHIM = REPO / "tools" / "cuda_glue_shim" / "c10" / "cuda" / "impl" / "cuda_cmake_macros.h"


def _archs():
    lines = [line.strip() for line in (REPO / "csrc" / "cuda_archs.txt").read_text().splitlines()]
    return ";".join(line for line in lines if line and not line.startswith("#")).split(";")


def test_shim_mirrors_the_installed_torch():
    """tools/cuda_glue_shim stands in for a header that CUDA builds of torch generate. When torch changes, the
    stand-in must be re-checked against that torch's real header (then bump the version line)."""
    match = re.search(r"robustkit-shim-torch-version: (\S+)", SHIM.read_text())
    assert match, f"{SHIM} must name the torch version it mirrors"
    installed = torch.__version__.split("+")[0]
    assert match.group(1) == installed, (
        f"the CUDA glue shim mirrors torch {match.group(1)} but torch {installed} is installed: compare "
        f"{SHIM.relative_to(REPO)} with c10/cuda/impl/cuda_cmake_macros.h of a CUDA build of torch {installed}")


def test_cuda_archs_are_defined_once():
    archs = _archs()
    assert archs and all(re.fullmatch(r"\d+\.\d+", a) for a in archs), archs
    listed = subprocess.run(["bash", str(REPO / "tools" / "cuda_check.sh"), "--list-archs"], capture_output=True,
                            text=True, check=True).stdout.split()
    assert listed == ["sm_" + a.replace(".", "") for a in archs]
    for path in ("setup.py", "CMakeLists.txt", "tools/cuda_check.sh"):
        text = (REPO / path).read_text()
        assert "cuda_archs.txt" in text, f"{path} must read csrc/cuda_archs.txt"
        code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
        digits = [a.replace(".", "") for a in archs]
        spellings = [";".join(archs), " ".join(digits), ";".join(digits)] + [f"sm_{d}" for d in digits]
        for spelling in spellings:
            assert spelling not in code, (
                f"{path} hard-codes the CUDA architectures ({spelling!r}); read csrc/cuda_archs.txt instead")


def test_cuda_check_honours_python():
    text = (REPO / "tools" / "cuda_check.sh").read_text()
    assert 'PYTHON=${PYTHON:-python3}' in text
    assert not re.search(r"\$\(python3? ", text), "cuda_check.sh must run $PYTHON, not a hard-coded python"
