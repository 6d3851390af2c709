"""Isolation by default: attacks from inside a container, each shown to work
where it should (on the host, or with the protection relaxed)."""
import os
import socket
import stat
import subprocess
import uuid

import pytest

from helpers import cli, container_pids, parent_of, wait_for


@pytest.fixture
def run(root, door):
    """This module's tests go through both doors: the command line and the library."""
    return lambda *args, **kw: door("run", "--root", root, *args, **kw)


NAMESPACES = ("pid", "mnt", "uts", "ipc", "net", "cgroup")
RELAX_ALL = ("--network", "host", "--ipc", "host", "--uts", "host", "--cgroupns", "host")


def host(probe, *args):
    return subprocess.run([probe, *map(str, args)], capture_output=True)


def test_host_processes_cannot_be_signalled(run, probe):
    me = os.getpid()
    assert host(probe, "kill", me).stdout == b"ok\n"
    assert run("/bin/probe", "kill", me).stdout == b"error: No such process\n"


@pytest.mark.parametrize("link", ["/proc/1/root", "/proc/self/root", "/proc/self/cwd"])
def test_host_root_is_not_reachable_through_proc_links(tmp_path, run, probe, link):
    secret = tmp_path / "secret"
    secret.write_text("host secret")
    # Control: on the host the probe's own links lead to the host's tree.
    assert host(probe, "cat", f"/proc/self/root{secret}").stdout == b"host secret"
    assert run("/bin/probe", "cat", f"{link}{secret}").returncode == 1


def test_double_chroot_escape_fails(tmp_path, root, run):
    secret = tmp_path / "secret"
    secret.write_text("host secret")
    # Control: in a plain chroot (the original's design) the same probe gets out.
    escaped = subprocess.run(["chroot", root, "/bin/probe", "escape", secret], capture_output=True)
    assert escaped.stdout == b"host secret"
    inside = run("/bin/probe", "escape", secret)
    assert inside.returncode == 1 and b"host secret" not in inside.stdout


def test_leaked_descriptor_does_not_reach_the_command(tmp_path, root):
    secret = tmp_path / "secret"
    secret.write_text("host secret")
    fd = os.open(secret, os.O_RDONLY)
    # minicontainer gets the host file as its descriptor 3, as if its caller leaked it.
    leak = {"pass_fds": (3,), "preexec_fn": lambda: os.dup2(fd, 3)}
    try:
        args = ("run", "--root", root)
        assert cli(*args, "/bin/probe", "readfd", 3, **leak).stdout == b"error: Bad file descriptor\n"
        assert cli(*args, "/bin/probe", "fds", **leak).stdout == b"0\n1\n2\n"
        kept = cli(*args, "--preserve-fds", 1, "/bin/probe", "readfd", 3, **leak)
        assert kept.stdout == b"host secret"
    finally:
        os.close(fd)


def test_preserve_fds_refuses_a_closed_descriptor(root):
    result = cli("run", "--root", root, "--preserve-fds", 40, "/bin/probe", "pid")
    assert result.returncode == 125
    assert result.stderr == b"minicontainer: --preserve-fds 40: descriptor 3 is not open\n"


@pytest.mark.parametrize("path", ["/proc/timer_list", "/proc/interrupts"])
def test_masked_paths_read_empty(run, probe, path):
    assert host(probe, "cat", path).stdout
    assert run("/bin/probe", "cat", path).stdout == b""
    assert run("--security-opt", "systempaths=unconfined", "/bin/probe", "cat", path).stdout


def test_proc_sys_is_read_only(run):
    target = "/proc/sys/kernel/hostname"
    denied = run("/bin/probe", "write", target, "changed")
    assert denied.stdout == b"error: Read-only file system\n"
    # Control: unmasked, the same write works (and changes only the container's UTS name).
    relaxed = run("--security-opt", "systempaths=unconfined", "/bin/busybox", "sh", "-c",
                  f"/bin/probe write {target} changed && /bin/probe hostname")
    assert relaxed.stdout == b"ok\nchanged\n"
    assert os.uname().nodename != "changed"


def test_unknown_security_opt_is_refused(run):
    result = run("--security-opt", "apparmor=x", "/bin/probe", "pid")
    assert result.returncode == 125 and b"unknown option" in result.stderr


