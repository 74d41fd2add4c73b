#!/usr/bin/env bash
# Builds robustkit._C once, under a lock inside this checkout (build/.lock), so that two builds of the same
# checkout wait for each other and builds of different checkouts do not.
#
#   $PYTHON does not import robustkit from this checkout:  pip install --no-build-isolation --no-deps -e .
#                                   (the editable install compiles the extension into the tree)
#   it does (installed before):     python setup.py build_ext --inplace
#                                   (ninja, incremental; nothing to do when up to date)
#
# Either way the extension is compiled once. (An editable install always compiles in a throwaway directory,
# so running it after build_ext --inplace would compile everything a second time.) The compiler's output goes
# to build/build.log; one line per step is printed, and the log's tail on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
case "$PYTHON" in  # an absolute path, so that the check below can run from another folder
  */*) PYTHON="$(cd "$(dirname "$PYTHON")" && pwd)/$(basename "$PYTHON")" ;;
esac
mkdir -p build
log=build/build.log

locked() {
  if command -v flock >/dev/null 2>&1; then
    flock build/.lock "$@"
  else  # no flock (macOS): unlocked, as two builds of one checkout at once are rare there
    "$@"
  fi
}

logged() {
  if ! "$@" >>"$log" 2>&1; then
    echo "build: failed; the last lines of $log:"
    tail -n 40 "$log"
    exit 1
  fi
}

# Whether $PYTHON, started outside the checkout, finds this checkout's robustkit (an editable install of
# another checkout, e.g. in the system site-packages a venv sees, does not count).
installed_here() {
  local package="$PWD/robustkit"
  (cd / && "$PYTHON" -c 'import importlib.util, os, sys
spec = importlib.util.find_spec("robustkit")
here = spec is not None and spec.origin is not None and os.path.samefile(os.path.dirname(spec.origin), sys.argv[1])
sys.exit(0 if here else 1)' "$package") 2>/dev/null
}

# The extension in the tree is newer than every source that goes into it (csrc/, setup.py): nothing to compile.
# (The editable install compiles in a throwaway directory, so build_ext --inplace after it would otherwise
# start from nothing and compile every source a second time.)
up_to_date() {
  local so
  so=$(ls robustkit/_C*.so 2>/dev/null | head -n 1)
  [ -n "$so" ] && [ -z "$(find csrc setup.py -newer "$so" -print -quit)" ]
}

build() {
  : >"$log"
  if installed_here && up_to_date; then
    echo "build: robustkit._C is up to date (no source newer than it)"
  elif installed_here; then
    echo "build: robustkit._C (setup.py build_ext --inplace, incremental; log $log)"
    logged "$PYTHON" setup.py build_ext --inplace
  else
    echo "build: robustkit._C and an editable install (pip install -e .: a full compile, minutes; log $log)"
    logged "$PYTHON" -m pip install --no-build-isolation --no-deps -e .
  fi
}

export -f build logged installed_here up_to_date
export PYTHON log
locked bash -c build
"$PYTHON" -c "import robustkit; print('build: robustkit', robustkit.__version__, robustkit.build_info())"
