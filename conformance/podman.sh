#!/bin/bash
# podman.sh RUNTIME  -  drive podman 4.3 with the OCI runtime at path RUNTIME
# (runc-compatible CLI), configured as Debian ships it (see below) with private
# storage, print PASS/FAIL per check,
# then remove everything it made.  Exit status 0 iff every check passed and
# nothing was left behind; 2 (or "== stopped early") if the harness broke.
# Installs podman, conmon and busybox-static if missing.
#
# Env knobs:
#   TMO=60            per-command timeout (seconds)
#   KEEP=1            skip cleanup (debugging; run again to sweep it later)
#   CONFORMANCE_TMP   parent of the work dir (default /var/tmp)
#   LOGWRAP_*         if set, pinned into a wrapper around RUNTIME (see logwrap.sh)
set -u -o pipefail
ENGINE=podman
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

engine_init "${1:-}" "${PODMAN_PACKAGES[@]}"
IMG=localhost/conformance-busybox:latest

# ----------------------------------------------------------------------------
# podman as Debian ships it: its own /usr/share/containers/containers.conf,
# seccomp.json and default capabilities, and no storage.conf or
# registries.conf of ours. The one change: where the host's hard nofile or
# nproc limit is below podman's default rlimits for root (1048576 each;
# root without CAP_SYS_RESOURCE cannot raise a hard limit, so runc and
# minicontainer alike fail with EPERM), default_ulimits is lowered.
# podman 4.3 (containers-common 0.50) has no CONTAINERS_CONF_OVERRIDE, and
# its only drop-in directory, /etc/containers/containers.conf.d, would change
# every podman on the host: so CONTAINERS_CONF names a copy of Debian's file
# with that one line added to its [containers] table (checked: the copy
# differs by that line alone). Everything else private is a command-line
# flag of each call, not configuration: storage, run and temporary
# directories, cgroupfs (minicontainer manages cgroups itself; a host
# without systemd has no other), file events (not the host's journal), and
# per container --network none and a cgroup parent of the run's own.
PODMAN_RLIMIT_DEFAULT=1048576
STOCK_CONF=/usr/share/containers/containers.conf

# podman's global options for one work dir ($1); sets PG
podman_setup_args() {
    local w=$1
    PG=(--root "$w/root" --runroot "$w/runroot" --tmpdir "$w/tmp"
        --cgroup-manager cgroupfs --events-backend file
        --network-config-dir "$w/net" --volumepath "$w/vol"
        --runtime "$(cat "$w/runtime")")
    export CONTAINERS_CONF=$w/containers.conf
    unset CONTAINERS_STORAGE_CONF CONTAINERS_REGISTRIES_CONF
    export TMPDIR=$w/tmp
}
pm() { timeout -k 5 "$TMO" podman "${PG[@]}" "$@"; }

# The default_ulimits line for this host, or nothing where it can grant podman's.
lowered_ulimits() {
    local values="" name limit value
    for name in nofile:n:nofile=1024:4096 nproc:u:nproc=4096:8192; do
        IFS=: read -r _ limit value <<< "$name"
        limit=$(ulimit -H"$limit")
        if [ "$limit" != unlimited ] && [ "$limit" -lt $PODMAN_RLIMIT_DEFAULT ]; then
            values+="${values:+, }\"$value\""
        fi
    done
    [ -z "$values" ] || printf 'default_ulimits = [%s]\n' "$values"
}

