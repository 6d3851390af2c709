"""The Python library, line by line of its contract: minicontainer.run() and
Popen() in this process, as root, with real namespaces, cgroups and mounts,
checked from inside with the probe and busybox. (The isolation, privilege
and escape tests run through the library too: see the `door` fixture.)"""
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import minicontainer as mc
from helpers import (INIT_MEMORY_SCAN, REPO, cli, container_cgroups, process_state,
                     processes_rooted_under, running_children, wait_for)
from _minicontainer import library


@pytest.fixture(autouse=True)
def caller_is_ours(ownership):
    """The library's containers are named after this process (their caller)."""
    ownership.pids.add(os.getpid())


def lines(data):
    return data.decode().splitlines() if isinstance(data, bytes) else data.splitlines()


def test_run_returns_a_completed_process_with_what_was_captured(root):
    result = mc.run(["/bin/busybox", "sh", "-c", "echo out; echo err >&2; exit 3"],
                    root=root, capture_output=True)
    assert isinstance(result, subprocess.CompletedProcess)
    assert (result.args, result.returncode, result.stdout, result.stderr) == (
        ["/bin/busybox", "sh", "-c", "echo out; echo err >&2; exit 3"], 3, b"out\n", b"err\n")
    text = mc.run(["/bin/busybox", "printf", "a\\r\\nb"], root=root, capture_output=True, text=True)
    assert (text.stdout, text.stderr) == ("a\nb", "")  # as subprocess: universal newlines


def test_a_command_is_found_in_the_containers_path_as_the_cli_finds_it(root):
    """A bare name is looked up in the container's PATH (by PID 1, which may
    import nothing by then: the helper has loaded what the lookup needs)."""
    result = mc.run(["busybox", "echo", "found"], root=root, capture_output=True)
    assert (result.returncode, result.stdout, result.stderr) == (0, b"found\n", b"")
    missing = cli("run", "--root", root, "no-such-program")
    with pytest.raises(mc.ContainerError) as caught:
        mc.run(["no-such-program"], root=root)
    assert (caught.value.code, f"minicontainer: {caught.value}\n") == (127, missing.stderr.decode())


def test_input_is_the_commands_stdin_and_not_captured_output_is_the_callers(root, tmp_path):
    result = mc.run(["/bin/busybox", "tr", "a-z", "A-Z"], root=root, input=b"hello\n",
                    stdout=subprocess.PIPE)
    assert (result.stdout, result.stderr) == (b"HELLO\n", None)
    with open(tmp_path / "out", "wb") as out:
        mc.run(["/bin/busybox", "sh", "-c", "echo one; echo two >&2"], root=root,
               stdout=out, stderr=mc.STDOUT)
    assert (tmp_path / "out").read_bytes() == b"one\ntwo\n"
    quiet = mc.run(["/bin/busybox", "cat"], root=root, stdin=mc.DEVNULL, capture_output=True)
    assert (quiet.returncode, quiet.stdout) == (0, b"")


def test_env_adds_to_the_containers_defaults_and_the_callers_stays_out(root, monkeypatch):
    monkeypatch.setenv("CALLER_SECRET", "s3cret")
    out = mc.run(["/bin/probe", "env"], root=root, env={"GREETING": "hi", "HOME": "/tmp"},
                 capture_output=True, text=True).stdout
    env = dict(line.split("=", 1) for line in out.splitlines())
    assert env["GREETING"] == "hi" and env["HOME"] == "/tmp"
    assert env["PATH"] == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    assert env["HOSTNAME"] == "minicontainer"
    assert "CALLER_SECRET" not in env
    # Control: the CLI's -e gives the same environment.
    cli_out = cli("run", "--root", root, "-e", "GREETING=hi", "-e", "HOME=/tmp", "/bin/probe", "env")
    assert sorted(cli_out.stdout.decode().splitlines()) == sorted(out.splitlines())
    as_list = mc.run(["/bin/probe", "env"], root=root, env=["A=1"], capture_output=True, text=True)
    assert "A=1" in as_list.stdout.splitlines()


