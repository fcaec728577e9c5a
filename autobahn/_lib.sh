# autobahn/_lib.sh - shell functions that client.sh and server.sh share; sourced, not run.
# They run `wstest` inside the chroot that setup.sh builds, with the report folder
# bind-mounted at /report, and summarise the report.

AB_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
AB_REPO=$(cd "$AB_HERE/.." && pwd)
AB_ROOT=${AB_ROOT:-/tmp/ab}
AB_CHROOT=$AB_ROOT/chroot
AB_TAG=${AB_TAG:-autobahn}

# The quick selection (--quick of client.sh and server.sh), 336 of the 517
# cases: all of groups 1-7, 9 and 10; from the compression groups (1000 messages
# a case, ~95 % of a full run) 16 B and 4 KiB messages of every data set (12.N)
# and of every negotiation variant (13.N), 8 KiB messages auto-fragmented to 256
# octets (N.11), and 128 KiB ones fragmented to 32 KiB (N.18). About 30 s a role
# on a 2-core machine; all 517 cases take ~450 s.
AB_QUICK_CASES='1.*,2.*,3.*,4.*,5.*,6.*,7.*,9.*,10.*'
for n in 1 2 3 4 5; do AB_QUICK_CASES+=",12.$n.1,12.$n.5"; done
for n in 1 2 3 4 5 6 7; do AB_QUICK_CASES+=",13.$n.1,13.$n.5,13.$n.11"; done
AB_QUICK_CASES+=',12.1.11,12.5.11,12.1.18,13.7.18'

note() { printf '[%s] %s\n' "$AB_TAG" "$*"; }
die() { printf '[%s] ERROR: %s\n' "$AB_TAG" "$*" >&2; exit 2; }

# Root, python3, and a finished chroot (built by autobahn/setup.sh when missing).
ab_require() {
    [ "$(id -u)" = 0 ] || die "must run as root (chroot and unshare need it)"
    command -v python3 >/dev/null || die "python3 not found"
    if [ ! -f "$AB_CHROOT/.ab-ready" ]; then
        note "no ready chroot at $AB_CHROOT: building it with autobahn/setup.sh (~2 min)"
        AB_ROOT=$AB_ROOT bash "$AB_HERE/setup.sh" || die "autobahn/setup.sh failed"
    fi
}

# ab_outdir DIR: make DIR, print its absolute path, and delete the files an
# earlier run of these scripts left there (nothing else).
ab_outdir() {
    mkdir -p "$1" || die "cannot create $1"
    local dir; dir=$(cd "$1" && pwd -P)
    case "$dir" in "$AB_CHROOT"|"$AB_CHROOT"/*) die "the output folder must be outside $AB_CHROOT" ;; esac
    find "$dir" -maxdepth 1 -type f \( -name 'index.html' -o -name 'index.json' -o -name '*_case_*.json' \
        -o -name '*_case_*.html' -o -name '*.log' -o -name 'spec.json' -o -name 'summary.*' \) -delete
    printf '%s\n' "$dir"
}

# A TCP port on 127.0.0.1 that nothing listens on right now.
ab_free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# ab_core: "core: compiled" or "core: pure", the core wsnest (from PYTHONPATH) runs.
ab_core() {
    local info
    info=$("${PY:-python3}" -m wsnest --info 2>&1) || true
    grep -m1 '^core:' <<<"$info" || echo 'core: ?'
}

# ab_listening PORT: is anything listening on 127.0.0.1:PORT?  Asks the kernel
# (ss) rather than connecting, so the listener sees no stray connection.
ab_listening() {
    if command -v ss >/dev/null; then
        [ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]
    else
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
    fi
}

# ab_wstest_start MODE OUTDIR SECONDS: start `wstest -m MODE -s /report/spec.json`
# in the chroot, in the background (its pid in AB_WSTEST_PID), output to
# OUTDIR/wstest.log, stopped (SIGTERM, SIGKILL 10 s later) after SECONDS.
# /proc, /dev and OUTDIR (at /report) are mounted in a private mount namespace,
# so they vanish with the process; the network namespace is the host's.
# `-u 0`: no embedded web server (the fuzzingserver would take port 8080).
ab_wstest_start() {
    (exec timeout --kill-after=10 "$3" unshare --mount --propagation private /bin/sh -ec '
        root=$1 out=$2 mode=$3
        mount -t proc proc "$root/proc"
        mount --rbind /dev "$root/dev"
        mount --bind "$out" "$root/report"
        exec chroot "$root" /usr/bin/env -i HOME=/root LANG=C.UTF-8 PYTHONUNBUFFERED=1 \
            PATH=/usr/local/bin:/usr/bin:/bin \
            /bin/sh -c "cd /report && exec wstest -m $mode -u 0 -s /report/spec.json"
    ' sh "$AB_CHROOT" "$2" "$1" >"$2/wstest.log" 2>&1) &
    AB_WSTEST_PID=$!
}

# ab_wait_listen PORT PID SECONDS: wait until PORT listens; fail if PID exits first.
ab_wait_listen() {
    local deadline=$((SECONDS + $3))
    until ab_listening "$1"; do
        kill -0 "$2" 2>/dev/null || return 1
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.1
    done
}

# ab_stop PID: stop a background job of this shell and reap it.
ab_stop() {
    kill -TERM "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# ab_summarize OUTDIR: print and save the summary; returns summarize.py's status.
ab_summarize() {
    local rc=0
    python3 "$AB_HERE/summarize.py" "$1" \
        --list "NON-STRICT,INFORMATIONAL,UNIMPLEMENTED,WRONG CODE,UNCLEAN,FAILED BY CLIENT" >"$1/summary.txt" || rc=$?
    cat "$1/summary.txt"
    return "$rc"
}
