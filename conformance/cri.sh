#!/bin/bash
# cri.sh RUNTIME  -  start a private containerd 1.6 with its CRI plugin and drive
# it over CRI v1 the way a kubelet does (conformance/cri_client.py): a pause
# sandbox on a private CNI bridge, app containers joining its network/IPC/UTS
# namespaces, ExecSync, resources, the CRI log file, StopContainer's SIGTERM and
# SIGKILL paths, removal; the runtime handler "runc" is io.containerd.runc.v2
# with BinaryName = RUNTIME (cgroupfs).  Prints PASS/FAIL per step, then stops
# containerd and removes everything.  Exit status 0 iff every step passed and
# nothing was left behind; 2 (or "== stopped early") if the harness broke.
# Everything is offline: the pause and busybox images are built here (a static
# pause compiled with gcc, busybox-static) and imported with ctr.
#
# Env knobs:
#   TMO=60          per-command timeout (seconds)
#   CRI_VENV=/var/tmp/conformance-cri-venv   venv with grpcio + grpcio-tools
#                   (made with pip if missing)
#   CRI_PROTO_DIR   where api.proto (CRI v1) is (default: conformance/cri)
#   CRI_SUBNET=10.77.0.0/24   the pod network (not podman's/minicontainer's 10.88)
#   KEEP=1          skip cleanup (debugging; the next run sweeps it)
#   CONFORMANCE_TMP parent of the work dir (default /var/tmp)
#   LOGWRAP_*       if set, pinned into a wrapper around RUNTIME (see logwrap.sh)
set -u -o pipefail
ENGINE=cri
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

engine_init "${1:-}" "${CRI_PACKAGES[@]}"
CRI_VENV=${CRI_VENV:-/var/tmp/conformance-cri-venv}
CRI_SUBNET=${CRI_SUBNET:-10.77.0.0/24}
# the CRI v1 definition, kept beside this script (cri/README.md says whence)
CRI_PROTO_DIR=${CRI_PROTO_DIR:-$ENG_DIR/cri}
[ -f "$CRI_PROTO_DIR/api.proto" ] || die "no CRI api.proto in $CRI_PROTO_DIR"
PAUSE_IMG=localhost/conformance-pause:3.9
BUSYBOX_IMG=localhost/conformance-busybox:latest
CNS=k8s.io                       # the CRI plugin's containerd namespace

# ctr against the private daemon, in the CRI's namespace
c() { TMPDIR=$W/tmp timeout -k 5 "$TMO" ctr --address "$W/c.sock" --namespace "$CNS" "$@"; }

# The bridge of run $1 (the work dir's random suffix; at most 15 characters).
bridge_name() { printf 'cri%s\n' "${1##*.}" | cut -c1-15; }

write_config() {
    local w=$1 rt=$2 br
    br=$(bridge_name "$w")
    mkdir -p "$w"/{root,state,opt,tmp,runc-root,runc-v1,cni,cni-ipam,logs}
    cat > "$w/config.toml" <<EOF
version = 2
root = "$w/root"
state = "$w/state"
disabled_plugins = [
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
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMG"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  disable_apparmor = true
  # pods may not go below our own oom_score_adj (the sandbox asks for -998,
  # which a host that is itself a container refuses)
  restrict_oom_score_adj = true
  # network namespaces under our state dir, not /var/run/netns
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "$rt"
        Root = "$w/runc-root"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$w/cni"
    max_conf_num = 1
EOF
    cat > "$w/cni/10-conformance.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "conformance-cri",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$br",
      "isGateway": false,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$w/cni-ipam",
        "ranges": [[{"subnet": "$CRI_SUBNET"}]]
      }
    }
  ]
}
EOF
}

