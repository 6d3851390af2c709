"""Attacks, as an outsider, on what a Kubernetes pod reaches through
containerd's runc shim (issue 26): runc's verbs with the ids an engine
chooses, the files an engine names (--pid-file, --process, config.json,
--log) in places another user may write, and the namespaces a pod joins
by path. Each has its positive control: the same call doing its work."""
import json
import os
import subprocess
import sys
import threading
import time

import pytest

from helpers import (
    CLI, Bundle, cli, delete_every_listed_container, oci, oci_state as state, spec_bundle,
    wait_for,
)


@pytest.fixture(autouse=True)
def delete_every_container():
    """Whatever a test leaves, passing or not: delete --force, as an engine would."""
    yield
    delete_every_listed_container()


@pytest.fixture
def bundle(tmp_path, template_root):
    """`minicontainer spec`'s config.json, writable, with the test root as its rootfs."""
    made = spec_bundle(tmp_path, template_root)
    made.set(lambda c: (c["root"].update(readonly=False), c["process"].update(terminal=False)))
    made.args("/bin/probe", "sleep", 60)
    return made


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def one_line(result):
    err = result.stderr.decode()
    return err.count("\n") == 1 and err.startswith("minicontainer: ") and "Traceback" not in err


# -- ids: runc finds a container by its full id, never by a prefix -------------

def test_runcs_verbs_reach_no_container_by_a_prefix_of_its_id(bundle):
    """ctr's ids are words an engine's user chooses ("web" beside "web2"), and
    an engine deletes --force a container already gone: a prefix must not
    make kill, exec, ps, pause, state or delete reach another container."""
    assert oci("create", "--bundle", bundle.path, "web2").returncode == 0
    assert oci("start", "web2").returncode == 0
    pid1 = state("web2")["pid"]
    for verb in (["state", "web"], ["kill", "web", "KILL"], ["kill", "--all", "web", "9"],
                 ["exec", "web", "/bin/busybox", "true"], ["ps", "web"], ["pause", "web"],
                 ["update", "--memory", "100000000", "web"], ["start", "web"], ["delete", "web"]):
        result = oci(*verb)
        assert result.returncode != 0 and one_line(result), (verb, result)
        assert b"web2" not in result.stderr, (verb, result.stderr)
    # The engine's delete --force of a container already gone: done, nothing touched.
    assert oci("delete", "--force", "web").returncode == 0
    assert oci("delete", "--force", "we").returncode == 0
    assert alive(pid1) and state("web2")["status"] == "running"
    # The control: by its full id, each reaches it.
    assert oci("exec", "web2", "/bin/busybox", "true").returncode == 0
    assert oci("kill", "web2", "KILL").returncode == 0
    assert wait_for(lambda: not alive(pid1), 10)
    assert oci("delete", "--force", "web2").returncode == 0
    assert oci("state", "web2").returncode != 0


# -- files an engine names, in a directory another user may write --------------

@pytest.fixture
def users_directory(tmp_path):
    """A directory of another user's (nobody's), where root is asked to write,
    and a file of root's that the user would have root overwrite."""
    place = tmp_path / "users"
    place.mkdir()
    os.chown(place, 65534, 65534)
    victim = tmp_path / "victim"
    victim.write_text("root's own\n")
    return place, victim


def plant_link(place, name, target):
    """A symlink the other user made (owned by them, in their directory)."""
    link = place / name
    os.symlink(target, link)
    os.lchown(link, 65534, 65534)
    return link


def test_a_pid_file_written_where_another_user_planted_links_touches_no_other_file(
        bundle, users_directory):
    """create's and exec's --pid-file were written through a temporary file of
    a fixed name, opened through symlinks: a user who could write the
    pid file's directory had root truncate and write any file (fs.protected_
    symlinks is off on some hosts). runc opens its temporary O_EXCL."""
    place, victim = users_directory
    for name in ("c.pid", "e.pid"):
        for planted in (f".{name}.tmp", f".{name}"):  # our old name, and runc's
            plant_link(place, planted, victim)
    assert oci("create", "--bundle", bundle.path, "--pid-file", place / "c.pid", "pf").returncode == 0
    assert oci("start", "pf").returncode == 0
    exec_pid = place / "e.pid"
    execd = oci("exec", "-d", "--pid-file", exec_pid, "pf", "/bin/probe", "sleep", "60")
    assert execd.returncode == 0, execd.stderr
    assert victim.read_text() == "root's own\n"
    # The control: both pid files hold the right pids, and nothing else was made.
    assert int((place / "c.pid").read_text()) == state("pf")["pid"]
    ps = json.loads(oci("ps", "--format", "json", "pf").stdout)
    assert int(exec_pid.read_text()) in ps and len(ps) == 2
    assert sorted(p.name for p in place.iterdir()) == sorted(
        ["c.pid", "e.pid", ".c.pid.tmp", ".c.pid", ".e.pid.tmp", ".e.pid"])
    assert not (place / "c.pid").is_symlink()


