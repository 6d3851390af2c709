"""A kubelet's part, over CRI v1: one pod through containerd's CRI plugin.

Run by cri.sh (with a venv holding grpcio and grpcio-tools); prints one
"PASS step" or "FAIL step: why" line per step and exits 0 iff every step passed.
The stubs are generated from the CRI v1 api.proto (--proto-dir) into the work
dir at run time.  Checks that look at the host (cgroups, /proc, mounts, links)
are made here as root, from the pids the CRI reports in its verbose status.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time

A = None          # the parsed arguments
RT = IMG = None   # the RuntimeService and ImageService stubs
pb = None         # the generated messages
FAILS = 0


def why(e):
    """One line for an exception: a gRPC error's details, else its text."""
    d = e.details() if hasattr(e, "details") and callable(e.details) else str(e)
    return f"{type(e).__name__}: {(d or '').splitlines()[0][:400] if d else ''}"


def say(ok, step, why=""):
    global FAILS
    if ok:
        print(f"PASS {step}", flush=True)
    else:
        FAILS += 1
        print(f"FAIL {step}" + (f": {why}" if why else ""), flush=True)
    return ok


def step(name):
    """Decorator-free helper: run fn, turn an exception into a FAIL line."""
    def run(fn, *args):
        try:
            return fn(*args)
        except Exception as e:  # a gRPC error or a host check that broke
            say(False, name, why(e))
            return None
    return run


def compile_stubs():
    global pb
    out = os.path.join(A.work, "cri-stubs")
    os.makedirs(out, exist_ok=True)
    from grpc_tools import protoc
    import grpc_tools
    inc = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    rc = protoc.main(["protoc", f"-I{A.proto_dir}", f"-I{inc}", f"--python_out={out}",
                      f"--grpc_python_out={out}", os.path.join(A.proto_dir, "api.proto")])
    if rc != 0:
        raise SystemExit(f"protoc failed ({rc})")
    sys.path.insert(0, out)
    import api_pb2
    import api_pb2_grpc
    pb = api_pb2
    return api_pb2_grpc


# ---- host-side helpers ---------------------------------------------------------

def verbose_pid(info):
    return int(json.loads(info["info"])["pid"])


def cgroup_dirs(pid):
    """{controller: absolute cgroup dir} of pid (cgroup v1 and v2)."""
    dirs = {}
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _, ctrls, path = line.rstrip("\n").split(":", 2)
            for c in (ctrls.split(",") if ctrls else ["unified"]):
                for base in (f"/sys/fs/cgroup/{c}", f"/sys/fs/cgroup/{ctrls}",
                             "/sys/fs/cgroup/unified" if c == "unified" else ""):
                    if base and os.path.isdir(base + path):
                        dirs[c] = base + path
                        break
    return dirs


def read(path):
    with open(path) as f:
        return f.read().strip()


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def wait_for(pred, secs):
    end = time.monotonic() + secs
    while True:
        v = pred()
        if v or time.monotonic() > end:
            return v
        time.sleep(0.2)


# ---- CRI helpers -----------------------------------------------------------------

def bridge_links():
    out = subprocess.run(["ip", "-o", "link", "show", "master", A.bridge], capture_output=True, text=True).stdout
    return {l.split(": ")[1].split("@")[0] for l in out.splitlines() if ": " in l}


class Tracking:
    """The RuntimeService stub, remembering what each pod made (its sandbox and
    container ids, the veths its sandbox added to the bridge), so that a pod's
    "nothing left" looks at its own things only."""

    def __init__(self, stub):
        self.stub, self.ids, self.veths = stub, {}, {}

    def RunPodSandbox(self, req, **kw):
        before = bridge_links()
        r = self.stub.RunPodSandbox(req, **kw)
        self.ids.setdefault(r.pod_sandbox_id, set()).add(r.pod_sandbox_id)
        self.veths[r.pod_sandbox_id] = bridge_links() - before
        return r

    def CreateContainer(self, req, **kw):
        r = self.stub.CreateContainer(req, **kw)
        self.ids.setdefault(req.pod_sandbox_id, set()).add(r.container_id)
        return r

    def __getattr__(self, name):
        return getattr(self.stub, name)


def status(cid):
    return RT.ContainerStatus(pb.ContainerStatusRequest(container_id=cid, verbose=True), timeout=A.timeout)


def state_name(cid):
    return pb.ContainerState.Name(status(cid).status.state)


def exec_sync(cid, cmd, secs=20):
    return RT.ExecSync(pb.ExecSyncRequest(container_id=cid, cmd=cmd, timeout=secs), timeout=secs + A.timeout)


def container(pod_id, pod_cfg, name, cmd, resources=None):
    lc = pb.LinuxContainerConfig(
        security_context=pb.LinuxContainerSecurityContext(
            namespace_options=pb.NamespaceOption(network=pb.POD, pid=pb.CONTAINER, ipc=pb.POD)))
    if resources is not None:
        lc.resources.CopyFrom(resources)
    cfg = pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name=name, attempt=0),
        image=pb.ImageSpec(image=A.image),
        command=cmd, log_path=f"{name}.log", linux=lc,
        envs=[pb.KeyValue(key="CRI_TEST", value=name)])
    r = RT.CreateContainer(pb.CreateContainerRequest(pod_sandbox_id=pod_id, config=cfg, sandbox_config=pod_cfg),
                           timeout=A.timeout)
    return r.container_id


