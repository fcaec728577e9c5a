#!/usr/bin/env bash
# autobahn/client.sh - Autobahn|Testsuite, CLIENT role: wstest's fuzzingserver
# listens on 127.0.0.1 and a WebSocket client (autobahn/client_driver.py) runs
# every case against it; then the report is summarised and judged.
#
#   bash autobahn/client.sh --client websockets|wsnest [--quick | --cases '1.*,2.*'] [--exclude '12.*,13.*'] [--out DIR]
#
# Options:
#   --client NAME       websockets (the reference) or wsnest (from this repo's src/)
#   --cases LIST        comma list of case patterns to run (default '*', all 517)
#   --quick             the quick selection (AB_QUICK_CASES in _lib.sh, 336 cases:
#                       groups 1-7, 9, 10 whole, a sample of 12 and 13; ~30 s)
#   --exclude LIST      comma list of case patterns to skip (default none)
#   --out DIR           report folder (default $AB_ROOT/client-NAME); open DIR/index.html
#   --port N            fuzzingserver port on 127.0.0.1 (default: a free one)
#   --case-timeout S    seconds one case may take before the driver drops it (default 60)
#   --timeout S         seconds the whole run may take (default 7200)
#   -v, --verbose       the driver prints how every case ended
# Environment: AB_ROOT (default /tmp/ab) holds the chroot; setup.sh builds it if
#   it is missing. PYTHON (default python3) runs the driver.
# Exit: 0 every case OK or INFORMATIONAL (both grades) and none missing; 1 a case
#   graded otherwise (NON-STRICT, FAILED, UNIMPLEMENTED, WRONG CODE, ...) or missing,
#   or the driver had to drop a case (--case-timeout); 2 usage or setup problem;
#   3 no report (the fuzzingserver or the driver broke); 124 --timeout hit.
set -Euo pipefail
AB_TAG=client
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"

usage() { sed -n '2,/^set -E/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }

CLIENT= CASES='*' EXCLUDE= OUT= PORT= CASE_TIMEOUT=60 TIMEOUT=7200 VERBOSE=()
while [ $# -gt 0 ]; do
    case "$1" in
        --client) CLIENT=${2:-}; shift 2 ;;
        --cases) CASES=${2:-}; shift 2 ;;
        --quick) CASES=$AB_QUICK_CASES; shift ;;
        --exclude) EXCLUDE=${2:-}; shift 2 ;;
        --out) OUT=${2:-}; shift 2 ;;
        --port) PORT=${2:-}; shift 2 ;;
        --case-timeout) CASE_TIMEOUT=${2:-}; shift 2 ;;
        --timeout) TIMEOUT=${2:-}; shift 2 ;;
        -v|--verbose) VERBOSE=(--verbose); shift ;;
        -h|--help) usage ;;
        *) printf 'unknown argument: %s\n\n' "$1" >&2; usage ;;
    esac
done
case "$CLIENT" in websockets|wsnest) ;; *) usage ;; esac
PY=${PYTHON:-python3}

ab_require
OUT=$(ab_outdir "${OUT:-$AB_ROOT/client-$CLIENT}") || exit 2
PORT=${PORT:-$(ab_free_port)}
ab_listening "$PORT" && die "port $PORT is in use"
URL=ws://127.0.0.1:$PORT
python3 "$AB_HERE/spec.py" fuzzingserver "$URL" --cases "$CASES" --exclude "$EXCLUDE" >"$OUT/spec.json" \
    || die "bad --cases/--exclude"

# The driver imports wsnest from this checkout, never an installed copy.
export PYTHONPATH=$AB_REPO/src${PYTHONPATH:+:$PYTHONPATH}
if [ "$CLIENT" = wsnest ]; then
    note "wsnest $(ab_core) from $AB_REPO/src"
fi

AB_WSTEST_PID=
trap '[ -n "$AB_WSTEST_PID" ] && ab_stop "$AB_WSTEST_PID"' EXIT
trap 'note "interrupted"; exit 130' INT TERM

T0=$(date +%s.%N)
note "fuzzingserver on $URL; cases '$CASES'${EXCLUDE:+, excluding '$EXCLUDE'}; report in $OUT"
ab_wstest_start fuzzingserver "$OUT" "$TIMEOUT"
if ! ab_wait_listen "$PORT" "$AB_WSTEST_PID" 60; then
    tail -n 15 "$OUT/wstest.log" >&2
    die "the fuzzingserver did not start listening on $PORT (log: $OUT/wstest.log)"
fi
note "$(grep -m1 '^Ok, will run' "$OUT/wstest.log" || true)"

T1=$(date +%s.%N)
timeout --kill-after=10 "$TIMEOUT" "$PY" "$AB_HERE/client_driver.py" --client "$CLIENT" "$URL" \
    --case-timeout "$CASE_TIMEOUT" "${VERBOSE[@]}" 2>&1 | tee "$OUT/driver.log"
drc=${PIPESTATUS[0]}
T2=$(date +%s.%N)

ab_stop "$AB_WSTEST_PID"
AB_WSTEST_PID=
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
note "driver exit $drc; cases took $(elapsed "$T1" "$T2") s, whole run $(elapsed "$T0" "$T2") s"
if [ "$drc" = 124 ] || [ "$drc" = 137 ]; then
    note "the run hit --timeout $TIMEOUT"
    exit 124
fi
[ -s "$OUT/index.json" ] || { tail -n 15 "$OUT/wstest.log" >&2; note "no report written (driver exit $drc)"; exit 3; }

src=0
ab_summarize "$OUT" || src=$?
echo "client $CLIENT; cases '$CASES'${EXCLUDE:+ excluding '$EXCLUDE'}; $(elapsed "$T1" "$T2") s" >>"$OUT/summary.txt"
[ "$src" = 2 ] && exit 3
[ "$src" = 0 ] || exit 1
[ "$drc" = 0 ] || exit 1
exit 0