@pytest.mark.parametrize("kwargs, options", [
    ({}, ()),
    ({"user": "1000:1000", "workdir": "/tmp", "hostname": "box"},
     ("--user", "1000:1000", "-w", "/tmp", "--hostname", "box")),
    ({"cap_drop": ["ALL"], "cap_add": ["NET_RAW"], "read_only": True},
     ("--cap-drop", "ALL", "--cap-add", "NET_RAW", "--read-only")),
    ({"memory": "64m", "pids_limit": 20, "cpus": 0.5, "tmpfs": ["/scratch:size=1m"]},
     ("-m", "64m", "--pids-limit", "20", "--cpus", "0.5", "--tmpfs", "/scratch:size=1m")),
])
def test_options_mean_what_the_command_lines_mean(root, kwargs, options):
    """The same probe, through both doors, sees the same container."""
    script = ("/bin/probe ids; /bin/probe cwd; /bin/probe hostname; grep -E '^Cap|^NoNewPrivs|"
              "^Seccomp:' /proc/self/status; cut -d' ' -f5,6 /proc/self/mountinfo | sort;"
              " cat /sys/fs/cgroup/pids/pids.max 2>/dev/null; touch /x 2>&1")
    argv = ["/bin/busybox", "sh", "-c", script]
    lib = mc.run(argv, root=root, capture_output=True, **kwargs)
    line = cli("run", "--root", root, *options, *argv)
    assert (lib.returncode, lib.stdout, lib.stderr) == (line.returncode, line.stdout, line.stderr)
    assert lib.stdout  # something was compared


def test_volumes_are_the_hosts_directory_read_only_when_asked(root, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "in").write_text("from the host\n")
    result = mc.run(["/bin/busybox", "sh", "-c", "cat /data/in; echo back > /data/out"],
                    root=root, volumes=[f"{shared}:/data"], capture_output=True)
    assert (result.returncode, result.stdout) == (0, b"from the host\n")
    assert (shared / "out").read_text() == "back\n"
    ro = mc.run(["/bin/busybox", "sh", "-c", "echo x > /data/other"], root=root,
                volumes=[(shared, "/data", "ro")], capture_output=True)
    assert ro.returncode == 1 and b"Read-only file system" in ro.stderr
    assert not (shared / "other").exists()


def test_network_none_is_loopback_alone_and_host_is_the_hosts(root):
    alone = mc.run(["/bin/probe", "ls", "/sys/class/net"], root=root, capture_output=True)
    assert alone.stdout == b"lo\n"
    host = mc.run(["/bin/probe", "ls", "/sys/class/net"], root=root, network="host",
                  capture_output=True)
    assert sorted(host.stdout.decode().split()) == sorted(os.listdir("/sys/class/net"))


def test_timeout_ends_a_container_that_ignores_sigterm_and_every_process_in_it(root):
    script = "trap '' TERM; /bin/busybox sleep 300 & echo started; wait"
    before = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired) as caught:
        mc.run(["/bin/busybox", "sh", "-c", script], root=root, timeout=1, capture_output=True)
    assert caught.value.stdout == b"started\n" and caught.value.timeout == 1
    assert time.monotonic() - before < 5  # killed, not waited out (stop_timeout is 10 s)
    assert processes_rooted_under(root) == []  # the sleep in the background too
    # Control: without the timeout, the same container is still running a second later.
    with mc.Popen(["/bin/busybox", "sh", "-c", script], root=root, stdout=subprocess.PIPE) as p:
        assert p.stdout.readline() == b"started\n"
        with pytest.raises(subprocess.TimeoutExpired):
            p.wait(timeout=1)
        assert len(processes_rooted_under(root)) >= 2
        p.kill()
    assert p.returncode == 128 + signal.SIGKILL


def test_check_raises_called_process_error(root):
    with pytest.raises(subprocess.CalledProcessError) as caught:
        mc.run(["/bin/probe", "exit", "7"], root=root, check=True, capture_output=True)
    assert (caught.value.returncode, caught.value.cmd) == (7, ["/bin/probe", "exit", "7"])
    assert mc.run(["/bin/probe", "exit", "0"], root=root, check=True).returncode == 0


def test_a_signal_is_reported_as_128_plus_its_number_as_the_cli_does(root):
    with mc.Popen(["/bin/probe", "sleep", "30"], root=root, stdout=subprocess.PIPE) as p:
        assert p.stdout.readline() == b"ready\n"
        p.terminate()  # PID 1 without a handler: ended for it, as the CLI does
    assert p.returncode == 128 + signal.SIGTERM
    with mc.Popen(["/bin/probe", "trap", str(int(signal.SIGUSR1))], root=root,
                  stdout=subprocess.PIPE) as p:
        assert p.stdout.readline() == b"ready\n"
        p.send_signal(signal.SIGUSR1)  # caught: the command decides (it exits with 1)
    assert p.returncode == 1
    # A PID 1 is not ended by its own signal (the kernel's rule), through either door.
    line = cli("run", "--root", root, "/bin/probe", "raise", int(signal.SIGSEGV))
    lib = mc.run(["/bin/probe", "raise", str(int(signal.SIGSEGV))], root=root, capture_output=True)
    assert (lib.returncode, lib.stdout) == (line.returncode, line.stdout) == (99, b"survived\n")