@pytest.mark.parametrize("where", ["config.json", "--process", "--resources"])
def test_a_fifo_where_a_json_document_is_read_is_refused_not_waited_on(bundle, tmp_path, where):
    """A FIFO (or a device) at config.json, exec's --process file or update's
    --resources file: one line and 125 at once, never an engine's call hung
    for ever; the same document as a file is read (the control)."""
    assert oci("create", "--bundle", bundle.path, "f1").returncode == 0
    assert oci("start", "f1").returncode == 0
    documents = {"config.json": bundle.path / "config.json",
                 "--process": tmp_path / "process.json", "--resources": tmp_path / "resources.json"}
    document = documents[where]
    if where == "--process":
        document.write_text(json.dumps({"args": ["/bin/busybox", "true"], "cwd": "/",
                                        "user": {"uid": 0, "gid": 0}}))
    elif where == "--resources":
        document.write_text(json.dumps({"pids": {"limit": 100}}))
    call = {"config.json": ["create", "--bundle", bundle.path, "f2"],
            "--process": ["exec", "--process", document, "f1"],
            "--resources": ["update", "--resources", document, "f1"]}[where]
    assert oci(*call).returncode == 0  # the control: a file is read
    if where == "config.json":
        assert oci("delete", "--force", "f2").returncode == 0
    for planted in ("fifo", "/dev/zero"):
        document.unlink()
        if planted == "fifo":
            os.mkfifo(document)
        else:
            os.symlink(planted, document)
        started = time.monotonic()
        result = oci(*call)  # helpers: a 60 s timeout, a hang fails
        assert result.returncode == 125 and one_line(result), (planted, result)
        assert b"not a regular file" in result.stderr, result.stderr
        assert time.monotonic() - started < 15
    assert oci("state", "f2").returncode != 0


def test_a_fifo_at_the_log_path_does_not_hang_the_verb(tmp_path):
    """--log is where the engine reads why a call failed; a FIFO there with
    no reader must not hold the verb (runc's open would wait for a reader);
    a file there gets the line (the control)."""
    log = tmp_path / "log"
    result = cli("--log", log, "--log-format", "json", "state", "nothing-here")
    assert result.returncode != 0 and json.loads(log.read_text())["msg"] == result.stderr.decode(
    ).removeprefix("minicontainer: ").strip()
    log.unlink()
    os.mkfifo(log)
    result = cli("--log", log, "state", "nothing-here", timeout=20)
    assert result.returncode != 0 and one_line(result)


# -- namespaces joined by path: what create checks is what PID 1 joins ----------

@pytest.fixture
def pod_network():
    """A pod's network namespace, held by a sleeping process (the pause's part)."""
    holder = subprocess.Popen(["unshare", "--net", "sleep", "300"])
    try:
        assert wait_for(lambda: os.readlink(f"/proc/{holder.pid}/ns/net")
                        != os.readlink("/proc/self/ns/net"), 5)
        yield holder.pid
    finally:
        holder.kill()
        holder.wait()


