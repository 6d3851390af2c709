"""A hostile container against the processes minicontainer puts in its sight.

runc's CVE-2016-9962 and CVE-2019-5736 came from a process of the runtime's
that joined the container while still dumpable: the container's root read
its environment and memory, opened its /proc/PID/exe (the runtime's own
binary) and ptraced it before its execve. Here a static attacker runs in the
container (or, for a created one, in a container whose PID namespace it
joins) and, over and over, for every pid it sees: reads /proc/PID/environ,
cmdline, mountinfo and net/unix looking for the host's markers, resolves and
opens /proc/PID/exe, and tries PTRACE_SEIZE (then stops the process and
reads its exe, so each seize says what it caught). Each test has its
control: the same attacker does read and seize a process that is the
container's own (the exec'd program after its execve, a sleep the container
starts), so none can pass because the attacker saw nothing.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from helpers import CLI, REPO, build_static, cli, remove_state, wait_for

ATTACKER_C = r"""
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* attacker MODE SECONDS MARKER...
 * Each MARKER is given reversed.
 * MODE release: a process seized is stopped, its exe read, then let go.
 * MODE hold: a process seized whose exe is /bin/probe is kept, never waited
 * for (its exit status stays held), and never let go.
 * MODE stop: every new process but PID 1 gets SIGSTOP, and nothing more.
 * Lines: "found FILE PID MARKER", "cmdline PID TEXT", "exe PID TARGET",
 * "exe-open PID", "seized PID EXE" (read while it is stopped: what was
 * caught) or "seized PID (it ended)", "comm PID NAME". */

#define SLOTS 65536
static unsigned long last_cmdline[SLOTS], last_exe[SLOTS];
static char seized[SLOTS], comm_said[SLOTS];

static unsigned long hash(const char *s, size_t n) {
    unsigned long h = 5381;
    for (size_t i = 0; i < n; i++) h = h * 33 + (unsigned char)s[i];
    return h + n;
}

static ssize_t slurp(const char *path, char *buf, size_t size) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    size_t n = 0;
    ssize_t r;
    while (n < size - 1 && (r = read(fd, buf + n, size - 1 - n)) > 0) n += r;
    close(fd);
    buf[n] = 0;
    return n;
}