@pytest.mark.parametrize("args, kwargs, code", [
    (["/bin/missing"], {}, 127),
    (["/etc/hostname"], {}, 126),
    (["/bin/probe", "pid"], {"memory": "1k"}, 125),
    (["/bin/probe", "pid"], {"cap_add": ["NOT_A_CAP"]}, 125),
    (["/bin/probe", "pid"], {"user": "nobody-here"}, 125),
    (["/bin/probe", "pid"], {"volumes": ["/no/such/dir:/x"]}, 125),
])
def test_its_own_failures_raise_container_error_with_the_cli_line_and_code(root, args, kwargs, code):
    (root / "etc" / "hostname").write_text("not a program\n")
    with pytest.raises(mc.ContainerError) as caught:
        mc.run(args, root=root, **kwargs)
    assert caught.value.code == code
    options = {"memory": "-m", "cap_add": "--cap-add", "user": "--user", "volumes": "-v"}
    argv = [x for k, v in kwargs.items() for x in (options[k], v[0] if isinstance(v, list) else v)]
    line = cli("run", "--root", root, *argv, *args)
    assert (line.returncode, line.stderr.decode()) == (code, f"minicontainer: {caught.value}\n")
    assert "\n" not in str(caught.value) and "Error(" not in str(caught.value)


def test_a_root_that_is_not_one_is_refused(tmp_path):
    with pytest.raises(mc.ContainerError) as caught:
        mc.run(["/bin/true"], root=tmp_path / "nowhere")
    assert caught.value.code == 125 and "No such file or directory" in str(caught.value)


def test_popen_pid_pipes_poll_wait_and_communicate(root):
    with mc.Popen(["/bin/busybox", "cat"], root=root, stdin=subprocess.PIPE,
                  stdout=subprocess.PIPE) as p:
        assert p.poll() is None
        with open(f"/proc/{p.pid}/status") as f:  # the host pid of the container's PID 1
            nspid = [l.split()[1:] for l in f if l.startswith("NSpid:")][0]
        assert nspid == [str(p.pid), "1"]
        p.stdin.write(b"line one\n")
        p.stdin.flush()
        assert p.stdout.readline() == b"line one\n"
        out, err = p.communicate(b"line two\n")
        assert (out, err, p.returncode) == (b"line two\n", None, 0)
    assert p.wait() == 0 and p.poll() == 0
    text = mc.Popen(["/bin/busybox", "tr", "a", "b"], root=root, stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE, text=True)
    assert text.communicate("banana", timeout=10) == ("bbnbnb", None)


def test_communicate_times_out_without_ending_the_container_and_can_go_on(root):
    with mc.Popen(["/bin/busybox", "sh", "-c", "echo first; sleep 2; echo second"], root=root,
                  stdout=subprocess.PIPE) as p:
        with pytest.raises(subprocess.TimeoutExpired) as caught:
            p.communicate(timeout=0.5)
        assert caught.value.stdout == b"first\n" and p.poll() is None
        assert p.communicate(timeout=10) == (b"first\nsecond\n", None)


def test_the_context_manager_kills_on_an_exception_and_leaves_nothing(root):
    with pytest.raises(RuntimeError):
        with mc.Popen(["/bin/probe", "ignore", "TERM"], root=root, stdout=subprocess.PIPE) as p:
            assert p.stdout.readline() == b"ready\n"
            raise RuntimeError("the caller's own failure")
    assert p.returncode == 128 + signal.SIGKILL
    assert processes_rooted_under(root) == []
    # Control: without an exception the block waits for the command, as subprocess's does.
    with mc.Popen(["/bin/probe", "exit", "4"], root=root) as p:
        pass
    assert p.returncode == 4


def test_one_thread_kills_what_another_waits_for_and_poll_never_blocks(root):
    with mc.Popen(["/bin/probe", "sleep", "60"], root=root, stdout=subprocess.PIPE) as p:
        assert p.stdout.readline() == b"ready\n"
        waited = []
        waiter = threading.Thread(target=lambda: waited.append(p.wait()))
        waiter.start()
        time.sleep(0.2)  # the waiter holds the wait
        started = time.monotonic()
        assert p.poll() is None  # at once, though another thread waits
        with pytest.raises(subprocess.TimeoutExpired):
            p.wait(timeout=0.3)  # its own timeout, though another thread waits
        assert time.monotonic() - started < 5
        killer = threading.Thread(target=p.kill)
        killer.start()
        killer.join(timeout=10)
        waiter.join(timeout=10)
        assert not killer.is_alive() and not waiter.is_alive()
        assert waited == [128 + signal.SIGKILL] and p.poll() == 128 + signal.SIGKILL