def test_a_namespace_path_that_changes_after_create_checks_it_is_never_joined(
        bundle, users_directory, pod_network):
    """A net sysctl is refused in the host's network namespace; checked at
    create on the path, the namespace was joined by the path again later: a
    path that changed between (a link another user swaps, a /proc/PID whose
    pod process ended and whose pid was reused) put the container, and the
    sysctl, in the host's. The sysctl set is the host's own value, so the
    host is not changed if the attack wins; the namespace tells."""
    place, _ = users_directory
    link = place / "ns"
    pod, host = f"/proc/{pod_network}/ns/net", f"/proc/{os.getpid()}/ns/net"  # the host's
    with open("/proc/sys/net/ipv4/ping_group_range") as f:
        value = "\t".join(f.read().split())

    def configure(config):
        config["linux"]["namespaces"] = [n for n in config["linux"]["namespaces"]
                                         if n["type"] != "network"] + [
            {"type": "network", "path": str(link)}]
        config["linux"]["sysctl"] = {"net.ipv4.ping_group_range": value}
    bundle.set(configure)
    plant_link(place, "ns", pod)
    # The control: the pod's namespace is joined, the sysctl set there.
    assert oci("create", "--bundle", bundle.path, "ns0").returncode == 0
    assert os.readlink(f"/proc/{state('ns0')['pid']}/ns/net") == os.readlink(pod)
    assert oci("delete", "--force", "ns0").returncode == 0
    # The attack: the link flips between the pod's and the host's, all along.
    stop = threading.Event()

    def flip():
        n = 0
        while not stop.is_set():
            n += 1
            tmp = place / f".ns{n % 2}"
            os.symlink(host if n % 2 else pod, tmp)
            os.rename(tmp, link)
    flipper = threading.Thread(target=flip)
    flipper.start()
    made = refused = 0
    try:
        for attempt in range(40):
            result = oci("create", "--bundle", bundle.path, f"ns{attempt + 1}")
            if result.returncode != 0:
                assert one_line(result), result
                refused += 1
                continue
            made += 1
            pid1 = state(f"ns{attempt + 1}")["pid"]
            assert os.readlink(f"/proc/{pid1}/ns/net") == os.readlink(pod), attempt
            assert oci("delete", "--force", f"ns{attempt + 1}").returncode == 0
    finally:
        stop.set()
        flipper.join()
        link.unlink()
    assert made and refused, (made, refused)  # both ways were seen


@pytest.fixture
def pod_namespaces():
    """A pod's network, IPC and UTS namespaces, held by a sleeping process."""
    holder = subprocess.Popen(["unshare", "--net", "--ipc", "--uts", "sleep", "300"])
    try:
        assert wait_for(lambda: os.readlink(f"/proc/{holder.pid}/ns/uts")
                        != os.readlink("/proc/self/ns/uts"), 5)
        yield holder.pid
    finally:
        holder.kill()
        holder.wait()


# Each kind's sysctl, set to the host's own value: were it set in the host's
# namespace, nothing of the host would change.
HOST_SYSCTLS = {"net": ("network", "net.ipv4.ping_group_range"),
                "ipc": ("ipc", "kernel.shmmni"), "uts": ("uts", "kernel.domainname")}


@pytest.mark.parametrize("kind", sorted(HOST_SYSCTLS))
@pytest.mark.parametrize("form", ["a host process's /proc path", "a link in the bundle to it",
                                  "a bind mount of it"])
def test_a_sysctl_is_refused_in_a_host_namespace_however_the_path_names_it(
        bundle, pod_namespaces, tmp_path, kind, form):
    """A pod author's sysctls go to the namespaces the pod joins by path; named
    by any path, the host's own (its network's: a node's routing, ports,
    ping; its IPC's, its domain name) are refused at create, as runc refuses
    a net.* one in the host's network namespace; the pod's are set (the
    control)."""
    oci_type, key = HOST_SYSCTLS[kind]
    with open("/proc/sys/" + key.replace(".", "/")) as f:
        value = "\t".join(f.read().split()) or "(none)"
    host = f"/proc/{os.getpid()}/ns/{kind}"
    made = None
    if form == "a link in the bundle to it":
        made = bundle.path / f"{kind}-ns"
        os.symlink(host, made)
    elif form == "a bind mount of it":
        made = tmp_path / f"{kind}-ns"
        made.touch()
        subprocess.run(["mount", "--bind", host, made], check=True)

    def configure(path):
        def change(config):
            config["linux"]["namespaces"] = [n for n in config["linux"]["namespaces"]
                                             if n["type"] != oci_type] + [
                {"type": oci_type, "path": str(path)}]
            config["linux"]["sysctl"] = {key: value}
            config.pop("hostname", None)
        return change
    try:
        bundle.set(configure(made or host))
        refused = oci("create", "--bundle", bundle.path, "hostns")
        assert refused.returncode == 125 and one_line(refused), refused
        assert f"not allowed in the host's {kind} namespace".encode() in refused.stderr
        assert oci("state", "hostns").returncode != 0
    finally:
        if form == "a bind mount of it":
            subprocess.run(["umount", made], check=True)
    pod = f"/proc/{pod_namespaces}/ns/{kind}"
    bundle.set(configure(pod))
    assert oci("create", "--bundle", bundle.path, "podns").returncode == 0
    pid1 = state("podns")["pid"]
    assert os.readlink(f"/proc/{pid1}/ns/{kind}") == os.readlink(pod)
    assert oci("delete", "--force", "podns").returncode == 0