static int contains(const char *buf, size_t n, const char *needle) {
    size_t k = strlen(needle);
    for (size_t i = 0; i + k <= n; i++)
        if (!memcmp(buf + i, needle, k)) return 1;
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc < 3) return 2;
    int hold = !strcmp(argv[1], "hold"), stop = !strcmp(argv[1], "stop");
    /* The markers come reversed, so that they show in no command line. */
    for (int m = 3; m < argc; m++) {
        size_t k = strlen(argv[m]);
        for (size_t i = 0; i < k / 2; i++) {
            char c = argv[m][i]; argv[m][i] = argv[m][k - 1 - i]; argv[m][k - 1 - i] = c;
        }
    }
    double seconds = atof(argv[2]);
    static char buf[1 << 20];
    char path[128], target[4096];
    pid_t self = getpid();
    struct timespec start, now, nap = {0, 200000};
    clock_gettime(CLOCK_MONOTONIC, &start);
    printf("ready\n");
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec - start.tv_sec + (now.tv_nsec - start.tv_nsec) / 1e9 > seconds) break;
        DIR *d = opendir("/proc");
        if (!d) return 1;
        struct dirent *e;
        while ((e = readdir(d))) {
            pid_t pid = atoi(e->d_name);
            if (pid <= 0 || pid == self) continue;
            int slot = pid % SLOTS;
            ssize_t n;
            snprintf(path, sizeof path, "/proc/%d/comm", pid);
            if (!comm_said[slot] && (n = slurp(path, buf, sizeof buf)) > 0) {
                comm_said[slot] = 1;
                printf("comm %d %s", pid, buf);
                if (stop && pid != 1) {
                    kill(pid, SIGSTOP);
                    printf("stopped %d\n", pid);
                }
            }
            if (stop) continue;
            const char *files[] = {"environ", "cmdline", "mountinfo", "net/unix"};
            for (int f = 0; f < 4; f++) {
                snprintf(path, sizeof path, "/proc/%d/%s", pid, files[f]);
                if ((n = slurp(path, buf, sizeof buf)) <= 0) continue;
                for (int m = 3; m < argc; m++)
                    if (contains(buf, n, argv[m])) printf("found %s %d %s\n", files[f], pid, argv[m]);
                if (f == 1) {
                    unsigned long h = hash(buf, n);
                    if (h != last_cmdline[slot]) {
                        last_cmdline[slot] = h;
                        for (ssize_t i = 0; i < n; i++) if (!buf[i]) buf[i] = ' ';
                        printf("cmdline %d %s\n", pid, buf);
                    }
                }
            }
            snprintf(path, sizeof path, "/proc/%d/exe", pid);
            n = readlink(path, target, sizeof target - 1);
            if (n > 0) {
                target[n] = 0;
                unsigned long h = hash(target, n);
                if (h != last_exe[slot]) {
                    last_exe[slot] = h;
                    printf("exe %d %s\n", pid, target);
                    int fd = open(path, O_RDONLY | O_CLOEXEC);
                    if (fd >= 0) { printf("exe-open %d\n", pid); close(fd); }
                }
            }
            if (!seized[slot] && ptrace(PTRACE_SEIZE, pid, 0, 0) == 0) {
                int status = 0;
                ptrace(PTRACE_INTERRUPT, pid, 0, 0);
                if (waitpid(pid, &status, __WALL) != pid || !WIFSTOPPED(status)) {
                    printf("seized %d (it ended)\n", pid);  /* caught as it exited */
                    seized[slot] = 1;
                    continue;
                }
                n = readlink(path, target, sizeof target - 1);
                target[n > 0 ? n : 0] = 0;
                printf("seized %d %s\n", pid, target);
                if (hold && !strcmp(target, "/bin/probe")) {
                    seized[slot] = 1;
                    ptrace(PTRACE_CONT, pid, 0, 0);  /* runs on, traced; never waited for */
                } else {
                    seized[slot] = strcmp(target, "/bin/probe") == 0 ? 1 : 0;
                    ptrace(PTRACE_DETACH, pid, 0, 0);
                }
            }
        }
        closedir(d);
        nanosleep(&nap, NULL);
    }
    printf("done\n");
    return 0;
}
"""

SECRET = "mc-host-secret-4f1c"  # in the exec caller's environment only
VISIBLE = "mc-container-visible-93ab"  # given to the container's own processes


@pytest.fixture(scope="module")
def attacker(tmp_path_factory):
    source = tmp_path_factory.mktemp("attacker") / "attacker.c"
    source.write_text(ATTACKER_C)
    return build_static(source, source.with_name("attacker"))


@pytest.fixture
def hostile_root(root, attacker):
    shutil.copy(attacker, root / "bin" / "attacker")
    return root


@pytest.fixture
def host_socket(tmp_path):
    """A Unix socket bound on the host: its path shows in the host's
    /proc/net/unix, so a process seen inside while still in the host's
    network namespace gives it away."""
    path = tmp_path / "mc-host-socket-7d2e"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen()
    yield path.name
    sock.close()


def host_only_mount():
    """A mount point of the host's that no container here has: seen in a
    process's mountinfo, that process was still in the host's mount namespace."""
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    for point in points:
        if point.count("/") >= 2 and not point.startswith(("/proc", "/sys", "/dev")):
            return f" {point} "
    pytest.skip("the host has no mount point a container lacks")


def host_paths():
    """What of the host a process in the container must never show: the
    interpreter minicontainer runs on and the module's own path."""
    return [os.path.realpath(sys.executable), sys.executable, str(REPO / "minicontainer.py")]


def reverse(marker):
    return marker[::-1]


def logged(name):
    out = cli("logs", name)
    return out.stdout.decode(errors="replace").splitlines()


def start_attacker(root, name, mode, seconds, markers, *options, command=None, env=None):
    """A `run -d` container whose command is the attacker (or `command`, which
    ends by exec'ing it); returns once it scans."""
    argv = command or ["/bin/attacker", mode, str(seconds), *map(reverse, markers)]
    started = cli("run", "--root", root, "-d", "--name", name, *options, *argv, env=env)
    assert started.returncode == 0, started.stderr
    assert wait_for(lambda: "ready" in logged(name), 10), logged(name)