write_configs() {
    local w=$1 line
    mkdir -p "$w"/{root,runroot,tmp,net,vol}
    [ -f "$STOCK_CONF" ] || die "$STOCK_CONF is missing: podman's configuration comes from Debian's containers-common"
    grep -q '^default_ulimits' "$STOCK_CONF" && die "$STOCK_CONF sets default_ulimits itself"
    line=$(lowered_ulimits)
    if [ -n "$line" ]; then
        awk -v line="$line" '{print} $0 == "[containers]" && !done {print line; done = 1}' "$STOCK_CONF" > "$w/containers.conf"
    else
        cp "$STOCK_CONF" "$w/containers.conf"
    fi
    # the copy is Debian's file, plus at most the one line
    diff "$STOCK_CONF" "$w/containers.conf" | grep '^[<>]' | grep -vxF "> $line" \
        && die "containers.conf differs from Debian's beyond default_ulimits"
    [ -z "$line" ] || log "containers.conf: Debian's, with $line (hard limits: nofile $(ulimit -Hn), nproc $(ulimit -Hu))"
    [ -e /etc/containers/containers.conf ] || compgen -G '/etc/containers/containers.conf.d/*.conf' >/dev/null \
        && log "note: this host's /etc/containers/containers.conf(.d) is not read (CONTAINERS_CONF names Debian's)"
    return 0
}
# Remove every trace of work dir $1 (also used for stale dirs of killed runs).
engine_cleanup() {
    local w=$1 tag ids p
    [ -d "$w" ] || return 0
    tag=$(cat "$w/tag" 2>/dev/null)
    if [ -f "$w/containers.conf" ] && [ -f "$w/runtime" ]; then
        (
            podman_setup_args "$w"
            TMO=30
            ids=$(pm ps -aq 2>/dev/null)
            # shellcheck disable=SC2086  # one argument per id
            [ -n "$ids" ] && pm rm -f -t 0 $ids >/dev/null 2>&1
            pm rmi -af >/dev/null 2>&1
        )
    fi
    # whatever podman could not stop: conmon + container processes live in our
    # private cgroup parent; kill them by pid, then remove the cgroups
    cgroup_purge "$tag"
    for p in $(pids_mentioning "$w"); do kill -KILL "$p" 2>/dev/null; done
    umount_below "$w"
    rm -rf "$w"
}

# ----------------------------------------------------------------------------
# Host paths podman touches whatever we configure, removed at the end if we
# made them: c/image's blob-info cache (written as root on import/pull,
# whatever --root is), and the runtimes' state roots (as root podman passes no
# --root, so runc keeps its state in /run/runc/<id>).
# (--runtime-flag root=DIR is NOT an option: podman 4.3 does not hand runtime
# flags to the "podman container cleanup" exit command, which then runs
# "runc delete --force" against /run/runc, and a later start fails with
# "container with given ID already exists".)
# (Not /dev/shm/libpod_lock: Debian's lock_type is shm, one segment that every
# podman on the host shares whatever its --root, so it stays, as it does
# after any use of a stock podman.)
start_run /var/lib/containers /var/lib/containers/cache \
    /var/lib/containers/cache/blob-info-cache-v1.boltdb \
    /run/runc /run/crun /run/minicontainer /run/minicontainer/.lock

pin_runtime_env "$RUNTIME" "$W" > "$W/runtime"
write_configs "$W"
podman_setup_args "$W"
log "work dir $W, cgroup parent /$TAG, runtime $(cat "$W/runtime")"

RUNF=(--network none --cgroup-parent "/$TAG")

# ----------------------------------------------------------------------------
# helpers for checks
state_of() { pm inspect -f '{{.State.Status}} {{.State.ExitCode}}' "$1" 2>&1; }
wait_state() {  # wait_state CTR WANT_STATUS  (up to 15 s)
    local s
    for _ in $(seq 1 75); do
        s=$(state_of "$1"); [[ $s == "$2"* ]] && { echo "$s"; return 0; }
        sleep 0.2
    done
    echo "$s"; return 1
}

# ----------------------------------------------------------------------------
# image: podman import of a busybox root tarball
make_busybox_rootfs "$W/rootfs" "$W/rootfs.tar"
# c/image (podman 4.3) always writes its blob-info cache to
# /var/lib/containers/cache as root; run the import in a private mount
# namespace with a throw-away tmpfs on /var/lib so the host is not touched.
capture timeout -k 5 "$TMO" unshare -m --propagation private -- sh -c \
    'mount -t tmpfs -o size=16m,mode=755 conformance-varlib /var/lib && exec "$@"' sh \
    podman "${PG[@]}" import "$W/rootfs.tar" "$IMG"
if pm image exists "$IMG"; then pass "import busybox rootfs as $IMG"; else fail "import"; show; exit 1; fi

capture pm run --rm "${RUNF[@]}" "$IMG" echo hi
[ "$RC" = 0 ] && [ "$OUT" = hi ] && pass "run --rm echo hi" || { fail "run --rm echo hi"; show; }

