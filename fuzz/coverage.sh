#!/usr/bin/env bash
# Line/region coverage of the compiled core's C code reached by a corpus:
# builds _frames_c with clang source-based coverage into build/cov/, replays
# every input of the corpus through fuzz_core's checks (no atheris needed),
# and prints the region coverage of wsnest's own C functions (the FrameParser
# methods, the module functions and the wsn_* kernels; Cython's argument
# parsing and module boilerplate are left out).
#
#   bash fuzz/coverage.sh [corpus dir]        # default fuzz/corpus/core
#
# Needs clang with llvm-profdata / llvm-cov of the same version.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$("${PYTHON:-python3}" -c "import sys; print(sys.executable)")
CORPUS=$(realpath "${1:-fuzz/corpus/core}")
OUT=build/cov
[ -d "$CORPUS" ] || "$PY" fuzz/make_corpus.py core >/dev/null

CLANG=""
for c in ${CC:-} clang-16 clang-15 clang-14 clang clang-17 clang-18 clang-19; do
    if command -v "$c" >/dev/null 2>&1; then CLANG=$c; break; fi
done
[ -n "$CLANG" ] || { echo "coverage.sh: clang is needed" >&2; exit 1; }
VER=$("$CLANG" --version | sed -n 's/.*clang version \([0-9]*\).*/\1/p' | head -1)
PROFDATA=$(command -v "llvm-profdata-$VER" || command -v llvm-profdata)
LLVMCOV=$(command -v "llvm-cov-$VER" || command -v llvm-cov)

rm -rf "$OUT"
mkdir -p "$OUT/src"
"$PY" - "$OUT/src/wsnest" <<'EOF'
import shutil, sys
shutil.copytree("src/wsnest", sys.argv[1],
                ignore=shutil.ignore_patterns("*.so", "*.pyd", "*.c", "*.html", "__pycache__"))
EOF
"$PY" -m cython -3 --module-name wsnest.core._frames_c \
    --directive boundscheck=False,wraparound=False,cdivision=True \
    -o "$OUT/_frames_c.c" "$OUT/src/wsnest/core/_frames_c.pyx"
SUFFIX=$("$PY" -c "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))")
INCLUDES=$("$PY" -c "import sysconfig; print('-I' + sysconfig.get_paths()['include'])")
INCLUDES="$INCLUDES -I$OUT/src/wsnest/core"  # _kernels.h, which _frames_c.pyx includes
SO="$OUT/src/wsnest/core/_frames_c$SUFFIX"
"$CLANG" -O1 -g -fPIC -shared -fprofile-instr-generate -fcoverage-mapping $INCLUDES -o "$SO" "$OUT/_frames_c.c"

LLVM_PROFILE_FILE="$OUT/core.profraw" PYTHONPATH="$OUT/src" "$PY" - "$CORPUS" "$OUT" <<'EOF'
import os, sys
sys.path.insert(0, "fuzz")
import fuzz_core
fuzz_core.load(None)
assert os.path.realpath(fuzz_core.C.__file__).startswith(os.path.realpath(sys.argv[2])), fuzz_core.C.__file__
n = 0
for name in sorted(os.listdir(sys.argv[1])):
    with open(os.path.join(sys.argv[1], name), "rb") as f:
        fuzz_core.check_input(f.read())
    n += 1
print(f"replayed {n} inputs from {sys.argv[1]}")
EOF
"$PROFDATA" merge -o "$OUT/core.profdata" "$OUT/core.profraw"
"$LLVMCOV" export "$SO" -instr-profile="$OUT/core.profdata" > "$OUT/export.json"
"$PY" - "$OUT/export.json" <<'EOF'
import json, re, sys
funcs = json.load(open(sys.argv[1]))["data"][0]["functions"]
rows = []
for f in funcs:
    name = f["name"].split(":")[-1]
    if not (name.startswith("wsn_") or "6wsnest_4core_9_frames_c" in name):
        continue
    if name.startswith(("__pyx_pw_", "__Pyx_modinit")) or "tp_" in name:
        continue  # argument parsing wrappers, type slots, module init
    code = [r for r in f["regions"] if r[7] == 0]
    rows.append((sum(1 for r in code if r[4] > 0), len(code), f["count"], name))
hit, total = sum(r[0] for r in rows), sum(r[1] for r in rows)
print(f"wsnest C functions: {len(rows)}; regions covered {hit}/{total} = {100 * hit / total:.1f}%")
for h, t, calls, name in sorted(rows, key=lambda r: (r[0] / max(r[1], 1), r[3])):
    short = re.sub(r"^__pyx_(f|pf)_6wsnest_4core_9_frames_c_", "", name)
    print(f"  {h:4d}/{t:<4d} {100 * h / max(t, 1):5.1f}%  calls={calls:<9d} {short}")
EOF
