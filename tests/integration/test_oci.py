"""The OCI runtime, runc's command line, as engines drive it: create, start,
state, kill, delete, exec, console sockets, hooks, and the moves the state
machine refuses. Bundles are made here from the test root; no Go needed."""
import copy
import json
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from helpers import (
    CLI, Bundle, cli, container_cgroups, delete_every_listed_container, oci, oci_state as state,
    spec_bundle, wait_for,
)


@pytest.fixture(autouse=True)
def delete_every_container():
    """Whatever a test leaves, passing or not: delete --force, as an engine would."""
    yield
    delete_every_listed_container()


@pytest.fixture
def bundle(tmp_path, template_root):
    """A bundle: `minicontainer spec`'s config.json (the program changed to the
    probe, no terminal), and the test root as its rootfs."""
    made = spec_bundle(tmp_path, template_root)
    made.set(lambda c: c["root"].update(readonly=False))  # the tests' programs write markers
    return made


def test_spec_writes_a_default_and_keeps_an_existing_one(tmp_path):
    assert oci("spec", "--bundle", tmp_path).returncode == 0
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["ociVersion"] == "1.0.2" and config["root"] == {"path": "rootfs", "readonly": True}
    assert config["linux"]["seccomp"]["defaultAction"] == "SCMP_ACT_ALLOW"
    assert "CAP_NET_RAW" not in config["process"]["capabilities"]["bounding"]
    again = oci("spec", "--bundle", tmp_path)
    assert again.returncode == 125 and b"it exists; remove it first" in again.stderr


def test_create_start_state_delete(tmp_path, bundle):
    marker = bundle.path / "rootfs" / "ran"
    bundle.args("/bin/busybox", "sh", "-c", "echo started > /ran; sleep 30")
    pid_file = tmp_path / "pid"
    assert oci("create", "--bundle", bundle.path, "--pid-file", pid_file, "c1").returncode == 0
    st = state("c1")
    assert st["status"] == "created" and st["id"] == "c1" and st["bundle"] == str(bundle.path)
    assert int(pid_file.read_text()) == st["pid"] > 0
    assert os.readlink(f"/proc/{st['pid']}/ns/pid") != os.readlink("/proc/self/ns/pid")
    time.sleep(0.3)
    assert not marker.exists()  # the program has not run: it waits for start
    assert oci("start", "c1").returncode == 0
    assert wait_for(marker.exists, 5)
    assert state("c1")["status"] == "running"
    assert oci("kill", "c1", "KILL").returncode == 0
    assert wait_for(lambda: state("c1")["status"] == "stopped", 5)
    assert oci("delete", "c1").returncode == 0
    assert oci("state", "c1").returncode == 125
    assert not container_cgroups()


def test_the_moves_the_state_machine_refuses(bundle):
    bundle.args("/bin/probe", "sleep", 30)
    assert oci("create", "--bundle", bundle.path, "c2").returncode == 0
    again = oci("create", "--bundle", bundle.path, "c2")
    assert again.returncode == 125 and b"already exists" in again.stderr
    created = oci("delete", "c2")  # not stopped: the spec says it must be refused
    assert created.returncode == 125 and b"it is created, not stopped" in created.stderr
    assert oci("start", "c2").returncode == 0
    twice = oci("start", "c2")
    assert twice.returncode == 125 and b"it is not created (it is running)" in twice.stderr
    running = oci("delete", "c2")
    assert running.returncode == 125 and b"it is running, not stopped (use --force)" in running.stderr
    assert oci("delete", "--force", "c2").returncode == 0
    stopped = oci("kill", "c2", "KILL")
    assert stopped.returncode == 125 and b"kill c2: container does not exist" in stopped.stderr
    assert oci("delete", "--force", "c2").returncode == 0  # gone already: engines do this
    assert oci("delete", "c2").returncode == 125
    assert oci("kill").returncode != 0 and oci("start").returncode != 0  # no id


