#!/usr/bin/env bash
# Run a harness under AddressSanitizer + UBSan against the sanitized core
# built by fuzz/build_asan.sh:
#
#   bash fuzz/run_asan.sh fuzz/fuzz_core.py [--quick SECONDS] [libFuzzer flags] [corpus]
#
# - LD_PRELOAD: atheris' asan_with_fuzzer.so (ASan + UBSan runtime with
#   libFuzzer linked in, so the coverage of the C code reaches libFuzzer);
# - PYTHONPATH: build/asan/src first, so wsnest (and its _frames_c) come
#   from the sanitized tree; FUZZ_REQUIRE_ASAN=1 makes the harness refuse
#   any other _frames_c;
# - PYTHONMALLOC=malloc: Python objects (the bytes and str the core builds)
#   are plain mallocs that ASan guards, not pymalloc arena slots;
# - ASAN_OPTIONS / UBSAN_OPTIONS below unless already set.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
# The real interpreter, not a shell shim (pyenv): nothing but Python may
# run under the preloaded sanitizer runtime.
PY=$("${PYTHON:-python3}" -c "import sys; print(sys.executable)")
OUT=${ASAN_OUT:-$ROOT/build/asan}
[ -d "$OUT/src/wsnest" ] || { echo "run_asan.sh: run fuzz/build_asan.sh first" >&2; exit 1; }
ATHERIS_DIR=$("$PY" -c "import atheris; print(atheris.path())")
export LD_PRELOAD="$ATHERIS_DIR/asan_with_fuzzer.so"
export PYTHONPATH="$OUT/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONMALLOC=${PYTHONMALLOC:-malloc}
export FUZZ_REQUIRE_ASAN=1
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1:detect_stack_use_after_return=1:strict_string_checks=1:check_initialization_order=1:symbolize=1:handle_abort=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$HERE/lsan.supp:print_suppressions=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
exec "$PY" "$@"