def test_runcs_kill_id_signal_is_never_read_as_two_containers(bundle, tmp_path):
    """containerd's shim kills with `kill ID 9` (or `kill --all ID 9`): where
    another container's id was "9" (ctr's ids are its user's words), both
    were taken for containers: "9" got SIGTERM and ID never its SIGKILL."""
    other = Bundle(tmp_path / "other")
    subprocess.run(["cp", "-a", str(bundle.path), str(other.path)], check=True)
    other.args("/bin/busybox", "sh", "-c", "trap 'echo got > /got; exit 3' TERM;"
               " while :; do sleep 1; done")
    for id, made in (("web", bundle), ("9", other)):
        assert oci("create", "--bundle", made.path, id).returncode == 0
        assert oci("start", id).returncode == 0
    web, nine = state("web")["pid"], state("9")["pid"]
    assert oci("kill", "web", "9").returncode == 0
    assert wait_for(lambda: not alive(web), 10)  # SIGKILL reached web
    assert oci("kill", "--all", "web", "9").returncode == 0  # the exit handler's, as runc
    time.sleep(1.5)  # "9" would have handled a SIGTERM by now
    assert alive(nine) and not (other.path / "rootfs" / "got").exists()
    # The control: "9" by its own id gets the signal and handles it.
    assert oci("kill", "9", "TERM").returncode == 0
    assert wait_for(lambda: not alive(nine), 10)
    assert (other.path / "rootfs" / "got").read_text() == "got\n"


# -- the container against its own cgroup ------------------------------------------

ESCAPE = r"""
/bin/busybox sleep 300 &
echo $! > /sleeper
for f in /sys/fs/cgroup/*/cgroup.procs /sys/fs/cgroup/cgroup.procs /hostcg/cgroup.procs; do
    echo $! > $f
done 2>/dev/null
mkdir /sys/fs/cgroup/pids/escape 2>/dev/null && echo $! > /sys/fs/cgroup/pids/escape/cgroup.procs
mount -o remount,rw /sys/fs/cgroup/pids 2>/dev/null && echo $! > /sys/fs/cgroup/pids/cgroup.procs
touch /tried
wait
"""


def pids_group(pid):
    with open(f"/proc/{pid}/cgroup") as f:
        return next(line.split(":", 2)[2].strip() for line in f if ":pids:" in line)


@pytest.mark.parametrize("host_cgroups", [False, True], ids=["attack", "control"])
def test_a_container_cannot_leave_its_cgroup_so_kill_all_reaches_it(bundle, host_cgroups):
    """Root in a container without a cgroup namespace (containerd's on a v1 or
    hybrid host) writes a child's pid into every cgroup.procs it sees, makes
    a group, remounts: were it out, kill --all and delete would miss it and
    it would outlive its pod. Control: the host's pids hierarchy bound in
    read-write (a hostPath), where the same script does get out."""
    def configure(config):
        config["linux"]["namespaces"] = [n for n in config["linux"]["namespaces"]
                                         if n["type"] != "cgroup"]
        if host_cgroups:
            config["mounts"].append({"destination": "/hostcg", "type": "bind",
                                     "source": "/sys/fs/cgroup/pids", "options": ["rbind", "rw"]})
    bundle.set(configure)
    bundle.args("/bin/busybox", "sh", "-c", ESCAPE)
    assert oci("create", "--bundle", bundle.path, "cg").returncode == 0
    assert oci("start", "cg").returncode == 0
    tried = bundle.path / "rootfs" / "tried"
    assert wait_for(tried.exists, 20)
    pid1 = state("cg")["pid"]
    ps = json.loads(oci("ps", "--format", "json", "cg").stdout)
    sleeper = next(p for p in ps if p != pid1) if len(ps) == 2 else None
    own = pids_group(pid1)
    try:
        assert sleeper is not None, ps
        if host_cgroups:  # the probe can tell: out of the container's group
            assert pids_group(sleeper) == "/", pids_group(sleeper)
            return
        assert pids_group(sleeper) == own, (ps, own)
        assert oci("kill", "--all", "cg", "9").returncode == 0
        assert wait_for(lambda: not alive(sleeper) and not alive(pid1), 10)
    finally:
        if sleeper is not None and alive(sleeper):
            os.kill(sleeper, 9)
        oci("delete", "--force", "cg")


# -- a container's pid, once it has ended, given to another process -----------------