# Remove every trace of work dir $1 (also for stale dirs of killed runs).
engine_cleanup() {
    local w=$1 tag pid p i a br
    [ -d "$w" ] || return 0
    tag=$(cat "$w/tag" 2>/dev/null)
    pid=$(cat "$w/containerd.pid" 2>/dev/null)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && [ -S "$w/c.sock" ]; then
        (
            W=$w TMO=20
            for id in $(c task ls -q 2>/dev/null); do
                c task kill -a -s KILL "$id" >/dev/null 2>&1
                c task delete -f "$id" >/dev/null 2>&1
            done
            for id in $(c container ls -q 2>/dev/null); do c container delete "$id" >/dev/null 2>&1; done
        )
        kill -TERM "$pid" 2>/dev/null
        for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null
    fi
    # everything in our cgroup parent (/TAG) or naming our dir (shims)
    cgroup_purge "$tag"
    for p in $(pids_mentioning "$w"); do kill -KILL "$p" 2>/dev/null; done
    for a in "$w"/state/io.containerd.runtime.v2.task/*/*/address; do
        [ -f "$a" ] || continue
        a=$(cat "$a"); a=${a#unix://}
        case $a in /run/containerd/s/*) rm -f "$a" ;; esac
    done
    # the pods' veths go with their network namespaces; the bridge is ours
    umount_below "$w"
    br=$(bridge_name "$w")
    ip link show "$br" >/dev/null 2>&1 && ip link del "$br"
    # libcni's result caches of our sandboxes, our network's and the CRI's own
    # loopback (a CNI DEL removes them; a killed run does not)
    local sb
    for sb in "$w"/root/io.containerd.grpc.v1.cri/sandboxes/* "$w"/runc-root/k8s.io/*; do
        [ -e "$sb" ] && rm -f /var/lib/cni/results/*-"${sb##*/}"-*
    done
    rm -rf "$w"
    [ -n "${IP_FORWARD:-}" ] && restore_ip_forward
}

# The bridge plugin as a gateway would turn the host's ip_forward on, for good
# (and the suite's sysctl test checks that the host's is untouched): our pods
# need no gateway (isGateway false, no routes). A change seen at the end is
# said, not undone: another user of the host (minicontainer's own bridge
# network) may have turned it on while we ran, and needs it.
IP_FORWARD=$(cat /proc/sys/net/ipv4/ip_forward)
restore_ip_forward() {
    [ "$(cat /proc/sys/net/ipv4/ip_forward)" = "$IP_FORWARD" ] && return 0
    log "note: net.ipv4.ip_forward was $IP_FORWARD at the start and is $(cat /proc/sys/net/ipv4/ip_forward) now (not ours: our bridge is no gateway)"
}

# ----------------------------------------------------------------------------
start_run /run/containerd /run/containerd/s /var/lib/cni /var/lib/cni/results
export TMPDIR=$W/tmp
RT=$(pin_runtime_env "$RUNTIME" "$W")
write_config "$W" "$RT"

# The CRI client: grpcio + grpcio-tools in a venv of their own (the stubs are
# generated from cri/api.proto into the work dir at run time).
if ! "$CRI_VENV/bin/python" -c 'import grpc, grpc_tools' 2>/dev/null; then
    log "making $CRI_VENV (grpcio, grpcio-tools)"
    python3 -m venv "$CRI_VENV" && "$CRI_VENV/bin/pip" install -q grpcio grpcio-tools >/dev/null 2>&1 \
        || die "could not install grpcio/grpcio-tools into $CRI_VENV"
fi

# ---- images, offline ---------------------------------------------------------
mkdir -p "$W/pause-root" "$W/bb-root"
cat > "$W/pause.c" <<'EOF'
/* The sandbox's first process: hold the pod's namespaces, reap, end on INT/TERM. */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
static void bye(int s) { (void)s; _exit(0); }
static void reap(int s) { (void)s; while (waitpid(-1, NULL, WNOHANG) > 0) ; }
int main(void) {
    signal(SIGINT, bye); signal(SIGTERM, bye); signal(SIGCHLD, reap);
    for (;;) pause();
}
EOF
gcc -static -O2 -o "$W/pause-root/pause" "$W/pause.c" || die "gcc -static pause.c"
tar --numeric-owner -C "$W/pause-root" -cf "$W/pause-rootfs.tar" . || die "pause tar"
make_busybox_rootfs "$W/bb-root" "$W/bb-rootfs.tar"
# every applet (httpd, wget, ip, ...), as links beside /bin/busybox
for a in $(/bin/busybox --list); do [ -e "$W/bb-root/bin/$a" ] || ln -s busybox "$W/bb-root/bin/$a"; done
tar --numeric-owner -C "$W/bb-root" -cf "$W/bb-rootfs.tar" . || die "busybox tar"
make_oci_archive "$W/bb-rootfs.tar" "$W/busybox-oci.tar" "$BUSYBOX_IMG"
IMAGE_ENTRYPOINT='["/pause"]' make_oci_archive "$W/pause-rootfs.tar" "$W/pause-oci.tar" "$PAUSE_IMG"
rm -rf "$W/pause-root" "$W/bb-root" "$W/pause-rootfs.tar" "$W/bb-rootfs.tar"

