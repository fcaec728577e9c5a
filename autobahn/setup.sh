#!/usr/bin/env bash
# autobahn/setup.sh - build the chroot that runs the Autobahn|Testsuite (`wstest`).
#
#   bash autobahn/setup.sh          # as root; ~2 min from nothing, ~1 s when already built
#
# wstest is Python 2.7 only and current Debian has no Python 2, so this
# debootstraps a minimal Debian bullseye (the last release with python2.7) into
# $AB_ROOT/chroot, from the Debian mirror the machine's own apt sources use,
# gives it pip 20.3.4 (the last pip for 2.7) and pip-installs autobahntestsuite
# with every dependency pinned to a set known to work. The chroot is entered only
# inside `unshare --mount`, so its /proc and /dev mounts vanish with the process.
#
# Idempotent: finished steps are detected and skipped; `.ab-ready` in the chroot
# marks a complete build (client.sh and server.sh look for it).
# Environment:
#   AB_ROOT=/tmp/ab        where the chroot, downloads and logs go
#   AB_SUITE=bullseye      Debian release for the chroot
#   AB_MIRROR=URL          Debian mirror (default: taken from the host's apt sources)
#   AB_VERSION=25.10.1     autobahntestsuite version (the pins below are for this one)
#   AB_FORCE=1             delete the chroot and build it again
set -Eeuo pipefail

AB_ROOT=${AB_ROOT:-/tmp/ab}
CHROOT=$AB_ROOT/chroot
AB_SUITE=${AB_SUITE:-bullseye}
AB_VERSION=${AB_VERSION:-25.10.1}
PIP_FOR_PY27=20.3.4
START=$SECONDS

log() { printf '[setup +%3ds] %s\n' "$((SECONDS - START))" "$*"; }
fail() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }
trap 'fail "line $LINENO: \`$BASH_COMMAND\` exited $?"' ERR

[ "$(id -u)" = 0 ] || fail "must run as root: debootstrap, chroot and unshare need it"

# Enter the chroot with a private mount namespace and a clean environment.
# The network namespace stays the host's, so 127.0.0.1 is the host's loopback.
chroot_run() {
    unshare --mount --propagation private /bin/sh -ec '
        root=$1; shift
        mount -t proc proc "$root/proc"
        mount --rbind /dev "$root/dev"
        exec chroot "$root" /usr/bin/env -i HOME=/root LANG=C.UTF-8 PYTHONUNBUFFERED=1 \
            PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
            PIP_CERT=/etc/ssl/certs/host-ca-certificates.crt PIP_DISABLE_PIP_VERSION_CHECK=1 \
            PIP_NO_PYTHON_VERSION_WARNING=1 PIP_DEFAULT_TIMEOUT=120 \
            ${PIP_INDEX_URL:+PIP_INDEX_URL="$PIP_INDEX_URL"} "$@"
    ' sh "$CHROOT" "$@"
}

# Refuse to delete a tree while anything is mounted inside it (rm would follow the mount).
remove_tree() {
    [ -e "$1" ] || return 0
    local real; real=$(readlink -f "$1")
    if awk -v p="$real" '$2 == p || index($2, p "/") == 1 { hit = 1 } END { exit !hit }' /proc/self/mounts; then
        fail "$real has mounts below it; unmount them first"
    fi
    rm -rf --one-file-system "$real"
}

# The URI of the host's Debian archive for its own release, as apt sees it.
host_mirror() {
    local codename
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    [ -n "$codename" ] || return 0
    local targets
    targets=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(TARGET_OF)' 2>/dev/null || true)
    awk -v rel="$codename" '$2 == rel && $3 == "deb" && !uri { uri = $1 }
                            END { sub(/\/$/, "", uri); print uri }' <<<"$targets"
}

already_ready() {
    [ -f "$CHROOT/.ab-ready" ] && [ -z "${AB_FORCE:-}" ] \
        && chroot_run wstest --autobahnversion 2>/dev/null | grep -q "AutobahnTestSuite $AB_VERSION"
}

if already_ready; then
    log "chroot ready: $CHROOT (built $(cat "$CHROOT/.ab-ready"))"
    exit 0
fi

