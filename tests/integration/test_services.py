"""Keeping a service up: run -d --restart, for real, against a busybox service
that counts its runs in a volume. Timing is checked by order, counts and lower
bounds only (a loaded machine makes everything later, never earlier)."""
import json
import os
import re
import signal
import socket
import time
import urllib.request

import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from helpers import cli, container_cgroups, inspect, wait_for

# A service that counts its runs in /data/count, notes each start (the
# host's uptime, and its address) in /data/starts, and exits with CODE until
# run FAIL_RUNS times, then serves /data over HTTP on port 8080.
SERVICE = """#!/bin/busybox sh
n=$(busybox cat /data/count 2>/dev/null || echo 0); n=$((n + 1)); echo $n > /data/count
echo "$(busybox cut -d' ' -f1 /proc/uptime) $(busybox hostname -i 2>/dev/null)" >> /data/starts
echo "run $n"
if [ $n -le ${FAIL_RUNS:-1000000} ]; then exit ${CODE:-3}; fi
exec busybox httpd -f -p 8080 -h /data
"""


@pytest.fixture
def service(root, tmp_path):
    """(root, volume): the service script at /svc.sh in the root, an empty volume for /data."""
    (root / "svc.sh").write_text(SERVICE)
    (root / "svc.sh").chmod(0o755)
    volume = tmp_path / "data"
    volume.mkdir()
    return root, volume


def detach(root, volume, *args, env=()):
    result = cli("run", "--root", root, "-d", "-v", f"{volume}:/data",
                 *[a for e in env for a in ("-e", e)], *args, "/bin/busybox", "sh", "/svc.sh")
    assert result.returncode == 0, result.stderr
    return result.stdout.decode().strip()


def runs(volume):
    try:
        return int((volume / "count").read_text())
    except (FileNotFoundError, ValueError):
        return 0


def starts(volume):
    """[(uptime seconds, address)] of each run."""
    lines = (volume / "starts").read_text().splitlines()
    return [(float(line.split()[0]), " ".join(line.split()[1:])) for line in lines]


