#!/usr/bin/env bash
# Build the compiled WebSocket core with AddressSanitizer + UndefinedBehavior-
# Sanitizer and libFuzzer coverage (-fsanitize=fuzzer-no-link) into a
# separate tree, without touching the normal build in src/:
#
#   build/asan/src/wsnest/...              a copy of src/wsnest (Python files)
#   build/asan/src/wsnest/core/_frames_c*.so   the sanitized compiled core
#
# Run a harness against it with fuzz/run_asan.sh (it sets LD_PRELOAD to
# atheris' asan_with_fuzzer.so, PYTHONPATH to build/asan/src, and the
# sanitizer options). Usage:
#
#   bash fuzz/build_asan.sh            # CC=clang-19 etc. to pick a compiler
#
# Needs clang (gcc cannot emit the coverage that atheris/libFuzzer reads,
# and its ASan runtime is not the one atheris preloads). If no clang is on
# PATH and we are root, `apt-get install -y clang` is run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${ASAN_OUT:-build/asan}

# Candidates in order: $CC if set, else clang 14-16 first: clang 17+ emit
# sanitizer calls (__sanitizer_internal_memcpy, function-type checks) that
# the runtime shipped in atheris' wheel (asan_with_fuzzer.so) lacks. Each
# candidate is tried until one builds a module whose sanitizer symbols are
# all in that runtime.
candidates() {
    local c
    if [ -n "${CC:-}" ]; then echo "$CC"; return; fi
    for c in clang-16 clang-15 clang-14 clang clang-17 clang-18 clang-19 clang-20 clang-21; do
        command -v "$c" >/dev/null 2>&1 && echo "$c"
    done
}

if [ -z "$(candidates)" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "== no clang on PATH: apt-get install -y clang"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang >/dev/null
    else
        echo "build_asan.sh: clang is needed (apt-get install clang)" >&2
        exit 1
    fi
fi

ATHERIS_DIR=$("$PY" -c "import atheris; print(atheris.path())" 2>/dev/null) || {
    echo "build_asan.sh: atheris is not installed (python -m pip install atheris)" >&2
    exit 1
}
RUNTIME="$ATHERIS_DIR/asan_with_fuzzer.so"
[ -f "$RUNTIME" ] || { echo "build_asan.sh: $RUNTIME is missing (atheris could not build it)" >&2; exit 1; }

echo "== copying src/wsnest to $OUT/src (without compiled files)"
rm -rf "$OUT/src"
mkdir -p "$OUT/src"
"$PY" - "$OUT/src/wsnest" <<'EOF'
import shutil, sys
shutil.copytree("src/wsnest", sys.argv[1],
                ignore=shutil.ignore_patterns("*.so", "*.pyd", "*.c", "*.html", "__pycache__"))
EOF

PYX="$OUT/src/wsnest/core/_frames_c.pyx"
CFILE="$OUT/_frames_c.c"
SUFFIX=$("$PY" -c "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))")
SO="$OUT/src/wsnest/core/_frames_c$SUFFIX"
INCLUDES=$("$PY" -c "import sysconfig; print('-I' + sysconfig.get_paths()['include'])")
INCLUDES="$INCLUDES -I$OUT/src/wsnest/core"  # _kernels.h, which _frames_c.pyx includes

echo "== cythonize $PYX (same directives as setup.py)"
"$PY" -m cython -3 --module-name wsnest.core._frames_c \
    --directive boundscheck=False,wraparound=False,cdivision=True \
    -o "$CFILE" "$PYX"

# Cython's argument-parsing wrappers compute `args + nargs` with args == NULL
# when a vectorcall passes no positional arguments: "applying zero offset to
# null pointer" under UBSan, in generated boilerplate (never dereferenced).
# That macro is made null-safe in the sanitized build only, so that UBSan
# stays on for everything else (its runtime suppressions could not match
# these functions by name).
"$PY" - "$CFILE" <<'PATCH'
import sys
path = sys.argv[1]
src = open(path).read()
old = "#define __Pyx_KwValues_FASTCALL(args, nargs) ((args) + (nargs))"
new = "#define __Pyx_KwValues_FASTCALL(args, nargs) ((args) ? (args) + (nargs) : (args))"
if old not in src:
    sys.exit("build_asan.sh: Cython's __Pyx_KwValues_FASTCALL macro changed; update the patch")
open(path, "w").write(src.replace(old, new))
PATCH

SAN_FLAGS="-fsanitize=address,undefined,fuzzer-no-link -fno-omit-frame-pointer"
DEFINED="$OUT/runtime-symbols.txt"
nm -D --defined-only "$RUNTIME" | awk '{print $NF}' | sort -u > "$DEFINED"
built=""
for CLANG in $(candidates); do
    echo "== compile with $CLANG ($("$CLANG" --version | head -1)): $SAN_FLAGS -g -O1"
    # shellcheck disable=SC2086
    "$CLANG" $SAN_FLAGS -g -O1 -fPIC -shared $INCLUDES -o "$SO" "$CFILE"
    # Every sanitizer symbol the module needs must come from atheris' runtime.
    NEEDED=$(nm -D --undefined-only "$SO" | awk '{print $NF}' | grep -E '^__(asan|ubsan|sanitizer|lsan)_' | sort -u || true)
    MISSING=$(comm -23 <(echo "$NEEDED") "$DEFINED")
    if [ -z "$MISSING" ]; then
        echo "   $(echo "$NEEDED" | wc -l) sanitizer symbols, all defined by $(basename "$RUNTIME")"
        built=$CLANG
        break
    fi
    echo "$MISSING" | sed 's/^/   not in atheris runtime: /'
done
if [ -z "$built" ]; then
    rm -f "$SO"
    echo "build_asan.sh: no clang builds a module that matches atheris' runtime; install clang-16 (or CC=...)" >&2
    exit 1
fi
COV=$(nm "$SO" | grep -c -E '__sancov_|__sanitizer_cov_' || true)
[ "$COV" -gt 0 ] || { echo "build_asan.sh: no sancov coverage instrumentation in $SO" >&2; exit 1; }

echo "== built $SO"
echo "   run: bash fuzz/run_asan.sh fuzz/fuzz_core.py [--quick SECONDS] [libFuzzer flags]"