def test_many_threads_at_once_each_get_their_own_result(root):
    results, errors = {}, []

    def worker(n):
        try:
            for i in range(25):
                token = f"{n}-{i}"
                r = mc.run(["/bin/busybox", "sh", "-c", f"echo {token}; exit {(n + i) % 5}"],
                           root=root, capture_output=True)
                results[token] = (r.returncode, r.stdout)
        except BaseException as exc:  # told below, with the thread's number
            errors.append((n, exc))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors and not any(t.is_alive() for t in threads)
    assert results == {f"{n}-{i}": ((n + i) % 5, f"{n}-{i}\n".encode())
                       for n in range(8) for i in range(25)}


def test_a_thread_holding_locks_at_the_fork_cannot_deadlock_a_start(root):
    """Threads that hold the import lock and a logging lock while containers
    start: the helper was exec'd, so no fork copies a held lock."""
    import importlib
    import logging
    stop = threading.Event()

    def busy():
        handler = logging.StreamHandler(open(os.devnull, "w"))
        log = logging.getLogger("busy")
        log.addHandler(handler)
        while not stop.is_set():
            with handler.lock:  # held often, as a logging thread holds it
                importlib.reload(importlib.import_module("json"))  # and the import lock
            log.warning("x")

    threads = [threading.Thread(target=busy, daemon=True) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        done = []
        runner = threading.Thread(target=lambda: done.extend(
            mc.run(["/bin/probe", "exit", "0"], root=root).returncode for _ in range(40)))
        runner.start()
        runner.join(timeout=120)
        assert done == [0] * 40
    finally:
        stop.set()


def test_a_forked_child_of_the_caller_gets_a_helper_of_its_own(root):
    mc.run(["/bin/probe", "exit", "0"], root=root)  # the parent's helper exists
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the library still works, through its own helper
        try:
            code = mc.run(["/bin/probe", "exit", "5"], root=root).returncode
            os.write(write, bytes([code]))
        finally:
            os._exit(0)
    os.close(write)
    assert os.read(read, 1) == b"\x05"
    os.waitpid(pid, 0)
    os.close(read)
    assert mc.run(["/bin/probe", "exit", "6"], root=root).returncode == 6


def test_a_killed_helper_is_replaced_and_its_containers_end(root):
    p = mc.Popen(["/bin/probe", "sleep", "30"], root=root, stdout=subprocess.PIPE)
    assert p.stdout.readline() == b"ready\n"
    helper = library.Helper.current.process
    # Its children: the container's supervisor, and the spares waiting for requests.
    children = running_children(helper.pid)
    assert len(children) >= 2
    helper.kill()
    helper.wait()
    with pytest.raises(mc.ContainerError) as caught:
        p.wait(timeout=10)
    assert "helper process ended" in str(caught.value)
    assert wait_for(lambda: processes_rooted_under(root) == [], 5)
    # They all end with it: no spare is left holding the socket a request would go to.
    assert wait_for(lambda: all(process_state(pid) in (None, "Z") for pid in children), 5)
    p.stdout.close()
    assert mc.run(["/bin/probe", "exit", "3"], root=root).returncode == 3  # a new helper


def test_a_container_never_outlives_the_process_that_started_it(root):
    script = (f"import sys; sys.path.insert(0, {str(REPO)!r}); import minicontainer as mc, os\n"
              f"p = mc.Popen(['/bin/probe', 'sleep', '300'], root={str(root)!r}, stdout=mc.PIPE)\n"
              f"print(p.stdout.readline().decode(), end='', flush=True); os.kill(os.getpid(), 9)\n")
    caller = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert (caller.returncode, caller.stdout) == (-9, b"ready\n")
    assert wait_for(lambda: processes_rooted_under(root) == [], 10), processes_rooted_under(root)


CALLER_IN_A_LOOP = """
import sys
sys.path.insert(0, {repo!r})
import minicontainer as mc
print("go", flush=True)
while True:
    mc.run(["/bin/probe", "exit", "0"], root={root!r}, pids_limit=50, memory="64m")
"""


def test_a_caller_killed_at_any_moment_of_a_start_leaves_nothing(root):
    """SIGKILL a caller that starts containers back to back, at random moments
    of their starts: nothing named after it is left, no cgroup and no process."""
    import random
    script = CALLER_IN_A_LOOP.format(repo=str(REPO), root=str(root))
    callers = []
    for _ in range(25):
        caller = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
        assert caller.stdout.readline() == b"go\n"
        time.sleep(random.uniform(0.02, 0.2))
        caller.kill()
        caller.wait()
        caller.stdout.close()
        callers.append(caller.pid)

    def left():
        return [g for g in container_cgroups(everyone=True)
                if any(f"minicontainer-{pid}-" in g for pid in callers)] + processes_rooted_under(root)
    assert wait_for(lambda: not left(), 10), left()


def test_ten_thousand_starts_in_small_keep_the_caller_flat_and_leave_nothing(root):
    """The bench runs 10,000; here 300: the caller's descriptors, threads,
    children and memory stay as they were, and nothing is left on the host."""
    def state():
        with open("/proc/self/status") as f:
            rss = [int(l.split()[1]) for l in f if l.startswith("VmRSS:")][0]
        # Each thread's children file, not a walk of /proc: a process of the
        # machine's that exits during a walk would fail the read.
        children = 0
        for tid in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{tid}/children") as f:
                    children += len(f.read().split())
            except FileNotFoundError:  # a thread that ended meanwhile
                pass
        return len(os.listdir("/proc/self/fd")), threading.active_count(), children, rss

    groups = set(container_cgroups(everyone=True))
    for _ in range(50):
        mc.run(["/bin/probe", "exit", "0"], root=root, capture_output=True)
    fds, threads, children, rss = state()
    for _ in range(300):
        mc.run(["/bin/probe", "exit", "0"], root=root, capture_output=True)
    fds2, threads2, children2, rss2 = state()
    assert (fds2, threads2, children2) == (fds, threads, children)
    assert rss2 - rss < 2048, (rss, rss2)  # KiB
    assert processes_rooted_under(root) == []
    mine = f"minicontainer-{os.getpid()}-"
    assert wait_for(lambda: not [g for g in set(container_cgroups(everyone=True)) - groups
                                 if mine in g], 5)


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(args=st.lists(st.text(min_size=0, max_size=20), min_size=1, max_size=4),
       env=st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=3),
       workdir=st.one_of(st.none(), st.text(max_size=20)),
       hostname=st.one_of(st.none(), st.text(max_size=20)),
       tmpfs=st.lists(st.text(max_size=20), max_size=2))