CRI_LOG = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d) (stdout|stderr) (F|P) (.*)$")


def main():
    global A, RT, IMG
    p = argparse.ArgumentParser()
    for o in ("socket", "proto-dir", "work", "cgroup-parent", "image", "pause-image", "subnet", "bridge"):
        p.add_argument("--" + o, required=True)
    p.add_argument("--timeout", type=float, default=60)
    p.add_argument("--runtime", required=True)
    p.add_argument("--runtime-root", required=True)
    A = p.parse_args()
    grpc_stubs = compile_stubs()
    import grpc
    ch = grpc.insecure_channel("unix://" + A.socket)
    RT = Tracking(grpc_stubs.RuntimeServiceStub(ch))
    IMG = grpc_stubs.ImageServiceStub(ch)

    v = RT.Version(pb.VersionRequest(version="v1"), timeout=A.timeout)
    say(v.runtime_api_version == "v1", f"Version: {v.runtime_name} {v.runtime_version}, CRI {v.runtime_api_version}")
    imgs = {t for i in IMG.ListImages(pb.ListImagesRequest(), timeout=A.timeout).images for t in i.repo_tags}
    say(A.image in imgs and A.pause_image in imgs, "ListImages shows the busybox and pause images", str(sorted(imgs)))

    # ---- the sandbox ----
    logdir = os.path.join(A.work, "logs", "pod")
    os.makedirs(logdir, exist_ok=True)
    pod_cfg = pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name="conformance-pod", uid="uid-conformance-1", namespace="default", attempt=0),
        hostname="cripod", log_directory=logdir,
        linux=pb.LinuxPodSandboxConfig(
            cgroup_parent=A.cgroup_parent,
            security_context=pb.LinuxSandboxSecurityContext(
                namespace_options=pb.NamespaceOption(network=pb.POD, pid=pb.CONTAINER, ipc=pb.POD))))
    try:
        pod_id = RT.RunPodSandbox(pb.RunPodSandboxRequest(config=pod_cfg, runtime_handler="runc"),
                                  timeout=A.timeout * 2).pod_sandbox_id
    except Exception as e:
        say(False, "RunPodSandbox", why(e))
        return
    ps = RT.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod_id, verbose=True), timeout=A.timeout)
    pod_info = json.loads(ps.info["info"])
    pause_pid = int(pod_info["pid"])
    netns_path = next((n.get("path", "") for n in pod_info["runtimeSpec"]["linux"]["namespaces"]
                       if n["type"] == "network"), "")
    pod_ip = ps.status.network.ip
    prefix = A.subnet.rsplit(".", 1)[0] + "."
    say(pb.PodSandboxState.Name(ps.status.state) == "SANDBOX_READY" and pod_ip.startswith(prefix) and alive(pause_pid),
        f"RunPodSandbox: READY, pause pid {pause_pid}, pod IP {pod_ip} in {A.subnet}",
        f"state {ps.status.state} ip {pod_ip!r}")
    say(bool(netns_path) and netns_path.startswith(A.work) and os.path.exists(netns_path),
        f"the pod's network namespace is a file under the work dir ({netns_path})")
    host_net = os.readlink("/proc/self/ns/net")
    pod_ns = {n: os.readlink(f"/proc/{pause_pid}/ns/{n}") for n in ("net", "uts", "ipc")}
    say(all(pod_ns[n] != os.readlink(f"/proc/self/ns/{n}") for n in pod_ns),
        "control: the pause process's net/uts/ipc namespaces are not the host's", str(pod_ns))

    # ---- two containers sharing the pod's network ----
    res = pb.LinuxContainerResources(cpu_shares=512, cpu_period=100000, cpu_quota=50000,
                                     memory_limit_in_bytes=64 * 1024 * 1024, oom_score_adj=500)
    ids = {}
    run = step("CreateContainer/StartContainer httpd + fetcher")
    ids["httpd"] = run(container, pod_id, pod_cfg, "httpd",
                       ["sh", "-c", "mkdir -p /tmp/www && echo hello-from-pod > /tmp/www/index.html && "
                                    "exec httpd -f -p 127.0.0.1:8080 -h /tmp/www"], res)
    ids["fetcher"] = run(container, pod_id, pod_cfg, "fetcher",
                         ["sh", "-c", "for i in $(seq 1 100); do wget -qO- http://127.0.0.1:8080/ && break; "
                                      "sleep 0.2; done; exec sleep 100000"])
    for n in ("httpd", "fetcher"):
        if ids[n]:
            run(lambda c: RT.StartContainer(pb.StartContainerRequest(container_id=c), timeout=A.timeout), ids[n])
    ok = all(ids.values()) and all(wait_for(lambda c=ids[n]: state_name(c) == "CONTAINER_RUNNING", 20)
                                  for n in ("httpd", "fetcher"))
    say(ok, "CreateContainer + StartContainer x2: both RUNNING")
    if not ok:
        cleanup(pod_id, ids)
        return
    pids = {n: verbose_pid(status(ids[n]).info) for n in ("httpd", "fetcher")}

    def same_ns():
        return all(os.readlink(f"/proc/{pids[c]}/ns/{n}") == pod_ns[n] for c in pids for n in pod_ns)
    say(same_ns(), "both containers' first processes are in the pod's net, uts and ipc namespaces")

    fetched = wait_for(lambda: "hello-from-pod" in open(os.path.join(logdir, "fetcher.log")).read(), 20)
    say(fetched, "fetcher got httpd's page over the pod's 127.0.0.1 (its log)")

    # ---- ExecSync ----
    def ex(name, cmd, want_rc=0, want_out=None, cid=None):
        try:
            r = exec_sync(cid or ids["fetcher"], cmd)
        except Exception as e:
            say(False, name, why(e))
            return None
        out = r.stdout.decode(errors="replace")
        ok = r.exit_code == want_rc and (want_out is None or want_out(out))
        say(ok, name, f"rc={r.exit_code} stdout={out[:300]!r} stderr={r.stderr.decode(errors='replace')[:200]!r}")
        return out

    ex("ExecSync wget http://127.0.0.1:8080/ (the pod's loopback)", ["wget", "-qO-", "http://127.0.0.1:8080/"],
       want_out=lambda o: "hello-from-pod" in o)
    ex("ExecSync hostname = the pod's (cripod)", ["hostname"], want_out=lambda o: o.strip() == "cripod")
    for n in ("net", "uts", "ipc"):
        ex(f"ExecSync readlink /proc/self/ns/{n} = the pod's", ["readlink", f"/proc/self/ns/{n}"],
           want_out=lambda o, n=n: o.strip() == pod_ns[n])
    ex("ExecSync /proc/net/dev: only lo and the pod's eth0", ["cat", "/proc/net/dev"],
       want_out=lambda o: sorted(l.split(":")[0].strip() for l in o.splitlines()[2:]) == ["eth0", "lo"])
    ex(f"ExecSync ip addr: eth0 has the pod's IP {pod_ip}", ["ip", "addr", "show", "eth0"],
       want_out=lambda o: f"inet {pod_ip}/" in o)
    ex("ExecSync exit code passthrough (3) and stderr", ["sh", "-c", "echo err >&2; exit 3"], want_rc=3)
    ex("ExecSync env from the container config", ["sh", "-c", "echo $CRI_TEST"],
       want_out=lambda o: o.strip() == "fetcher")

    # ---- resources ----
    try:
        cg = cgroup_dirs(pids["httpd"])
        under = all(f"{A.cgroup_parent}/" in d for d in cg.values())
        say(under, f"httpd's cgroups are under the cgroup parent {A.cgroup_parent}", str(cg))
        if "cpu" in cg and os.path.exists(cg["cpu"] + "/cpu.shares"):
            got = (read(cg["cpu"] + "/cpu.shares"), read(cg["cpu"] + "/cpu.cfs_quota_us"),
                   read(cg["cpu"] + "/cpu.cfs_period_us"))
            say(got == ("512", "50000", "100000"), "cpu.shares 512, cfs_quota 50000/100000", str(got))
            mem = read(cg["memory"] + "/memory.limit_in_bytes")
        else:                               # cgroup v2
            got = (read(cg["unified"] + "/cpu.weight"), read(cg["unified"] + "/cpu.max"))
            say(got[1] == "50000 100000", "cpu.max 50000 100000 (weight from shares)", str(got))
            mem = read(cg["unified"] + "/memory.max")
        say(mem == str(64 * 1024 * 1024), "memory limit 64 MiB", mem)
    except Exception as e:
        say(False, "resources in the cgroups", why(e))
    try:
        oom = read(f"/proc/{pids['httpd']}/oom_score_adj")
        say(oom == "500", "oom_score_adj 500 in /proc", oom)
    except Exception as e:
        say(False, "oom_score_adj", str(e))

    # ---- a container that exits 7 by itself; its CRI log ----
    run = step("container exiting 7")
    ids["exit7"] = run(container, pod_id, pod_cfg, "exit7",
                       ["sh", "-c", "echo out-line; echo err-line >&2; exit 7"])
    if ids["exit7"]:
        run(lambda c: RT.StartContainer(pb.StartContainerRequest(container_id=c), timeout=A.timeout), ids["exit7"])
        ok = wait_for(lambda: state_name(ids["exit7"]) == "CONTAINER_EXITED", 20)
        st = status(ids["exit7"]).status
        say(ok and st.exit_code == 7, "a container that exits 7 by itself: EXITED, exit code 7",
            f"state {pb.ContainerState.Name(st.state)} exit {st.exit_code}")
        try:
            lines = open(st.log_path).read().splitlines()
            parsed = [CRI_LOG.match(l) for l in lines]
            got = {(m.group(3), m.group(5)) for m in parsed if m}
            say(st.log_path == os.path.join(logdir, "exit7.log") and all(parsed)
                and ("stdout", "out-line") in got and ("stderr", "err-line") in got,
                "its log file is in CRI format (TIME stdout|stderr F line)", repr(lines[:4]))
        except Exception as e:
            say(False, "CRI log file", str(e))

    # ---- StopContainer: the SIGTERM path (143) and the SIGKILL path after the grace (137) ----
    run = step("stop containers")
    ids["term"] = run(container, pod_id, pod_cfg, "term",
                      ["sh", "-c", "trap 'exit 143' TERM; while :; do sleep 0.1; done"])
    ids["ignore"] = run(container, pod_id, pod_cfg, "ignore",
                        ["sh", "-c", "trap '' TERM; while :; do sleep 0.1; done"])
    for n in ("term", "ignore"):
        if ids[n]:
            run(lambda c: RT.StartContainer(pb.StartContainerRequest(container_id=c), timeout=A.timeout), ids[n])
    for n, want, grace in (("term", 143, 10), ("ignore", 137, 2)):
        if not ids[n] or not wait_for(lambda c=ids[n]: state_name(c) == "CONTAINER_RUNNING", 20):
            say(False, f"StopContainer {n}", "not running")
            continue
        time.sleep(0.5)                 # let the shell set its trap
        t0 = time.monotonic()
        try:
            RT.StopContainer(pb.StopContainerRequest(container_id=ids[n], timeout=grace), timeout=grace + A.timeout)
            took = time.monotonic() - t0
            st = status(ids[n]).status
            timing_ok = took < grace - 1 if n == "term" else took >= grace - 0.2
            say(pb.ContainerState.Name(st.state) == "CONTAINER_EXITED" and st.exit_code == want and timing_ok,
                f"StopContainer {n} (grace {grace}s): exit {want} in {took:.1f}s",
                f"state {pb.ContainerState.Name(st.state)} exit {st.exit_code} in {took:.1f}s")
        except Exception as e:
            say(False, f"StopContainer {n}", why(e))

    # ---- an exec in a stopped container is refused ----
    if ids.get("term"):
        try:
            exec_sync(ids["term"], ["true"], 5)
            say(False, "ExecSync in an exited container is refused", "it ran")
        except Exception:
            say(True, "ExecSync in an exited container is refused")

    running = set()
    try:
        third_round(pod_id, pod_cfg, ids, running)
        state_lost(pod_id, pod_cfg, ids)
    except Exception as e:
        say(False, "the third round broke", why(e))
    cleanup(pod_id, ids, pause_pid, netns_path, list(pids.values()), running)


