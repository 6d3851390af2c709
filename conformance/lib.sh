# shellcheck shell=bash
# Common helpers for podman.sh, containerd.sh and run.  Source, don't run.

ENG_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# Parent of the engine scripts' private work dirs (conformance-<engine>.XXXXXX).
WORK_PARENT=${CONFORMANCE_TMP:-/var/tmp}

log()  { printf '%s\n' "$*" >&2; }
die()  { log "FATAL: $*"; exit 2; }

# Debian packages each engine script needs; run installs them all at once.
# shellcheck disable=SC2034  # used by the scripts that source this file
PODMAN_PACKAGES=(podman conmon busybox-static python3 util-linux iproute2 procps)
# shellcheck disable=SC2034
CONTAINERD_PACKAGES=(containerd busybox-static python3 util-linux iproute2 procps)
# shellcheck disable=SC2034
CRI_PACKAGES=(containerd containernetworking-plugins busybox-static gcc libc6-dev python3 python3-venv util-linux iproute2 procps)

# ensure_packages PKG...: install the ones dpkg does not list as installed,
# with one apt-get update + install.
ensure_packages() {
    local p missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} = 0 ] && return 0
    log "installing: ${missing[*]}"
    apt-get update -qq || return 1
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

PASSES=0; FAILS=0
pass() { PASSES=$((PASSES+1)); printf "PASS %s%s\n" "$*" "${DEBUG_TS:+ [$(cut -d" " -f1 /proc/uptime)]}"; }
fail() { FAILS=$((FAILS+1)); printf 'FAIL %s\n' "$*"; }
# check NAME CMD...  -> PASS if CMD exits 0
check() { local n=$1; shift; if "$@"; then pass "$n"; else fail "$n"; fi; }

# Resolve the runtime argument to an absolute executable path.
resolve_runtime() {
    local r=${1:-}
    [ -n "$r" ] || die "usage: $0 RUNTIME   (path to a runc-compatible binary)"
    case $r in
        */*) ;;
        *) r=$(command -v "$r") || die "runtime $1 not found" ;;
    esac
    r=$(readlink -f "$r")
    [ -x "$r" ] || die "runtime $r not executable"
    printf '%s\n' "$r"
}

# Build a minimal busybox root filesystem in $1 and a tarball of it at $2.
make_busybox_rootfs() {
    local root=$1 tarball=$2 a
    mkdir -p "$root"/{bin,etc,proc,sys,dev,tmp,root,run}
    cp /bin/busybox "$root/bin/busybox"
    for a in sh ash echo cat sleep ls ps id true false top env kill hostname \
             mount umount grep wc tty stty test cut head tail touch mkdir rm \
             uname printf sed awk pwd readlink stat date seq yes nproc; do
        ln -sf busybox "$root/bin/$a"
    done
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$root/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' > "$root/etc/group"
    chmod 1777 "$root/tmp"
    tar --numeric-owner -C "$root" -cf "$tarball" .
}

# Snapshot of host state that a run must not change.  $1 = word used in our
# private names (temp dir, cgroup parent, namespace) so we can grep for leftovers.
host_snapshot() {
    {
        echo "## mounts"; awk '{print $2, $3}' /proc/mounts | sort
        echo "## cgroups"; find /sys/fs/cgroup -mindepth 1 -type d 2>/dev/null | grep -v /process_api | sort
        echo "## links"; ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | sort
        echo "## netns"; ls /run/netns 2>/dev/null
        echo "## procs"   # engine/runtime processes (not zombies), by pid
        ps -eo pid=,stat=,comm=,args= | awk '$2 !~ /^Z/ && $3 ~ /^(conmon|containerd|containerd-shim|containerd-shim-runc-v2|runc|crun|podman|busybox|sleep|top|catatonit)$/' | cut -c1-200 | sort
        echo "## dirs"
        # shellcheck disable=SC2012  # a listing to diff, names are not parsed
        ls -d /run/* /run/runc/* /run/containerd/* /run/containerd/s/* /var/run/libpod /var/lib/containers /var/lib/containerd /opt/containerd \
              /etc/cni/net.d/* /etc/containers/networks /var/lib/cni /dev/shm/* /tmp/* 2>/dev/null | sort
    }
}

# Compare two snapshots; print differences (ignore '/tmp/' churn by other users of the host).
snapshot_diff() {
    diff <(grep -v '^/tmp/' "$1") <(grep -v '^/tmp/' "$2")
}

# Run "$@" on a fresh pty (no dependence on our own stdin/tty).  Extra env:
# PTY_INPUT  text typed into the terminal after 0.5 s (\n escapes allowed)
ptyrun() {
    local a=(-t "${TMO:-60}")
    [ -n "${PTY_INPUT:-}" ] && a+=(-i "$PTY_INPUT")
    python3 "$ENG_DIR/ptyrun.py" "${a[@]}" -- "$@"
}

# If LOGWRAP_* variables are set, engines would drop them (podman gives conmon
# and the runtime a scrubbed environment), so pin them in a tiny wrapper script
# and print its path; otherwise print the runtime unchanged.  The wrapper is
# $2/pinned/<basename of the real runtime> because engines look at the
# basename (podman: runtime_supports_json), so logwrap.sh -> runc shows up as
# "runc".
pin_runtime_env() {
    local rt=$1 dir=$2 v out name
    if ! compgen -e | grep -q '^LOGWRAP_'; then printf '%s\n' "$rt"; return; fi
    name=$(basename "$rt")
    [ "$name" = logwrap.sh ] && name=$(basename "${LOGWRAP_REAL:-runc}")
    mkdir -p "$dir/pinned"
    out=$dir/pinned/$name
    {
        echo '#!/bin/sh'
        for v in $(compgen -e | grep '^LOGWRAP_'); do
            printf 'export %s=%q\n' "$v" "${!v}"
        done
        printf 'exec %q "$@"\n' "$rt"
    } > "$out"
    chmod 755 "$out"
    printf '%s\n' "$out"
}

# The cgroup dirs /$1: one per v1 hierarchy (/sys/fs/cgroup/CTRL/$1), or the
# single one of a cgroup2-only host (/sys/fs/cgroup/$1).
cgroup_tag_dirs() {
    [ -n "$1" ] && ls -d /sys/fs/cgroup/"$1" /sys/fs/cgroup/*/"$1" 2>/dev/null
}