# Run as PID 1 of a PID namespace of its own (unshare --pid --fork --mount-proc):
# there, "every process" is the driver's own, so a runtime that took the
# reused pid for its container (the host's PID namespace for its own) could
# kill nothing of the machine's. The shim (a subreaper, as containerd's) runs
# create and reaps PID 1 when told; its pid then goes to another process
# (ns_last_pid, then a fork). Its state directory is its own: the pids there
# are this namespace's, and no clean-up outside it may read them.
REUSE_SHIM = r"""
import ctypes, os, subprocess, sys
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
print(subprocess.call(sys.argv[1:], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                      stderr=subprocess.DEVNULL), flush=True)
sys.stdin.readline()
while True:
    try:
        os.wait()
    except ChildProcessError:
        break
"""

REUSE_DRIVER = r"""
import json, os, subprocess, sys, tempfile, time
cli, bundle, shim_code, states = json.loads(sys.argv[1])
cli = [*cli, "--root", states]  # a state directory of its own: no verb outside this
                                # namespace ever reads the pids it records

def run(*args):
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        code = subprocess.call([*cli, *args], stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                               timeout=60)
        out.seek(0); err.seek(0)
        return [code, out.read().decode(), err.read().decode()]

def taken(pid):
    for _ in range(100):
        with open("/proc/sys/kernel/ns_last_pid", "w") as f:
            f.write(str(pid - 1))
        process = subprocess.Popen(["sleep", "300"])
        if process.pid == pid:
            return process
        process.kill(); process.wait()
    return None

sentinel = subprocess.Popen(["sleep", "300"])
shim = subprocess.Popen([sys.executable, "-c", shim_code, *cli, "create", "--bundle", bundle,
                         "reused"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
report = {"created": shim.stdout.readline().decode().strip(), "start": run("start", "reused")}
pid1 = json.loads(run("state", "reused")[1])["pid"]
report["pid1"] = pid1
report["ns_before"] = os.readlink(f"/proc/{pid1}/ns/pid")
report["exec_before"] = run("exec", "reused", "/bin/busybox", "readlink", "/proc/self/ns/pid")
report["ps_before"] = run("ps", "--format", "json", "reused")
report["kill_before"] = run("kill", "reused", "KILL")
shim.stdin.close()
shim.wait(timeout=30)
for _ in range(500):
    if not os.path.exists(f"/proc/{pid1}"):
        break
    time.sleep(0.02)
impostor = taken(pid1)
report["impostor"] = impostor is not None
if impostor is not None:
    report["exec"] = run("exec", "reused", "/bin/busybox", "readlink", "/proc/self/ns/pid")
    report["kill"] = run("kill", "reused", "KILL")
    report["kill_all"] = run("kill", "--all", "reused", "KILL")
    report["ps"] = run("ps", "--format", "json", "reused")
    report["state"] = json.loads(run("state", "reused")[1])["status"]
    report["delete"] = run("delete", "--force", "reused")
    time.sleep(0.5)
    report["impostor_alive"] = impostor.poll() is None
    impostor.kill()
else:
    report["delete"] = run("delete", "--force", "reused")
report["sentinel_alive"] = sentinel.poll() is None
sentinel.kill()
print(json.dumps(report))
"""


def test_a_reused_pid_of_an_ended_container_is_never_entered_or_signalled(bundle, tmp_path):
    """The shim reaps PID 1 and its pid goes to another process: exec must
    not enter that process's namespaces, kill, kill --all and delete --force
    must not signal it (nor, through its PID namespace, everything), ps
    must not list it. Control: while PID 1 runs, the same exec, ps and kill
    reach it."""
    argv = ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", REUSE_DRIVER,
            json.dumps([CLI, str(bundle.path), REUSE_SHIM, str(tmp_path / "states")])]
    done = subprocess.run(argv, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["created"] == "0" and report["start"][0] == 0, report
    assert report["exec_before"][:2] == [0, report["ns_before"] + "\n"], report  # the control
    assert json.loads(report["ps_before"][1]) == [report["pid1"]], report
    assert report["kill_before"][0] == 0, report
    assert report["impostor"], "the pid was never taken again"
    assert report["exec"][0] == 125 and "not running" in report["exec"][2], report
    assert report["kill"][0] != 0 and report["kill_all"][0] == 0, report
    assert json.loads(report["ps"][1]) == [] and report["state"] == "stopped", report
    assert report["delete"][0] == 0, report
    assert report["impostor_alive"] and report["sentinel_alive"], report