def cleanup(pod_id, ids, pause_pid=None, netns_path="", pids=(), running=()):
    for n, cid in ids.items():
        if not cid or n in ("httpd", "fetcher") or cid in running:
            continue
        try:
            RT.RemoveContainer(pb.RemoveContainerRequest(container_id=cid), timeout=A.timeout)
            say(True, f"RemoveContainer {n}")
        except Exception as e:
            say(False, f"RemoveContainer {n}", why(e))
    # httpd and fetcher are still running: StopPodSandbox stops them (as a kubelet's
    # pod deletion after its grace does)
    try:
        t0 = time.monotonic()
        RT.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod_id), timeout=A.timeout * 2)
        say(True, f"StopPodSandbox with two running containers ({time.monotonic() - t0:.1f}s)")
    except Exception as e:
        say(False, "StopPodSandbox", why(e))
    for n in ["httpd", "fetcher"] + [n for n, c in ids.items() if c in running]:
        if ids.get(n):
            try:
                st = status(ids[n]).status
                say(pb.ContainerState.Name(st.state) == "CONTAINER_EXITED", f"{n} EXITED after StopPodSandbox",
                    pb.ContainerState.Name(st.state))
                RT.RemoveContainer(pb.RemoveContainerRequest(container_id=ids[n]), timeout=A.timeout)
                say(True, f"RemoveContainer {n}")
            except Exception as e:
                say(False, f"RemoveContainer {n}", why(e))
    try:
        RT.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id), timeout=A.timeout)
        say(True, "RemovePodSandbox")
    except Exception as e:
        say(False, "RemovePodSandbox", why(e))

    nothing_left(pod_id, pause_pid, netns_path, pids)