def test_hostile_arguments_give_a_result_or_one_clear_error(root, args, env, workdir, hostname,
                                                            tmpfs):
    try:
        result = mc.run(args, root=root, env=env, workdir=workdir, hostname=hostname, tmpfs=tmpfs,
                        capture_output=True, timeout=30)
    except mc.ContainerError as exc:
        message = str(exc)
        assert exc.code in (125, 126, 127) and message and "\n" not in message
        assert "Error(" not in message and "Traceback" not in message
    except (TypeError, ValueError) as exc:  # Python's own, for what is not a str at all
        assert "\0" in "".join(args) + "".join(env) + "".join(env.values()) + (workdir or "") \
            + (hostname or "") + "".join(tmpfs) or isinstance(exc, TypeError), exc
    else:
        assert isinstance(result.returncode, int)
    assert processes_rooted_under(root) == []


@pytest.mark.parametrize("value", [None, "Default", True, "/etc/minicontainer/seccomp.json", "strict"])
def test_a_seccomp_value_that_is_not_one_of_its_words_is_refused_not_read_as_unconfined(root, value):
    """The outside attack found seccomp=None (or "Default", True, a profile's
    path) ran the container with no filter at all: anything but "default" was
    taken for unconfined."""
    argv = ["/bin/busybox", "grep", "^Seccomp:", "/proc/self/status"]
    with pytest.raises((mc.ContainerError, TypeError)) as caught:  # TypeError: not a str at all
        mc.run(argv, root=root, seccomp=value, capture_output=True)
    if isinstance(caught.value, mc.ContainerError):
        assert caught.value.code == 125 and str(caught.value).startswith("--seccomp ")
    else:
        assert not isinstance(value, str) and "seccomp must be a str" in str(caught.value)
    # Control: the two words mean the filter and none, as the probe sees it.
    assert mc.run(argv, root=root, capture_output=True).stdout == b"Seccomp:\t2\n"
    assert mc.run(argv, root=root, seccomp="unconfined", capture_output=True).stdout == b"Seccomp:\t0\n"