# Pids (one per line) of processes whose cgroup lies at or below /$1.
cgroup_pids() {
    local d
    for d in $(cgroup_tag_dirs "$1"); do
        find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null
    done | sort -un
}

# Kill (SIGKILL, by pid) everything inside the /$1 cgroups, then rmdir them.
cgroup_purge() {
    local tag=$1 d p
    [ -n "$tag" ] || return 0
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        for p in $(cgroup_pids "$tag"); do kill -KILL "$p" 2>/dev/null; done
        for d in $(cgroup_tag_dirs "$tag"); do
            find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
        done
        [ -z "$(cgroup_tag_dirs "$tag")" ] && return 0
        sleep 0.3
    done
    log "cgroup_purge: could not remove all of /$tag"
    return 1
}

# Unmount (lazily, deepest first) every mount at or below $1.
umount_below() {
    local dir=$1 m
    [ -n "$dir" ] || return 0
    for m in $(awk -v d="$dir" '$2 == d || index($2, d "/") == 1 {print $2}' /proc/mounts | sort -r); do
        umount -l "$m" 2>/dev/null || log "umount $m failed"
    done
}

# Pids of processes (other than us) whose command line mentions $1.
pids_mentioning() {
    local s=$1 f p
    for f in /proc/[0-9]*/cmdline; do
        p=${f#/proc/}; p=${p%/cmdline}
        [ "$p" = $$ ] || [ "$p" = "$BASHPID" ] && continue
        { tr '\0' ' ' < "$f"; } 2>/dev/null | grep -qF -- "$s" && echo "$p"
    done
}

# Leftover check after cleanup: no mount, cgroup, process or file mentioning
# the private names, and no new host mounts/links/dirs compared to $1 (the text
# of a host_snapshot taken before we started).
verify_clean() {
    local before=$1 tag=$2 w=$3 after bad=0
    # give killed processes a moment to be reaped (zombies) before judging
    for _ in 1 2 3 4 5; do
        [ -z "$(pids_mentioning "$w")" ] && [ -z "$(cgroup_tag_dirs "$tag")" ] && break
        sleep 0.5
    done
    after=$(host_snapshot)
    if grep -qF -- "$w" /proc/mounts; then log "leftover mounts:"; grep -F -- "$w" /proc/mounts >&2; bad=1; fi
    if [ -n "$(cgroup_tag_dirs "$tag")" ]; then log "leftover cgroups:"; cgroup_tag_dirs "$tag" >&2; bad=1; fi
    if [ -n "$(pids_mentioning "$w")" ]; then log "leftover processes:"; ps -o pid,args -p "$(pids_mentioning "$w" | tr '\n' ',' | sed 's/,$//')" >&2; bad=1; fi
    if [ -e "$w" ]; then log "leftover dir $w"; bad=1; fi
    # runtime state dirs outside our dir (podman as root: /run/<runtime>/<id>)
    # whose state file points into our dir
    local sj
    for sj in $(grep -lsF -- "$w" /run/runc/*/state.json /run/minicontainer/*/state.json /run/crun/*/status); do
        log "leftover runtime state: $sj"; bad=1
    done
    # compare everything else with the snapshot taken before we started
    local d
    # Anything else new on the host is reported but not counted against us
    # unless it names our dir/tag (other people may use this host at the same time).
    d=$(snapshot_diff <(printf '%s\n' "$before") <(printf '%s\n' "$after") | grep '^>' )
    if [ -n "$d" ]; then
        if printf '%s\n' "$d" | grep -qF -e "$w" -e "$tag"; then bad=1; log "host state added by us:"; else log "note: host state added since start, not ours (other users of the host?):"; fi
        printf '%s\n' "$d" | sed 's/^/    /' >&2
    fi
    return $bad
}

# ---- the skeleton both engine scripts share ----------------------------------
# An engine script sets ENGINE (podman|containerd) and defines
# engine_cleanup DIR (remove every trace of work dir DIR, also of killed runs),
# then calls start_run HOST_PATH..., runs its checks, and ends with "exit 0".

# engine_init RUNTIME_ARG PACKAGE...: check we are root, install the missing
# PACKAGEs, set RUNTIME (absolute path) and TMO (per-command timeout).
engine_init() {
    # shellcheck disable=SC2034  # used by the engine scripts
    RUNTIME=$(resolve_runtime "$1") || exit 2
    shift
    [ "$(id -u)" = 0 ] || die "run as root"
    ensure_packages "$@" || die "could not install $*"
    TMO=${TMO:-60}
}

# Host paths outside our dir that the engine creates whatever we configure:
# the ones missing at start are listed in $W.hostpaths and removed at the end
# (files deleted, dirs only if empty), deepest first.
host_paths_cleanup() {
    local rec=$1 p
    [ -f "$rec" ] || return 0
    sort -r "$rec" | while read -r p; do
        if [ -d "$p" ]; then rmdir "$p" 2>/dev/null; else rm -f "$p"; fi
    done
    rm -f "$rec"
}

# Sweep the work dirs of earlier runs that died without cleaning up.
sweep_stale() {
    local old op
    for old in "$WORK_PARENT/conformance-$ENGINE".*; do
        [ -d "$old" ] || continue
        op=$(cat "$old/owner.pid" 2>/dev/null)
        if [ -n "$op" ] && [ "$op" != $$ ] && kill -0 "$op" 2>/dev/null; then continue; fi
        log "sweeping stale $old"
        engine_cleanup "$old"
        host_paths_cleanup "$old.hostpaths"
    done
    for old in "$WORK_PARENT/conformance-$ENGINE".*.hostpaths; do
        [ -f "$old" ] && [ ! -d "${old%.hostpaths}" ] && host_paths_cleanup "$old"
    done
}

# start_run HOST_PATH...: sweep, snapshot the host, make the work dir $W and
# the private name $TAG (cgroup parent / containerd namespace), record which
# HOST_PATHs are missing, and clean up on exit.
start_run() {
    local p
    sweep_stale
    SNAP_BEFORE=$(host_snapshot)
    W=$(mktemp -d "$WORK_PARENT/conformance-$ENGINE.XXXXXX") || die "mktemp in $WORK_PARENT"
    TAG=conformance_${ENGINE}_${W##*.}
    echo $$ > "$W/owner.pid"
    echo "$TAG" > "$W/tag"
    HOSTREC=$W.hostpaths
    for p in "$@"; do [ -e "$p" ] || echo "$p"; done > "$HOSTREC"
    trap finish EXIT
    trap 'exit 130' INT TERM
}

finish() {
    local rc=$?
    trap - EXIT INT TERM
    if [ "${KEEP:-0}" = 1 ]; then log "KEEP=1: left $W"; exit "$rc"; fi
    engine_cleanup "$W"
    host_paths_cleanup "$HOSTREC"
    if verify_clean "$SNAP_BEFORE" "$TAG" "$W"; then pass "cleanup: nothing left (mounts, cgroups, processes, links, dirs)"
    else fail "cleanup: leftovers (see above)"; fi
    echo "== $ENGINE: $PASSES passed, $FAILS failed"
    [ "$rc" != 0 ] && { echo "== stopped early (exit status $rc)"; exit "$rc"; }
    [ "$FAILS" = 0 ] && exit 0 || exit 1
}

# Check helpers: capture CMD... runs CMD and keeps its output (stdout+stderr)
# in OUT and its exit status in RC; expect judges them.
OUT=""; RC=0
capture() { OUT=$("$@" 2>&1); RC=$?; }
show()  { printf '      rc=%s out=%s\n' "$RC" "$(printf '%s' "$OUT" | head -c 600 | tr '\n' '|')"; }
expect() {  # expect NAME WANT_RC SUBSTRING
    local n=$1 want=$2 sub=$3
    if [ "$RC" = "$want" ] && [[ $OUT == *"$sub"* ]]; then pass "$n"; else fail "$n (want rc=$want, output containing '$sub')"; show; fi
}

# Build an OCI image archive (oci-layout + index.json + blobs, uncompressed
# layer) from a rootfs tarball, without c/image (skopeo/podman save would write
# /var/lib/containers/cache).  make_oci_archive ROOTFS_TAR OUT_TAR IMAGE_NAME
# (IMAGE_ENTRYPOINT='["/pause"]' in the environment: that Entrypoint, no Cmd)
make_oci_archive() {
    python3 - "$1" "$2" "$3" <<'PY'
import hashlib, io, json, os, sys, tarfile, time
rootfs, out, name = sys.argv[1:4]
layer = open(rootfs, "rb").read()
ld = "sha256:" + hashlib.sha256(layer).hexdigest()
cfg = {
    "created": "2024-01-01T00:00:00Z", "architecture": "amd64", "os": "linux",
    "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
               "Cmd": ["/bin/sh"], "WorkingDir": "/"},
    "rootfs": {"type": "layers", "diff_ids": [ld]},
    "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "conformance busybox rootfs"}],
}
if os.environ.get("IMAGE_ENTRYPOINT"):
    cfg["config"]["Entrypoint"] = json.loads(os.environ["IMAGE_ENTRYPOINT"])
    del cfg["config"]["Cmd"]
cb = json.dumps(cfg, separators=(",", ":")).encode()
cd = "sha256:" + hashlib.sha256(cb).hexdigest()
man = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
       "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": len(cb)},
       "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": len(layer)}]}
mb = json.dumps(man, separators=(",", ":")).encode()
md = "sha256:" + hashlib.sha256(mb).hexdigest()
tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else "latest"
idx = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
       "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": len(mb),
                      "platform": {"architecture": "amd64", "os": "linux"},
                      "annotations": {"io.containerd.image.name": name,
                                      "org.opencontainers.image.ref.name": tag}}]}
ib = json.dumps(idx, separators=(",", ":")).encode()
with tarfile.open(out, "w") as t:
    def add(path, data, isdir=False):
        ti = tarfile.TarInfo(path); ti.mtime = 0
        if isdir:
            ti.type = tarfile.DIRTYPE; ti.mode = 0o755; t.addfile(ti)
        else:
            ti.size = len(data); ti.mode = 0o644; t.addfile(ti, io.BytesIO(data))
    add("blobs", b"", True); add("blobs/sha256", b"", True)
    for d, b in ((ld, layer), (cd, cb), (md, mb)):
        add("blobs/sha256/" + d.split(":")[1], b)
    add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
    add("index.json", ib)
PY
}