def nothing_left(pod_id, pause_pid, netns_path, pids, what="the pod"):
    """Nothing of this pod is left: in the CRI's lists, processes, mounts,
    its netns file, its veth, cgroups, its IP."""
    mine = RT.ids.get(pod_id, {pod_id})
    cs = [c.id for c in RT.ListContainers(pb.ListContainersRequest(), timeout=A.timeout).containers if c.id in mine]
    sb = [p.id for p in RT.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=A.timeout).items if p.id == pod_id]
    say(not cs and not sb, f"{what} removed: none of its containers or its sandbox is listed",
        f"{len(cs)} containers, {len(sb)} sandboxes")
    left = [p for p in ([pause_pid] if pause_pid else []) + list(pids) if alive(p)]
    gone = wait_for(lambda: not any(alive(p) for p in left), 5)
    say(gone, f"no process of {what} left", str([p for p in left if alive(p)]))
    mounts = [m for m in (l.split()[1] for l in open("/proc/self/mounts"))
              if A.work in m and (any(i in m for i in mine) or (netns_path and m == netns_path))]
    say(not mounts, f"{what}: no mount of its own left (rootfs, shm, netns)", str(mounts[:5]))
    if netns_path:
        say(not os.path.exists(netns_path), f"{what}'s netns file is gone", netns_path)
    veths = RT.veths.get(pod_id, set())
    if veths or netns_path:
        still = veths & bridge_links()
        say(bool(veths) and not still, f"{what}: its veth {sorted(veths)} is gone from the bridge {A.bridge}",
            f"made {sorted(veths)}, left {sorted(still)}")
    subdirs = []
    for root in os.listdir("/sys/fs/cgroup"):
        d = f"/sys/fs/cgroup/{root}{A.cgroup_parent}"
        if os.path.isdir(d):
            subdirs += [os.path.join(d, e) for e in os.listdir(d) if e in mine]
    say(not subdirs, f"{what}: no cgroup of its own left under {A.cgroup_parent}", str(subdirs[:5]))
    ipam_dir = os.path.join(A.work, "cni-ipam", "conformance-cri")
    held = [f for f in os.listdir(ipam_dir) if f[0].isdigit()
            and any(i in read(os.path.join(ipam_dir, f)) for i in mine)] if os.path.isdir(ipam_dir) else []
    say(not held, f"{what}'s IP is released (host-local)", str(held))