@pytest.mark.parametrize("kwargs", [{"userns": True}, {"userns": "Private"}, {"network": "Host"},
                                    {"ipc": None}, {"stop_timeout": -1}])
def test_a_namespace_word_that_is_not_one_is_refused(root, kwargs):
    with pytest.raises((mc.ContainerError, TypeError)) as caught:  # TypeError: not a str at all
        mc.run(["/bin/probe", "exit", "0"], root=root, **kwargs)
    assert isinstance(caught.value, TypeError) or caught.value.code == 125
    assert "\n" not in str(caught.value)


def test_kill_poll_and_a_timed_wait_from_other_threads_are_not_stuck_behind_a_wait(root):
    """The outside attack found a thread's wait() held the handle's one lock
    while it waited: a watchdog thread's kill() (the very thing that would end
    that wait), a poll() and another thread's wait(timeout=1) all hung with it."""
    p = mc.Popen(["/bin/probe", "sleep", "300"], root=root, stdout=subprocess.PIPE)
    try:
        assert p.stdout.readline() == b"ready\n"
        waiter = threading.Thread(target=p.wait, daemon=True)
        waiter.start()
        time.sleep(0.3)  # the waiter is in its wait
        assert waiter.is_alive()
        answers = {}

        def timed_wait():
            try:
                p.wait(timeout=1)
            except subprocess.TimeoutExpired:
                answers["timed"] = "timed out"

        other = threading.Thread(target=timed_wait, daemon=True)
        other.start()
        other.join(timeout=5)
        assert answers == {"timed": "timed out"}  # its own timeout, not the first thread's
        poller = threading.Thread(target=lambda: answers.update(poll=p.poll()), daemon=True)
        poller.start()
        poller.join(timeout=5)
        assert answers.get("poll", "hung") is None  # running, as subprocess's poll says then
        assert len(processes_rooted_under(root)) == 1  # control: it still runs
        killer = threading.Thread(target=p.kill, daemon=True)
        killer.start()
        killer.join(timeout=5)
        assert not killer.is_alive(), "kill() hung behind the other thread's wait()"
        waiter.join(timeout=10)
        assert not waiter.is_alive() and p.returncode == 128 + signal.SIGKILL
    finally:
        if processes_rooted_under(root):  # a failure above: end it without the handle
            os.kill(p.pid, signal.SIGKILL)
        p.stdout.close()


def test_a_forked_child_dropping_its_copy_of_a_handle_leaves_the_parents_container(root):
    """The outside attack found a forked child that let go of its copy of a
    Popen (or exited through Python's finalizers) SIGKILLed the parent's
    container: the copy's __del__ took it for a handle no one reached."""
    p = mc.Popen(["/bin/probe", "sleep", "300"], root=root, stdout=subprocess.PIPE)
    assert p.stdout.readline() == b"ready\n"
    pid = os.fork()
    if pid == 0:  # the child: drops its copy, as a worker that is done with it would
        try:
            del p
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    time.sleep(0.3)
    assert p.poll() is None  # still running
    p.kill()
    p.stdout.close()
    assert p.wait() == 128 + signal.SIGKILL
    # Control: in the parent, a handle dropped while its container runs still ends it.
    q = mc.Popen(["/bin/probe", "sleep", "300"], root=root, stdout=subprocess.PIPE)
    assert q.stdout.readline() == b"ready\n"
    q.stdout.close()
    del q
    assert wait_for(lambda: processes_rooted_under(root) == [], 10)


def test_a_container_reads_nothing_of_an_earlier_containers_spec_in_its_init(root):
    """The outside attack found the helper kept each request (the pickled spec:
    its environment, volumes) in its heap, and each spare supervisor forked
    after it inherited it, down to the next container's --init, its PID 1 for
    its whole life: a container given CAP_SYS_PTRACE read an earlier
    container's secret from /proc/1/mem. The helper now reads no request:
    the spare supervisor that takes it does."""
    first = mc.run(["/bin/probe", "exit", "0"], root=root, env={"DB_PASSWORD": "alpha" + "Q7wz" * 4})
    assert first.returncode == 0
    result = mc.run(["/bin/busybox", "sh", "-c", INIT_MEMORY_SCAN, "scan",
                     "alpha", "Q7wz" * 4, "bravo", "K3xm" * 4],
                    root=root, init=True, cap_add=["SYS_PTRACE"], env={"OWN": "bravo" + "K3xm" * 4},
                    capture_output=True, text=True, timeout=120)
    earlier, own = result.stdout.split()
    assert int(own) > 0, result  # control: the scan finds the container's own spec in its init
    assert int(earlier) == 0, "an earlier container's secret is in this container's PID 1"


