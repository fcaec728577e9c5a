#!/usr/bin/env bash
# Install what the groups-through-Redis tests need on a Debian machine (as
# root): Debian's redis-server (/usr/bin/redis-server), only if it is
# missing. The tests start and stop their own redis-server on a free port;
# nothing here starts a service. The Python client (coredis) comes with the
# test extra. Idempotent; fails loudly on any error.
set -euo pipefail
REDIS=/usr/bin/redis-server

fail() { echo "install-redis: ERROR: $*" >&2; exit 1; }

if [ -x "$REDIS" ]; then
    echo "install-redis: $REDIS already present, not installing"
else
    command -v apt-get >/dev/null || fail "$REDIS is missing and apt-get is not available (not Debian?)"
    [ "$(id -u)" = 0 ] || fail "$REDIS is missing; installing it needs root"
    echo "install-redis: installing Debian's redis-server (apt-get update + install)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends redis-server
    [ -x "$REDIS" ] || fail "apt-get installed redis-server but $REDIS is not there"
    # The package starts a system service on port 6379; the tests use their own.
    if command -v systemctl >/dev/null 2>&1; then systemctl stop redis-server 2>/dev/null || true; fi
fi
command -v redis-cli >/dev/null || fail "redis-cli (package redis-tools) is missing: the tests ask Redis with it"
echo "install-redis: $("$REDIS" --version)"