def state_lost(pod_id, pod_cfg, ids):
    """The runtime's state of a running container goes behind containerd's back
    (an operator's `runc delete --force`; what a checkpoint leaves): the shim
    sees the exit, its `delete` is told the container "does not exist", which
    containerd's shim ignores (pkg/process/init.go), and the container can be
    removed as usual."""
    sc = pb.LinuxContainerSecurityContext(
        namespace_options=pb.NamespaceOption(network=pb.POD, pid=pb.CONTAINER, ipc=pb.POD))
    cfg = pb.ContainerConfig(metadata=pb.ContainerMetadata(name="lost"), image=pb.ImageSpec(image=A.image),
                             command=["sleep", "100000"], log_path="lost.log",
                             linux=pb.LinuxContainerConfig(security_context=sc))
    try:
        cid = RT.CreateContainer(pb.CreateContainerRequest(pod_sandbox_id=pod_id, config=cfg, sandbox_config=pod_cfg),
                                 timeout=A.timeout).container_id
        ids["lost"] = cid
        RT.StartContainer(pb.StartContainerRequest(container_id=cid), timeout=A.timeout)
        wait_for(lambda: state_name(cid) == "CONTAINER_RUNNING", 20)
        r = subprocess.run([A.runtime, "--root", A.runtime_root, "delete", "--force", cid],
                           capture_output=True, text=True, timeout=A.timeout)
        ok = wait_for(lambda: state_name(cid) == "CONTAINER_EXITED", 15)
        st = status(cid).status
        say(r.returncode == 0 and ok, "the runtime's state deleted behind containerd's back: the container EXITED",
            f"delete rc={r.returncode} {r.stderr.strip()[:200]!r}; {pb.ContainerState.Name(st.state)}")
        RT.RemoveContainer(pb.RemoveContainerRequest(container_id=cid), timeout=A.timeout)
        del ids["lost"]
        say(True, "... and RemoveContainer succeeds (the shim's delete took \"does not exist\" as done)")
    except Exception as e:
        say(False, "the runtime's state deleted behind containerd's back", why(e))