# ---- the daemon ----------------------------------------------------------------
(
    cd "$W" || exit 1
    exec env TMPDIR="$W/tmp" setsid containerd --config "$W/config.toml" </dev/null >"$W/containerd.log" 2>&1
) &
echo $! > "$W/containerd.pid"
for i in $(seq 1 100); do
    [ -S "$W/c.sock" ] && c version >/dev/null 2>&1 && break
    sleep 0.1
done
if c version >/dev/null 2>&1; then pass "private containerd with CRI up (pid $(cat "$W/containerd.pid"))"
else fail "containerd did not start"; tail -20 "$W/containerd.log"; exit 1; fi
log "work dir $W, cgroup parent /$TAG, bridge $(bridge_name "$W") $CRI_SUBNET, runtime $RT"

for img in busybox pause; do
    capture c image import --snapshotter overlayfs "$W/$img-oci.tar"
    [ "$RC" = 0 ] || { fail "ctr image import $img"; show; exit 1; }
done
names=$(c image ls -q)
[[ $names == *"$PAUSE_IMG"* ]] && [[ $names == *"$BUSYBOX_IMG"* ]] && pass "images imported offline ($PAUSE_IMG, $BUSYBOX_IMG)" \
    || { fail "images not listed"; printf '%s\n' "$names"; exit 1; }

# ---- the kubelet's part --------------------------------------------------------
CLIENT_ARGS=(--socket "$W/c.sock" --proto-dir "$CRI_PROTO_DIR"
             --work "$W" --cgroup-parent "/$TAG" --image "$BUSYBOX_IMG" --pause-image "$PAUSE_IMG"
             --subnet "$CRI_SUBNET" --bridge "$(bridge_name "$W")" --timeout "$TMO"
             --runtime "$RT" --runtime-root "$W/runc-root/k8s.io")
while IFS= read -r line; do
    case $line in
        "PASS "*) pass "${line#PASS }" ;;
        "FAIL "*) fail "${line#FAIL }" ;;
        "client-exit "*) case ${line#client-exit } in 0|1) ;; *) fail "the CRI client broke: $line" ;; esac ;;
        *) printf '%s\n' "$line" ;;
    esac
done < <(timeout -k 5 $((TMO * 10)) "$CRI_VENV/bin/python" "$ENG_DIR/cri_client.py" "${CLIENT_ARGS[@]}" 2>&1; echo "client-exit $?")

# ---- nothing left in containerd --------------------------------------------
capture c task ls -q
[ "$RC" = 0 ] && [ -z "$OUT" ] && pass "no containerd task left" || { fail "containerd tasks left"; show; }
capture c container ls -q
[ "$RC" = 0 ] && [ -z "$OUT" ] && pass "no containerd container left" || { fail "containerd containers left"; show; }
# (a dot-file in the namespace's root is the runtime's own, not a container's:
# minicontainer keeps its name-allocation lock there as .lock; runc keeps none)
left=$(find "$W/runc-root" -mindepth 2 ! -path "$W/runc-root/*/.*" 2>/dev/null)
dots=$(find "$W/runc-root" -mindepth 2 -maxdepth 2 -path "$W/runc-root/*/.*" 2>/dev/null)
[ -n "$dots" ] && log "note: the runtime keeps in its root: $dots"
[ -z "$left" ] && pass "no container state left in the runtime's root ($W/runc-root)" || fail "runtime state left: $left"

exit 0
