"""Containers that outlive the command line: run -d, ps, logs, exec, stop,
kill, wait, rm, inspect, for real, with the faults a service meets."""
import json
import os
import re
import signal
import subprocess
import time

import pytest

from helpers import CLI, cli, container_cgroups, inspect, network_leftovers, wait_for


def detach(root, *args):
    """run -d; the id it printed."""
    result = cli("run", "--root", root, "-d", *args)
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(rb"[0-9a-f]{64}\n", result.stdout), result.stdout
    return result.stdout.decode().strip()


def state(state_dir, id):
    return json.loads((state_dir / id / "state.json").read_text())


def test_run_d_returns_once_the_command_runs(root, state_dir):
    started = time.monotonic()
    id = detach(root, "--name", "svc", "/bin/busybox", "sh", "-c", "echo up; sleep 30")
    assert time.monotonic() - started < 5  # it does not wait for the command to end
    info = inspect("svc")
    assert info["State"]["Status"] == "running" and info["State"]["Running"]
    pid = info["State"]["Pid"]
    with open(f"/proc/{pid}/status") as f:  # the host pid of the container's PID 1
        assert next(l for l in f if l.startswith("NSpid:")).split()[-1] == "1"
    # It left the caller's session: neither the CLI's session nor its process group.
    monitor = state(state_dir, id)["monitor"][0]
    assert os.getsid(monitor) == monitor and os.getsid(monitor) != os.getsid(0)
    assert all(os.readlink(f"/proc/{monitor}/fd/{fd}") == "/dev/null" for fd in (0, 1, 2))
    assert cli("rm", "-f", "svc").stdout == b"svc\n"
    assert cli("ps", "-a", "-q").stdout == b""


@pytest.mark.parametrize("args, code, message", [
    (("/bin/not-here",), 127, b"not found in the container"),
    (("/bin",), 126, b"is a directory"),
    (("--memory", "1k", "/bin/probe", "pid"), 125, b"below the 6m minimum"),
])
def test_run_d_that_cannot_start_says_why_and_leaves_nothing(root, args, code, message):
    result = cli("run", "--root", root, "-d", *args)
    assert result.returncode == code and message in result.stderr and result.stdout == b""
    assert cli("ps", "-a", "--format", "json").stdout == b"[]\n"


def test_ps_shows_running_and_with_a_all(root):
    up = detach(root, "--name", "up", "/bin/probe", "sleep", 30)
    done = detach(root, "--name", "done", "/bin/probe", "exit", 3)
    assert cli("wait", "done").stdout == b"3\n"
    assert cli("ps", "-q").stdout == up[:12].encode() + b"\n"
    table = cli("ps", "-a").stdout.decode().splitlines()
    assert table[0].split() == ["CONTAINER", "ID", "ROOT", "COMMAND", "CREATED", "STATUS", "PORTS",
                                "NAMES"]
    rows = {line.split()[-1]: line for line in table[1:]}
    assert re.search(r"   Up (Less than a second|\d+ seconds?)   ", rows["up"])
    assert re.search(r"   Exited \(3\) (Less than a second|\d+ seconds?) ago   ", rows["done"])
    assert rows["done"].startswith(done[:12])
    listed = json.loads(cli("ps", "-a", "--format", "json").stdout)
    assert [(c["Name"], c["Status"], c["ExitCode"]) for c in listed] == [
        ("up", "running", None), ("done", "exited", 3)]
    assert listed[0]["Id"] == up and listed[0]["Pid"] > 0 and listed[0]["Created"]
    assert listed[1]["Command"] == ["/bin/probe", "exit", "3"] and listed[1]["Pid"] == 0
    assert cli("rm", "-f", "up", "done").returncode == 0


def test_logs_keep_stdout_and_stderr_apart(root):
    detach(root, "--name", "chatty", "/bin/busybox", "sh", "-c",
           "for i in 1 2 3 4 5; do echo out $i; echo err $i >&2; done")
    assert cli("wait", "chatty").stdout == b"0\n"
    result = cli("logs", "chatty")
    assert result.stdout == b"".join(b"out %d\n" % i for i in range(1, 6))
    assert result.stderr == b"".join(b"err %d\n" % i for i in range(1, 6))
    tail = cli("logs", "--tail", 2, "chatty")
    assert len(tail.stdout.splitlines()) + len(tail.stderr.splitlines()) == 2
    assert cli("rm", "chatty").returncode == 0