def stop_attacker(name):
    assert wait_for(lambda: "done" in logged(name), 60), logged(name)[-5:]
    return logged(name)


def assert_nothing_of_the_host(lines):
    """No marker of the host's found, no host path in a cmdline or an exe,
    no exe of the host's opened, no process seized before its execve."""
    found = [l for l in lines if l.startswith("found ") and VISIBLE not in l]
    assert not found, found
    leaks = [l for l in lines if l.startswith(("cmdline ", "exe ", "seized "))
             and any(p in l for p in host_paths())]
    assert not leaks, leaks
    pids_of_host_exe = {l.split()[1] for l in lines if l.startswith("exe ")
                        and not l.split(maxsplit=2)[2].startswith("/bin/")}
    opened = [l for l in lines if l.startswith("exe-open ") and l.split()[1] in pids_of_host_exe]
    assert not opened, opened
    seized = [l for l in lines if l.startswith("seized ") and not l.endswith("(it ended)")
              and not (l.split(maxsplit=2)[2:] or [""])[0].startswith("/bin/")]
    assert not seized, seized


def test_exec_is_out_of_the_containers_reach_until_its_execve(hostile_root, host_socket):
    """`MARKER=... exec NAME ...` several times beside the attacker: the
    caller's environment, the host's Python (/proc/PID/exe), its command line,
    the host's mounts and sockets are never seen, and no exec'd process is
    seized before its execve. Controls: the attacker does see the exec'd
    processes before their execve (their comm is the host interpreter's or
    minicontainer's, never the command's), and after it reads their
    environment and seizes them."""
    mount = host_only_mount()
    start_attacker(hostile_root, "victim", "release", 25,
                   [SECRET, host_socket, mount, VISIBLE])
    env = dict(os.environ, MARKER=SECRET)
    for i in range(8):
        result = cli("exec", "victim", "/bin/probe", "exit", "0", env=env)
        assert result.returncode == 0, result.stderr
    slow = cli("exec", "-e", f"SHOWN={VISIBLE}", "victim", "/bin/probe", "sleep", "1", env=env)
    assert slow.returncode == 0, slow.stderr
    lines = stop_attacker("victim")
    cli("rm", "-f", "victim")
    assert_nothing_of_the_host(lines)
    # Controls: exec'd processes were caught before their execve ...
    interpreter = os.path.basename(os.path.realpath(sys.executable))[:15]
    early = [l for l in lines if l.startswith("comm ") and l.split()[2] in (interpreter, "minicontainer")]
    assert len(early) >= 2, lines
    # ... and after it, the container's own process is read and seized.
    assert any(l.startswith("found environ") and VISIBLE in l for l in lines), lines
    assert any(l.startswith("seized ") and l.endswith(" /bin/probe") for l in lines), lines
    assert any(l.startswith("exe ") and l.endswith(" /bin/probe") for l in lines), lines