def test_dev_holds_only_the_safe_devices(run, probe):
    assert host(probe, "exists", "/dev/vda").returncode == 0 or host(probe, "exists", "/dev/sda").returncode == 0
    listing = run("/bin/probe", "ls", "/dev").stdout.decode().split()
    assert sorted(listing) == sorted(["fd", "full", "null", "ptmx", "pts", "random", "shm",
                                      "stderr", "stdin", "stdout", "tty", "urandom", "zero"])
    script = "echo x > /dev/null && head -c 4 /dev/urandom | wc -c && ls /dev/pts"
    assert run("/bin/busybox", "sh", "-c", script).stdout == b"4\nptmx\n"


def test_device_node_planted_in_the_root_cannot_be_opened(root, run, probe):
    planted = root / "tmp" / "planted-null"
    os.mknod(planted, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    assert host(probe, "cat", planted).returncode == 0  # usable on the host
    assert run("/bin/probe", "cat", "/tmp/planted-null").stdout == \
        b"/tmp/planted-null: Permission denied\n" or \
        run("/bin/probe", "cat", "/tmp/planted-null").returncode == 1


def test_root_and_sys_are_mounted_safely(run):
    mounts = {line.split()[4]: line.split()[5].split(",")
              for line in run("/bin/probe", "cat", "/proc/self/mountinfo").stdout.decode().splitlines()}
    assert {"nosuid", "nodev"} <= set(mounts["/"])
    assert "ro" in mounts["/sys"]
    assert {"nosuid", "nodev", "noexec"} <= set(mounts["/proc"])


def test_only_loopback_is_visible_and_up(run, probe):
    assert set(host(probe, "ls", "/sys/class/net").stdout.split()) > {b"lo"}
    assert run("/bin/probe", "ls", "/sys/class/net").stdout == b"lo\n"
    assert run("/bin/probe", "cat", "/sys/class/net/lo/flags").stdout == b"0x9\n"  # UP|LOOPBACK


@pytest.fixture
def tcp_service():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    yield server.getsockname()[1]
    server.close()


def test_host_loopback_service_is_unreachable(run, probe, tcp_service):
    assert host(probe, "connect", "127.0.0.1", tcp_service).stdout == b"connected\n"
    assert run("/bin/probe", "connect", "127.0.0.1", tcp_service).stdout == \
        b"error: Connection refused\n"
    assert run("--network", "host", "/bin/probe", "connect", "127.0.0.1", tcp_service).stdout == \
        b"connected\n"


def test_abstract_unix_socket_is_unreachable(run, probe):
    name = f"mc-test-{uuid.uuid4().hex}"
    server = socket.socket(socket.AF_UNIX)
    server.bind("\0" + name)
    server.listen(8)
    try:
        assert host(probe, "unix", name).stdout == b"connected\n"
        assert run("/bin/probe", "unix", name).stdout == b"error: Connection refused\n"
        assert run("--network", "host", "/bin/probe", "unix", name).stdout == b"connected\n"
    finally:
        server.close()


def namespace_ids(run, *options):
    script = "; ".join(f"busybox readlink /proc/self/ns/{ns}" for ns in NAMESPACES)
    return run(*options, "/bin/busybox", "sh", "-c", script).stdout.decode().split()


def test_every_namespace_is_the_containers_own(run):
    hosts = [os.readlink(f"/proc/self/ns/{ns}") for ns in NAMESPACES]
    inside = namespace_ids(run)
    assert len(inside) == len(NAMESPACES)
    assert all(a != b for a, b in zip(hosts, inside))


def test_namespaces_can_be_shared_with_the_host(run):
    hosts = dict(zip(NAMESPACES, (os.readlink(f"/proc/self/ns/{ns}") for ns in NAMESPACES)))
    inside = dict(zip(NAMESPACES, namespace_ids(run, *RELAX_ALL)))
    for ns in ("uts", "ipc", "net", "cgroup"):
        assert inside[ns] == hosts[ns]
    assert inside["pid"] != hosts["pid"] and inside["mnt"] != hosts["mnt"]


def test_hostname_is_stable_and_settable(run):
    assert run("/bin/probe", "hostname").stdout == b"minicontainer\n"
    assert run("--hostname", "web-1", "/bin/probe", "hostname").stdout == b"web-1\n"
    assert b"HOSTNAME=web-1\n" in run("--hostname", "web-1", "/bin/probe", "env").stdout
    assert run("--uts", "host", "/bin/probe", "hostname").stdout.decode().strip() == os.uname().nodename


@pytest.mark.parametrize("bad", ["-bad", "a_b", "x" * 65, "a..b", ""])
def test_bad_hostname_is_refused(run, bad):
    result = run("--hostname", bad, "/bin/probe", "hostname")
    assert result.returncode == 125 and b"not a valid hostname" in result.stderr


def test_hostname_with_shared_uts_is_refused(run):
    result = run("--uts", "host", "--hostname", "x", "/bin/probe", "hostname")
    assert result.returncode == 125 and result.stderr.count(b"\n") == 1


@pytest.mark.parametrize("init", [False, True])
def test_command_clearing_its_parent_death_signal_still_dies_with_minicontainer(root, start, init):
    c = start(root, *(["--init"] if init else []), "/bin/probe", "nopdeath")
    # Without --init the command had minicontainer's SIGKILL and really cleared it.
    expected = b"pdeathsig 0 -> 0\n" if init else b"pdeathsig 9 -> 0\n"
    assert c.proc.stdout.readline() == expected
    c.wait_ready()
    assert container_pids(root)
    c.proc.kill()
    c.proc.wait()
    assert wait_for(lambda: not container_pids(root), 1.0)


def test_init_is_pid_1_and_the_command_pid_2(run):
    assert run("--init", "/bin/probe", "pid").stdout == b"pid 2 ppid 1\n"


def test_init_reaps_orphans(run):
    # Control: a command that is PID 1 itself and never waits leaves the zombie.
    assert run("/bin/probe", "orphan").stdout == b"zombies 1\n"
    assert run("--init", "/bin/probe", "orphan").stdout == b"zombies 0\n"


@pytest.mark.parametrize("args, code", [
    (("exit", "7"), 7), (("sleep", "30"), 143), (("trap", "15"), 1)])
def test_init_passes_signals_and_status_through(root, start, args, code):
    c = start(root, "--init", "/bin/probe", *args)
    if args[0] != "exit":
        c.wait_ready()
        c.proc.terminate()
    assert c.wait()[0] == code


def test_init_reports_a_missing_command(run):
    result = run("--init", "nosuchcommand")
    assert result.returncode == 127 and b"not found in the container" in result.stderr


@pytest.mark.parametrize("init", [False, True])
def test_killing_the_holder_kills_the_container(root, start, init):
    """Even a command that cleared its parent-death signal dies with any of
    minicontainer's processes: here the namespace holder is the one killed."""
    c = start(root, *(["--init"] if init else []), "/bin/probe", "nopdeath")
    c.proc.stdout.readline()
    c.wait_ready()
    holder = parent_of(c.pid1())
    os.kill(holder, 9)
    assert wait_for(lambda: not container_pids(root), 1.0)
    assert c.wait()[0] == 137


def test_container_cannot_signal_minicontainers_process_group(run, probe):
    """Process groups span PID namespaces; the container has a session of its own."""
    # Control: on the host, kill(0) reaches the other members of the group.
    shell = subprocess.run(["setsid", "sh", "-c", f"sleep 5 & {probe} killgroup 9; wait"],
                           capture_output=True)
    assert shell.returncode == -9
    result = run("/bin/probe", "killgroup", 9)
    assert (result.returncode, result.stdout) == (0, b"alive\n")
    # Under --init the probe is PID 2 and dies of its own SIGKILL; minicontainer
    # lives to report it (a killed minicontainer would show as -9 here).
    assert run("--init", "/bin/probe", "killgroup", 9).returncode == 137


def test_the_holder_keeps_the_hosts_root(root, start):
    """pivot_root moves every process of a mount namespace: the holder (host
    privileges, host descriptors) must not be moved into the container's root,
    where /proc and any module it imports are the container's."""
    c = start(root, "/bin/probe", "sleep", 30)
    c.wait_ready()
    pid1 = c.pid1()
    holder = parent_of(pid1)
    assert os.stat(f"/proc/{holder}/root") == os.stat("/")
    assert os.readlink(f"/proc/{holder}/root") == "/"
    # Control: PID 1, forked by the holder, is in the root.
    assert os.stat(f"/proc/{pid1}/root") == os.stat(root)
    assert os.readlink(f"/proc/{holder}/ns/mnt") != os.readlink(f"/proc/{pid1}/ns/mnt")