capture pm run --rm "${RUNF[@]}" "$IMG" sh -c 'exit 3'
expect "exit code passthrough (sh -c 'exit 3' -> 3)" 3 ""

capture pm run --rm "${RUNF[@]}" "$IMG" /no/such/binary
if [ "$RC" = 127 ] && [[ $OUT == *"no such file"* || $OUT == *"not found"* ]]; then
    pass "missing executable -> rc 127 with runtime error text"; else fail "missing executable -> 127"; show; fi

capture pm run --rm --network host --cgroup-parent "/$TAG" "$IMG" ls /sys/class/net
expect "run --network host sees host links" 0 "lo"

capture pm run --rm "${RUNF[@]}" "$IMG" sh -c 'ls /sys/class/net'
[ "$RC" = 0 ] && [ "$OUT" = lo ] && pass "run --network none has only lo" || { fail "network none"; show; }

capture pm run --rm "${RUNF[@]}" -e FOO=bar -w /tmp -u 65534:65534 --hostname cfhost "$IMG" \
    sh -c 'echo "$FOO $(pwd) $(id -u):$(id -g) $(hostname)"'
expect "run -e/-w/-u/--hostname" 0 "bar /tmp 65534:65534 cfhost"

OUT=$(printf 'line1\nline2\nline3\n' | timeout -k 5 "$TMO" podman "${PG[@]}" run --rm -i "${RUNF[@]}" "$IMG" sh -c 'cat; echo n=$(echo x | wc -l)' 2>&1); RC=$?
expect "run -i with piped stdin" 0 "line1"$'\n'"line2"$'\n'"line3"

capture ptyrun podman "${PG[@]}" run --rm -t "${RUNF[@]}" "$IMG" sh -c 'tty; [ -t 0 ] && echo stdin-is-tty; exit 4'
if [ "$RC" = 4 ] && [[ $OUT == */dev/pts/0* ]] && [[ $OUT == *stdin-is-tty* ]]; then pass "run -t (pty): /dev/pts/0, rc 4"; else fail "run -t"; show; fi

PTY_INPUT='echo typed-$((6*7))\nexit 0\n' capture ptyrun podman "${PG[@]}" run --rm -it "${RUNF[@]}" "$IMG" sh
expect "run -it interactive shell" 0 "typed-42"

# ---- detached container: exec, top, pause, stop, start, rm -----------------
capture pm run -d --name conformance-d1 "${RUNF[@]}" "$IMG" sh -c 'trap "exit 7" TERM; echo started; while :; do sleep 0.2; done'
expect "run -d" 0 ""
wait_state conformance-d1 running >/dev/null && pass "detached container is running" || { fail "detached running"; state_of conformance-d1; }

capture pm ps --format '{{.Names}} {{.Status}}'
expect "ps lists running container" 0 "conformance-d1 Up"

capture pm exec conformance-d1 echo inexec
expect "exec echo" 0 "inexec"

capture pm exec conformance-d1 sh -c 'exit 5'
expect "exec exit code passthrough (5)" 5 ""

OUT=$(echo piped-in | timeout -k 5 "$TMO" podman "${PG[@]}" exec -i conformance-d1 cat 2>&1); RC=$?
expect "exec -i with piped stdin" 0 "piped-in"

capture pm exec -e FOO=baz -w /tmp -u 65534 conformance-d1 sh -c 'echo "$FOO $(pwd) $(id -u)"'
expect "exec -e/-w/-u" 0 "baz /tmp 65534"