def test_a_missing_container_is_said_in_runcs_words(bundle, tmp_path):
    """containerd's shim parses the runtime's words: a kill of a container that
    is gone must say "does not exist" (its checkKillError: not found), and a
    delete of one is done when told "does not exist" (pkg/process/init.go).
    Anything else is an unknown error: the task is never deleted and the whole
    pod is left behind (conformance/cri.sh: state deleted behind containerd's
    back). runc says "container does not exist" for every verb that takes an id."""
    process = tmp_path / "process.json"
    process.write_text(json.dumps({"args": ["/bin/true"], "cwd": "/", "user": {"uid": 0, "gid": 0}}))
    verbs = [("kill", "gone", "9"), ("kill", "--all", "gone", "9"), ("delete", "gone"),
             ("state", "gone"), ("start", "gone"), ("pause", "gone"), ("resume", "gone"),
             ("ps", "--format", "json", "gone"), ("update", "--memory", "9999999", "gone"),
             ("exec", "--process", process, "gone")]
    for args in verbs:
        said = oci(*args)
        assert said.returncode != 0 and b"container does not exist" in said.stderr, (args, said.stderr)
        assert said.stderr.count(b"\n") == 1 and b"Traceback" not in said.stderr
    # the control: a container that exists is found by the same verbs
    bundle.args("/bin/probe", "sleep", 30)
    assert oci("create", "--bundle", bundle.path, "gone").returncode == 0
    assert oci("state", "gone").returncode == 0 and oci("kill", "gone", "9").returncode == 0
    assert oci("delete", "--force", "gone").returncode == 0
    assert b"container does not exist" in oci("kill", "--all", "gone", "9").stderr
    assert oci("delete", "--force", "gone").returncode == 0  # gone already: engines do this


def test_kill_takes_runcs_form_and_all(bundle):
    bundle.args("/bin/busybox", "sh", "-c", "trap 'exit 9' TERM; /bin/probe sleep 30 & wait")
    assert oci("create", "--bundle", bundle.path, "k1").returncode == 0
    assert oci("start", "k1").returncode == 0
    pid1 = state("k1")["pid"]
    assert wait_for(lambda: len(oci("ps", "--format", "json", "k1").stdout and
                                json.loads(oci("ps", "--format", "json", "k1").stdout)) == 2, 5)
    pids = json.loads(oci("ps", "--format", "json", "k1").stdout)
    assert pids[0] == pid1
    assert oci("kill", "--all", "k1", "9").returncode == 0  # podman's numbers, containerd's --all
    assert wait_for(lambda: state("k1")["status"] == "stopped", 5)
    assert oci("delete", "k1").returncode == 0


