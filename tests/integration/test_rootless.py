"""Rootless: an ordinary user, made by these tests, deploys and runs
containers without root. The isolation and escape checks that make sense
for a user are tried again here, each with its positive control; what a
user cannot have (cgroup limits here, the bridge without slirp4netns) must
be refused in one line; and a SIGKILLed minicontainer leaves nothing.
"""
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

import pytest

from helpers import REPO, build_static, remove_state, running_children, wait_for

USER = "mc-rootless-test"
SUBIDS = (200000, 65536)  # the user's /etc/subuid and /etc/subgid range, when it has one


class User:
    """The test user: its ids, and this checkout's CLI run as it. A checkout or
    a Python under /root is not the user's to read, so the module and its
    packages are copied into a world-readable directory, run by a Python of
    the same version that the user may execute."""

    def __init__(self, base, python, python_env):
        import pwd
        entry = pwd.getpwnam(USER)
        self.uid, self.gid, self.base, self.python = entry.pw_uid, entry.pw_gid, base, python
        self.python_env = python_env
        self.work = None

    def env(self):
        return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(self.work),
                "PYTHONPATH": str(self.base / "site"), "LANG": "C.UTF-8", **self.python_env}

    def argv(self, *args):
        return [self.python, str(self.base / "minicontainer.py"), *map(str, args)]

    def options(self, kwargs):
        kwargs.setdefault("cwd", self.work)
        kwargs.setdefault("env", self.env())
        return dict(kwargs, user=self.uid, group=self.gid, extra_groups=[])

    def run(self, *args, **kwargs):
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("timeout", 60)
        return subprocess.run(self.argv(*args), **self.options(kwargs))

    def popen(self, *args, **kwargs):
        return subprocess.Popen(self.argv(*args), **self.options(kwargs))

    def live_processes(self):
        """The user's processes that still run (zombies have ended: this
        machine's init does not reap the orphans)."""
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                st = os.stat(f"/proc/{pid}")
                with open(f"/proc/{pid}/stat", "rb") as f:
                    state = f.read().rsplit(b")", 1)[1].split()[0]
            except OSError:
                continue
            mine = st.st_uid == self.uid or SUBIDS[0] <= st.st_uid < SUBIDS[0] + SUBIDS[1]
            if mine and state not in (b"Z", b"X"):
                found.append(int(pid))
        return found

    def state_dir(self):
        return Path(f"/tmp/minicontainer-{self.uid}")


