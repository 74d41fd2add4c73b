#!/usr/bin/env bash
# Sanitizer stage: build robustkit._C with AddressSanitizer + UndefinedBehaviorSanitizer into a separate
# copy of the tree (never the in-place .so of this checkout), run tests/ops (harness, per-op tests and the
# hypothesis fuzzers) against it, and report every sanitizer finding.
#
#   bash tools/asan.sh                 # build (incremental) + run; exit 1 on a sanitizer report or a failure
#   PYTHON=.venv/bin/python bash tools/asan.sh
#   ROBUSTKIT_ASAN_DIR=/some/dir       # where the copy and its build live (default: /tmp/robustkit-asan-<hash>)
#   ROBUSTKIT_FUZZ_EXAMPLES=500        # more fuzz examples per op (the default is the CI count)
#   extra arguments go to pytest, e.g. `bash tools/asan.sh -k deepfool`
#
# Cost, measured on a shared 2-core machine: the first build 10.6 min of CPU (40 min wall under load 5-10),
# a rebuild with csrc/ unchanged 18 s, the tests 2-4 min.
#
# Why the details are what they are:
# - CPU only: nvcc-compiled code is not instrumented by gcc's sanitizers, and this stage runs on CPU machines.
# - -fsanitize-recover + halt_on_error=0: one run lists every finding instead of dying at the first, and the
#   pytest summary still shows which tests ran. Reports go to log files (log_path), counted at the end.
# - LD_PRELOAD of libasan/libubsan: python itself is not instrumented, so the runtime must be loaded first.
# - detect_leaks=0: CPython and torch keep allocations alive at exit by design; leak reports would be noise.
# - alloc_dealloc_mismatch=0: torch mixes allocation functions across its own libraries (a known false
#   positive under a preloaded runtime). allocator_may_return_null=1 turns the deliberate huge allocations of
#   bad-input tests into the same clean error as the plain build.
# - -m "not slow": the slow tests include inductor compiles, which would run g++ under the preloaded runtime.
# - UBSan cannot see signed overflow here: torch's extension flags include -fwrapv, which defines it.
# - The compile runs at niceness 10, not 10 more than the caller's: `nice -n 10 make test-asan` would
#   otherwise compile at 19, where on a loaded 2-core machine it got ~5% of a core (1 min of CPU in 19 min).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
CC_BIN="${CC:-gcc}"
HASH="$(printf '%s' "$ROOT" | sha1sum | cut -c1-10)"
DIR="${ROBUSTKIT_ASAN_DIR:-/tmp/robustkit-asan-$HASH}"
SRC="$DIR/src"
LOGS="$DIR/logs"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MKL_NUM_THREADS="${MKL_NUM_THREADS:-1}"

start=$(date +%s)
echo "asan: copying the tree to $SRC"
mkdir -p "$SRC"
# Tracked and untracked-but-not-ignored files, less tracked files deleted from the working tree (tar would
# stop at them); tar keeps mtimes, so ninja rebuilds only what changed.
(cd "$ROOT" && comm -23 <(git ls-files -co --exclude-standard | sort -u) <(git ls-files -d | sort -u)) \
  >"$DIR/files.want"
(cd "$ROOT" && tr '\n' '\0' <"$DIR/files.want" | tar -c --null -T - -f -) | tar -x -C "$SRC" -f -
# Files the tree no longer has (a renamed op folder) must go too, or setup.py's globs would still build them.
(cd "$SRC" && find . -type f ! -name '_C*.so' | sed 's|^\./||' | sort) >"$DIR/files.have"
comm -23 "$DIR/files.have" "$DIR/files.want" | (cd "$SRC" && xargs -r -d '\n' rm -f --)

NICE_MORE=$(( $(nice) >= 10 ? 0 : 10 - $(nice) ))
SAN="-fsanitize=address,undefined -fsanitize-recover=address,undefined -fno-omit-frame-pointer -g"
echo "asan: building robustkit._C with $SAN (CPU only; MAX_JOBS=${MAX_JOBS:-2})"
(
  cd "$SRC"
  CFLAGS="$SAN" CXXFLAGS="$SAN" LDFLAGS="-fsanitize=address,undefined" ROBUSTKIT_CPU_ONLY=1 \
    MAX_JOBS="${MAX_JOBS:-2}" nice -n "$NICE_MORE" "$PYTHON" setup.py -q build_ext --inplace --build-temp "$DIR/build" \
    >"$DIR/build.log" 2>&1
) || { tail -40 "$DIR/build.log"; echo "asan: build failed (log: $DIR/build.log)"; exit 2; }
built=$(date +%s)
SO="$(ls "$SRC"/robustkit/_C*.so)"
# not `ldd | grep -q`: under pipefail, grep -q's early exit can kill ldd with SIGPIPE and fail a build that is
# linked right (3 in 40 tries here)
if ! grep -q libasan <<<"$(ldd "$SO")"; then
  echo "asan: $SO is not linked against libasan; the sanitizer flags did not reach the build"; exit 2
fi
echo "asan: built $SO in $((built - start)) s"

rm -rf "$LOGS" && mkdir -p "$LOGS"
PRELOAD="$("$CC_BIN" -print-file-name=libasan.so):$("$CC_BIN" -print-file-name=libubsan.so)"
export ASAN_OPTIONS="detect_leaks=0:alloc_dealloc_mismatch=0:allocator_may_return_null=1:halt_on_error=0:log_path=$LOGS/asan"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=0:log_path=$LOGS/ubsan"

cd "$SRC"
# The copy's robustkit must be the one imported, with the instrumented _C (an editable install of another
# checkout would otherwise supply its own _C through its import finder).
# torch first: it loads libc10/libtorch, which _C needs and does not find on its own (robustkit's own import
# of torch is lazy)
LD_PRELOAD="$PRELOAD" PYTHONPATH="$SRC" "$PYTHON" -c "
import torch, robustkit, robustkit._C as c, sys
assert robustkit.__file__.startswith('$SRC') and c.__file__.startswith('$SRC'), (robustkit.__file__, c.__file__)
print('asan: importing', c.__file__)"

set +e
LD_PRELOAD="$PRELOAD" PYTHONPATH="$SRC" "$PYTHON" -m pytest -q -p no:cacheprovider -m "not slow" tests/ops "$@" \
  2>&1 | tee "$DIR/pytest.log" | tail -15
status=${PIPESTATUS[0]}
set -e
ran=$(date +%s)

reports=$(cat "$LOGS"/asan.* "$LOGS"/ubsan.* 2>/dev/null | grep -cE "ERROR: AddressSanitizer|runtime error:" || true)
echo "asan: build $((built - start)) s, tests $((ran - built)) s; pytest exit status $status;" \
     "sanitizer reports: $reports"
if [ "$reports" -gt 0 ]; then
  grep -hE -A12 "ERROR: AddressSanitizer|runtime error:" "$LOGS"/asan.* "$LOGS"/ubsan.* 2>/dev/null | head -120
  echo "asan: full reports in $LOGS"
  exit 1
fi
exit "$status"
