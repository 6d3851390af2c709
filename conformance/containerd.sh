#!/bin/bash
# containerd.sh RUNTIME  -  start a private containerd 1.6 and drive it with ctr,
# using the runc v2 shim with the OCI runtime at path RUNTIME
# (ctr run --runtime io.containerd.runc.v2 --runc-binary RUNTIME), print
# PASS/FAIL per check, then stop containerd and remove everything.
# Exit status 0 iff every check passed and nothing was left behind; 2 (or
# "== stopped early") if the harness broke.  Installs containerd and
# busybox-static if missing.
#
# Env knobs:
#   TMO=60        per-command timeout (seconds)
#   SNAPSHOTTER=overlayfs   (or native)
#   KEEP=1        skip cleanup (debugging; the next run sweeps it)
#   CONFORMANCE_TMP   parent of the work dir (default /var/tmp)
#   LOGWRAP_*     if set, pinned into a wrapper around RUNTIME (see logwrap.sh)
set -u -o pipefail
ENGINE=containerd
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

engine_init "${1:-}" "${CONTAINERD_PACKAGES[@]}"
SNAPSHOTTER=${SNAPSHOTTER:-overlayfs}
IMG=localhost/conformance-busybox:latest

# ctr against the private daemon ($W, $NS set below)
# (TMPDIR: ctr itself may temp-mount snapshots there, e.g. to resolve users)
c() { TMPDIR=$W/tmp timeout -k 5 "$TMO" ctr --address "$W/c.sock" --namespace "$NS" "$@"; }

write_config() {
    local w=$1
    mkdir -p "$w"/{root,state,opt,tmp,fifo,runc-root,runc-v1}
    cat > "$w/config.toml" <<EOF
version = 2
root = "$w/root"
state = "$w/state"
# CRI would want CNI, sandbox images, its own cgroups: not needed by ctr.
# (The v1 linux runtime cannot be disabled in 1.6: the tasks service needs it.)
disabled_plugins = ["io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper"]
oom_score = 0
[grpc]
  address = "$w/c.sock"
[ttrpc]
  address = "$w/c.sock.ttrpc"
[debug]
  address = ""
  level = "info"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$w/opt"
[plugins."io.containerd.runtime.v1.linux"]
  runtime_root = "$w/runc-v1"
EOF
}