def third_round(pod_id, pod_cfg, ids, running):
    """What else a kubelet asks of a pod's containers: a tty container, a
    restart (attempt 1 of a container that exited), host-path mounts (a
    read-only directory, a writable file, as the kubelet's volumes and
    /dev/termination-log), working dir and args, a privileged container."""
    vol = os.path.join(A.work, "vol")
    os.makedirs(vol, exist_ok=True)
    with open(os.path.join(vol, "data.txt"), "w") as f:
        f.write("from-the-host\n")
    term = os.path.join(A.work, "termination-log")
    open(term, "w").close()

    def start(name, cmd, **kw):
        sc = kw.pop("sc", None) or pb.LinuxContainerSecurityContext(
            namespace_options=pb.NamespaceOption(network=pb.POD, pid=pb.CONTAINER, ipc=pb.POD))
        cfg = pb.ContainerConfig(metadata=pb.ContainerMetadata(name=name, attempt=kw.pop("attempt", 0)),
                                 image=pb.ImageSpec(image=A.image), command=cmd, log_path=f"{name}-{len(ids)}.log",
                                 linux=pb.LinuxContainerConfig(security_context=sc), **kw)
        cid = RT.CreateContainer(pb.CreateContainerRequest(pod_sandbox_id=pod_id, config=cfg,
                                                           sandbox_config=pod_cfg), timeout=A.timeout).container_id
        ids[f"{name}-{len(ids)}"] = cid
        RT.StartContainer(pb.StartContainerRequest(container_id=cid), timeout=A.timeout)
        return cid

    # a tty container (kubectl run -it): its output is the terminal's, in the log
    try:
        cid = start("tty", ["sh", "-c", "tty; [ -t 0 ] && [ -t 1 ] && echo is-a-tty; exec sleep 100000"],
                    tty=True, stdin=True)
        running.add(cid)
        lp = status(cid).status.log_path
        ok = wait_for(lambda: "is-a-tty" in open(lp).read() if os.path.exists(lp) else False, 15)
        say(ok and "/dev/pts/" in open(lp).read(), "a tty container (tty, stdin): its stdio is a pty, in the CRI log",
            open(lp).read()[:300] if os.path.exists(lp) else "no log")
    except Exception as e:
        say(False, "a tty container", why(e))

    # a restart: attempt 1 of "exit7", in the same pod
    try:
        cid = start("exit7", ["sh", "-c", "hostname; exit 0"], attempt=1)
        ok = wait_for(lambda: state_name(cid) == "CONTAINER_EXITED", 20)
        st = status(cid).status
        say(ok and st.exit_code == 0 and "cripod" in open(st.log_path).read(),
            "a restart (attempt 1 of a container that exited) runs in the pod, exit 0",
            f"{pb.ContainerState.Name(st.state)} {st.exit_code}")
    except Exception as e:
        say(False, "a restart (attempt 1)", why(e))

    # over its memory limit: OOM-killed, and said so (the shim watches the
    # container's memory cgroup, where the runtime put it)
    try:
        sc = pb.LinuxContainerSecurityContext(
            namespace_options=pb.NamespaceOption(network=pb.POD, pid=pb.CONTAINER, ipc=pb.POD))
        cfg = pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name="oom"), image=pb.ImageSpec(image=A.image),
            command=["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"], log_path="oom.log",
            linux=pb.LinuxContainerConfig(security_context=sc, resources=pb.LinuxContainerResources(
                memory_limit_in_bytes=16 * 1024 * 1024)))
        cid = RT.CreateContainer(pb.CreateContainerRequest(pod_sandbox_id=pod_id, config=cfg,
                                                           sandbox_config=pod_cfg), timeout=A.timeout).container_id
        ids["oom"] = cid
        RT.StartContainer(pb.StartContainerRequest(container_id=cid), timeout=A.timeout)
        ok = wait_for(lambda: state_name(cid) == "CONTAINER_EXITED", 20)
        st = status(cid).status
        say(ok and st.exit_code == 137 and st.reason == "OOMKilled",
            "a container over its 16 MiB limit: exit 137, reason OOMKilled",
            f"{pb.ContainerState.Name(st.state)} exit {st.exit_code} reason {st.reason!r}")
    except Exception as e:
        say(False, "a container over its memory limit", why(e))

    # host paths, working dir, args after command
    try:
        mounts = [pb.Mount(container_path="/data", host_path=vol, readonly=True),
                  pb.Mount(container_path="/dev/termination-log", host_path=term)]
        cid = start("vols", ["sh", "-c"], args=["cat /data/data.txt; echo -n bye > /dev/termination-log; "
                                                   "touch /data/x 2>/dev/null || echo data-is-ro; pwd; "
                                                   "cat /proc/kcore 2>/dev/null | head -c 64 | wc -c"],
                    mounts=mounts, working_dir="/tmp")
        ok = wait_for(lambda: state_name(cid) == "CONTAINER_EXITED", 20)
        st = status(cid).status
        out = open(st.log_path).read()
        say(ok and st.exit_code == 0 and "from-the-host" in out and "data-is-ro" in out and " /tmp" in out,
            "host-path mounts (a read-only dir), working_dir, command + args", out[:400])
        say(open(term).read() == "bye", "a writable file mount (/dev/termination-log) reaches the host file",
            repr(open(term).read()))
        say(re.search(r"stdout F 0$", out, re.M) is not None, "/proc/kcore is masked (reads nothing)", out[-200:])
    except Exception as e:
        say(False, "host-path mounts", why(e))