capture ptyrun podman "${PG[@]}" exec -t conformance-d1 sh -c 'tty; [ -t 1 ] && echo out-is-tty'
if [ "$RC" = 0 ] && [[ $OUT == */dev/pts/* ]] && [[ $OUT == *out-is-tty* ]]; then pass "exec -t (pty)"; else fail "exec -t"; show; fi

PTY_INPUT='echo typed-$((7*6))-exec\nexit 0\n' capture ptyrun podman "${PG[@]}" exec -it conformance-d1 sh
expect "exec -it interactive shell" 0 "typed-42-exec"

capture pm exec -d conformance-d1 sh -c 'echo detached-exec > /tmp/de'
sleep 0.5
capture pm exec conformance-d1 cat /tmp/de
expect "exec -d" 0 "detached-exec"

capture pm ps -a --sync --format '{{.Names}} {{.Status}}'
expect "ps --sync" 0 "conformance-d1 Up"

capture pm info --format '{{.Host.OCIRuntime.Version}}'
[ "$RC" = 0 ] && [ -n "$OUT" ] && pass "info shows runtime version (runtime --version): $(printf '%s' "$OUT" | head -1)" || { fail "info runtime version"; show; }

D1ID=$(pm inspect -f '{{.Id}}' conformance-d1 2>/dev/null)
capture pm update --memory 64m conformance-d1
LIM=$(cat "/sys/fs/cgroup/memory/$TAG/libpod-$D1ID/memory.limit_in_bytes" "/sys/fs/cgroup/$TAG/libpod-$D1ID/memory.max" 2>/dev/null)
[ "$RC" = 0 ] && [ "$LIM" = 67108864 ] && pass "update --memory 64m (runtime 'update', cgroup limit set)" || { fail "update (limit '$LIM')"; show; }

capture pm top conformance-d1
expect "top" 0 "sh -c trap"

capture pm logs conformance-d1
expect "logs of detached container" 0 "started"

capture pm pause conformance-d1
[ "$RC" = 0 ] && [[ $(state_of conformance-d1) == paused* ]] && pass "pause" || { fail "pause"; show; state_of conformance-d1; }
capture pm unpause conformance-d1
[ "$RC" = 0 ] && [[ $(state_of conformance-d1) == running* ]] && pass "unpause" || { fail "unpause"; show; state_of conformance-d1; }

capture pm stop -t 10 conformance-d1
S=$(state_of conformance-d1)
[ "$RC" = 0 ] && [ "$S" = "exited 7" ] && pass "stop delivers SIGTERM (trap -> exit 7)" || { fail "stop (state '$S')"; show; }

capture pm start conformance-d1
wait_state conformance-d1 running >/dev/null && [ "$RC" = 0 ] && pass "start again after stop (re-create)" || { fail "restart"; show; state_of conformance-d1; }

capture pm rm -f -t 2 conformance-d1
names=$(pm ps -a --format '{{.Names}}')
[ "$RC" = 0 ] && [[ $names != *conformance-d1* ]] && pass "rm -f running container" || { fail "rm -f"; show; }

# ---- kill ---------------------------------------------------------------------
capture pm run -d --name conformance-k1 "${RUNF[@]}" "$IMG" sh -c 'trap "echo got-usr1 > /tmp/sig" USR1; while :; do sleep 0.2; done'
wait_state conformance-k1 running >/dev/null
capture pm kill -s USR1 conformance-k1
for _ in $(seq 1 25); do   # the trap runs once the current "sleep 0.2" returns
    sleep 0.2
    capture pm exec conformance-k1 cat /tmp/sig
    [[ $OUT == *got-usr1* ]] && break
done
expect "kill -s USR1 reaches pid 1" 0 "got-usr1"
capture pm kill conformance-k1
S=$(wait_state conformance-k1 exited)
[ "$RC" = 0 ] && [ "$S" = "exited 137" ] && pass "kill (SIGKILL) -> exited 137" || { fail "kill ($S)"; show; }

capture pm run -d --name conformance-k2 "${RUNF[@]}" "$IMG" sleep 1000
wait_state conformance-k2 running >/dev/null
capture pm stop -t 1 conformance-k2
S=$(state_of conformance-k2)
[ "$RC" = 0 ] && [ "$S" = "exited 137" ] && pass "stop -t 1 escalates to SIGKILL (pid 1 ignores TERM)" || { fail "stop escalation ($S)"; show; }

capture pm ps -a --format '{{.Names}} {{.Status}}'
if [ "$RC" = 0 ] && [[ $OUT == *"conformance-k1 Exited (137)"* ]] && [[ $OUT == *"conformance-k2 Exited (137)"* ]]; then pass "ps -a shows exited containers"; else fail "ps -a"; show; fi

capture pm rm conformance-k1 conformance-k2
expect "rm exited containers" 0 ""

capture pm ps -aq
[ "$RC" = 0 ] && [ -z "$OUT" ] && pass "no containers left in podman" || { fail "containers left"; show; }

exit 0