def status(ref):
    return inspect(ref)["State"]["Status"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fetch(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/{path}", timeout=5) as r:
            return r.read()
    except OSError:
        return None


def test_a_service_that_crashes_twice_is_restarted_and_then_serves(service):
    root, volume = service
    (volume / "index.html").write_text("hello\n")
    port = free_port()
    id = detach(root, volume, "--name", "web", "--restart", "on-failure", "--network", "bridge",
                "-p", f"{port}:8080", env=["FAIL_RUNS=2"])
    assert wait_for(lambda: fetch(port, "index.html") == b"hello\n", 30)
    assert runs(volume) == 3
    info = inspect("web")
    assert info["Id"] == id and info["Name"] == "web" and info["RestartCount"] == 2
    assert info["State"]["Status"] == "running" and info["HostConfig"]["RestartPolicy"] == {
        "Name": "on-failure", "MaximumRetryCount": 0}
    # The same address every run (and the one inspect shows), the same published port.
    addresses = {address for _, address in starts(volume)}
    assert addresses == {info["NetworkSettings"]["IPAddress"]}, addresses
    # One log, appended to by each run, in order.
    assert cli("logs", "web").stdout == b"run 1\nrun 2\nrun 3\n"
    assert cli("stop", "web").returncode == 0
    assert status("web") == "exited" and runs(volume) == 3
    assert cli("rm", "web").returncode == 0


def test_on_failure_n_gives_up_after_n_restarts(service):
    root, volume = service
    detach(root, volume, "--name", "flaky", "--restart", "on-failure:2", env=["CODE=7"])
    assert wait_for(lambda: status("flaky") == "exited", 30)
    info = inspect("flaky")
    assert runs(volume) == 3 and info["RestartCount"] == 2 and info["State"]["ExitCode"] == 7
    time.sleep(1)
    assert runs(volume) == 3  # and never again
    assert cli("rm", "flaky").returncode == 0


def test_on_failure_does_not_restart_a_success(service):
    root, volume = service
    detach(root, volume, "--name", "ok", "--restart", "on-failure", env=["CODE=0"])
    assert wait_for(lambda: status("ok") == "exited", 30)
    assert runs(volume) == 1 and inspect("ok")["RestartCount"] == 0
    assert cli("rm", "ok").returncode == 0


def test_no_policy_leaves_a_crashed_service_down(service):
    root, volume = service
    detach(root, volume, "--name", "down")  # control: today's behaviour, the default
    assert cli("wait", "down").stdout == b"3\n"
    time.sleep(0.5)
    assert runs(volume) == 1 and inspect("down")["HostConfig"]["RestartPolicy"]["Name"] == "no"
    assert cli("rm", "down").returncode == 0


@pytest.mark.parametrize("policy", ["always", "unless-stopped"])
def test_always_restarts_even_a_success_until_it_is_stopped(service, policy):
    root, volume = service
    detach(root, volume, "--name", "loop", "--restart", policy, env=["CODE=0"])
    assert wait_for(lambda: runs(volume) >= 3, 30)
    # While it waits out its back-off, ps says so, in docker's words.
    seen = wait_for(lambda: re.search(r"Restarting \(0\) (Less than a second|\d+ seconds?) ago",
                                      cli("ps").stdout.decode()), 30)
    assert seen, cli("ps").stdout
    assert cli("wait", "loop").stdout == b"0\n"  # each end counts for wait, as docker's
    assert cli("stop", "loop").stdout == b"loop\n"
    after = runs(volume)
    assert status("loop") == "exited"
    time.sleep(2)  # well past the back-off: no run came after the stop returned
    assert runs(volume) == after
    assert cli("rm", "loop").returncode == 0


@pytest.mark.parametrize("how", [("kill",), ("kill", "-s", "TERM"), ("stop", "-t", "1")])
def test_stop_and_kill_of_a_running_service_end_its_policy(service, how):
    root, volume = service
    detach(root, volume, "--name", "svc", "--restart", "always", env=["FAIL_RUNS=1"])
    assert wait_for(lambda: runs(volume) == 2 and status("svc") == "running", 30)
    assert cli(*how, "svc").returncode == 0
    assert wait_for(lambda: status("svc") == "exited", 15)
    time.sleep(1)
    assert runs(volume) == 2 and status("svc") == "exited"
    assert cli("rm", "svc").returncode == 0


@pytest.mark.parametrize("verb", [("kill",), ("stop",), ("rm", "-f")])
def test_a_verb_during_the_back_off_ends_it_at_once(service, verb):
    root, volume = service
    detach(root, volume, "--name", "crash", "--restart", "always")
    # By the fifth run the back-off is 1.6 s: long enough to catch it waiting.
    assert wait_for(lambda: runs(volume) >= 5 and status("crash") == "restarting", 60)
    count = runs(volume)
    started = time.monotonic()
    assert cli(*verb, "crash").returncode == 0
    assert time.monotonic() - started < 10  # it did not wait for a stop timeout
    time.sleep(2)
    assert runs(volume) == count
    if verb[0] == "rm":
        assert cli("ps", "-a", "-q").stdout == b""
    else:
        assert status("crash") == "exited"
        assert cli("rm", "crash").returncode == 0


def test_the_back_off_grows(service):
    root, volume = service
    detach(root, volume, "--name", "grow", "--restart", "on-failure:5")
    assert wait_for(lambda: status("grow") == "exited", 60)
    times = [t for t, _ in starts(volume)]
    assert len(times) == 6
    gaps = [b - a for a, b in zip(times, times[1:])]
    # 0.1, 0.2, 0.4, 0.8, 1.6 s at least (/proc/uptime counts in hundredths):
    # lower bounds only, which load cannot break.
    assert all(gap >= 0.1 * 2 ** i - 0.011 for i, gap in enumerate(gaps)), gaps
    assert sum(gaps) >= 3.0, gaps
    assert cli("rm", "grow").returncode == 0


def test_a_monitor_killed_during_the_back_off_leaves_nothing(service, state_dir):
    root, volume = service
    id = detach(root, volume, "--name", "orphan", "--restart", "always")
    assert wait_for(lambda: runs(volume) >= 5 and status("orphan") == "restarting", 60)
    monitor = json.loads((state_dir / id / "state.json").read_text())["monitor"][0]
    os.kill(monitor, signal.SIGKILL)
    count = runs(volume)
    assert wait_for(lambda: status("orphan") == "dead", 10)
    time.sleep(2)
    assert runs(volume) == count  # no one restarts it
    assert not [g for g in container_cgroups() if "orphan" in g]
    assert cli("rm", "orphan").returncode == 0


def test_a_monitor_killed_during_a_run_leaves_nothing(service, state_dir):
    root, volume = service
    id = detach(root, volume, "--name", "orphan2", "--restart", "always", env=["FAIL_RUNS=1"])
    assert wait_for(lambda: runs(volume) == 2 and status("orphan2") == "running", 30)
    monitor = json.loads((state_dir / id / "state.json").read_text())["monitor"][0]
    os.kill(monitor, signal.SIGKILL)
    assert wait_for(lambda: status("orphan2") in ("exited", "dead"), 10)
    time.sleep(1)
    assert runs(volume) == 2
    assert cli("rm", "orphan2").returncode == 0


# -- refused at once ------------------------------------------------------------

def test_restart_with_rm_is_refused_as_docker_refuses_it(root):
    result = cli("run", "--root", root, "-d", "--rm", "--restart", "always", "/bin/busybox", "true")
    assert (result.returncode, result.stdout) == (125, b"")
    assert result.stderr == b"minicontainer: Conflicting options: --restart and --rm\n"
    control = cli("run", "--root", root, "-d", "--rm", "--restart", "no", "/bin/busybox", "true")
    assert control.returncode == 0, control.stderr
    assert wait_for(lambda: cli("ps", "-a", "-q").stdout == b"", 10)


def test_restart_without_d_is_refused(root):
    result = cli("run", "--root", root, "--restart", "always", "/bin/busybox", "true")
    assert result.returncode == 125 and result.stderr.count(b"\n") == 1
    assert result.stderr.startswith(b"minicontainer: --restart always: needs -d")


RESTART_VALUE = re.compile(r"(no|always|unless-stopped|on-failure(:[0-9]+)?)")


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(value=st.one_of(
    st.text(max_size=30),
    st.sampled_from(["on-failure:-1", "on-failure:", "on-failure:1.5", "always:3", "no:0",
                     "on-failure:99999999999999999999", "on-failure: 1", "ON-FAILURE",
                     "on-failure:\u0661", "on-failure:0x10", "unless-stopped:1", " always"]),
    st.builds(lambda n: f"on-failure:{n}", st.integers(min_value=2**31))))
def test_hostile_restart_values_are_refused_in_one_line(root, value):
    assume("\x00" not in value and not value.startswith("-"))
    assume(not RESTART_VALUE.fullmatch(value) or int(value.partition(":")[2] or 0) >= 2**31)
    result = cli("run", "--root", root, "-d", "--restart", value, "/bin/busybox", "true")
    assert result.returncode == 125, result
    assert result.stdout == b"" and result.stderr.count(b"\n") == 1, result.stderr
    assert result.stderr.startswith(b"minicontainer: --restart ")
    assert b"Traceback" not in result.stderr and b"Error(" not in result.stderr
    assert cli("ps", "-a", "-q").stdout == b""


def test_a_restart_resolves_inside_the_root_what_the_last_run_planted(service, tmp_path):
    """The container owns its root between runs: run 1 swaps its working
    directory's parent for a symlink to a host directory; run 2's set-up
    (-w, made if missing) still resolves inside the root, and the host
    directory stays empty."""
    root, volume = service
    outside = tmp_path / "host-dir"
    outside.mkdir()
    (root / "svc.sh").write_text(f"""#!/bin/busybox sh
n=$(busybox cat /data/count 2>/dev/null || echo 0); n=$((n + 1)); echo $n > /data/count
busybox pwd > /data/pwd.$n
if [ $n = 1 ]; then busybox rm -rf /app && busybox ln -s {outside} /app; fi
busybox ls -la / > /data/ls.$n
exit 3
""")
    detach(root, volume, "--name", "planted", "--restart", "on-failure:2", "-w", "/app/sub")
    assert wait_for(lambda: status("planted") == "exited", 60)
    assert (volume / "pwd.1").read_text().strip() == "/app/sub"  # the positive control
    assert " app -> " + str(outside) in (volume / "ls.1").read_text()  # the plant took
    assert list(outside.iterdir()) == []  # nothing made through the link
    assert os.path.islink(root / "app")  # the root is as the container left it
    assert inspect("planted")["RestartCount"] == 2
    assert b"--workdir /app/sub: open /app inside the root" in cli("logs", "planted").stderr
    assert cli("rm", "planted").returncode == 0
