"""Build robustkit._C: CPU kernels always, CUDA kernels when torch has CUDA and nvcc is found.

Switches (environment variables), resolved and printed at build time:
  FORCE_CUDA=1            build the CUDA kernels even when torch.cuda.is_available() is False
                          (cross-compiling on a machine without a GPU); needs a CUDA torch and nvcc.
  ROBUSTKIT_CPU_ONLY=1    never build the CUDA kernels.
  TORCH_CUDA_ARCH_LIST    the usual torch variable; defaults to the list in csrc/cuda_archs.txt.
  MAX_JOBS                parallel compile jobs for ninja.
  ROBUSTKIT_VERBOSE_BUILD=1  print every compiler command line (by default they go to a log file and the
                          build prints one line per stage).
"""
import glob
import os
import contextlib
import shutil
import sys
import time

from setuptools import setup

import torch
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

ROOT = os.path.dirname(os.path.abspath(__file__))


def _flag(name: str) -> bool:
    return os.environ.get(name, "0").strip().lower() in ("1", "true", "yes", "on")


def resolve_cuda() -> tuple[bool, str]:
    if _flag("ROBUSTKIT_CPU_ONLY"):
        return False, "ROBUSTKIT_CPU_ONLY=1"
    torch_has_cuda = torch.version.cuda is not None
    nvcc = CUDA_HOME is not None and os.path.exists(os.path.join(CUDA_HOME, "bin", "nvcc"))
    if _flag("FORCE_CUDA"):
        if not (torch_has_cuda and nvcc):
            sys.exit("FORCE_CUDA=1 needs a CUDA build of torch and nvcc "
                     f"(torch.version.cuda={torch.version.cuda}, CUDA_HOME={CUDA_HOME})")
        return True, "FORCE_CUDA=1"
    if not torch_has_cuda:
        return False, f"torch {torch.__version__} is a CPU build"
    if not nvcc:
        return False, "nvcc not found (set CUDA_HOME)"
    return True, f"torch CUDA {torch.version.cuda} and nvcc at {CUDA_HOME}"


def default_cuda_archs() -> str:
    """csrc/cuda_archs.txt, the one list of CUDA architectures (also read by CMakeLists.txt and cuda_check.sh)."""
    with open(os.path.join(ROOT, "csrc", "cuda_archs.txt")) as f:
        lines = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    return ";".join(lines)


def sources(pattern: str) -> list[str]:
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


def build_extension():
    with_cuda, why = resolve_cuda()
    # *_cpu_kernel.cpp: torch-free CPU loops (see csrc/ops/ensemble_temperature_ce/ensemble_temperature_ce_cpu_kernel.h
    # for why). Each op's schema is in its *_cpu.cpp (TORCH_LIBRARY_FRAGMENT); csrc/robustkit.cpp defines the library.
    cpu_sources = ["csrc/robustkit.cpp"] + sources("csrc/ops/*/*_cpu.cpp") + sources("csrc/ops/*/*_cpu_kernel.cpp")
    # -fno-trapping-math lets gcc if-convert (and so vectorize) the clamps in the hot loops, and
    # -fno-math-errno lets it vectorize sqrt (C&W's Adam step); no code here reads errno or FP exceptions.
    cxx = ["-O3", "-fopenmp", "-fno-trapping-math", "-fno-math-errno"]  # the C++ standard is torch's own
    define_macros = [("ROBUSTKIT_TORCH_VERSION", f"\"{torch.__version__}\"")]
    kwargs = dict(include_dirs=[os.path.join(ROOT, "csrc")], extra_link_args=["-fopenmp"])
    if with_cuda:
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", default_cuda_archs())
        define_macros.append(("ROBUSTKIT_WITH_CUDA", "1"))
        cuda_sources = sources("csrc/ops/*/*_cuda.cpp") + sources("csrc/ops/*/*_kernel.cu")
        ext = CUDAExtension(
            "robustkit._C", cpu_sources + cuda_sources, define_macros=define_macros,
            extra_compile_args={"cxx": cxx, "nvcc": ["-O3", "--use_fast_math"]}, **kwargs)
    else:
        ext = CppExtension("robustkit._C", cpu_sources, define_macros=define_macros,
                           extra_compile_args={"cxx": cxx}, **kwargs)
    cuda = f"yes, archs {os.environ['TORCH_CUDA_ARCH_LIST']}" if with_cuda else "no"
    ninja = "ninja" if shutil.which("ninja") else "no ninja: slow serial build"
    print(f"robustkit build: torch {torch.__version__} (CUDA {torch.version.cuda}); CPU ops yes; "
          f"CUDA ops {cuda} ({why}); {ninja}", flush=True)
    return ext


@contextlib.contextmanager
def _output_to(path: str):
    """Sends this process's and its children's stdout and stderr (ninja, the compilers) to `path`."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "w") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


class AtomicBuildExtension(BuildExtension):
    """Replaces robustkit/_C*.so atomically on in-place builds, so a process that has the old library
    loaded keeps running instead of crashing on a file truncated under it. Prints one line per stage; the
    compiler command lines (torch runs ninja with -v) go to build/<temp>/robustkit-build.log, whose tail is
    printed when the build fails."""

    def build_extension(self, ext):
        if _flag("ROBUSTKIT_VERBOSE_BUILD"):
            return super().build_extension(ext)
        os.makedirs(self.build_temp, exist_ok=True)
        log = os.path.join(self.build_temp, "robustkit-build.log")
        print(f"robustkit build: compiling and linking {len(ext.sources)} sources (commands in {log})", flush=True)
        start = time.time()
        try:
            with _output_to(log):
                super().build_extension(ext)
        except BaseException:
            with open(log, errors="replace") as f:
                tail = f.readlines()[-80:]
            print("".join(tail), file=sys.stderr)
            print(f"robustkit build: FAILED after {time.time() - start:.0f} s (full log: {log})", file=sys.stderr)
            raise
        print(f"robustkit build: done in {time.time() - start:.0f} s", flush=True)

    def copy_file(self, infile, outfile, *args, **kwargs):
        if not str(outfile).endswith(".so"):
            return super().copy_file(infile, outfile, *args, **kwargs)
        tmp = f"{outfile}.tmp{os.getpid()}"
        shutil.copyfile(infile, tmp)
        os.replace(tmp, outfile)
        return outfile, True


setup(
    ext_modules=[build_extension()],
    cmdclass={"build_ext": AtomicBuildExtension.with_options(use_ninja=shutil.which("ninja") is not None)},
)
