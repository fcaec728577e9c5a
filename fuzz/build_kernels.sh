#!/usr/bin/env bash
# Build fuzz/kernels_fuzz.c, the libFuzzer harness for the C kernels of the
# compiled core (src/wsnest/core/_kernels.h), with ASan + UBSan:
#
#   build/kernels/kernels_fuzz          libFuzzer binary (clang -fsanitize=fuzzer,address,undefined)
#   build/kernels/kernels_fuzz_standalone  the same checks with a plain main() (replay files,
#                                          then random inputs), for when libFuzzer is unavailable
#
# Usage:
#   bash fuzz/build_kernels.sh                 # CC=clang-16 etc. to pick a compiler
#   build/kernels/kernels_fuzz -max_total_time=60 -max_len=4096 build/kernels/corpus
#
# If no clang is on PATH and we are root, `apt-get install -y clang` is run.
# If clang cannot link libFuzzer, only the standalone driver is built (with
# the sanitizers when they link, else plain) and the script says so.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${KERNELS_OUT:-build/kernels}
SRC=fuzz/kernels_fuzz.c
INC=src/wsnest/core

find_clang() {
    local c
    if [ -n "${CC:-}" ]; then echo "$CC"; return; fi
    for c in clang clang-14 clang-15 clang-16 clang-17 clang-18 clang-19; do
        if command -v "$c" >/dev/null 2>&1; then echo "$c"; return; fi
    done
}

CLANG=$(find_clang)
if [ -z "$CLANG" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "== no clang on PATH: apt-get install -y clang"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang >/dev/null
        CLANG=$(find_clang)
    fi
    [ -n "$CLANG" ] || { echo "build_kernels.sh: clang is needed (apt-get install clang)" >&2; exit 1; }
fi

mkdir -p "$OUT/corpus"
# -O2 like a release build, so the word-at-a-time loops are vectorized as in
# the extension (-O3 there); -g and frame pointers for readable reports.
COMMON="-std=c99 -O2 -g -fno-omit-frame-pointer -Wall -Wextra -I$INC"
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined"

echo "== $CLANG ($("$CLANG" --version | head -1))"
if "$CLANG" $COMMON $SAN -fsanitize=fuzzer -o "$OUT/kernels_fuzz" "$SRC"; then
    echo "== built $OUT/kernels_fuzz (libFuzzer)"
else
    echo "== libFuzzer is not available with $CLANG: only the standalone driver is built" >&2
fi
if "$CLANG" $COMMON $SAN -DWSN_STANDALONE -o "$OUT/kernels_fuzz_standalone" "$SRC"; then
    echo "== built $OUT/kernels_fuzz_standalone (ASan + UBSan, no coverage guidance)"
else
    "$CLANG" $COMMON -DWSN_STANDALONE -o "$OUT/kernels_fuzz_standalone" "$SRC"
    echo "== built $OUT/kernels_fuzz_standalone WITHOUT sanitizers (they do not link here)" >&2
fi
echo "   run: $OUT/kernels_fuzz -max_total_time=60 -max_len=4096 $OUT/corpus"