def copy_tool(base, probe, busybox):
    """What the user runs, in a directory the user may read: this checkout's
    minicontainer (the front and its package), the packages it imports (the
    venv under /root is root's alone), and the probe and busybox."""
    shutil.copy(REPO / "minicontainer.py", base / "minicontainer.py")
    shutil.copytree(REPO / "_minicontainer", base / "_minicontainer",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (base / "site").mkdir()
    for name in ("click", "prctl", "_prctl", "elftools", "backports", "dnslib"):
        spec = importlib.util.find_spec(name)
        if spec is None and name == "backports":  # a dependency only before 3.12
            continue
        if spec.submodule_search_locations:
            shutil.copytree(spec.submodule_search_locations[0], base / "site" / name)
        else:
            shutil.copy(spec.origin, base / "site")
    for name, source in (("probe", probe), ("busybox", busybox)):
        shutil.copy(source, base / name)
        (base / name).chmod(0o755)


def python_for(uid, gid, base):
    """A Python of this one's version that the user may run, and the variables
    it needs: this one or the system's where the user may run them, else a
    copy of this one in `base` (a pyenv Python under /root, mode 0700, is not
    the user's to run). None if there is none."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"

    def runs(candidate, env):
        try:
            return subprocess.run(
                [candidate, "-c", f"import sys; assert sys.version.startswith('{version}.')"],
                user=uid, group=gid, extra_groups=[], capture_output=True, cwd="/",
                env={"PATH": "/usr/bin:/bin", **env}).returncode == 0
        except OSError:  # absent, or under a directory the user may not enter
            return False

    for candidate in (sys.executable, f"/usr/bin/python{version}", f"/usr/local/bin/python{version}"):
        if runs(candidate, {}):
            return candidate, {}
    copy = copied_python(base)
    if copy is not None and runs(*copy):
        return copy
    return None, {}


def copied_python(base):
    """This interpreter, its shared library and its standard library (without
    its tests), copied under `base`: (its path, the variables it needs)."""
    prefix = Path(sys.base_prefix)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    stdlib = prefix / "lib" / version
    if not (stdlib / "os.py").exists():
        return None
    target = base / "python"
    (target / "bin").mkdir(parents=True)
    shutil.copy2(os.path.realpath(sys.executable), target / "bin" / version)
    (target / "lib").mkdir()
    for library in (prefix / "lib").glob("libpython*.so*"):
        shutil.copy2(library, target / "lib" / library.name)
    shutil.copytree(stdlib, target / "lib" / version, symlinks=True, ignore=shutil.ignore_patterns(
        "test", "site-packages", "idlelib", "turtledemo", "tkinter", "ensurepip", "lib2to3"))
    return str(target / "bin" / version), {"LD_LIBRARY_PATH": str(target / "lib")}


def set_subids(present):
    """Give the test user its subordinate ranges, or take them away."""
    for path in ("/etc/subuid", "/etc/subgid"):
        lines = [l for l in Path(path).read_text().splitlines() if not l.startswith(f"{USER}:")]
        if present:
            lines.append(f"{USER}:{SUBIDS[0]}:{SUBIDS[1]}")
        Path(path).write_text("".join(f"{l}\n" for l in lines))


SESSION_USER = []  # the session's one user, whichever module's copy of the fixture made it


@pytest.fixture(scope="session")
def rootless_user(tmp_path_factory, probe, busybox):
    """The user (useradd; userdel after the session) and its runtime copy.
    A module that imports these fixtures has copies of its own (pytest's
    fixtures are per module): the second to run shares the first's user,
    never deletes and makes it anew under the first's tests and teardown."""
    if SESSION_USER:
        yield SESSION_USER[0]
        return
    subprocess.run(["userdel", USER], capture_output=True)  # a killed session's
    subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", USER], check=True)
    import pwd
    # A killed session's state for a user of this uid: its containers' names are not ours.
    remove_state(f"/tmp/minicontainer-{pwd.getpwnam(USER).pw_uid}")
    base = Path(tempfile.mkdtemp(prefix="minicontainer-rootless-"))
    try:
        base.chmod(0o755)
        import pwd
        entry = pwd.getpwnam(USER)
        python, python_env = python_for(entry.pw_uid, entry.pw_gid, base)
        if python is None:
            pytest.skip(f"no Python {sys.version_info.major}.{sys.version_info.minor} that"
                        f" {USER} may run (this one is under a directory only root enters)")
        copy_tool(base, probe, busybox)
        build_static(REPO / "examples" / "containerclient.c", base / "containerclient")
        for path in base.rglob("*"):
            path.chmod(path.stat().st_mode | 0o444 | (0o111 if path.is_dir() else 0))
        set_subids(False)
        SESSION_USER.append(User(base, python, python_env))
        yield SESSION_USER[0]
    finally:
        SESSION_USER.clear()
        shutil.rmtree(base, ignore_errors=True)
        set_subids(False)
        subprocess.run(["userdel", USER], check=True)


@pytest.fixture
def user(rootless_user):
    """The user in a fresh working directory of its own, with a root holding
    the probe and busybox; afterwards, no process, state or file of its left."""
    work = Path(tempfile.mkdtemp(prefix="work-", dir=rootless_user.base))
    os.chown(work, rootless_user.uid, rootless_user.gid)
    work.chmod(0o700)
    rootless_user.work = work
    deployed = rootless_user.run("deploy", rootless_user.base / "probe", rootless_user.base / "busybox")
    assert deployed.returncode == 0, deployed.stderr
    try:
        yield rootless_user
        assert wait_for(lambda: not rootless_user.live_processes(), 5), \
            f"processes left: {rootless_user.live_processes()}"
        state = rootless_user.state_dir()
        assert not state.exists() or not [p for p in state.iterdir() if p.name != ".lock"], \
            f"containers left: {list(state.iterdir())}"
    finally:
        for pid in rootless_user.live_processes():
            os.kill(pid, signal.SIGKILL)
        remove_state(rootless_user.state_dir())
        shutil.rmtree(work, ignore_errors=True)
        set_subids(False)


@pytest.fixture
def subids(user):
    """The user with a subordinate range (the uidmap package does the mapping)."""
    assert shutil.which("newuidmap"), "uidmap is installed by setup.sh"
    set_subids(True)
    return user


@pytest.fixture
def tun():
    """/dev/net/tun open to users, as distributions have it (this machine's is
    0600); its mode is put back afterwards."""
    mode = os.stat("/dev/net/tun").st_mode & 0o777
    os.chmod("/dev/net/tun", 0o666)
    yield
    os.chmod("/dev/net/tun", mode)


def lines(result):
    return result.stdout.decode().splitlines()


def host_ids(pid):
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    return int(fields["Uid"].split()[0]), int(fields["Gid"].split()[0])


def pid_one(supervisor):
    """PID 1's host pid: the supervisor's grandchild whose NSpid says 1."""
    def find():
        for holder in running_children(supervisor):
            for pid in running_children(holder):
                try:
                    with open(f"/proc/{pid}/status") as f:
                        nspid = next(l.split()[1:] for l in f if l.startswith("NSpid:"))
                except (OSError, StopIteration):
                    continue
                if len(nspid) > 1 and nspid[-1] == "1":
                    return pid
        return None
    return wait_for(find, 10)


def test_the_walkthrough_as_a_user(user):
    """The README's walkthrough, verbatim, in an empty directory, without sudo."""
    shutil.copy(user.base / "containerclient", user.work / "containerclient")
    os.chown(user.work / "containerclient", user.uid, user.gid)
    shutil.rmtree(user.work / "newroot")  # deploy makes it, as on a fresh machine
    deployed = user.run("deploy", "./containerclient")
    assert deployed.returncode == 0, deployed.stderr
    assert lines(deployed)[0].startswith("deployed 1 file")
    result = user.run("run", "./containerclient")
    assert (result.returncode, lines(result)) == (0, ["Hello from the container!"]), result.stderr
    owner = os.stat(user.work / "newroot" / "bin" / "containerclient")
    assert (owner.st_uid, owner.st_gid) == (user.uid, user.gid)  # the user's files


def test_a_user_gets_the_isolation_root_gets(user, probe):
    """PID 1, only the container's processes, only lo, its own hostname, root
    inside and the user outside. Controls: the host's view of each differs."""
    assert lines(user.run("run", "/bin/probe", "pid")) == ["pid 1 ppid 0"]
    assert lines(user.run("run", "/bin/probe", "pids")) == ["1"]
    host_pids = subprocess.run([probe, "pids"], capture_output=True).stdout.split()
    assert len(host_pids) > 1
    assert lines(user.run("run", "/bin/probe", "ls", "/sys/class/net")) == ["lo"]
    assert len(os.listdir("/sys/class/net")) > 1
    assert lines(user.run("run", "/bin/probe", "hostname")) == ["minicontainer"]
    assert lines(user.run("run", "/bin/probe", "ids"))[0].startswith("uid 0 euid 0 gid 0 egid 0")
    sleeper = user.popen("run", "/bin/probe", "sleep", 30, stdout=subprocess.PIPE)
    try:
        assert sleeper.stdout.readline() == b"ready\n"
        assert host_ids(pid_one(sleeper.pid)) == (user.uid, user.gid)
    finally:
        sleeper.send_signal(signal.SIGTERM)
        assert sleeper.wait(timeout=10) == 143


def test_no_host_file_or_descriptor_reaches_a_users_container(user, probe):
    """A descriptor of the host's / leaked into `run` is closed before anything
    is resolved, and a planted /proc/self/fd/3 link finds nothing. Control:
    the same probe through the same descriptor reads the host's file."""
    fd = os.open("/", os.O_PATH)
    leak = {"pass_fds": (3,), "preexec_fn": lambda: os.dup2(fd, 3)}
    try:
        host = subprocess.run([probe, "openat", "3", "etc/hostname"], capture_output=True, **leak)
        assert lines(host) == ["ok"]
        inside = user.run("run", "/bin/probe", "openat", "3", "etc/hostname", **leak)
        assert lines(inside) == ["error: Bad file descriptor"] and inside.returncode == 1
        assert user.run("run", "/bin/probe", "exists", "/proc/self/fd/3", **leak).returncode == 1
        (user.work / "newroot" / "bin" / "app").symlink_to(f"/proc/self/fd/3{probe}")
        planted = user.run("run", "/bin/app", "pid", **leak)
        assert planted.returncode in (126, 127) and planted.stdout == b""
        outside = user.run("run", "/bin/probe", "exists", str(user.base / "minicontainer.py"))
        assert outside.returncode == 1  # the host's files are not there
    finally:
        os.close(fd)


def test_namespaces_made_inside_are_refused_as_for_root(user):
    refused = user.run("run", "/bin/probe", "syscall", "clone-newuser")
    assert lines(refused) == ["error: Operation not permitted"]
    # Control: without the filter the kernel lets root inside nest a user namespace.
    allowed = user.run("run", "--seccomp", "unconfined", "/bin/probe", "syscall", "clone-newuser")
    assert lines(allowed) == ["ok"]


@pytest.mark.parametrize("option, asked", [(("-m", "64m"), "--memory"),
                                           (("--pids-limit", "10"), "--pids-limit"),
                                           (("--cpus", "0.5"), "--cpus"), (("--stats",), "--stats")])
def test_limits_a_user_cannot_have_are_refused(user, option, asked):
    result = user.run("run", *option, "/bin/probe", "pid")
    assert result.returncode == 125 and result.stdout == b""
    assert result.stderr.decode().splitlines() == [
        f"minicontainer: {asked}: a user's container needs a cgroup delegated to it (your"
        " cgroup v2 group /sys/fs/cgroup/unified is not yours to write): run as root, or in a"
        " delegated group, e.g. systemd-run --user --scope -p Delegate=yes minicontainer run ..."]
    assert user.run("run", "/bin/probe", "pid").returncode == 0  # control: without the limit


def test_a_delegated_group_is_found_and_its_missing_controllers_named(user):
    """A cgroup v2 group the user owns (systemd's Delegate=yes) is the place for
    its limits; this host's cgroup2 has no memory controller, which is said."""
    group = Path("/sys/fs/cgroup/unified") / f"minicontainer-delegated-{os.getpid()}"
    group.mkdir()
    try:
        for path in (group, group / "cgroup.procs", group / "cgroup.subtree_control"):
            os.chown(path, user.uid, user.gid)
        script = (f"echo $$ > {group}/cgroup.procs && exec setpriv --reuid={user.uid}"
                  f" --regid={user.gid} --clear-groups {' '.join(user.argv('run', '-m', '64m', '/bin/probe', 'pid'))}")
        result = subprocess.run(["sh", "-c", script], cwd=user.work, env=user.env(),
                                capture_output=True, timeout=60)
        assert result.returncode == 125
        assert f"your cgroup v2 group {group} has no memory controller" in result.stderr.decode()
    finally:
        group.rmdir()


def serve_page(user, text):
    """/www/index.html in the user's root, the user's, for busybox httpd -h /www."""
    www = user.work / "newroot" / "www"
    www.mkdir()
    (www / "index.html").write_text(text)
    for path in (www, www / "index.html"):
        os.chown(path, user.uid, user.gid)


def test_the_bridge_needs_slirp4netns_and_a_tun_device(user):
    result = user.run("run", "--network", "bridge", "/bin/probe", "pid")
    if os.access("/dev/net/tun", os.W_OK) and os.stat("/dev/net/tun").st_mode & 0o006 == 0o006:
        pytest.skip("/dev/net/tun is open to users on this machine")
    assert result.returncode == 125 and result.stderr.decode().splitlines() == [
        "minicontainer: --network bridge: slirp4netns needs /dev/net/tun, which you cannot open"
        " here (distributions make it mode 0666)"]


def test_the_users_bridge(user, tun):
    """eth0 with an address of the user's bridge; no default route without
    --outbound; one with it, through the bridge and the keeper's slirp4netns,
    and the name server forwards names beyond the bridge only then."""
    bare = user.run("run", "--network", "bridge", "/bin/busybox", "sh", "-c",
                    "busybox ip -4 -o addr show eth0; busybox ip route; cat /etc/resolv.conf")
    assert bare.returncode == 0, bare.stderr
    out = bare.stdout.decode()
    assert "inet 10.88.0.2/16" in out and "default" not in out, out
    assert "nameserver 127.0.0.11" in out and "host.minicontainer.internal" not in out, out
    outbound = user.run("run", "--network", "bridge", "--outbound", "/bin/busybox", "sh", "-c",
                        "busybox ip route; cat /etc/resolv.conf; cat /etc/hosts")
    assert "default via 10.88.0.1 dev eth0" in outbound.stdout.decode(), outbound.stdout
    assert "host.minicontainer.internal" not in outbound.stdout.decode()


def test_a_users_containers_reach_each_other_by_name(user, tun):
    """Two of a user's containers on its bridge: one reaches the other's
    httpd by --name and by --network-alias, and by address, while it runs;
    the names stop resolving when it ends. A container off the bridge
    resolves nothing (the control on the bridge does). Everything, the
    keeper of the user's network included, is gone afterwards (the user
    fixture checks: no process, nothing in the state directory but its lock)."""
    serve_page(user, "Hello from db\n")
    started = user.run("run", "-d", "--name", "db", "--network", "bridge", "--network-alias",
                       "store", "/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www")
    assert started.returncode == 0, started.stderr
    try:
        fetch = ("busybox wget -qO- http://db:8080/ && busybox wget -qO- http://STORE:8080/"
                 " && busybox nslookup db 127.0.0.11")
        asked = user.run("run", "--network", "bridge", "/bin/busybox", "sh", "-c", fetch)
        assert asked.returncode == 0, asked.stderr
        out = asked.stdout.decode()
        assert out.count("Hello from db") == 2 and "10.88.0.2" in out, out
        apart = user.run("run", "--network", "none", "/bin/busybox", "nslookup", "db", "127.0.0.11")
        assert apart.returncode != 0 and "10.88.0.2" not in apart.stdout.decode()
        assert user.run("rm", "-f", "db").returncode == 0
        gone = user.run("run", "--network", "bridge", "/bin/busybox", "nslookup", "db", "127.0.0.11")
        assert gone.returncode != 0 and "10.88.0.2" not in gone.stdout.decode(), gone.stdout
    finally:
        user.run("rm", "-f", "db")
    assert wait_for(lambda: not user.live_processes(), 5), user.live_processes()
    assert not (user.state_dir() / "network.json").exists()


def test_a_published_port_and_a_sigkilled_minicontainer_leave_nothing(user, tun):
    """-p reaches a user's container; SIGKILL of minicontainer then takes the
    container, slirp4netns and the connector with it."""
    serve_page(user, "Hello from a user's service\n")
    server = user.popen("run", "--network", "bridge", "-p", "18089:80", "/bin/busybox", "httpd",
                        "-f", "-p", "80", "-h", "/www", stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE)
    try:
        def fetch():
            try:
                return urllib.request.urlopen("http://127.0.0.1:18089/", timeout=2).read()
            except OSError:
                return None
        assert wait_for(fetch, 10) == b"Hello from a user's service\n"
        assert len(user.live_processes()) >= 4  # supervisor, holder, PID 1, slirp4netns, ...
        server.send_signal(signal.SIGKILL)
        server.wait()
        assert wait_for(lambda: not user.live_processes(), 5), user.live_processes()
        assert fetch() is None
    finally:
        server.kill()
        server.wait()
        server.stderr.close()


def test_a_users_detached_service_keeps_its_published_port(user, tun):
    """run -d -p for a user: the port, slirp4netns and the connector are the
    monitor's, so the service answers after `run -d` has returned, and its
    stop takes them all away."""
    serve_page(user, "Hello from a user's detached service\n")
    started = user.run("run", "-d", "--name", "web", "--network", "bridge", "-p", "18090:80",
                       "/bin/busybox", "httpd", "-f", "-p", "80", "-h", "/www")
    assert started.returncode == 0, started.stderr

    def fetch():
        try:
            return urllib.request.urlopen("http://127.0.0.1:18090/", timeout=2).read()
        except OSError:
            return None
    try:
        assert wait_for(fetch, 10) == b"Hello from a user's detached service\n"
        assert user.run("stop", "-t", "1", "web").returncode == 0
        assert fetch() is None
        assert wait_for(lambda: not user.live_processes(), 5), user.live_processes()
    finally:
        user.run("rm", "-f", "web")


def udp_ask(port, data=b"ping", timeout=2):
    """One datagram to 127.0.0.1:PORT and the reply, or None."""
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.connect(("127.0.0.1", port))
        try:
            s.send(data)
            return s.recv(65535)
        except OSError:
            return None


def tcp_ask(port):
    import socket
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
            return conn.recv(100)
    except OSError:
        return None


@pytest.mark.parametrize("ending", ["rm -f", "SIGKILL of its monitor"])
def test_a_users_udp_port_through_slirp4netns(user, tun, ending):
    """-p .../udp for a user: a UDP echo through the port, made by the
    connector in the container's network namespace; the TCP port of the same
    number stays unpublished (the probe serves both: the TCP publish of
    another port is the positive control). However the service ends,
    slirp4netns, the connector and the port go with it."""
    started = user.run("run", "-d", "--name", "dns", "--network", "bridge", "-p", "18091:53/udp",
                       "-p", "18092:53/tcp", "/bin/probe", "serve", "53")
    assert started.returncode == 0, started.stderr
    try:
        assert wait_for(lambda: udp_ask(18091), 10) == b"udp ping"
        assert udp_ask(18091, b"x" * 30000) == b"udp " + b"x" * 30000
        assert wait_for(lambda: tcp_ask(18092), 10) == b"tcp\n"
        assert tcp_ask(18091) is None and udp_ask(18092, timeout=0.5) is None
        assert "127.0.0.1:18091->53/udp, 127.0.0.1:18092->53/tcp" in user.run("ps").stdout.decode()
        if ending == "rm -f":
            assert user.run("rm", "-f", "dns").returncode == 0
        else:
            import json
            monitor = json.loads(user.run("inspect", "dns").stdout)[0]["Monitor"][0]
            os.kill(monitor, signal.SIGKILL)
        assert wait_for(lambda: not user.live_processes(), 5), user.live_processes()
        assert udp_ask(18091, timeout=0.5) is None and tcp_ask(18092) is None
    finally:
        user.run("rm", "-f", "dns")


def test_a_users_stats_from_proc(user):
    """stats for a user's containers, which have no cgroup here: pids, memory
    (the host's as the limit) and CPU from /proc of their processes; the
    user's network namespace's bytes; a stopped one in zeros."""
    import json
    started = user.run("run", "-d", "--name", "st", "/bin/busybox", "sh", "-c",
                       "busybox sleep 60 & echo started; exec /bin/probe hold 16 60")
    assert started.returncode == 0, started.stderr
    try:
        assert wait_for(lambda: b"ready" in user.run("logs", "st").stdout, 10)
        result = user.run("stats", "--no-stream", "--format", "json", "st")
        assert result.returncode == 0 and result.stderr == b"", result.stderr
        row = json.loads(result.stdout)
        assert row["Name"] == "st" and row["PIDs"] == "2", row
        usage, limit = row["MemUsage"].split(" / ")
        assert usage.endswith("MiB") and float(usage[:-3]) >= 16, row
        assert user.run("stop", "-t", "1", "st").returncode == 0
        stopped = json.loads(user.run("stats", "--no-stream", "--format", "json", "st").stdout)
        assert (stopped["MemUsage"], stopped["PIDs"]) == ("0B / 0B", "0")
    finally:
        user.run("rm", "-f", "st")


def test_a_users_device_is_the_hosts_node_bound(user):
    """A user cannot make device nodes, not even in its own user namespace:
    --device binds the host's node (one the user may open) under the name
    asked; a node not given cannot be made (the control: mknod fails, and the
    host's /dev/fuse, not given, is not there)."""
    result = user.run("run", "--device", "/dev/null:/dev/mynull", "/bin/busybox", "sh", "-c",
                      "busybox ls -l /dev/mynull; echo x > /dev/mynull && busybox cat /dev/mynull"
                      " && echo used; /bin/probe node /dev/other 1 3; /bin/probe open /dev/fuse r; exit 0")
    assert result.returncode == 0, result.stderr
    out = lines(result)
    assert out[0].startswith("crw-rw-rw-") and out[0].split()[4:6] == ["1,", "3"], out
    assert out[1:] == ["used", "error: Operation not permitted", "error: No such file or directory"]
    refused = user.run("run", "--device", "/dev/null:/dev/mynull:rwz", "/bin/probe", "pid")
    assert refused.returncode == 125 and lines(refused) == []
    assert refused.stderr.decode().splitlines() == [
        "minicontainer: --device /dev/null:/dev/mynull:rwz: bad permissions 'rwz': letters of r,"
        " w and m, each once"]


def test_a_users_containers_in_the_background(user):
    """-d, ps, logs, exec, stop and rm, with the state in the user's own directory."""
    started = user.run("run", "-d", "--name", "bg", "/bin/busybox", "sh", "-c",
                       "echo started; exec busybox sleep 60")
    assert started.returncode == 0, started.stderr
    state = user.state_dir()
    assert (state.stat().st_uid, state.stat().st_mode & 0o777) == (user.uid, 0o700)
    assert "bg" in user.run("ps").stdout.decode()
    assert wait_for(lambda: user.run("logs", "bg").stdout == b"started\n", 5)
    inside = user.run("exec", "bg", "/bin/probe", "ids")
    assert lines(inside)[0].startswith("uid 0 euid 0"), inside.stderr
    assert user.run("exec", "bg", "/bin/probe", "exit", 7).returncode == 7
    pid, ppid = lines(user.run("exec", "bg", "/bin/probe", "pid"))[0].split()[1::2]
    assert int(pid) > 1 and ppid == "0"  # in PID 1's namespace, its parent outside it
    assert user.run("stop", "-t", "1", "bg").returncode == 0
    assert user.run("rm", "bg").returncode == 0


def test_a_users_service_is_restarted_and_health_checked(user):
    """--restart and --health-cmd for a user's container: its monitor starts it
    again through the same start, and runs the check as the user's exec."""
    sh = user.work / "newroot" / "bin" / "sh"
    sh.symlink_to("busybox")
    os.lchown(sh, user.uid, user.gid)
    started = user.run("run", "-d", "--name", "up", "--restart", "on-failure:2", "--health-cmd",
                       "busybox cat /proc/self/uid_map", "--health-interval", "100ms",
                       "/bin/busybox", "sh", "-c", "echo run; busybox sleep 1.5; exit 5")
    assert started.returncode == 0, started.stderr
    healthy = user.run("wait", "--condition", "healthy", "up")
    assert healthy.returncode == 0, healthy.stderr

    def state():
        return json.loads(user.run("inspect", "up").stdout)[0]
    # The check ran in the container's user namespace: root inside is the user.
    assert f"0 {user.uid} 1" in " ".join(state()["State"]["Health"]["Log"][-1]["Output"].split())
    assert wait_for(lambda: state()["State"]["Status"] == "exited", 30)
    assert state()["RestartCount"] == 2 and state()["State"]["ExitCode"] == 5
    assert user.run("logs", "up").stdout == b"run\nrun\nrun\n"
    refused = user.run("run", "-d", "--restart", "always", "--network", "bridge", "/bin/busybox",
                       "true")
    assert refused.returncode == 125 and b"its connector serves one run" in refused.stderr
    assert user.run("rm", "up").returncode == 0


def test_other_users_need_a_subordinate_range(user):
    refused = user.run("run", "-u", "1000", "/bin/probe", "ids")
    assert refused.returncode == 125
    assert "--user 1000:1000: not mapped in the container's user namespace" in refused.stderr.decode()


def test_a_subordinate_range_maps_other_users(subids):
    user = subids
    sleeper = user.popen("run", "-u", "1000", "/bin/probe", "sleep", 30, stdout=subprocess.PIPE)
    try:
        assert sleeper.stdout.readline() == b"ready\n"
        assert host_ids(pid_one(sleeper.pid)) == (SUBIDS[0] + 999, SUBIDS[0] + 999)
    finally:
        sleeper.send_signal(signal.SIGTERM)
        sleeper.wait(timeout=10)
        sleeper.stdout.close()
    ids = user.run("run", "-u", "1000", "/bin/probe", "ids")
    assert lines(ids)[0].startswith("uid 1000 euid 1000 gid 1000 egid 1000 groups"), ids.stderr


def test_host_files_keep_their_permissions_whatever_root_inside_believes(user, tmp_path):
    """-v of a file the user cannot read: root inside cannot read it either.
    Control: the user's own file, bound the same way, reads."""
    secret = Path(tempfile.mkdtemp(dir=user.base)) / "secret"
    secret.parent.chmod(0o755)
    secret.write_text("root's\n")
    secret.chmod(0o600)
    mine = user.work / "mine"
    mine.write_text("the user's\n")
    os.chown(mine, user.uid, user.gid)
    mine.chmod(0o600)
    try:
        denied = user.run("run", "-v", f"{secret}:/secret", "/bin/probe", "cat", "/secret")
        assert denied.returncode != 0 and b"root's" not in denied.stdout
        assert b"ermission denied" in denied.stdout + denied.stderr
        allowed = user.run("run", "-v", f"{mine}:/mine", "/bin/probe", "cat", "/mine")
        assert allowed.stdout == b"the user's\n"
    finally:
        shutil.rmtree(secret.parent)


def test_deploy_of_an_archive_as_a_user_makes_other_owners_the_users(user):
    archive = user.base / f"other-owners-{os.getpid()}.tar"
    with tarfile.open(archive, "w") as tar:
        for name, uid in (("etc/owned-by-root", 0), ("etc/owned-by-1000", 1000)):
            info = tarfile.TarInfo(name)
            info.uid = info.gid = uid
            data = f"{name}\n".encode()
            info.size = len(data)
            import io
            tar.addfile(info, io.BytesIO(data))
    archive.chmod(0o644)
    try:
        result = user.run("deploy", archive)
        assert result.returncode == 0, result.stderr
        assert result.stderr.decode().splitlines() == [
            "minicontainer: warning: 2 archive members of other owners made yours: only root"
            " keeps owners (in your containers, your files belong to root)"]
        for name in ("owned-by-root", "owned-by-1000"):
            st = os.stat(user.work / "newroot" / "etc" / name)
            assert (st.st_uid, st.st_gid) == (user.uid, user.gid)
        linked = user.run("deploy", "--link", "--to", "/linked", user.work / "newroot" / "bin" / "probe")
        assert linked.returncode == 0 and "1 file (0 bytes)" in linked.stdout.decode(), linked.stderr
        source, link = (os.stat(user.work / "newroot" / path) for path in ("bin/probe", "linked/probe"))
        assert (source.st_ino, source.st_nlink) == (link.st_ino, 2)  # hard-linked, not copied
    finally:
        archive.unlink()


def test_root_can_ask_for_a_user_namespace_too(template_root):
    """--userns private with --uidmap: the container's root is host uid 100000.
    Control: without it, the container's root is the host's."""
    from helpers import CLI
    place = Path(tempfile.mkdtemp(prefix="minicontainer-userns-"))
    try:
        place.chmod(0o755)  # traversable by uid 100000
        root = place / "root"
        subprocess.run(["cp", "-a", str(template_root), str(root)], check=True)
        for options, ids in ((["--userns", "private", "--uidmap", "0:100000:65536"], (100000, 100000)),
                             ([], (0, 0))):
            sleeper = subprocess.Popen([*CLI, "run", "--root", root, *options, "/bin/probe", "sleep",
                                        "30"], stdout=subprocess.PIPE)
            try:
                assert sleeper.stdout.readline() == b"ready\n"
                assert host_ids(pid_one(sleeper.pid)) == ids
            finally:
                sleeper.send_signal(signal.SIGTERM)
                sleeper.wait(timeout=10)
                sleeper.stdout.close()
    finally:
        shutil.rmtree(place)


def test_a_user_pulls_an_image_and_runs_its_default(subids, registry, busybox_image):
    """Into the user's own root, through the user's own cache (~/.cache); the
    layers' other owners made the user's with one warning, and the image's
    User 1000 mapped into the user's subordinate range."""
    import registry_fixture as rf
    user = subids
    rf.push(busybox_image, registry, "test/busybox:1")
    pulled = user.run("pull", f"{registry.hostport}/test/busybox:1")
    assert pulled.returncode == 0, pulled.stderr
    assert pulled.stderr.decode().startswith("minicontainer: warning: ")  # www/ is uid 1000's
    assert (user.work / ".cache" / "minicontainer" / "blobs" / "sha256").stat().st_uid == user.uid
    assert os.stat(user.work / "newroot" / "www" / "index.html").st_uid == user.uid
    assert lines(user.run("run")) == ["hello from the fixture", "uid=1000(app) gid=1000(app)", "/www"]


# -- another user's /tmp/minicontainer-UID ----------------------------------
# A user's state is /tmp/minicontainer-UID when there is no XDG_RUNTIME_DIR:
# anyone may make that path first. Here another owner (nobody, or root, as
# any other user would) makes it with a forged entry `web` whose monitor and
# PID 1 are an unrelated process of the user's; every verb the user runs must
# refuse the directory in one line before it reads a thing from it.

FORGED_ID = "f" * 64
USER_VERBS = [("ps",), ("ps", "-a"), ("inspect", "web"), ("logs", "web"), ("stop", "-t", "1", "web"),
              ("kill", "web"), ("rm", "-f", "web"), ("rm", "web"), ("wait", "web"),
              ("exec", "web", "/bin/probe", "pid"), ("run", "-d", "--name", "x", "/bin/probe", "pid"),
              ("state", "web"), ("list",), ("delete", "--force", "web"), ("kill", "web", "KILL")]


def users_victim(user):
    """A sleep of the user's, PID 1 of a PID namespace of its own (so that a
    verb that signals a whole namespace cannot reach further): (holder, pid)."""
    holder = subprocess.Popen(["unshare", "--user", "--map-root-user", "--pid", "--fork", "--mount-proc",
                               "sleep", "60"], user=user.uid, group=user.gid, extra_groups=[],
                              cwd=user.work, stderr=subprocess.DEVNULL)

    def child():
        try:
            with open(f"/proc/{holder.pid}/task/{holder.pid}/children") as f:
                return int(f.read().split()[0])
        except (OSError, IndexError, ValueError):
            return None
    assert wait_for(lambda: child() is not None, 10)
    return holder, child()


def start_of(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[19])


def forge_state(path, owner, victim_pid):
    import json
    path.mkdir(mode=0o755)
    entry = path / FORGED_ID
    entry.mkdir()
    identity = [victim_pid, start_of(victim_pid)]
    (entry / "state.json").write_text(json.dumps({
        "id": FORGED_ID, "name": "web", "status": "running", "created": "2026-01-01T00:00:00.0Z",
        "monitor": identity, "pid1": identity, "detached": True, "spec": {}, "command": ["x"],
        "root": "/"}))
    (entry / "container.log").write_bytes(b"not a record\n")
    for p in (path, entry, entry / "state.json", entry / "container.log"):
        os.lchown(p, owner, owner)
    path.chmod(0o755)


@pytest.mark.parametrize("owner", ["nobody", "root"])
def test_a_state_directory_another_user_made_first_is_refused_by_every_verb(user, owner):
    import pwd
    uid = pwd.getpwnam(owner).pw_uid
    state = user.state_dir()
    remove_state(state)
    holder, victim = users_victim(user)
    try:
        forge_state(state, uid, victim)
        for args in USER_VERBS:
            result = user.run(*args)
            err = result.stderr.decode()
            assert result.returncode == 125 and err.count("\n") == 1 and result.stdout == b"", (args, err)
            assert err.startswith(f"minicontainer: state directory {state}: not owned by the current"
                                  f" user (uid {user.uid}): it is uid {uid}'s ({owner}): have it"
                                  f" removed (root can: rm -rf {state})"), (args, err)
            assert os.path.exists(f"/proc/{victim}") and start_of(victim), args  # untouched
        assert sorted(os.listdir(state)) == [FORGED_ID]  # nothing made in it either
        # A symlink planted at the path, to a directory of the user's own, is refused too.
        shutil.rmtree(state)
        mine = user.work / "mine"
        mine.mkdir(mode=0o700)
        os.chown(mine, user.uid, user.gid)
        state.symlink_to(mine)
        os.lchown(state, uid, uid)
        result = user.run("ps")
        assert result.returncode == 125 and result.stderr.decode() == (
            f"minicontainer: state directory {state}: a symlink (to {mine}), not a directory:"
            f" remove it (rm {state}) and try again, or choose another with --root DIR or"
            f" MINICONTAINER_STATE\n")
        assert os.listdir(mine) == []
        # The control: with the path the user's own (made by its first run), every verb works.
        state.unlink()
        started = user.run("run", "-d", "--name", "bg", "/bin/busybox", "sleep", "60")
        assert started.returncode == 0, started.stderr
        assert (state.lstat().st_uid, state.lstat().st_mode & 0o777) == (user.uid, 0o700)
        assert "bg" in user.run("ps").stdout.decode()
        assert user.run("exec", "bg", "/bin/probe", "pid").returncode == 0
        assert user.run("stop", "-t", "1", "bg").returncode == 0
        assert user.run("rm", "bg").returncode == 0
        assert os.path.exists(f"/proc/{victim}")
    finally:
        remove_state(state)  # first: the symlink must not outlive the test, whatever fails below
        if os.path.exists(f"/proc/{victim}"):
            os.kill(victim, signal.SIGKILL)
        holder.wait(timeout=10)


def test_the_rootless_page_runs_as_the_user(rootless_user, tun):
    """docs/rootless.md's `as user` blocks, as they stand, run by test_docs's runner as the user
    (with /dev/net/tun open to users, as distributions have it, for its bridge)."""
    from tests.integration.test_docs import groups, run_as_user
    sessions = [steps for as_user, steps in groups(REPO / "docs" / "rootless.md") if as_user]
    assert sessions, "docs/rootless.md shows a user's commands"
    problems = [problem for steps in sessions for problem in run_as_user(steps, rootless_user)]
    assert not problems, "\n\n".join(problems)


LIBRARY_AS_USER = """
import os, signal, subprocess, sys
import minicontainer as mc
r = mc.run(["/bin/probe", "ids"], capture_output=True)
print("ids", r.returncode, r.stdout.decode().splitlines()[0])
p = mc.Popen(["/bin/probe", "sleep", "30"], stdout=mc.PIPE)
assert p.stdout.readline() == b"ready\\n"
with open(f"/proc/{p.pid}/status") as f:
    status = dict(line.split(":", 1) for line in f)
print("host", status["Uid"].split()[0], status["NSpid"].split())
p.kill()
print("killed", p.wait())
p.stdout.close()
try:
    mc.run(["/bin/busybox", "sh", "-c", "trap '' TERM; sleep 60"], timeout=1)
except subprocess.TimeoutExpired:
    print("timeout")
try:
    mc.run(["/bin/probe", "pid"], memory="64m")
except mc.ContainerError as error:
    print("refused", error.code, error)
"""


def test_the_library_runs_a_users_containers_as_the_command_line_does(user):
    """minicontainer.run and Popen from a user's own Python: root inside a user
    namespace, the user outside; kill, a timeout, and what a user cannot have
    refused in the command line's words. Control: the CLI's answers."""
    result = subprocess.run([user.python, "-c", LIBRARY_AS_USER], capture_output=True, timeout=120,
                            **user.options({"env": dict(user.env(), PYTHONPATH=f"{user.base}:{user.base / 'site'}")}))
    assert result.returncode == 0, result.stderr
    out = lines(result)
    cli_ids = lines(user.run("run", "/bin/probe", "ids"))[0]
    assert out[0] == f"ids 0 {cli_ids}" and cli_ids.startswith("uid 0 euid 0")
    host, nspid = out[1].split(" ", 2)[1:]
    assert int(host) == user.uid and nspid.endswith("'1']")
    assert out[2:4] == ["killed 137", "timeout"]
    refused = user.run("run", "-m", "64m", "/bin/probe", "pid")
    assert out[4] == f"refused 125 {refused.stderr.decode().strip().removeprefix('minicontainer: ')}"


def test_the_users_bridge_takes_another_subnet_once_it_is_free(user, tun):
    """--subnet on the user's bridge: refused while a container is on another
    subnet (root's words), taken at once when none is, even while the last
    keeper has not yet seen that (it is replaced, not joined)."""
    first = user.run("run", "-d", "--name", "a", "--network", "bridge", "/bin/busybox", "sleep", "60")
    assert first.returncode == 0, first.stderr
    try:
        refused = user.run("run", "--network", "bridge", "--subnet", "10.213.0.0/24", "/bin/busybox", "true")
        assert refused.returncode == 125 and refused.stderr.decode().splitlines() == [
            "minicontainer: --subnet 10.213.0.0/24: bridge mc0 already serves 10.88.0.0/16 for"
            " running containers"]
    finally:
        assert user.run("rm", "-f", "a").returncode == 0
    taken = user.run("run", "--network", "bridge", "--subnet", "10.213.0.0/24", "--outbound",
                     "/bin/busybox", "sh", "-c", "busybox ip -4 -o addr show eth0; busybox ip route")
    assert taken.returncode == 0, taken.stderr
    assert "inet 10.213.0.2/24" in taken.stdout.decode()
    assert "default via 10.213.0.1" in taken.stdout.decode(), taken.stdout


LIBRARY_ON_THE_USERS_BRIDGE = """
import minicontainer as mc
r = mc.run(["/bin/busybox", "sh", "-c", "busybox wget -qO- http://web:8080/; busybox nslookup client 127.0.0.11"],
           network="bridge", network_alias=["client"], capture_output=True)
print(r.returncode, r.stdout.decode().replace("\\n", " "))
"""


@pytest.mark.parametrize("state", ["default", "XDG_RUNTIME_DIR", "MINICONTAINER_STATE"])
def test_a_users_bridge_container_through_every_door(user, tun, state):
    """A user's bridge container reached by exec (its address, the keeper's
    user namespace's maps), inspect, and a library container that finds it by
    name (and itself by its alias); the same user namespace as any of the
    user's containers has (the control: a container off the bridge). With the
    state directory the user's environment names, the library's containers
    share the command line's table and keeper: its helper, which has neither
    variable, kept a second bridge of its own in /tmp/minicontainer-UID, where
    `web` was not found (an outside attacker's finding)."""
    env = user.env()
    table = user.state_dir() / "network.json"
    if state != "default":
        chosen = user.work / "state-home"
        chosen.mkdir(mode=0o700)
        os.chown(chosen, user.uid, user.gid)
        env[state] = str(chosen)
        table = chosen / ("minicontainer" if state == "XDG_RUNTIME_DIR" else "") / "network.json"
    serve_page(user, "Hello from web\n")
    started = user.run("run", "-d", "--name", "web", "--network", "bridge", "/bin/busybox",
                       "httpd", "-f", "-p", "8080", "-h", "/www", env=env)
    assert started.returncode == 0, started.stderr
    try:
        assert table.exists()
        inside = user.run("exec", "web", "/bin/busybox", "sh", "-c",
                          "busybox ip -4 -o addr show eth0; cat /proc/self/uid_map", env=env)
        assert inside.returncode == 0, inside.stderr
        apart = user.run("run", "/bin/busybox", "cat", "/proc/self/uid_map", env=env)
        assert "inet 10.88.0.2/16" in inside.stdout.decode()
        assert inside.stdout.decode().split("\n", 1)[1].split() == apart.stdout.decode().split()
        assert json.loads(user.run("inspect", "web", env=env).stdout)[0]["NetworkSettings"][
            "IPAddress"] == "10.88.0.2"
        result = subprocess.run(
            [user.python, "-c", LIBRARY_ON_THE_USERS_BRIDGE], capture_output=True, timeout=60,
            **user.options({"env": dict(env, PYTHONPATH=f"{user.base}:{user.base / 'site'}")}))
        assert result.returncode == 0, result.stderr
        out = result.stdout.decode()
        assert out.startswith("0 Hello from web") and "10.88.0.3" in out, out
        if state != "default":  # one table: none was made at the default path
            assert not user.state_dir().exists()
    finally:
        assert user.run("rm", "-f", "web", env=env).returncode == 0


def test_a_user_copies_in_and_out_of_its_container_and_sees_its_processes(subids):
    """cp and top for a user's container: owners through its user namespace
    (the user is its root; its uid 1000 is a subordinate id), nothing needing root."""
    user = subids
    started = user.run("run", "-d", "--name", "c1", "/bin/busybox", "sh", "-c",
                       "echo inside > /tmp/in; chown 1000:1000 /tmp/in; touch /tmp/ready; sleep 300")
    assert started.returncode == 0, started.stderr
    try:
        assert wait_for(lambda: user.run("exec", "c1", "/bin/busybox", "test", "-f",
                                         "/tmp/ready").returncode == 0, 10)
        src = user.work / "f"
        src.write_text("from the user\n")
        os.chown(src, user.uid, user.gid)
        copied = user.run("cp", src, "c1:/tmp/f")
        assert copied.returncode == 0, copied.stderr
        assert user.run("exec", "c1", "/bin/busybox", "stat", "-c", "%u:%g", "/tmp/f",
                        "/tmp/in").stdout == b"0:0\n1000:1000\n"
        copied = user.run("cp", "c1:/tmp/in", user.work / "out")
        assert copied.returncode == 0, copied.stderr
        st = os.stat(user.work / "out")
        assert (user.work / "out").read_text() == "inside\n" and st.st_uid == user.uid
        top = user.run("top", "c1")
        assert top.returncode == 0, top.stderr
        assert [line.split(None, 7)[-1] for line in lines(top)[1:]] == ["sleep 300"]
    finally:
        assert user.run("rm", "-f", "c1").returncode == 0