def test_bad_arguments_are_refused_before_a_container_starts(root, tmp_path):
    """The outside attack found a bogus encoding or bufsize raised only once
    the container ran, leaving it running with no handle to reach it; a NUL
    in args came back as 'internal error: ValueError(...)' from PID 1; a
    workdir or an int hostname raised AttributeError; one volume
    given as a str was read as one volume a character."""
    argv = ["/bin/probe", "sleep", "300"]
    for kwargs, kind in (({"encoding": "no-such-codec"}, LookupError), ({"bufsize": "x"}, TypeError),
                         ({"text": True, "errors": "no-such-handler"}, LookupError)):
        with pytest.raises(kind):
            mc.Popen(argv, root=root, stdout=subprocess.PIPE, **kwargs)
        assert processes_rooted_under(root) == []  # nothing was started
    with pytest.raises(ValueError, match="embedded null byte"):
        mc.run(["/bin/probe", "argv", "a\0b"], root=root)
    with pytest.raises(TypeError, match="hostname must be a str"):
        mc.run(["/bin/probe", "hostname"], root=root, hostname=7)
    with pytest.raises(TypeError, match="entrypoint must be a str"):
        mc.run([], root=root, entrypoint=["/bin/probe"])
    with pytest.raises(mc.ContainerError) as caught:  # the caller's newline, shown escaped
        mc.run(["/bin/probe", "exit", "0"], root=root, ulimits=["no\nfile=1"])
    assert "\n" not in str(caught.value) and str(caught.value).startswith("--ulimit no\\nfile=1")
    # Controls: the same calls with good values run.
    assert mc.run(["/bin/probe", "argv", "ab"], root=root, capture_output=True,
                  encoding="utf-8", errors="strict", bufsize=0).stdout.splitlines()[-1] == "6162"  # hex
    shared = tmp_path / "shared"
    shared.mkdir()
    result = mc.run(["/bin/busybox", "sh", "-c", "pwd; ls /data"], root=root, capture_output=True,
                    workdir="/tmp", volumes=f"{shared}:/data", hostname="seven")
    assert (result.returncode, result.stdout) == (0, b"/tmp\n")


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(name=st.sampled_from(["workdir", "hostname", "entrypoint", "network", "ipc", "uts", "cgroupns",
                             "userns", "seccomp", "user", "memory", "pids_limit", "cpus", "env",
                             "volumes", "tmpfs", "cap_add", "cap_drop", "ulimits", "stop_timeout",
                             "security_opt", "subnet", "uidmap", "env_file",
                             "network_alias"]),
       value=st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(),
                       st.text(max_size=12), st.binary(max_size=8),
                       st.lists(st.one_of(st.text(max_size=8), st.integers()), max_size=2),
                       st.dictionaries(st.text(max_size=4), st.integers(), max_size=1)))
def test_any_value_of_any_option_gives_a_result_or_one_clear_refusal(root, name, value):
    try:
        result = mc.run(["/bin/probe", "exit", "0"], root=root, capture_output=True, timeout=30,
                        **{name: value})
    except mc.ContainerError as exc:
        message = str(exc)
        assert exc.code in (125, 126, 127) and message and "\n" not in message
        assert "internal error" not in message and "Error(" not in message, message
    except (TypeError, ValueError) as exc:  # Python's own, for what is not of the type at all
        assert "object has no attribute" not in str(exc), exc
    else:
        assert isinstance(result.returncode, int)
    assert processes_rooted_under(root) == []


