#!/usr/bin/env bash
# autobahn/server.sh - Autobahn|Testsuite, SERVER role: a wsnest echo server
# (autobahn/echo_server.py, from this repo's src/) listens on 127.0.0.1 and
# wstest's fuzzingclient runs every case against it; then the report is
# summarised and judged.
#
#   bash autobahn/server.sh [--quick | --cases '1.*,2.*'] [--exclude '12.*,13.*'] [--out DIR]
#
# Options:
#   --cases LIST        comma list of case patterns to run (default '*', all 517)
#   --quick             the quick selection (AB_QUICK_CASES in _lib.sh, 336 cases:
#                       groups 1-7, 9, 10 whole, a sample of 12 and 13; ~30 s)
#   --exclude LIST      comma list of case patterns to skip (default none)
#   --out DIR           report folder (default $AB_ROOT/server-wsnest); open DIR/index.html
#   --timeout S         seconds the fuzzingclient may take (default 7200)
# Environment: AB_ROOT (default /tmp/ab) holds the chroot; setup.sh builds it if
#   it is missing. PYTHON (default python3) runs the server; WSNEST_NO_EXTENSIONS=1
#   tests the pure-Python core.
# Exit: 0 every case OK or INFORMATIONAL (both grades) and none missing; 1 a case
#   graded otherwise (NON-STRICT, FAILED, UNIMPLEMENTED, WRONG CODE, ...) or missing;
#   2 usage or setup problem; 3 no report, or the server died during the run;
#   124 --timeout hit.
set -Euo pipefail
AB_TAG=server
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"

usage() { sed -n '2,/^set -E/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }

CASES='*' EXCLUDE= OUT= TIMEOUT=7200
while [ $# -gt 0 ]; do
    case "$1" in
        --cases) CASES=${2:-}; shift 2 ;;
        --quick) CASES=$AB_QUICK_CASES; shift ;;
        --exclude) EXCLUDE=${2:-}; shift 2 ;;
        --out) OUT=${2:-}; shift 2 ;;
        --timeout) TIMEOUT=${2:-}; shift 2 ;;
        -h|--help) usage ;;
        *) printf 'unknown argument: %s\n\n' "$1" >&2; usage ;;
    esac
done
PY=${PYTHON:-python3}

ab_require
OUT=$(ab_outdir "${OUT:-$AB_ROOT/server-wsnest}") || exit 2

# The server imports wsnest from this checkout, never an installed copy.
export PYTHONPATH=$AB_REPO/src${PYTHONPATH:+:$PYTHONPATH}
note "wsnest $(ab_core) from $AB_REPO/src"

AB_WSTEST_PID= SERVER_PID=
trap '[ -n "$AB_WSTEST_PID" ] && ab_stop "$AB_WSTEST_PID"; [ -n "$SERVER_PID" ] && ab_stop "$SERVER_PID"' EXIT
trap 'note "interrupted"; exit 130' INT TERM

# The server binds port 0 and prints its URL once it listens: no port race.
(exec "$PY" "$AB_HERE/echo_server.py" 0 >"$OUT/server.log" 2>&1) &
SERVER_PID=$!
URL=
for _ in $(seq 300); do
    URL=$(grep -m1 '^ws://' "$OUT/server.log" || true)
    [ -n "$URL" ] && break
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
done
[ -n "$URL" ] || { cat "$OUT/server.log" >&2; die "the echo server did not start (log: $OUT/server.log)"; }
python3 "$AB_HERE/spec.py" fuzzingclient "$URL" --agent wsnest --cases "$CASES" --exclude "$EXCLUDE" \
    >"$OUT/spec.json" || die "bad --cases/--exclude"

note "fuzzingclient -> $URL; cases '$CASES'${EXCLUDE:+, excluding '$EXCLUDE'}; report in $OUT"
T0=$(date +%s.%N)
ab_wstest_start fuzzingclient "$OUT" "$TIMEOUT"
wait "$AB_WSTEST_PID"
wrc=$?
AB_WSTEST_PID=
T1=$(date +%s.%N)
ELAPSED=$(awk -v a="$T0" -v b="$T1" 'BEGIN { printf "%.1f", b - a }')
note "$(grep -m1 '^Ok, will run' "$OUT/wstest.log" || true); wstest exit $wrc after $ELAPSED s"

alive=1
kill -0 "$SERVER_PID" 2>/dev/null || alive=0
ab_stop "$SERVER_PID"
SERVER_PID=
if [ "$wrc" = 124 ] || [ "$wrc" = 137 ]; then
    note "the run hit --timeout $TIMEOUT"
    exit 124
fi
[ -s "$OUT/index.json" ] || { tail -n 15 "$OUT/wstest.log" >&2; note "no report written (wstest exit $wrc)"; exit 3; }

src=0
ab_summarize "$OUT" || src=$?
echo "server wsnest; cases '$CASES'${EXCLUDE:+ excluding '$EXCLUDE'}; $ELAPSED s" >>"$OUT/summary.txt"
if [ "$alive" = 0 ]; then
    tail -n 20 "$OUT/server.log" >&2
    note "the echo server died during the run (log: $OUT/server.log)"
    exit 3
fi
[ "$src" = 2 ] && exit 3
[ "$src" = 0 ] || exit 1
[ "$wrc" = 0 ] || exit 3
exit 0
