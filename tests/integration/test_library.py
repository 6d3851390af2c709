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
from helpers import REPO, cli, container_cgroups, processes_rooted_under, wait_for
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
    helper.kill()
    helper.wait()
    with pytest.raises(mc.ContainerError) as caught:
        p.wait(timeout=10)
    assert "helper process ended" in str(caught.value)
    assert wait_for(lambda: processes_rooted_under(root) == [], 5)
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
        children = len([p for p in os.listdir("/proc") if p.isdigit() and
                        open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[1] == str(os.getpid())])
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
