#!/usr/bin/env bash
# Install what tests/test_demo_browser.py needs on a Debian machine (as root):
#   - Debian's chromium (/usr/bin/chromium), only if it is missing;
#   - the Playwright Python package (the Python package only: no browser is
#     ever downloaded; the test points Playwright at /usr/bin/chromium).
# Idempotent: run it as often as you like. Fails loudly on any error.
set -euo pipefail
PY=${PYTHON:-python3}
CHROMIUM=/usr/bin/chromium

fail() { echo "install-browser: ERROR: $*" >&2; exit 1; }
trap 'echo "install-browser: ERROR: command failed (line $LINENO): $BASH_COMMAND" >&2' ERR

if [ -x "$CHROMIUM" ]; then
    echo "install-browser: $CHROMIUM already present, not installing"
else
    command -v apt-get >/dev/null || fail "$CHROMIUM is missing and apt-get is not available (not Debian?)"
    [ "$(id -u)" = 0 ] || fail "$CHROMIUM is missing; installing it needs root"
    echo "install-browser: installing Debian's chromium (apt-get update + install)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends chromium
    [ -x "$CHROMIUM" ] || fail "apt-get installed chromium but $CHROMIUM is not there"
fi
echo "install-browser: $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM (version unknown)")"

if "$PY" -c "import playwright.sync_api" 2>/dev/null; then
    echo "install-browser: playwright (Python package) already installed"
else
    echo "install-browser: installing the playwright Python package (no browser download)"
    # The Python package only. Never `playwright install`: the test uses $CHROMIUM.
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 "$PY" -m pip install --quiet --disable-pip-version-check playwright
    "$PY" -c "import playwright.sync_api" || fail "playwright installed but cannot be imported"
fi
echo "install-browser: playwright $("$PY" -m pip show playwright 2>/dev/null | sed -n 's/^Version: //p')"
echo "install-browser: done"
