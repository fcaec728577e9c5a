#!/usr/bin/env bash
# Install wsnest (compiled core) with its test dependencies, then run the
# whole test suite. Extra arguments go to pytest.
# It installs into the interpreter it runs ($PYTHON, else python3), not a
# private environment: activate a virtual environment first to keep the
# system Python as it is (README, "Quick start").
#   bash ci/test.sh            # everything
#   bash ci/test.sh -k core    # a subset
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
"$PY" -m pip install --quiet --disable-pip-version-check ".[test]"
if [ "$(id -u)" = 0 ] || [ -x /usr/bin/chromium ]; then
    bash ci/install-browser.sh   # Debian chromium + playwright for the demo test
else
    echo "note: not root and no /usr/bin/chromium: the browser test of the demo will be skipped"
fi
if [ "$(id -u)" = 0 ] || [ -x /usr/bin/redis-server ]; then
    bash ci/install-redis.sh     # a real redis-server for the groups tests
else
    echo "note: not root and no /usr/bin/redis-server: the Redis tests will be skipped"
fi
"$PY" -m wsnest --info
"$PY" -m pytest -p no:cacheprovider "$@"