def test_logs_follow_until_the_end(root):
    detach(root, "--name", "slow", "/bin/busybox", "sh", "-c",
           "for i in 1 2 3; do echo tick $i; sleep 0.3; done")
    started = time.monotonic()
    result = cli("logs", "-f", "slow")
    assert result.stdout == b"tick 1\ntick 2\ntick 3\n" and time.monotonic() - started > 0.5
    assert cli("rm", "slow").returncode == 0


def test_the_log_keeps_its_last_part_and_says_so(root):
    """More than 16 MiB of output: the log keeps the last part, and logs says so."""
    detach(root, "--name", "loud", "/bin/busybox", "sh", "-c",
           "busybox seq 1 3000000; echo the end")
    assert cli("wait", "loud").stdout == b"0\n"
    result = cli("logs", "loud")
    assert result.stdout.endswith(b"2999999\n3000000\nthe end\n")
    assert 8 << 20 <= len(result.stdout) <= 16 << 20
    assert result.stderr.startswith(b"minicontainer: logs loud: the log keeps its last 16 MiB")
    assert cli("rm", "loud").returncode == 0


def test_logs_of_a_foreground_container_say_there_is_none(root, run):
    assert run("--name", "fg", "/bin/probe", "exit", 0).returncode == 0
    result = cli("logs", "fg")
    assert result.returncode == 125 and b"it was not started with -d" in result.stderr
    assert cli("rm", "fg").returncode == 0


def host_facts(pid):
    """What the host sees of a process: its namespaces, capabilities, seccomp, cgroups."""
    facts = {ns: os.readlink(f"/proc/{pid}/ns/{ns}") for ns in
             ("mnt", "uts", "ipc", "net", "cgroup", "pid_for_children")}
    with open(f"/proc/{pid}/status") as f:
        status = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    facts.update({k: status[k] for k in ("CapEff", "CapPrm", "CapBnd", "CapInh", "CapAmb",
                                         "NoNewPrivs", "Seccomp", "Seccomp_filters")})
    with open(f"/proc/{pid}/cgroup") as f:
        facts["cgroup"] = f.read()
    facts["root"] = os.stat(f"/proc/{pid}/root")[:2]
    return facts


def exec_child(exec_proc):
    """The host pid of the process an exec started: the child of exec's way
    in, which is the exec CLI's child, in the host's PID namespace."""
    def child_of(pid):
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                return int(f.read().split()[0])
        except (OSError, IndexError):
            return None
    return wait_for(lambda: (way_in := child_of(exec_proc.pid)) and child_of(way_in), 5)