def test_a_caller_killed_while_its_container_is_set_up_leaves_no_cgroup(root):
    """The outside attack found a caller killed in the moment its container's
    cgroups were made but its holder not yet forked left them on the host:
    the helper ended with its caller and each supervisor was SIGKILLed by
    its parent-death signal. Now a supervisor is told (CALLER_GONE), kills
    its container and cleans up. The caller is killed the instant its
    container's first cgroup appears, twenty times."""
    own = [line.split(":", 2)[2].strip() for line in open("/proc/self/cgroup")
           if line.startswith("0::")]
    first = f"/sys/fs/cgroup/unified{own[0].rstrip('/')}" if own else None
    if first is None or not os.path.isdir(first):
        pytest.skip("needs cgroup v2 mounted at /sys/fs/cgroup/unified (where the first group is made)")
    script = (f"import sys; sys.path.insert(0, {str(REPO)!r}); import minicontainer as mc\n"
              f"mc.run(['/bin/probe', 'exit', '0'], root={str(root)!r})\n"
              f"print('go', flush=True); sys.stdin.readline()\n"
              f"p = mc.Popen(['/bin/probe', 'sleep', '300'], root={str(root)!r}, stdout=mc.PIPE,"
              f" pids_limit=50)\n"
              f"p.stdout.readline(); import time; time.sleep(100)\n")
    left, seen = [], 0
    for _ in range(20):
        caller = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE)
        assert caller.stdout.readline() == b"go\n"
        mark = f"minicontainer-{caller.pid}-"
        caller.stdin.write(b"\n")
        caller.stdin.flush()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(n.startswith(mark) for n in os.listdir(first)):
            pass
        seen += any(n.startswith(mark) for n in os.listdir(first))
        caller.kill()
        caller.wait()
        caller.stdout.close()
        caller.stdin.close()
        wait_for(lambda: not [g for g in container_cgroups(everyone=True) if mark in g], 5)
        left += [g for g in container_cgroups(everyone=True) if mark in g]
    for group in sorted(left, key=len, reverse=True):  # a failure leaves the host clean all the same
        os.rmdir(group)
    assert seen == 20  # control: each caller was killed with its container's cgroup made
    assert left == []
    assert wait_for(lambda: processes_rooted_under(root) == [], 10)


def test_a_keyboard_interrupt_while_popen_waits_for_the_start_leaves_no_container(root):
    """The outside attack found a ^C (KeyboardInterrupt) that came while the
    constructor waited for the command to start left the container running
    with no handle to reach it, until the caller exited. The ^C is a SIGALRM
    whose handler raises it, armed as the constructor starts to wait."""
    mc.run(["/bin/probe", "exit", "0"], root=root)  # the helper is up: the wait is the start alone
    waiting = library.Popen._wait_started

    def interrupted(self):
        signal.setitimer(signal.ITIMER_REAL, 0.002)
        return waiting(self)

    def interrupt(*_):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    library.Popen._wait_started = interrupted
    try:
        with pytest.raises(KeyboardInterrupt):
            mc.Popen(["/bin/probe", "sleep", "300"], root=root, stdout=subprocess.PIPE)
    finally:
        library.Popen._wait_started = waiting
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    time.sleep(1)  # time for it to have started, had it been let run
    assert processes_rooted_under(root) == []
    # Control: without the ^C the same container runs, and is still there a moment later.
    with mc.Popen(["/bin/probe", "sleep", "300"], root=root, stdout=subprocess.PIPE) as p:
        assert p.stdout.readline() == b"ready\n"
        time.sleep(0.5)
        assert len(processes_rooted_under(root)) == 1
        p.kill()


def test_a_caller_that_dropped_root_cannot_have_roots_helper_run_its_requests(root, tmp_path):
    """The outside attack found a process that used the library as root and
    then dropped to another uid (a service's usual way) kept its root
    helper's socket: any code in it could send that helper a request of its
    making, and a request is unpickled (code run) as root. The helper now
    takes requests only from its own uid (SCM_CREDENTIALS, the kernel's),
    checked by the spare supervisor that reads it before it unpickles any."""
    marker = tmp_path / "marker"
    tmp_path.chmod(0o755)
    script = f"""
import os, pickle, socket, sys
sys.path.insert(0, {str(REPO)!r})
import minicontainer as mc
from _minicontainer import library
mc.run(['/bin/probe', 'exit', '0'], root={str(root)!r})
helper = library.Helper.current

class Evil:
    def __reduce__(self):
        return (os.system, ("id -u >> {marker}",))

def forge():
    body = pickle.dumps(Evil())  # where the spec goes: all of a request that is unpickled
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    null = os.open(os.devnull, os.O_RDWR)
    helper.sock.sendmsg([bytes(4) + body],
                        [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                          b"".join(fd.to_bytes(4, sys.byteorder) for fd in (theirs.fileno(), null, null, null)))])
    theirs.close()
    ours.settimeout(10)
    print(ours.recv(4096).decode().split(" ")[0], flush=True)  # the helper's answer

forge()  # control: while this process is root, the channel carries it (root's own code, as root)
os.setgroups([])
os.setgid(65534)
os.setuid(65534)
forge()
"""
    caller = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert caller.returncode == 0, caller.stderr
    assert marker.read_text() == "0\n"  # the control ran, once, as root; the forged one did not
    assert caller.stdout.decode().split() == ["error", "error"]