# --- host tools ------------------------------------------------------------------
missing=()
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v unshare >/dev/null || missing+=(util-linux)
[ -r /etc/ssl/certs/ca-certificates.crt ] || missing+=(ca-certificates)
python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
if [ ${#missing[@]} -gt 0 ]; then
    log "apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# --- debootstrap -----------------------------------------------------------------
if [ -n "${AB_FORCE:-}" ]; then
    log "AB_FORCE: removing $CHROOT"
    remove_tree "$CHROOT"
fi
if [ ! -f "$CHROOT/.ab-debootstrap-ok" ]; then
    mirror=${AB_MIRROR:-$(host_mirror)}
    [ -n "$mirror" ] || fail "no Debian mirror found in the apt sources; set AB_MIRROR"
    log "debootstrap $AB_SUITE from $mirror into $CHROOT"
    mkdir -p "$AB_ROOT"
    remove_tree "$CHROOT.partial"
    remove_tree "$CHROOT"
    if ! unshare --mount --propagation private debootstrap --variant=minbase \
            --include=python2.7,python2.7-dev,gcc,libc6-dev,ca-certificates \
            "$AB_SUITE" "$CHROOT.partial" "$mirror" >"$AB_ROOT/debootstrap.log" 2>&1; then
        tail -n 20 "$AB_ROOT/debootstrap.log" >&2
        fail "debootstrap failed (log: $AB_ROOT/debootstrap.log); if the mirror dropped $AB_SUITE, point AB_MIRROR at one that has it"
    fi
    echo "$AB_SUITE $mirror $(date -u +%FT%TZ)" > "$CHROOT.partial/.ab-debootstrap-ok"
    mv "$CHROOT.partial" "$CHROOT"
fi

# Refreshed on every build: loopback names, DNS, and the host's CA bundle (it may
# trust a TLS-intercepting proxy that the chroot's own bundle does not).
printf '127.0.0.1 localhost\n::1 localhost\n' > "$CHROOT/etc/hosts"
cp -L /etc/resolv.conf "$CHROOT/etc/resolv.conf" 2>/dev/null || true
cp -L /etc/ssl/certs/ca-certificates.crt "$CHROOT/etc/ssl/certs/host-ca-certificates.crt"
mkdir -p "$CHROOT/report" "$CHROOT/root/ab"

# pip inside the chroot uses the host's configured package index, if it has one.
if [ -z "${PIP_INDEX_URL:-}" ]; then
    PIP_INDEX_URL=$(python3 -m pip config get global.index-url 2>/dev/null || true)
fi
case "${PIP_INDEX_URL:-}" in http://*|https://*) export PIP_INDEX_URL ;; *) unset PIP_INDEX_URL ;; esac

# --- pip for Python 2.7 ---------------------------------------------------------
if [ "$(chroot_run python2.7 -m pip --version 2>/dev/null | cut -d' ' -f2)" != "$PIP_FOR_PY27" ]; then
    log "pip $PIP_FOR_PY27 for python2.7"
    wheel=pip-$PIP_FOR_PY27-py2.py3-none-any.whl
    [ -s "$AB_ROOT/wheels/$wheel" ] \
        || python3 -m pip download -q --no-deps --only-binary=:all: --python-version 2.7 \
               --dest "$AB_ROOT/wheels" "pip==$PIP_FOR_PY27"
    cp "$AB_ROOT/wheels/$wheel" "$CHROOT/root/ab/"
    # A pip wheel runs as a zip: use it to install itself.
    chroot_run python2.7 "/root/ab/$wheel/pip" install -q \
        "pip==$PIP_FOR_PY27" setuptools==44.0.0 wheel==0.37.1
fi

# --- autobahntestsuite ----------------------------------------------------------
# Known-good versions for autobahntestsuite 25.10.1 on Python 2.7.
pins=(attrs==21.4.0 autobahn==0.10.9 Automat==22.10.0 cffi==1.15.1 constantly==15.1.0
      cryptography==3.3.2 enum34==1.1.10 hyperlink==21.0.0 idna==2.10 incremental==16.10.1
      ipaddress==1.0.23 Jinja2==2.11.3 klein==17.10.0 linecache2==1.0.0 MarkupSafe==1.1.1
      pyasn1==0.5.1 pyasn1-modules==0.3.0 pycparser==2.21 PyHamcrest==1.10.1 pyOpenSSL==19.1.0
      service-identity==18.1.0 six==1.16.0 traceback2==1.4.0 Twisted==19.10.0 txaio==2.1.0
      typing==3.10.0.0 ujson==2.0.3 unittest2==1.1.0 Werkzeug==1.0.1 wsaccel==0.6.6
      zope.interface==4.6.0)
if [ "$AB_VERSION" = 25.10.1 ]; then
    printf '%s\n' "${pins[@]}" > "$CHROOT/root/ab/pins.txt"
else
    : > "$CHROOT/root/ab/pins.txt"   # another version: let pip choose
fi
log "pip install autobahntestsuite==$AB_VERSION (builds wsaccel; ~1 min)"
if ! chroot_run python2.7 -m pip install -c /root/ab/pins.txt "autobahntestsuite==$AB_VERSION" \
        >"$AB_ROOT/pip-install.log" 2>&1; then
    tail -n 20 "$AB_ROOT/pip-install.log" >&2
    fail "pip install failed (log: $AB_ROOT/pip-install.log)"
fi
# Without these C speedups wstest falls back to pure Python and runs several times slower.
chroot_run python2.7 -c 'import wsaccel, ujson' || fail "wsaccel/ujson did not install"
chroot_run python2.7 -m pip freeze > "$AB_ROOT/py27-freeze.txt"
chroot_run wstest --autobahnversion | tr '\n' ' ' | sed 's/ *$/\n/'
date -u +%FT%TZ > "$CHROOT/.ab-ready"
log "chroot ready: $CHROOT"