def second_pod():
    """A pod as a hardened workload asks for it: one PID namespace for the pod,
    a non-root user, no capabilities but one, a read-only root, the runtime's
    default seccomp profile, a pod sysctl; then UpdateContainerResources, an
    ExecSync that overruns its timeout, ReopenContainerLog."""
    logdir = os.path.join(A.work, "logs", "pod2")
    os.makedirs(logdir, exist_ok=True)
    nso = pb.NamespaceOption(network=pb.POD, pid=pb.POD, ipc=pb.POD)
    pod_cfg = pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name="hardened-pod", uid="uid-conformance-2", namespace="default"),
        hostname="cripod2", log_directory=logdir,
        linux=pb.LinuxPodSandboxConfig(
            cgroup_parent=A.cgroup_parent, sysctls={"net.ipv4.ping_group_range": "0 2147483647"},
            security_context=pb.LinuxSandboxSecurityContext(namespace_options=nso)))
    try:
        pod_id = RT.RunPodSandbox(pb.RunPodSandboxRequest(config=pod_cfg, runtime_handler="runc"),
                                  timeout=A.timeout * 2).pod_sandbox_id
    except Exception as e:
        say(False, "pod 2: RunPodSandbox (shared PID namespace, sysctl)", why(e))
        return
    info = json.loads(RT.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod_id, verbose=True),
                                          timeout=A.timeout).info["info"])
    pause_pid = int(info["pid"])
    netns_path = next((n.get("path", "") for n in info["runtimeSpec"]["linux"]["namespaces"]
                       if n["type"] == "network"), "")
    say(True, "pod 2: RunPodSandbox (shared PID namespace, sysctl)")
    sc = pb.LinuxContainerSecurityContext(
        namespace_options=nso, run_as_user=pb.Int64Value(value=1000), run_as_group=pb.Int64Value(value=1000),
        readonly_rootfs=True, no_new_privs=True,
        capabilities=pb.Capability(drop_capabilities=["ALL"], add_capabilities=["NET_BIND_SERVICE"]),
        seccomp=pb.SecurityProfile(profile_type=pb.SecurityProfile.RuntimeDefault))
    cfg = pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name="app"), image=pb.ImageSpec(image=A.image),
        command=["sh", "-c", "i=0; while :; do i=$((i+1)); echo tick-$i; sleep 0.2; done"],
        log_path="app.log",
        linux=pb.LinuxContainerConfig(security_context=sc, resources=pb.LinuxContainerResources(
            cpu_shares=256, memory_limit_in_bytes=48 * 1024 * 1024)))
    cid = None
    try:
        cid = RT.CreateContainer(pb.CreateContainerRequest(pod_sandbox_id=pod_id, config=cfg, sandbox_config=pod_cfg),
                                 timeout=A.timeout).container_id
        RT.StartContainer(pb.StartContainerRequest(container_id=cid), timeout=A.timeout)
        ok = wait_for(lambda: state_name(cid) == "CONTAINER_RUNNING", 20)
        say(ok, "pod 2: hardened container RUNNING (uid 1000, caps ALL-NET_BIND_SERVICE, ro root, seccomp default)")
    except Exception as e:
        say(False, "pod 2: hardened container", why(e))
    pid = None
    if cid and state_name(cid) == "CONTAINER_RUNNING":
        pid = verbose_pid(status(cid).info)

        def ex(name, cmd, pred, want_rc=0):
            try:
                r = exec_sync(cid, cmd)
                out = r.stdout.decode(errors="replace")
                say(r.exit_code == want_rc and pred(out), name,
                    f"rc={r.exit_code} out={out[:300]!r} err={r.stderr.decode(errors='replace')[:200]!r}")
            except Exception as e:
                say(False, name, why(e))

        def status_field(out, key):
            return next((l.split(":", 1)[1].split() for l in out.splitlines() if l.startswith(key + ":")), [])
        ex("pod 2: ExecSync runs as uid/gid 1000", ["id"], lambda o: "uid=1000" in o and "gid=1000" in o)
        ex("pod 2: ExecSync has only CAP_NET_BIND_SERVICE (CapEff/CapBnd 0x400)", ["cat", "/proc/self/status"],
           lambda o: status_field(o, "CapBnd") == ["0000000000000400"]
           and status_field(o, "CapEff") == ["0000000000000000"]  # uid 1000: effective empty, as runc
           and status_field(o, "NoNewPrivs") == ["1"])
        ex("pod 2: ExecSync is under a seccomp filter (Seccomp: 2)", ["cat", "/proc/self/status"],
           lambda o: status_field(o, "Seccomp") == ["2"])
        ex("pod 2: the root is read-only for an exec", ["sh", "-c", "touch /rofile 2>&1; echo rc=$?"],
           lambda o: "rc=1" in o and "Read-only" in o)
        ex("pod 2: one PID namespace for the pod: pid 1 is the pause process", ["cat", "/proc/1/cmdline"],
           lambda o: o.startswith("/pause"))
        ex("pod 2: the pod sysctl net.ipv4.ping_group_range is set", ["cat", "/proc/sys/net/ipv4/ping_group_range"],
           lambda o: o.split() == ["0", "2147483647"])
        ex("pod 2: the container's own process is there too (ps)", ["ps"], lambda o: "tick" in o or "sleep" in o)
        try:
            st = read(f"/proc/{pid}/status")
            say(status_field(st, "Uid")[:1] == ["1000"] and status_field(st, "Seccomp") == ["2"]
                and status_field(st, "CapBnd") == ["0000000000000400"],
                "pod 2: the first process itself: uid 1000, seccomp 2, CapBnd 0x400 (host /proc)")
        except Exception as e:
            say(False, "pod 2: first process status", why(e))
        # UpdateContainerResources: the runtime's `update`
        try:
            RT.UpdateContainerResources(pb.UpdateContainerResourcesRequest(
                container_id=cid, linux=pb.LinuxContainerResources(
                    cpu_shares=384, cpu_period=100000, cpu_quota=30000,
                    memory_limit_in_bytes=80 * 1024 * 1024)), timeout=A.timeout)
            cg = cgroup_dirs(pid)
            got = (read(cg["cpu"] + "/cpu.shares"), read(cg["cpu"] + "/cpu.cfs_quota_us"),
                   read(cg["memory"] + "/memory.limit_in_bytes"))
            say(got == ("384", "30000", str(80 * 1024 * 1024)),
                "pod 2: UpdateContainerResources reaches the cgroups (shares 384, quota 30000, 80 MiB)", str(got))
        except Exception as e:
            say(False, "pod 2: UpdateContainerResources", why(e))
        # ExecSync that overruns its timeout: refused in about the timeout, its process gone
        t0 = time.monotonic()
        try:
            r = RT.ExecSync(pb.ExecSyncRequest(container_id=cid, cmd=["sleep", "30"], timeout=1),
                            timeout=A.timeout)
            say(False, "pod 2: ExecSync timeout 1s of sleep 30", f"returned rc={r.exit_code}")
        except Exception as e:
            took = time.monotonic() - t0
            say(took < 10 and "timeout" in why(e).lower(), f"pod 2: ExecSync timeout 1s of sleep 30: refused in {took:.1f}s",
                why(e))
        left = wait_for(lambda: not [p for p in os.listdir("/proc") if p.isdigit() and p != str(pid)
                                     and _cmd(p) == "sleep\0" + "30\0"], 5)
        say(left, "pod 2: the timed-out exec's process is gone")
        # ReopenContainerLog: the log moves aside, new lines go to a new file
        try:
            lp = status(cid).status.log_path
            os.rename(lp, lp + ".1")
            RT.ReopenContainerLog(pb.ReopenContainerLogRequest(container_id=cid), timeout=A.timeout)
            ok = wait_for(lambda: os.path.exists(lp) and "tick-" in open(lp).read(), 5)
            say(ok, "pod 2: ReopenContainerLog: new lines in a new file")
        except Exception as e:
            say(False, "pod 2: ReopenContainerLog", why(e))
        try:
            stats = RT.ContainerStats(pb.ContainerStatsRequest(container_id=cid), timeout=A.timeout).stats
            say(stats.memory.working_set_bytes.value > 0, "pod 2: ContainerStats reports memory use",
                str(stats.memory))
        except Exception as e:
            say(False, "pod 2: ContainerStats", why(e))
    # a kubelet deleting the pod: StopPodSandbox, RemovePodSandbox (removes the container too)
    try:
        RT.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod_id), timeout=A.timeout * 2)
        RT.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id), timeout=A.timeout)
        say(True, "pod 2: StopPodSandbox + RemovePodSandbox (with its container)")
    except Exception as e:
        say(False, "pod 2: StopPodSandbox + RemovePodSandbox", why(e))
    nothing_left(pod_id, pause_pid, netns_path, [pid] if pid else [], "pod 2")