def test_an_exec_d_process_is_a_twin_of_pid_1(root):
    """Seen from the host: the same namespaces, capabilities, no_new_privs,
    seccomp filter, cgroups and root as the container's PID 1."""
    detach(root, "--name", "twin", "-m", "64m", "--pids-limit", 50, "/bin/probe", "sleep", 30)
    pid1 = inspect("twin")["State"]["Pid"]
    proc = subprocess.Popen([*CLI, "exec", "twin", "/bin/probe", "sleep", "30"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"ready\n", proc.stderr.read()
        child = exec_child(proc)
        ours, theirs = host_facts(child), host_facts(pid1)
        assert ours == theirs
        assert "minicontainer-twin" in ours["cgroup"]  # the container's groups, not the caller's
        # Control: a process of the host differs in all of it.
        assert host_facts(os.getpid())["mnt"] != theirs["mnt"]
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert cli("rm", "-f", "twin").returncode == 0


def test_exec_environment_workdir_user_and_exit_codes(root):
    detach(root, "--name", "box", "-e", "FROM_RUN=1", "-w", "/srv", "/bin/probe", "sleep", 30)
    env = cli("exec", "-e", "FROM_EXEC=2", "box", "/bin/probe", "env").stdout.decode().split("\n")
    assert "FROM_RUN=1" in env and "FROM_EXEC=2" in env and "PATH=" + \
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" in env
    assert not any(line.startswith("MINICONTAINER_STATE=") for line in env)  # nothing of the host's
    assert cli("exec", "box", "/bin/probe", "cwd").stdout == b"/srv\n"
    assert cli("exec", "-w", "/tmp", "box", "/bin/probe", "cwd").stdout == b"/tmp\n"
    missing = cli("exec", "-w", "/no/such", "box", "/bin/probe", "cwd")
    assert missing.returncode == 125 and b"--workdir /no/such" in missing.stderr
    assert cli("exec", "-u", "1000:1000", "box", "/bin/probe", "ids").stdout == \
        b"uid 1000 euid 1000 gid 1000 egid 1000 groups\n"
    assert cli("exec", "box", "/bin/probe", "fds").stdout == b"0\n1\n2\n"
    assert cli("exec", "box", "/bin/probe", "exit", 7).returncode == 7
    assert cli("exec", "box", "/bin/not-here").returncode == 127
    assert cli("exec", "box", "/bin").returncode == 126
    assert cli("exec", "box", "/bin/probe", "raise", 15).returncode == 143
    assert cli("exec", "box", "/bin/probe", "pid").stdout.startswith(b"pid ")  # not PID 1
    assert cli("rm", "-f", "box").returncode == 0


def in_pid_namespace_of(pid):
    """The host pids of the processes in the PID namespace of `pid`."""
    ns = os.readlink(f"/proc/{pid}/ns/pid")
    found = []
    for other in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.readlink(f"/proc/{other}/ns/pid") == ns:
                found.append(int(other))
        except OSError:
            continue
    return found


def test_exec_forwards_signals_to_its_process(root):
    """A SIGTERM to `exec` reaches the process it runs, which ends of it (143);
    before, the process ran on. Control: while it sleeps it is there, in the
    container, beside PID 1."""
    detach(root, "--name", "sig", "/bin/probe", "sleep", 60)
    pid1 = inspect("sig")["State"]["Pid"]
    sleeper = subprocess.Popen([*CLI, "exec", "sig", "/bin/probe", "sleep", "60"], stdout=subprocess.PIPE)
    try:
        assert sleeper.stdout.readline() == b"ready\n"
        assert len(in_pid_namespace_of(pid1)) == 2
        sleeper.send_signal(signal.SIGTERM)
        assert sleeper.wait(timeout=10) == 143
        assert wait_for(lambda: in_pid_namespace_of(pid1) == [pid1], 5)
    finally:
        sleeper.kill()
        sleeper.wait()
        sleeper.stdout.close()
        assert cli("rm", "-f", "sig").returncode == 0


def test_exec_cannot_be_led_out_by_a_leaked_descriptor(tmp_path, root):
    """runc's Leaky Vessels lived in exec: a host descriptor open in the exec'd
    process while its -w or command is resolved."""
    host_dir = tmp_path / "host"
    host_dir.mkdir()
    (host_dir / "secret").write_text("host secret")
    (root / "wt").symlink_to(f"/proc/self/fd/3{host_dir}")
    detach(root, "--name", "lv", "/bin/probe", "sleep", 30)
    fd = os.open("/", os.O_PATH)
    leak = {"pass_fds": (3,), "preexec_fn": lambda: os.dup2(fd, 3)}
    try:
        through = cli("exec", "-w", "/wt", "lv", "/bin/probe", "cat", "secret", **leak)
        command = cli("exec", "lv", f"/proc/self/fd/3{host_dir}/../../../bin/true", **leak)
        control = subprocess.run(["cat", root / "wt" / "secret"], capture_output=True, **leak)
    finally:
        os.close(fd)
    assert through.returncode == 125 and b"magic link" in through.stderr
    assert b"host secret" not in through.stdout
    assert command.returncode == 127
    assert control.stdout == b"host secret"  # the link does lead out where fd 3 is the host's /
    assert cli("rm", "-f", "lv").returncode == 0


def test_exec_d_and_exec_t(root):
    detach(root, "--name", "bg", "/bin/busybox", "sh", "-c", "sleep 30")
    assert cli("exec", "-d", "bg", "/bin/busybox", "touch", "/tmp/from-exec-d").returncode == 0
    assert wait_for(lambda: (root / "tmp" / "from-exec-d").exists(), 5)
    master, slave = os.openpty()
    try:
        proc = subprocess.run([*CLI, "exec", "-t", "bg", "/bin/busybox", "tty"], stdin=slave,
                              stdout=slave, stderr=slave, timeout=20)
        assert proc.returncode == 0
        assert b"/dev/pts/0" in os.read(master, 1000)
    finally:
        os.close(master)
        os.close(slave)
    assert cli("rm", "-f", "bg").returncode == 0


def test_stop_kill_wait_and_their_codes(root):
    detach(root, "--name", "plain", "/bin/probe", "sleep", 30)  # PID 1 without handlers
    detach(root, "--name", "trap", "/bin/probe", "trap", 15)    # catches SIGTERM, exits 1
    detach(root, "--name", "deaf", "/bin/probe", "ignore", 15)  # ignores SIGTERM
    started = time.monotonic()
    assert cli("stop", "plain", "trap").stdout == b"plain\ntrap\n"
    assert time.monotonic() - started < 5
    assert cli("stop", "-t", 1, "deaf").stdout == b"deaf\n"  # SIGKILL after 1 s
    assert cli("wait", "plain", "trap", "deaf").stdout == b"143\n1\n137\n"
    assert cli("stop", "plain").returncode == 0  # stopping a stopped one is no error
    detach(root, "--name", "usr", "/bin/probe", "trap", "10")
    assert cli("kill", "-s", "USR1", "usr").stdout == b"usr\n"
    assert cli("wait", "usr").stdout == b"1\n"
    detach(root, "--name", "nine", "/bin/probe", "sleep", 30)
    assert cli("kill", "-s", "9", "nine").returncode == 0
    assert cli("wait", "nine").stdout == b"137\n"
    assert inspect("nine")["State"]["ExitCode"] == 137
    assert cli("rm", "plain", "trap", "deaf", "usr", "nine").returncode == 0


def test_rm_refuses_a_running_container_without_f(root):
    detach(root, "--name", "busy", "/bin/probe", "sleep", 30)
    refused = cli("rm", "busy")
    assert refused.returncode == 125
    assert refused.stderr == b"minicontainer: rm busy: it is running (stop it first, or rm -f)\n"
    assert cli("ps", "-q").stdout != b""
    assert cli("rm", "-f", "busy").returncode == 0
    assert cli("ps", "-a", "-q").stdout == b""


def test_rm_of_a_detached_rm_container_is_automatic(root):
    id = detach(root, "--rm", "--name", "temp", "/bin/busybox", "sh", "-c",
                "echo scratch > /written; sleep 1; exit 5")
    assert cli("wait", id).stdout == b"5\n"  # the exit code, though the entry goes
    assert wait_for(lambda: cli("ps", "-a", "-q").stdout == b"", 5)
    assert not (root / "written").exists()  # --rm's overlay too


def test_inspect_has_the_state_and_the_description(root):
    id = detach(root, "--name", "ins", "--hostname", "h1", "-e", "A=1", "/bin/probe", "exit", 4)
    assert cli("wait", "ins").stdout == b"4\n"
    info = inspect(id[:10])
    assert info["Id"] == id and info["Name"] == "ins" and info["Path"] == "/bin/probe"
    assert info["Args"] == ["exit", "4"]
    assert info["State"]["Status"] == "exited" and info["State"]["ExitCode"] == 4
    assert info["State"]["StartedAt"] and info["State"]["FinishedAt"]
    assert info["Config"]["Hostname"] == "h1" and "A=1" in info["Config"]["Env"]
    both = json.loads(cli("inspect", "ins", id).stdout)
    assert [c["Id"] for c in both] == [id, id]
    assert cli("rm", "ins").returncode == 0


@pytest.mark.parametrize("verb", [("rm",), ("stop",), ("kill",), ("wait",), ("inspect",),
                                  ("logs",), ("exec", "ghost-x", "true")])
def test_an_unknown_container_gets_one_line(verb):
    args = list(verb) if len(verb) > 1 else [verb[0], "ghost-x"]
    result = cli(*args)
    assert result.returncode == 125
    assert result.stderr.endswith(b"container ghost-x: no such container\n")
    assert result.stderr.count(b"\n") == 1


def test_an_ambiguous_prefix_and_a_taken_name(root):
    ids = [detach(root, "/bin/probe", "exit", 0) for _ in range(3)]
    while len({i[0] for i in ids}) == len(ids):  # until two share a first digit
        ids.append(detach(root, "/bin/probe", "exit", 0))
    first = next(c for c in "0123456789abcdef" if sum(i.startswith(c) for i in ids) > 1)
    result = cli("inspect", first)
    assert result.returncode == 125 and b"the id prefix is ambiguous" in result.stderr
    detach(root, "--name", "taken", "/bin/probe", "exit", 0)
    again = cli("run", "--root", root, "-d", "--name", "taken", "/bin/probe", "exit", 0)
    assert again.returncode == 125 and b"--name taken: the name is in use" in again.stderr
    assert cli("wait", *ids).returncode == 0
    assert cli("rm", *ids, "taken").returncode == 0


def test_exec_into_an_ended_container_is_refused(root):
    detach(root, "--name", "ended", "/bin/probe", "exit", 0)
    assert cli("wait", "ended").stdout == b"0\n"
    result = cli("exec", "ended", "/bin/probe", "pid")
    assert (result.returncode, result.stderr) == (
        125, b"minicontainer: exec ended: it is not running (it exited)\n")
    assert cli("rm", "ended").returncode == 0


def test_sigkill_of_the_monitor_ends_the_container_and_says_so(root, state_dir):
    id = detach(root, "--name", "orphan", "-m", "64m", "--network", "bridge",
                "--subnet", "10.214.0.0/24", "/bin/probe", "sleep", 30)
    assert container_cgroups() and network_leftovers()
    os.kill(state(state_dir, id)["monitor"][0], signal.SIGKILL)
    # The holder kills PID 1, removes the cgroups and the network, writes the end.
    assert wait_for(lambda: state(state_dir, id)["status"] == "exited", 5)
    info = inspect("orphan")
    assert info["State"]["Status"] == "exited" and info["State"]["ExitCode"] == 137
    assert info["State"]["Error"] == "its monitor was killed"
    assert wait_for(lambda: not container_cgroups() and not network_leftovers(), 5)
    assert cli("rm", "orphan").returncode == 0


def test_an_entry_whose_monitor_vanished_is_dead_not_running(root, state_dir):
    """A machine crash, or the monitor and the holder killed at once: the entry
    still says running, and is shown as it truly is."""
    id = detach(root, "--name", "ghost", "/bin/probe", "sleep", 30)
    data = state(state_dir, id)
    gone = subprocess.Popen(["true"])
    gone.wait()
    data["monitor"] = [gone.pid, 1]  # a monitor that is no more
    (state_dir / id / "state.json").write_text(json.dumps(data))
    assert inspect("ghost")["State"]["Status"] == "dead"
    assert b"Dead" in cli("ps", "-a").stdout and cli("ps", "-q").stdout == b""
    waited = cli("wait", "ghost")
    assert waited.returncode == 125 and b"its monitor died" in waited.stderr
    os.kill(data["pid1"][0], signal.SIGKILL)  # the real monitor then ends and writes the end
    assert cli("rm", "-f", "ghost").returncode == 0


def test_twenty_at_once_then_one_stop_and_one_rm(root):
    procs = [subprocess.Popen([*CLI, "run", "--root", root, "-d", "--name", f"n{i}", "-m", "32m",
                               "--pids-limit", "20", "/bin/probe", "sleep", "60"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(20)]
    results = [(p.wait(60), *p.communicate()) for p in procs]
    assert all(code == 0 for code, _, _ in results), [err for _, _, err in results]
    names = [f"n{i}" for i in range(20)]
    assert len(cli("ps", "-q").stdout.split()) == 20
    stopped = cli("stop", *names, timeout=120)
    assert stopped.returncode == 0 and stopped.stdout.split() == [n.encode() for n in names]
    assert cli("rm", *names).returncode == 0
    assert cli("ps", "-a", "-q").stdout == b""
    assert wait_for(lambda: not container_cgroups(), 5)


def test_foreground_run_keeps_an_entry_only_when_named(root, run):
    assert run("/bin/probe", "exit", 0).returncode == 0
    assert cli("ps", "-a", "-q").stdout == b""
    assert run("--name", "kept", "/bin/probe", "exit", 6).returncode == 6
    info = inspect("kept")
    assert info["State"]["Status"] == "exited" and info["State"]["ExitCode"] == 6
    assert cli("rm", "kept").returncode == 0


def test_a_foreground_named_container_can_be_stopped_by_name(root, start):
    c = start(root, "--name", "fg", "/bin/probe", "sleep", 30)
    c.wait_ready()
    assert cli("stop", "fg").returncode == 0
    assert c.wait()[0] == 143
    assert cli("rm", "fg").returncode == 0


def test_a_detached_container_outlives_its_callers_terminal(root):
    """Started from a shell on a terminal, which then hangs up and is killed."""
    import pty
    from helpers import REPO
    import sys
    pid, master = pty.fork()
    if pid == 0:  # a login-like shell on its own terminal
        os.execvp("bash", ["bash", "-c", f"{sys.executable} {REPO / 'minicontainer.py'} run"
                           f" --root {root} -d --name survivor /bin/probe sleep 30; sleep 30"])
    try:
        assert wait_for(lambda: cli("ps", "-q").stdout != b"", 10)
    finally:
        os.close(master)  # the terminal hangs up: SIGHUP to its session
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    time.sleep(0.5)
    info = inspect("survivor")
    assert info["State"]["Status"] == "running", info["State"]
    assert cli("rm", "-f", "survivor").returncode == 0