# Remove every trace of work dir $1 (also for stale dirs of killed runs).
engine_cleanup() {
    local w=$1 ns pid p i
    [ -d "$w" ] || return 0
    ns=$(cat "$w/tag" 2>/dev/null)
    pid=$(cat "$w/containerd.pid" 2>/dev/null)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && [ -S "$w/c.sock" ]; then
        (
            W=$w NS=$ns TMO=20
            for id in $(c task ls -q 2>/dev/null); do
                c task kill -s KILL "$id" >/dev/null 2>&1
                c task delete -f "$id" >/dev/null 2>&1
            done
            for id in $(c container ls -q 2>/dev/null); do c container delete "$id" >/dev/null 2>&1; done
            c image rm "$IMG" >/dev/null 2>&1
        )
        # stop the daemon we started (by pid); shims exit with their tasks
        kill -TERM "$pid" 2>/dev/null
        for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null
    fi
    # anything left in our cgroup (/NS) or naming our dir (shims: -address $w/c.sock)
    cgroup_purge "$ns"
    for p in $(pids_mentioning "$w"); do kill -KILL "$p" 2>/dev/null; done
    # a shim that was killed leaves its socket /run/containerd/s/<hash>
    # behind; each bundle records it in its "address" file
    local a
    for a in "$w"/state/io.containerd.runtime.v2.task/*/*/address; do
        [ -f "$a" ] || continue
        a=$(cat "$a"); a=${a#unix://}
        case $a in /run/containerd/s/*) rm -f "$a" ;; esac
    done
    umount_below "$w"
    rm -rf "$w"
}

# ----------------------------------------------------------------------------
# /run/containerd/s holds the shims' sockets (hard-coded in containerd 1.6:
# /run/containerd/s/<sha256(address/ns/id)>): removed at the end if we made it.
start_run /run/containerd /run/containerd/s
NS=$TAG                          # containerd namespace = cgroup parent /$NS

write_config "$W"
export TMPDIR=$W/tmp     # for ctr (temp mounts), ptyrun, mktemp
RT=$(pin_runtime_env "$RUNTIME" "$W")
# The daemon's environment is inherited by the shims and so by the runtime.
# TMPDIR: go-runc makes the console socket dir (pty*/pty.sock) in $TMPDIR.
(
    cd "$W" || exit 1
    exec env TMPDIR="$W/tmp" setsid containerd --config "$W/config.toml" </dev/null >"$W/containerd.log" 2>&1
) &
echo $! > "$W/containerd.pid"
for i in $(seq 1 100); do
    [ -S "$W/c.sock" ] && c version >/dev/null 2>&1 && break
    sleep 0.1
done
if c version >/dev/null 2>&1; then pass "private containerd up (pid $(cat "$W/containerd.pid"), ns $NS)"
else fail "containerd did not start"; tail -20 "$W/containerd.log"; exit 1; fi
log "work dir $W, namespace/cgroup /$NS, runtime $RT"

# ctr run flags selecting the runtime: runc v2 shim, our binary, private root
RUNF=(--runtime io.containerd.runc.v2 --runc-binary "$RT" --runc-root "$W/runc-root"
      --fifo-dir "$W/fifo" --snapshotter "$SNAPSHOTTER")
EXF=(--fifo-dir "$W/fifo")

# ----------------------------------------------------------------------------
task_status() { c task ls 2>/dev/null | awk -v id="$1" '$1 == id {print $3}'; }
wait_status() {
    local i s
    for i in $(seq 1 75); do s=$(task_status "$1"); [ "$s" = "$2" ] && return 0; sleep 0.2; done
    return 1
}

# ----------------------------------------------------------------------------
make_busybox_rootfs "$W/rootfs" "$W/rootfs.tar"
make_oci_archive "$W/rootfs.tar" "$W/image-oci.tar" "$IMG"
rm -rf "$W/rootfs"
capture c image import --snapshotter "$SNAPSHOTTER" "$W/image-oci.tar"
names=$(c image ls -q)
[ "$RC" = 0 ] && [[ $names == *"$IMG"* ]] && pass "ctr image import (OCI archive) -> $IMG" || { fail "import"; show; exit 1; }

capture c run --rm "${RUNF[@]}" "$IMG" r-echo echo hi
[ "$RC" = 0 ] && [ "$OUT" = hi ] && pass "run --rm echo hi" || { fail "run --rm echo hi"; show; }

capture c run --rm "${RUNF[@]}" "$IMG" r-exit sh -c 'exit 3'
expect "exit code passthrough (3)" 3 ""

capture c run --rm "${RUNF[@]}" "$IMG" r-missing /no/such/binary
if [ "$RC" != 0 ] && [[ $OUT == *"no such file"* ]]; then pass "missing executable -> error text from runtime log reaches ctr"; else fail "missing executable"; show; fi
c container delete r-missing >/dev/null 2>&1

capture c run --rm "${RUNF[@]}" --env FOO=bar --cwd /tmp "$IMG" r-env sh -c 'echo "$FOO $(pwd) $(id -u)"'
expect "run --env/--cwd" 0 "bar /tmp 0"

# (stdin is fed after a pause: ctr 1.6 run loses an EOF that arrives before the
# task exists - tasks.NewTask sets its CloseIO callback only after Create - and
# would then wait forever)
OUT=$({ sleep 1; printf 'line1\nline2\n'; } | timeout -k 5 "$TMO" ctr --address "$W/c.sock" --namespace "$NS" run --rm "${RUNF[@]}" "$IMG" r-stdin cat 2>&1); RC=$?
expect "run with piped stdin" 0 "line1"$'\n'"line2"

capture ptyrun ctr --address "$W/c.sock" --namespace "$NS" run --rm -t "${RUNF[@]}" "$IMG" r-tty sh -c 'tty; [ -t 0 ] && echo stdin-is-tty; exit 4'
if [ "$RC" = 4 ] && [[ $OUT == */dev/pts/0* ]] && [[ $OUT == *stdin-is-tty* ]]; then pass "run -t (pty): /dev/pts/0, rc 4"; else fail "run -t"; show; fi

PTY_INPUT='echo typed-$((6*7))\nexit 0\n' capture ptyrun ctr --address "$W/c.sock" --namespace "$NS" run --rm -t "${RUNF[@]}" "$IMG" r-it sh
expect "run -t interactive shell" 0 "typed-42"

# ---- detached task -----------------------------------------------------------
capture c run -d "${RUNF[@]}" "$IMG" d1 sh -c 'trap "exit 7" TERM; trap "echo got-usr1 > /tmp/sig" USR1; while :; do sleep 0.2; done'
expect "run -d" 0 ""
wait_status d1 RUNNING && pass "task ls: d1 RUNNING" || { fail "d1 not RUNNING"; c task ls; }

capture c task ps d1
n=$(printf '%s\n' "$OUT" | awk 'NR>1 && $1 ~ /^[0-9]+$/' | wc -l)
[ "$RC" = 0 ] && [ "$n" -ge 1 ] && pass "task ps ($n pids)" || { fail "task ps"; show; }

capture c task exec "${EXF[@]}" --exec-id e1 d1 echo inexec
expect "task exec echo" 0 "inexec"

capture c task exec "${EXF[@]}" --exec-id e2 d1 sh -c 'exit 5'
expect "task exec exit code (5)" 5 ""

OUT=$(echo piped-in | timeout -k 5 "$TMO" ctr --address "$W/c.sock" --namespace "$NS" task exec "${EXF[@]}" --exec-id e3 d1 cat 2>&1); RC=$?
expect "task exec with piped stdin" 0 "piped-in"

# numeric uid:gid only: with a bare uid or a name, ctr 1.6 resolves the user by
# mounting the container's *active* snapshot a second time (rw, in ctr's
# TMPDIR), which breaks the running container's overlay (copy-up -> ENOENT;
# dmesg: "overlayfs: upperdir is in-use ...")
capture c task exec "${EXF[@]}" --exec-id e4 --cwd /tmp --user 65534:65534 d1 sh -c 'echo "$(pwd) $(id -u):$(id -g)"'
expect "task exec --cwd/--user uid:gid" 0 "/tmp 65534:65534"

capture ptyrun ctr --address "$W/c.sock" --namespace "$NS" task exec -t "${EXF[@]}" --exec-id e5 d1 sh -c 'tty; [ -t 1 ] && echo out-is-tty'
if [ "$RC" = 0 ] && [[ $OUT == */dev/pts/* ]] && [[ $OUT == *out-is-tty* ]]; then pass "task exec -t (pty)"; else fail "task exec -t"; show; fi

capture c task exec "${EXF[@]}" --exec-id e6 d1 sh -c 'sleep 0.3; echo ps-during-exec'
capture c task exec "${EXF[@]}" -d --exec-id e7 d1 sleep 2
capture c task ps d1
n2=$(printf '%s\n' "$OUT" | awk 'NR>1 && $1 ~ /^[0-9]+$/' | wc -l)
[ "$RC" = 0 ] && [ "$n2" -gt "$n" ] && pass "task exec -d; task ps shows the extra process ($n2 pids)" || { fail "exec -d / ps ($n -> $n2)"; show; }

capture c task pause d1
wait_status d1 PAUSED && [ "$RC" = 0 ] && pass "task pause" || { fail "pause"; show; }
capture c task resume d1
wait_status d1 RUNNING && [ "$RC" = 0 ] && pass "task resume" || { fail "resume"; show; }

capture c task kill -s USR1 d1
# the trap runs once the current "sleep 0.2" returns; poll for its file
for i in $(seq 1 25); do
    sleep 0.2
    capture c task exec "${EXF[@]}" --exec-id "e8-$i" d1 cat /tmp/sig
    [[ $OUT == *got-usr1* ]] && break
done
expect "task kill -s USR1 reaches pid 1" 0 "got-usr1"

capture c task kill d1
wait_status d1 STOPPED && [ "$RC" = 0 ] && pass "task kill (SIGTERM) -> STOPPED" || { fail "kill TERM"; show; c task ls; }
capture c task delete d1
if [ "$RC" = 0 ] && [[ $OUT == *"exit code 7"* ]]; then pass "task delete reports exit code 7"; else fail "task delete"; show; fi
capture c container delete d1
expect "container delete" 0 ""

capture c run -d "${RUNF[@]}" "$IMG" d2 sleep 1000
wait_status d2 RUNNING
capture c task kill -s KILL d2
wait_status d2 STOPPED && [ "$RC" = 0 ] && pass "task kill -s KILL -> STOPPED" || { fail "kill KILL"; show; }
capture c task delete d2
if [ "$RC" = 0 ] && [[ $OUT == *"exit code 137"* ]]; then pass "task delete reports 137"; else fail "task delete 137"; show; fi
c container delete d2 >/dev/null 2>&1

capture c run -d "${RUNF[@]}" "$IMG" d3 sleep 1000
wait_status d3 RUNNING
capture c task kill -a -s KILL d3
wait_status d3 STOPPED && [ "$RC" = 0 ] && pass "task kill --all" || { fail "kill --all"; show; }
c task delete d3 >/dev/null 2>&1

capture c run -d "${RUNF[@]}" "$IMG" d4 sleep 1000
wait_status d4 RUNNING
capture c task delete -f d4
[ "$RC" = 0 ] && [ -z "$(task_status d4)" ] && pass "task delete -f of a running task" || { fail "delete -f"; show; }
c container delete d3 d4 >/dev/null 2>&1

capture c container ls -q
[ "$RC" = 0 ] && [ -z "$OUT" ] && pass "no containers left in containerd" || { fail "containers left"; show; }

exit 0