def third_pod():
    """A node agent's pod (kube-proxy, a CNI daemon): the host's network, a
    privileged sandbox and container: every capability, no seccomp, /sys rw,
    and an exec that is in the host's network namespace (the control of the
    first pod's namespace checks)."""
    nso = pb.NamespaceOption(network=pb.NODE, pid=pb.CONTAINER, ipc=pb.POD)
    logdir = os.path.join(A.work, "logs", "pod3")
    os.makedirs(logdir, exist_ok=True)
    pod_cfg = pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name="node-agent", uid="uid-conformance-3", namespace="kube-system"),
        log_directory=logdir,
        linux=pb.LinuxPodSandboxConfig(cgroup_parent=A.cgroup_parent, security_context=pb.LinuxSandboxSecurityContext(
            namespace_options=nso, privileged=True)))
    try:
        pod_id = RT.RunPodSandbox(pb.RunPodSandboxRequest(config=pod_cfg, runtime_handler="runc"),
                                  timeout=A.timeout * 2).pod_sandbox_id
    except Exception as e:
        say(False, "pod 3: RunPodSandbox (host network, privileged)", why(e))
        return
    info = json.loads(RT.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod_id, verbose=True),
                                          timeout=A.timeout).info["info"])
    pause_pid = int(info["pid"])
    say(os.readlink(f"/proc/{pause_pid}/ns/net") == os.readlink("/proc/self/ns/net"),
        "pod 3: RunPodSandbox (host network, privileged): the pause process is in the host's netns")
    pid = None
    try:
        sc = pb.LinuxContainerSecurityContext(privileged=True, namespace_options=nso)
        cfg = pb.ContainerConfig(metadata=pb.ContainerMetadata(name="agent"), image=pb.ImageSpec(image=A.image),
                                 command=["sleep", "100000"], log_path="agent.log",
                                 linux=pb.LinuxContainerConfig(security_context=sc))
        cid = RT.CreateContainer(pb.CreateContainerRequest(pod_sandbox_id=pod_id, config=cfg, sandbox_config=pod_cfg),
                                 timeout=A.timeout).container_id
        RT.StartContainer(pb.StartContainerRequest(container_id=cid), timeout=A.timeout)
        ok = wait_for(lambda: state_name(cid) == "CONTAINER_RUNNING", 20)
        pid = verbose_pid(status(cid).info)
        r = exec_sync(cid, ["sh", "-c", "grep -E '^(CapEff|Seccomp):' /proc/self/status; "
                                        "grep ' /sys ' /proc/mounts | head -1; readlink /proc/self/ns/net"])
        o = r.stdout.decode()
        host_caps = [l.split()[1] for l in open("/proc/self/status") if l.startswith("CapEff:")][0]
        say(ok and f"CapEff:\t{host_caps}" in o and "Seccomp:\t0" in o and " rw," in o,
            "pod 3: a privileged container: the host's capabilities, no seccomp, /sys rw (ExecSync)", o[:300])
        say(os.readlink("/proc/self/ns/net") in o, "pod 3: ExecSync is in the host's network namespace (hostNetwork)",
            o[:300])
    except Exception as e:
        say(False, "pod 3: a privileged container", why(e))
    try:
        RT.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod_id), timeout=A.timeout * 2)
        RT.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id), timeout=A.timeout)
        say(True, "pod 3: StopPodSandbox + RemovePodSandbox (with its container)")
    except Exception as e:
        say(False, "pod 3: StopPodSandbox + RemovePodSandbox", why(e))
    nothing_left(pod_id, pause_pid, "", [pid] if pid else [], "pod 3")


def _cmd(p):
    try:
        with open(f"/proc/{p}/cmdline") as f:
            return f.read()
    except OSError:
        return ""


if __name__ == "__main__":
    main()
    try:
        second_pod()
    except Exception as e:
        say(False, "the second pod broke", why(e))
    try:
        third_pod()
    except Exception as e:
        say(False, "the third pod broke", why(e))
    sys.exit(1 if FAILS else 0)