def test_a_tracer_that_never_reaps_does_not_hang_exec(hostile_root):
    """The attacker seizes the exec'd program after its execve and never waits
    for it, so its exit status is never given back: exec still ends when its
    process has ended and the caller signals it (today it hung for ever), with
    the process's own status. Control: the process was seized."""
    start_attacker(hostile_root, "holder", "hold", 30, [])
    proc = subprocess.Popen([*CLI, "exec", "holder", "/bin/probe", "sleep", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"ready\n", proc.stderr.read()
        assert wait_for(lambda: any(l.startswith("seized ") and l.endswith(" /bin/probe")
                                    for l in logged("holder")), 10), logged("holder")
        time.sleep(1.5)  # the sleep is over: its status is held by the tracer
        proc.send_signal(signal.SIGTERM)
        began = time.monotonic()
        code = proc.wait(timeout=30)
        assert time.monotonic() - began < 5
        assert code == 0, proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
        cli("rm", "-f", "holder")


def test_a_tracer_that_holds_exec_s_process_stopped_does_not_hang_exec(hostile_root):
    """The attacker holds the exec'd program, and a SIGTERM forwarded to it only
    stops it for the tracer: after the container's --stop-timeout exec kills it
    and ends with 137, as a stop would, though no one reaps it (today it hung
    for ever)."""
    start_attacker(hostile_root, "stopper", "hold", 30, [], "--stop-timeout", "1")
    proc = subprocess.Popen([*CLI, "exec", "stopper", "/bin/probe", "sleep", "60"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"ready\n", proc.stderr.read()
        assert wait_for(lambda: any(l.startswith("seized ") and l.endswith(" /bin/probe")
                                    for l in logged("stopper")), 10), logged("stopper")
        proc.send_signal(signal.SIGTERM)
        began = time.monotonic()
        code = proc.wait(timeout=30)
        assert time.monotonic() - began < 6
        assert code == 137, proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
        cli("rm", "-f", "stopper")


def child_of(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return int(f.read().split()[0])
    except (OSError, IndexError):
        return None


def ended(pid):
    """Gone, or a zombie: it runs no more."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X")
    except OSError:
        return True


def test_sigkill_of_exec_ends_a_process_a_tracer_holds(hostile_root):
    """SIGKILL to exec (which no one can hold) takes its process with it,
    though a tracer holds that process. Control: it runs until then."""
    start_attacker(hostile_root, "killed", "hold", 30, [])
    proc = subprocess.Popen([*CLI, "exec", "killed", "/bin/probe", "sleep", "60"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"ready\n", proc.stderr.read()
        assert wait_for(lambda: any(l.startswith("seized ") and l.endswith(" /bin/probe")
                                    for l in logged("killed")), 10), logged("killed")
        process = wait_for(lambda: (way_in := child_of(proc.pid)) and child_of(way_in), 5)
        assert process and not ended(process)
        proc.kill()
        assert proc.wait(timeout=5) == -signal.SIGKILL
        assert wait_for(lambda: ended(process), 5)
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
        cli("rm", "-f", "killed")


def test_a_process_the_container_stops_before_its_execve_does_not_hang_exec(hostile_root):
    """The container's root may signal exec's process as soon as it sees it:
    the attacker SIGSTOPs every new process, so exec's never runs its command.
    A SIGTERM to exec still ends it within a few seconds, and its process
    with it (today exec waited for the process's word, deaf to signals, for
    ever). Control: the process was stopped before its execve."""
    start_attacker(hostile_root, "freezer", "stop", 30, [])
    proc = subprocess.Popen([*CLI, "exec", "freezer", "/bin/probe", "sleep", "30"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert wait_for(lambda: any(l.startswith("stopped ") for l in logged("freezer")), 10), \
            logged("freezer")
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        began = time.monotonic()
        code = proc.wait(timeout=30)
        assert time.monotonic() - began < 5
        assert code == 128 + signal.SIGKILL
        assert proc.stdout.read() == b""  # the command never ran
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
        lines = logged("freezer")
        cli("rm", "-f", "freezer")
    stopped = {l.split()[1] for l in lines if l.startswith("stopped ")}
    interpreter = os.path.basename(os.path.realpath(sys.executable))[:15]
    assert any(l.split()[1] in stopped and l.split()[2] in (interpreter, "minicontainer")
               for l in lines if l.startswith("comm ")), lines


def test_the_init_is_out_of_the_containers_reach(hostile_root):
    """--init: PID 1 stays minicontainer's Python for the container's whole
    life. The command beside it never reads its environment, exe or command
    line (no host path in /proc/1/cmdline), nor seizes it. Control: a sleep
    the container starts, with its own variable, is read and seized."""
    start_attacker(hostile_root, "inited", "release", 4, [], "--init", command=[
        "/bin/busybox", "sh", "-c",
        f"/bin/busybox env SHOWN={VISIBLE} /bin/busybox sleep 30 & "
        f"exec /bin/attacker release 4 {reverse(SECRET)} {reverse(VISIBLE)}"], env=dict(os.environ, MARKER=SECRET))
    lines = stop_attacker("inited")
    cli("rm", "-f", "inited")
    one = [l for l in lines if l.split()[1:2] == ["1"]]
    assert any(l.startswith("cmdline 1 ") for l in one), lines  # it was looked at
    assert_nothing_of_the_host(lines)
    assert not any(l.startswith(("exe 1 ", "seized 1 ", "found environ 1 ")) for l in one), one
    assert any(l.startswith("found environ") and VISIBLE in l for l in lines), lines
    assert any(l.startswith("seized ") and l.endswith("/bin/busybox") for l in lines), lines


def test_a_created_container_waiting_for_start_is_out_of_reach(hostile_root, tmp_path):
    """OCI create leaves PID 1 (minicontainer's Python) waiting on its exec
    FIFO. A bundle that joins another container's PID namespace by path puts
    it in sight of that container: the attacker there never reads it or
    seizes it, before or after `start`. Control: after `start`, the program
    is read and seized."""
    start_attacker(hostile_root, "pidns", "release", 15, [SECRET, VISIBLE])
    pid1 = json.loads(cli("inspect", "pidns").stdout)[0]["State"]["Pid"]
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    made = subprocess.run([*CLI, "spec"], cwd=bundle, capture_output=True)
    assert made.returncode == 0, made.stderr
    config = json.loads((bundle / "config.json").read_text())
    config["root"] = {"path": str(hostile_root), "readonly": True}
    config["process"]["args"] = ["/bin/probe", "sleep", "2"]
    config["process"]["env"] = [f"SHOWN={VISIBLE}"]
    config["process"]["terminal"] = False
    namespaces = [ns for ns in config["linux"]["namespaces"] if ns["type"] != "pid"]
    config["linux"]["namespaces"] = namespaces + [{"type": "pid", "path": f"/proc/{pid1}/ns/pid"}]
    (bundle / "config.json").write_text(json.dumps(config))
    env = dict(os.environ, MARKER=SECRET)
    output = tmp_path / "created.out"  # PID 1 keeps create's stdio, as an engine's
    with open(output, "wb") as out:
        created = subprocess.run([*CLI, "create", "--bundle", bundle, "waiting"], env=env,
                                 stdout=out, stderr=out, timeout=60, stdin=subprocess.DEVNULL)
    try:
        assert created.returncode == 0, output.read_text()
        time.sleep(3)  # the attacker looks at it, waiting on its FIFO
        assert cli("start", "waiting").returncode == 0
        lines = stop_attacker("pidns")
    finally:
        cli("delete", "--force", "waiting")
        cli("rm", "-f", "pidns")
    assert_nothing_of_the_host(lines)
    interpreter = os.path.basename(os.path.realpath(sys.executable))[:15]
    assert any(l.startswith("comm ") and l.split()[2] in (interpreter, "minicontainer")
               for l in lines), lines
    assert any(l.startswith("found environ") and VISIBLE in l for l in lines), lines
    assert any(l.startswith("seized ") and l.endswith(" /bin/probe") for l in lines), lines



ATTACK_USER = "mc-exec-attack"


@pytest.fixture(scope="module")
def user(probe, busybox, attacker):
    """An ordinary user of this test's own, set up as test_rootless's is (its
    helpers, loaded by path; a user and a fixture of their own, so the two
    modules never share or delete each other's), with a root holding the
    probe, busybox and the attacker."""
    import importlib.util
    import pwd
    import tempfile
    from pathlib import Path
    loaded = importlib.util.spec_from_file_location(
        "rootless_helpers", Path(__file__).with_name("test_rootless.py"))
    rootless = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(rootless)
    rootless.USER = ATTACK_USER
    subprocess.run(["userdel", ATTACK_USER], capture_output=True)  # a killed session's
    subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", ATTACK_USER],
                   check=True)
    # A killed session's state for a user of this uid: its containers' names are not ours.
    remove_state(f"/tmp/minicontainer-{pwd.getpwnam(ATTACK_USER).pw_uid}")
    base = Path(tempfile.mkdtemp(prefix="minicontainer-exec-attack-"))
    made = None
    try:
        base.chmod(0o755)
        entry = pwd.getpwnam(ATTACK_USER)
        python, python_env = rootless.python_for(entry.pw_uid, entry.pw_gid, base)
        if python is None:
            pytest.skip(f"no Python that {ATTACK_USER} may run")
        rootless.copy_tool(base, probe, busybox)
        for path in base.rglob("*"):
            path.chmod(path.stat().st_mode | 0o444 | (0o111 if path.is_dir() else 0))
        made = rootless.User(base, python, python_env)
        made.work = base / "work"
        made.work.mkdir()
        os.chown(made.work, made.uid, made.gid)
        made.work.chmod(0o700)
        deployed = made.run("deploy", base / "probe", base / "busybox")
        assert deployed.returncode == 0, deployed.stderr
        target = made.work / "newroot" / "bin" / "attacker"
        shutil.copy(attacker, target)
        os.chown(target, made.uid, made.gid)
        yield made
    finally:
        if made is not None:
            for pid in made.live_processes():
                os.kill(pid, signal.SIGKILL)
        remove_state(f"/tmp/minicontainer-{pwd.getpwnam(ATTACK_USER).pw_uid}")
        shutil.rmtree(base, ignore_errors=True)
        subprocess.run(["userdel", ATTACK_USER], check=True)


def test_a_users_exec_is_out_of_its_containers_reach(user, host_socket):
    """Rootless: the same attack from a user's container, whose root is the
    user: the exec'd process, the user's own, is still never read or seized
    before its execve (non-dumpable: its /proc files become the host root's).
    Controls as for root's."""
    markers = [reverse(m) for m in (SECRET, host_socket, VISIBLE)]
    started = user.run("run", "-d", "--name", "ua", "/bin/attacker", "release", "20", *markers)
    assert started.returncode == 0, started.stderr

    def log():
        return user.run("logs", "ua").stdout.decode(errors="replace").splitlines()
    assert wait_for(lambda: "ready" in log(), 10), log()
    env = dict(user.env(), MARKER=SECRET)
    for _ in range(6):
        result = user.run("exec", "ua", "/bin/probe", "exit", "0", env=env)
        assert result.returncode == 0, result.stderr
    shown = user.run("exec", "-e", f"SHOWN={VISIBLE}", "ua", "/bin/probe", "sleep", "1", env=env)
    assert shown.returncode == 0, shown.stderr
    assert wait_for(lambda: "done" in log(), 40), log()[-5:]
    lines = log()
    assert user.run("rm", "-f", "ua").returncode == 0
    leaks = [l for l in lines if l.startswith(("cmdline ", "exe ", "seized "))
             and (str(user.base) in l or user.python in l)]
    assert not leaks, leaks
    assert_nothing_of_the_host(lines)
    interpreter = os.path.basename(os.path.realpath(user.python))[:15]
    assert any(l.startswith("comm ") and l.split()[2] in (interpreter, "minicontainer")
               for l in lines), lines
    assert any(l.startswith("found environ") and VISIBLE in l for l in lines), lines
    assert any(l.startswith("seized ") and l.endswith(" /bin/probe") for l in lines), lines


def test_exec_keeps_its_bounding_set_when_the_container_mounts_over_cap_last_cap(root):
    """exec read the kernel's last capability from the container's /proc after
    joining its mount namespace: a container that mounted a 0 over
    /proc/sys/kernel/cap_last_cap got exec'd processes with every capability
    above 0 in their bounding set (an outside attacker's finding). Control:
    the mount took effect inside, and a container without it gives the same set."""
    script = ("echo 0 > /tmp/zero; /bin/busybox mount --bind /tmp/zero /proc/sys/kernel/cap_last_cap"
              " && echo mounted; exec /bin/busybox sleep 60")
    sets = {}
    for name, command in (("capmount", script), ("capplain", "echo mounted; exec /bin/busybox sleep 60")):
        started = cli("run", "--root", root, "-d", "--name", name, "--cap-add", "SYS_ADMIN",
                      "/bin/busybox", "sh", "-c", command)
        assert started.returncode == 0, started.stderr
        try:
            assert wait_for(lambda: b"mounted" in cli("logs", name).stdout, 10), cli("logs", name)
            seen = cli("exec", name, "/bin/busybox", "cat", "/proc/sys/kernel/cap_last_cap")
            assert seen.returncode == 0, seen.stderr
            sets[name] = (seen.stdout, cli("exec", name, "/bin/busybox", "grep", "Cap", "/proc/self/status").stdout)
        finally:
            cli("rm", "-f", name)
    assert sets["capmount"][0] == b"0\n" and sets["capplain"][0] != b"0\n"  # the mount took effect
    assert sets["capmount"][1] == sets["capplain"][1]
    assert b"CapBnd:\t00000000802405fb\n" in sets["capmount"][1]  # podman's set and SYS_ADMIN