def test_a_console_socket_gets_the_terminals_master(tmp_path, bundle):
    bundle.args("/bin/busybox", "sh", "-c", "tty; echo typed-$(head -c 3)")
    bundle.set(lambda c: c["process"].update(terminal=True))
    path = str(tmp_path / "console.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    got = {}

    def accept():
        conn, _ = server.accept()
        data, fds, _, _ = socket.recv_fds(conn, 1024, 1)
        got["name"], got["fd"] = data, fds[0]
        conn.close()
    thread = threading.Thread(target=accept)
    thread.start()
    try:
        assert oci("create", "--bundle", bundle.path, "--console-socket", path, "t1").returncode == 0
        thread.join(5)
        assert got["name"] == b"/dev/pts/0"
        assert oci("start", "t1").returncode == 0
        os.write(got["fd"], b"abc\n")  # a line: the terminal is in canonical mode
        out = b""
        deadline = time.monotonic() + 5
        while b"typed-abc" not in out and time.monotonic() < deadline:
            try:
                out += os.read(got["fd"], 1000)
            except OSError:
                break
        assert b"/dev/pts/0" in out and b"typed-abc" in out
    finally:
        server.close()
        if "fd" in got:
            os.close(got["fd"])
    assert wait_for(lambda: state("t1")["status"] == "stopped", 5)
    assert oci("delete", "t1").returncode == 0
    no_socket = oci("create", "--bundle", bundle.path, "t2")  # a terminal needs a socket
    assert no_socket.returncode == 125 and b"needs --console-socket" in no_socket.stderr


HOOK = ("/bin/sh", "-c")


def hook(log, name, extra=""):
    """A hook that appends its name, its state's status and pid, and its hostname to `log`."""
    script = (f"read -r state; echo \"{name} $state $(hostname) {extra}\" >> {log}")
    return {"path": "/bin/sh", "args": ["sh", "-c", script]}


def test_hooks_run_when_the_spec_says_with_the_state_on_stdin(tmp_path, bundle):
    log = tmp_path / "hooks.log"
    bundle.args("/bin/busybox", "sh", "-c", "echo program >> /program.log")
    bundle.set(lambda c: c.update(hooks={
        "createRuntime": [hook(log, "createRuntime")], "prestart": [hook(log, "prestart")],
        "createContainer": [hook(log, "createContainer")],
        "startContainer": [{"path": "/bin/busybox",
                            "args": ["busybox", "sh", "-c", "echo startContainer >> /program.log"]}],
        "poststart": [hook(log, "poststart")], "poststop": [hook(log, "poststop")]},
        hostname="inside"))
    assert oci("create", "--bundle", bundle.path, "h1").returncode == 0
    created = log.read_text().splitlines()
    assert [line.split()[0] for line in created] == ["createRuntime", "createContainer"]
    pid = state("h1")["pid"]
    for line in created:
        st = json.loads(line.split(" ", 1)[1].rsplit(" ", 2)[0])
        assert st["id"] == "h1" and st["pid"] == pid and st["bundle"] == str(bundle.path)
    assert created[0].split()[-1] != "inside" and created[1].split()[-1] == "inside"  # namespaces
    assert oci("start", "h1").returncode == 0
    assert wait_for(lambda: state("h1")["status"] == "stopped", 5)
    program = (bundle.path / "rootfs" / "program.log").read_text()
    assert program == "startContainer\nprogram\n"  # startContainer: inside, before the program
    assert oci("delete", "h1").returncode == 0
    lines = log.read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["createRuntime", "createContainer", "prestart",
                                                   "poststart", "poststop"]
    statuses = {line.split()[0]: json.loads(line.split(" ", 1)[1].rsplit(" ", 2)[0])["status"]
                for line in lines}
    assert statuses["prestart"] == "created" and statuses["poststart"] == "running"
    assert statuses["poststop"] == "stopped"


def test_a_failing_hook_fails_its_step_but_poststart_only_warns(tmp_path, bundle):
    bundle.args("/bin/probe", "exit", 0)
    bundle.set(lambda c: c.update(hooks={"createRuntime": [
        {"path": "/bin/sh", "args": ["sh", "-c", "exit 3"]}]}))
    failed = oci("create", "--bundle", bundle.path, "f1")
    assert failed.returncode == 125 and b"createRuntime hook /bin/sh: exited with 3" in failed.stderr
    assert oci("state", "f1").returncode == 125 and not container_cgroups()
    bundle.set(lambda c: c.update(hooks={"createRuntime": [
        {"path": "/bin/sh", "args": ["sh", "-c", "sleep 5"], "timeout": 1}]}))
    slow = oci("create", "--bundle", bundle.path, "f2")
    assert slow.returncode == 125 and b"ran longer than its timeout (1 s)" in slow.stderr
    bundle.set(lambda c: c.update(hooks={"poststart": [
        {"path": "/bin/sh", "args": ["sh", "-c", "exit 4"]}]}))
    assert oci("create", "--bundle", bundle.path, "f3").returncode == 0
    started = oci("start", "f3")
    assert started.returncode == 0 and b"warning: poststart hook /bin/sh: exited with 4" in started.stderr
    assert wait_for(lambda: state("f3")["status"] == "stopped", 5)
    assert oci("delete", "f3").returncode == 0


def test_exec_with_a_process_file_detached_with_a_pid_file(tmp_path, bundle):
    bundle.args("/bin/probe", "sleep", 30)
    assert oci("create", "--bundle", bundle.path, "e1").returncode == 0
    assert oci("start", "e1").returncode == 0
    process = {"args": ["/bin/busybox", "sh", "-c", "busybox id; pwd; echo $GREETING; busybox sleep 30"],
               "env": ["GREETING=hello", "PATH=/bin"], "cwd": "/tmp",
               "user": {"uid": 1000, "gid": 1000}, "terminal": False}
    (tmp_path / "process.json").write_text(json.dumps(process))
    out = tmp_path / "out"
    with open(out, "wb") as f:  # a file: the detached process keeps it, as an engine's pipe
        result = subprocess.run([*CLI, "exec", "--process", tmp_path / "process.json", "--detach",
                                 "--pid-file", tmp_path / "exec.pid", "e1"], stdout=f, stderr=f,
                                timeout=30)
    assert result.returncode == 0, out.read_bytes()
    pid = int((tmp_path / "exec.pid").read_text())
    assert os.readlink(f"/proc/{pid}/ns/mnt") == os.readlink(f"/proc/{state('e1')['pid']}/ns/mnt")
    assert wait_for(lambda: b"hello" in out.read_bytes(), 5)  # its stdout is the caller's, kept
    assert out.read_bytes() == b"uid=1000 gid=1000\n/tmp\nhello\n"
    assert oci("exec", "e1", "/bin/probe", "exit", 6).returncode == 6  # foreground, runc's form
    assert oci("delete", "--force", "e1").returncode == 0


@pytest.mark.parametrize("change, message", [
    (lambda c: c["process"]["capabilities"].update(bounding=["CAP_TEST"]),
     b"process.capabilities.bounding: unknown capability CAP_TEST"),
    (lambda c: c["process"].update(apparmorProfile="x"), b"AppArmor is not enabled"),
    (lambda c: c["process"].update(rlimits=[{"type": "RLIMIT_NOPE", "soft": 1, "hard": 1}]),
     b"process.rlimits RLIMIT_NOPE: unknown resource"),
    (lambda c: c["linux"].update(namespaces=[{"type": "pid"}]), b"needs a mount namespace"),
    (lambda c: c["linux"]["namespaces"].append({"type": "time"}), b"not a namespace this runtime knows"),
    (lambda c: c["linux"].update(rootfsPropagation="sideways"), b"rootfsPropagation sideways"),
    (lambda c: c["linux"].update(sysctl={"kernel.panic": "1"}),
     b"linux.sysctl kernel.panic: not in a namespace of the container's own"),
    (lambda c: c["process"].update(args=[]), b"process.args: missing"),
    (lambda c: c["linux"].update(resources={"network": {"priorities": [{"name": "eth0", "priority": 1}]}}),
     b"linux.resources.network.priorities"),
    (lambda c: c.update(ociVersion="2.0.0"), b"this runtime takes 1.x"),
])
def test_what_cannot_be_honoured_fails_create_naming_the_field(bundle, change, message):
    bundle.args("/bin/probe", "exit", 0)
    bundle.set(change)
    result = oci("create", "--bundle", bundle.path, "bad")
    assert result.returncode == 125 and message in result.stderr, result.stderr
    assert result.stderr.count(b"\n") == 1
    assert oci("state", "bad").returncode == 125 and not container_cgroups()


def test_sysctls_of_the_containers_own_namespaces_are_set(bundle):
    bundle.args("/bin/busybox", "cat", "/proc/sys/net/ipv4/ip_forward", "/proc/sys/kernel/shmmni")
    bundle.set(lambda c: c["linux"].update(sysctl={"net.ipv4.ip_forward": "1", "kernel.shmmni": "321"}))
    assert oci("create", "--bundle", bundle.path, "s1").returncode == 0
    out = subprocess.run([*CLI, "start", "s1"], capture_output=True)
    assert out.returncode == 0
    assert wait_for(lambda: state("s1")["status"] == "stopped", 5)
    with open("/proc/sys/net/ipv4/ip_forward") as f:
        assert f.read() == "0\n"  # the host's is untouched
    assert oci("delete", "s1").returncode == 0


def test_errors_go_to_the_log_as_json_for_engines(tmp_path, bundle):
    bundle.args("/no/such/binary")
    log = tmp_path / "log.json"
    result = oci("--log", log, "--log-format=json", "create", "--bundle", bundle.path, "l1")
    assert result.returncode == 127
    lines = log.read_text().splitlines()
    assert len(lines) == 1  # podman reads the whole file as one object
    entry = json.loads(lines[0])
    assert entry["level"] == "error" and "no such file or directory" in entry["msg"]
    assert entry["time"].endswith("Z") and "T" in entry["time"]  # RFC 3339, as containerd's shim wants
    refused = oci("--systemd-cgroup", "list")
    assert refused.returncode == 125 and b"not supported" in refused.stderr
    assert b"spec: 1.0.2" in oci("--version").stdout
    features = json.loads(oci("features").stdout)
    assert features["ociVersionMax"] == "1.0.2" and "seccomp" in features["linux"]


def test_pause_resume_and_list(bundle):
    bundle.args("/bin/busybox", "sh", "-c", "while true; do echo x >> /ticks; sleep 0.05; done")
    assert oci("create", "--bundle", bundle.path, "p1").returncode == 0
    assert oci("start", "p1").returncode == 0
    ticks = bundle.path / "rootfs" / "ticks"
    assert wait_for(ticks.exists, 5)
    assert oci("pause", "p1").returncode == 0
    assert state("p1")["status"] == "paused"
    size = ticks.stat().st_size
    time.sleep(0.5)
    assert ticks.stat().st_size == size  # frozen
    assert oci("resume", "p1").returncode == 0
    assert wait_for(lambda: ticks.stat().st_size > size, 5)
    listed = json.loads(oci("list", "--format", "json").stdout)
    assert [(s["id"], s["status"]) for s in listed] == [("p1", "running")]
    assert b"p1" in oci("ps", "-a").stdout  # docker's verbs see it too
    assert oci("delete", "--force", "p1").returncode == 0


def test_the_escapes_stay_closed_on_this_path(tmp_path, bundle):
    """A bundle's rootfs is as hostile as any root: its command through a host
    descriptor, a mount target and a working directory through /proc magic."""
    host = tmp_path / "host"
    host.mkdir()
    rootfs = bundle.path / "rootfs"
    (rootfs / "bin" / "app").symlink_to(f"/proc/self/fd/3{host}")
    (rootfs / "wt").symlink_to(f"/proc/self/fd/3{host}")
    bundle.args("/bin/app")
    fd = os.open("/", os.O_PATH)
    leak = {"pass_fds": (3,), "preexec_fn": lambda: os.dup2(fd, 3)}
    try:
        command = oci("create", "--bundle", bundle.path, "x1", **leak)
        bundle.args("/bin/probe", "pid")
        bundle.set(lambda c: c["mounts"].append({"destination": "/wt/sub", "type": "tmpfs",
                                                  "source": "tmpfs", "options": []}))
        mount = oci("create", "--bundle", bundle.path, "x2", **leak)
        bundle.set(lambda c: (c["mounts"].pop(), c["process"].update(cwd="/wt")))
        cwd = oci("create", "--bundle", bundle.path, "x3", **leak)
    finally:
        os.close(fd)
    assert command.returncode in (126, 127)
    assert mount.returncode == 125 and b"magic link" in mount.stderr
    assert cwd.returncode == 125 and b"magic link" in cwd.stderr
    assert list(host.iterdir()) == []
    assert json.loads(oci("list", "--format", "json").stdout) == []



def test_an_error_after_start_is_said_on_the_containers_stderr(tmp_path, bundle):
    """Once `create` has gone, no one reads the report socket: PID 1's last word
    goes to its stderr, which is the engine's."""
    # A startContainer hook runs in the container once started; an rlimit the
    # host cannot grant, which used to fail here, now fails create itself.
    bundle.args("/bin/probe", "exit", "0")
    bundle.set(lambda c: c.update(hooks={"startContainer": [{"path": "/bin/busybox",
                                                             "args": ["busybox", "false"]}]}))
    err = tmp_path / "err"
    with open(err, "wb") as f:
        created = subprocess.run([*CLI, "create", "--bundle", bundle.path, "r1"],
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=f)
    assert created.returncode == 0
    assert oci("start", "r1").returncode == 0
    assert wait_for(lambda: b"minicontainer: " in err.read_bytes(), 5)
    assert b"Traceback" not in err.read_bytes()


def test_cgroups_path_stays_in_its_hierarchy_and_takes_no_busy_group(bundle):
    """linux.cgroupsPath is cleaned as runc cleans it: ".." stops at each
    hierarchy's root. A group that already holds processes is refused (delete
    --force and kill --all would kill them), and so is a hierarchy's root."""
    bundle.args("/bin/probe", "sleep", 30)
    name = f"minicontainer-climb-{os.getpid()}"
    climb = f"/../../../../{name}"
    # Joined as a plain path, it would be the host's /NAME.
    assert os.path.realpath(os.path.join("/sys/fs/cgroup/pids", climb.lstrip("/"))) == f"/{name}"
    bundle.set(lambda c: c["linux"].update(cgroupsPath=climb))
    assert oci("create", "--bundle", bundle.path, "g1").returncode == 0
    assert not os.path.exists(f"/{name}")
    assert str(state("g1")["pid"]) in open(f"/sys/fs/cgroup/pids/{name}/cgroup.procs").read().split()
    assert oci("delete", "--force", "g1").returncode == 0

    root = oci_refused(bundle, "/")
    assert b"the hierarchy's root" in root.stderr
    busy = f"/sys/fs/cgroup/pids/minicontainer-busy-{os.getpid()}"
    os.mkdir(busy)
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        with open(f"{busy}/cgroup.procs", "w") as f:
            f.write(str(sleeper.pid))
        taken = oci_refused(bundle, os.path.basename(busy).join("//"))
        assert b"already holds processes" in taken.stderr
        assert sleeper.poll() is None  # untouched
        with open("/sys/fs/cgroup/pids/cgroup.procs", "w") as f:
            f.write(str(sleeper.pid))  # out again: now the same group is free to take
        bundle.set(lambda c: c["linux"].update(cgroupsPath=os.path.basename(busy).join("//")))
        assert oci("create", "--bundle", bundle.path, "g2").returncode == 0
        assert oci("delete", "--force", "g2").returncode == 0
        assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()
        if os.path.exists(busy):
            os.rmdir(busy)
    assert not container_cgroups()


def oci_refused(bundle, cgroups_path):
    bundle.set(lambda c: c["linux"].update(cgroupsPath=cgroups_path))
    result = oci("create", "--bundle", bundle.path, "refused")
    assert result.returncode == 125 and result.stderr.count(b"\n") == 1, result.stderr
    assert oci("state", "refused").returncode == 125
    return result


def host_ids(pid):
    """A process's real uid and gid as the host sees them."""
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    return int(fields["Uid"].split()[0]), int(fields["Gid"].split()[0])


def test_a_user_namespace_maps_root_and_exec_joins_it(bundle):
    """With linux.uidMappings, the container's root is host uid 100000, and so
    is every process exec'd into it: joined to the user namespace first, never
    the host's root in the container's other namespaces."""
    import shutil
    import tempfile
    place = Path(tempfile.mkdtemp(prefix="minicontainer-userns-"))  # traversable by uid 100000
    place.chmod(0o755)
    try:
        shutil.move(str(bundle.path), place)
        mapped = Bundle(place / "bundle")
        mapped.args("/bin/probe", "sleep", 30)
        mapping = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        mapped.set(lambda c: c["linux"].update(
            namespaces=c["linux"]["namespaces"] + [{"type": "user"}],
            uidMappings=mapping, gidMappings=mapping))
        assert oci("create", "--bundle", mapped.path, "u1").returncode == 0
        assert oci("start", "u1").returncode == 0
        pid1 = state("u1")["pid"]
        assert host_ids(pid1) == (100000, 100000)
        inside = oci("exec", "u1", "/bin/busybox", "sh", "-c", "cat /proc/self/uid_map; id -u")
        assert inside.stdout.split() == b"0 100000 65536 0".split(), inside.stderr
        with open("/proc/self/uid_map") as f:  # the check tells the two apart: the host's
            assert f.read().split() != inside.stdout.split()[:3]
        detached = subprocess.Popen([*CLI, "exec", "-d", "u1", "/bin/probe", "sleep", "30"],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert detached.wait(timeout=30) == 0, detached.stderr.read()
        sleepers = json.loads(oci("ps", "--format", "json", "u1").stdout)
        assert len(sleepers) == 2 and all(host_ids(p) == (100000, 100000) for p in sleepers)
        assert oci("delete", "--force", "u1").returncode == 0
    finally:
        shutil.rmtree(place)


def cgroup_mounts():
    """Every cgroup hierarchy's mount point (v1 and cgroup2), from mountinfo."""
    with open("/proc/self/mountinfo") as f:
        return sorted({line.split()[4] for line in f
                       if line.split(" - ", 1)[1].split()[0] in ("cgroup", "cgroup2")})


def groups_below(top):
    """`top` and every group below it, in every hierarchy."""
    return sorted(d for mount in cgroup_mounts() for d, _, _ in os.walk(os.path.join(mount, top)))


def remove_groups(top):
    for group in sorted(groups_below(top), key=len, reverse=True):
        os.rmdir(group)


@pytest.mark.parametrize("failure", ["resources", "program"])
def test_a_failed_create_removes_the_groups_it_made_and_no_other(bundle, failure):
    """An outside attacker's finding: a failed create at linux.cgroupsPath
    /a/b/c left /a/b (the parents it made) in every hierarchy, and a failed
    create at a group that was there before (empty) removed that group. Only
    what create made goes, deepest first, whether the kernel refuses a limit
    (resources) or PID 1 fails (program). Control: the same paths create and
    run, and delete too removes only what create made (runc 1.1 leaves the
    parents it made behind, and removes a group it found)."""
    top = f"minicontainer-made-{os.getpid()}"
    def fail(config):
        if failure == "resources":
            config["linux"]["resources"] = {"pids": {"limit": 10}, "unified": {"no.such.file": "1"}}
        else:
            config["process"]["args"] = ["/bin/no-such-program"]
    try:
        bundle.args("/bin/probe", "sleep", 30)
        good = bundle.config
        for path, before in ((f"/{top}/b/c", []), (f"/{top}", [top]), (f"/{top}/b", [top])):
            remove_groups(top)
            for mount in cgroup_mounts():
                for group in before:
                    os.mkdir(os.path.join(mount, group))
                    for name in ("cpuset.cpus", "cpuset.mems"):  # cpuset takes no task without
                        if os.path.exists(os.path.join(mount, name)):
                            with open(os.path.join(mount, name)) as f:
                                value = f.read().strip()
                            with open(os.path.join(mount, group, name), "w") as f:
                                f.write(value)
            existing = groups_below(top)
            bundle.set(lambda c: (c.clear(), c.update(copy.deepcopy(good)), fail(c),
                                  c["linux"].update(cgroupsPath=path)))
            result = oci("create", "--bundle", bundle.path, "made")
            assert result.returncode in (125, 127) and result.stderr.count(b"\n") == 1, result.stderr
            assert set(groups_below(top)) ^ set(existing) == set(), path
            bundle.set(lambda c: (c.clear(), c.update(copy.deepcopy(good)),
                                  c["linux"].update(cgroupsPath=path)))
            assert oci("create", "--bundle", bundle.path, "made").returncode == 0
            pid = str(state("made")["pid"])
            assert all(pid in open(os.path.join(mount, path.lstrip("/"), "cgroup.procs")).read().split()
                       for mount in cgroup_mounts())
            assert oci("delete", "--force", "made").returncode == 0
            assert set(groups_below(top)) ^ set(existing) == set(), path
    finally:
        cli("delete", "--force", "made")
        remove_groups(top)
