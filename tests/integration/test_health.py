"""Health checks: run -d --health-*, an image's Healthcheck, ps, inspect and
wait --condition healthy, for real, against busybox httpd; the check runs as
exec runs a command (its namespaces, no host descriptor), which the same probe
through exec controls."""
import json
import os
import re
import time

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from helpers import cli, wait_for


@pytest.fixture
def web(root, tmp_path):
    """(root, volume): /bin/sh in the root (CMD-SHELL runs /bin/sh -c), and a
    volume that busybox httpd serves, with an index page."""
    os.symlink("busybox", root / "bin" / "sh")
    volume = tmp_path / "www"
    volume.mkdir()
    (volume / "index.html").write_text("hello\n")
    return root, volume


def detach(root, *args):
    result = cli("run", "--root", root, "-d", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout.decode().strip()


def health(ref):
    result = cli("inspect", ref)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)[0]["State"].get("Health")


def ps_status(name):
    rows = [line for line in cli("ps").stdout.decode().splitlines() if line.endswith(f" {name}")]
    return rows[0] if rows else ""


PROBE = "busybox wget -qO- http://127.0.0.1:8080/index.html"


def serve(root, volume, name, *args):
    return detach(root, "--name", name, "-v", f"{volume}:/www", *args,
                  "/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www")


def test_a_health_check_flips_to_unhealthy_when_the_service_stops_answering(web):
    root, volume = web
    serve(root, volume, "web", "--health-cmd", PROBE, "--health-interval", "200ms",
          "--health-retries", "2")
    ready = cli("wait", "--condition", "healthy", "web", timeout=60)
    assert (ready.returncode, ready.stdout) == (0, b"healthy\n"), ready.stderr
    assert re.search(r"Up [^()]* \(healthy\)", ps_status("web"))
    (volume / "index.html").unlink()  # it answers 404 from now on
    assert wait_for(lambda: health("web")["Status"] == "unhealthy", 30)
    assert re.search(r"Up [^()]* \(unhealthy\)", ps_status("web"))
    state = health("web")
    assert state["FailingStreak"] >= 2 and 1 <= len(state["Log"]) <= 5
    last = state["Log"][-1]
    assert last["ExitCode"] == 1 and "404" in last["Output"] and last["Start"] <= last["End"]
    assert cli("wait", "--condition", "healthy", "web").returncode == 125  # not while unhealthy
    (volume / "index.html").write_text("back\n")
    assert wait_for(lambda: health("web")["Status"] == "healthy", 30)
    assert health("web")["FailingStreak"] == 0 and health("web")["Log"][-1]["Output"] == "back\n"
    assert cli("rm", "-f", "web").returncode == 0


def test_a_new_container_is_starting_until_its_first_check(web):
    root, volume = web
    serve(root, volume, "slow", "--health-cmd", PROBE, "--health-interval", "1m")
    try:  # at once: before the monitor's first record too (ps said nothing of health then)
        assert re.search(r"Up [^()]* \(health: starting\)", ps_status("slow"))
        assert health("slow") == {"Status": "starting", "FailingStreak": 0, "Log": []}
    finally:
        assert cli("rm", "-f", "slow").returncode == 0


def test_failures_in_the_start_period_do_not_count(web):
    root, volume = web
    (volume / "index.html").unlink()
    serve(root, volume, "warm", "--health-cmd", PROBE, "--health-interval", "200ms",
          "--health-retries", "1", "--health-start-period", "1m")
    assert wait_for(lambda: len(health("warm")["Log"]) >= 3, 30)
    assert health("warm")["Status"] == "starting"  # three failures, none counted
    (volume / "index.html").write_text("up\n")
    assert wait_for(lambda: health("warm")["Status"] == "healthy", 30)  # a success counts at once
    assert cli("rm", "-f", "warm").returncode == 0


NS_PROBE = ("for n in mnt net pid uts ipc cgroup; do busybox readlink /proc/self/ns/$n; done;"
            " busybox ls /proc/self/fd;"
            " busybox grep -E '^(Uid|CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status;"
            " busybox cat /proc/self/cgroup; busybox hostname")


def test_the_check_runs_in_the_containers_namespaces_with_no_host_descriptor(web):
    root, volume = web
    serve(root, volume, "ns", "--health-cmd", NS_PROBE, "--health-interval", "200ms",
          "--network", "bridge")
    assert wait_for(lambda: health("ns")["Log"], 30)
    seen = health("ns")["Log"][0]
    # The positive control: the same probe through exec says the same, word for word.
    control = cli("exec", "ns", "/bin/sh", "-c", NS_PROBE)
    assert control.returncode == 0, control.stderr
    assert seen["ExitCode"] == 0 and seen["Output"] == control.stdout.decode(), seen
    # And that is the container's, not the host's: other namespaces, and only
    # the descriptors exec gives (0, 1, 2, and ls's own).
    lines = seen["Output"].splitlines()
    host = [os.readlink(f"/proc/self/ns/{ns}") for ns in ("mnt", "net", "pid", "uts", "ipc", "cgroup")]
    assert all(inside != outside for inside, outside in zip(lines[:6], host)), lines
    assert lines[6:10] == ["0", "1", "2", "3"], lines
    assert "Seccomp:\t2" in lines and "NoNewPrivs:\t1" in lines and lines[-1] == "ns"
    assert cli("rm", "-f", "ns").returncode == 0


def sleepers(name):
    """The check's `sleep 1000`s running in the container, by their host pids."""
    found = []
    for pid in cli("ps", name).stdout.decode().split()[1:]:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read().split(b"\0")[:3] == [b"busybox", b"sleep", b"1000"]:
                    found.append(pid)
        except OSError:
            pass
    return found


def test_a_hanging_check_is_killed_at_its_timeout_with_all_it_started(web):
    root, volume = web
    serve(root, volume, "hang", "--init", "--health-cmd", "busybox sleep 1000 & busybox sleep 1000",
          "--health-interval", "200ms", "--health-timeout", "300ms", "--health-retries", "2")
    assert wait_for(lambda: health("hang")["Status"] == "unhealthy", 30)
    assert wait_for(lambda: len(health("hang")["Log"]) >= 4, 30)
    for result in health("hang")["Log"]:
        assert result["ExitCode"] == -1
        assert result["Output"] == "Health check exceeded timeout (0.3s)"
    # Four checks hung, each with two sleeps: at most the one running now is left.
    for _ in range(5):
        assert len(sleepers("hang")) <= 2, sleepers("hang")
        time.sleep(0.2)
    assert cli("rm", "-f", "hang").returncode == 0


def test_what_a_check_leaves_in_the_background_is_ended(web):
    root, volume = web
    serve(root, volume, "bg", "--init", "--health-cmd", "busybox sleep 1000 & exit 0",
          "--health-interval", "200ms")
    assert wait_for(lambda: len(health("bg")["Log"]) >= 4, 30)
    assert health("bg")["Status"] == "healthy"
    assert len(sleepers("bg")) <= 1, sleepers("bg")
    assert cli("rm", "-f", "bg").returncode == 0


def write_image(root, healthcheck):
    path = f"{root}.image.json"
    with open(path, "w") as f:
        json.dump({"reference": "test", "config": {"Healthcheck": healthcheck}}, f)
    os.chmod(path, 0o644)


def test_an_images_healthcheck_is_run_and_the_options_override_it(web):
    root, volume = web
    write_image(root, {"Test": ["CMD", "/bin/busybox", "wget", "-qO-",
                                "http://127.0.0.1:8080/index.html"], "Interval": 200_000_000})
    serve(root, volume, "img")
    assert cli("wait", "--condition", "healthy", "img", timeout=60).returncode == 0
    assert health("img")["Log"][0]["Output"] == "hello\n"
    serve(root, volume, "none", "--no-healthcheck")  # control: the image's check, turned off
    assert health("none") is None and "(" not in ps_status("none").split("   Up ")[1]
    serve(root, volume, "mine", "--health-cmd", "echo mine")  # the image's interval, my command
    assert wait_for(lambda: health("mine")["Log"], 30)
    assert health("mine")["Log"][0]["Output"] == "mine\n"
    assert cli("rm", "-f", "img", "none", "mine").returncode == 0


@pytest.mark.parametrize("image_check", [
    {"Test": "CMD true"}, {"Test": ["CMD"]}, {"Test": ["SHELL", "x"]}, {"Interval": -1},
    {"Test": ["NONE"], "Retries": "3"}, {"Interval": 1.5}, {"Timeout": 10}, [1, 2],
    # a NUL byte: every check was "internal error: ValueError('embedded null byte')"
    {"Test": ["CMD-SHELL", "echo a\0b"]}, {"Test": ["CMD", "/bin/busybox", "echo", "\0"]}])
def test_a_hostile_image_healthcheck_is_refused_in_one_line(web, image_check):
    root, volume = web
    write_image(root, image_check)
    result = cli("run", "--root", root, "-d", "/bin/busybox", "true")
    assert result.returncode == 125 and result.stderr.count(b"\n") == 1, result.stderr
    assert b"Healthcheck" in result.stderr and b"Traceback" not in result.stderr
    assert cli("ps", "-a", "-q").stdout == b""


def test_a_fifo_planted_as_the_image_file_is_refused_without_hanging(web):
    """The image configuration beside a root (its Healthcheck, Cmd, User...) is
    a name in the root's parent, which in /tmp another user can take first: a
    FIFO there held `run` for ever in its open. Now refused in one line. The
    positive control: the same root with the caller's regular file runs its
    image's command."""
    import subprocess
    root, volume = web
    path = f"{root}.image.json"
    os.mkfifo(path, 0o644)
    os.chown(path, 65534, 65534)  # another user's, as in a shared /tmp
    try:
        result = cli("run", "--root", root, "/bin/busybox", "true", timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("run hung opening a FIFO planted as the image configuration")
    assert result.returncode == 125 and result.stdout == b""
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"minicontainer: the image configuration {path}: not a regular file of yours"), lines
    os.unlink(path)
    with open(path, "w") as f:
        json.dump({"reference": "test", "config": {"Cmd": ["/bin/busybox", "echo", "image"]}}, f)
    os.chmod(path, 0o644)
    control = cli("run", "--root", root)
    assert control.returncode == 0 and control.stdout == b"image\n", control.stderr


@pytest.mark.parametrize("field, value", [
    ("Env", ["A=b\0c"]), ("Env", ["A\0=b"]), ("Env", ["A\0"]), ("WorkingDir", "/a\0b"),
    ("Cmd", ["/bin/busybox", "echo", "a\0b"]), ("Entrypoint", ["/bin/busybox\0"]),
])
def test_an_images_nul_byte_is_refused_at_run_in_one_line(web, field, value):
    """Every string of an image's configuration reaches execve or a path
    lookup: a NUL byte made PID 1 fail with "internal error: ValueError(
    'embedded null byte')". Now refused before anything runs. The positive
    control: the same configuration without the NUL byte runs."""
    root, volume = web
    config = {"Cmd": ["/bin/busybox", "echo", "ran"], field: value}
    with open(f"{root}.image.json", "w") as f:
        json.dump({"reference": "test", "config": config}, f)
    os.chmod(f"{root}.image.json", 0o644)
    for args in ((), ("-d",)):
        result = cli("run", "--root", root, *args)
        assert result.returncode == 125 and result.stdout == b""
        lines = result.stderr.decode().splitlines()
        assert len(lines) == 1 and "NUL byte" in lines[0] and "internal error" not in lines[0], lines
    assert cli("ps", "-a", "-q").stdout == b""
    clean = json.loads(json.dumps(value).replace("\\u0000", ""))
    with open(f"{root}.image.json", "w") as f:
        json.dump({"reference": "test", "config": dict(config, **{field: clean})}, f)
    control = cli("run", "--root", root, "/bin/busybox", "true") if field == "Entrypoint" \
        else cli("run", "--root", root)
    assert control.returncode == 0, control.stderr


def test_wait_for_health_fails_without_a_check_or_once_it_ended(web):
    root, volume = web
    serve(root, volume, "plain")
    result = cli("wait", "--condition", "healthy", "plain")
    assert (result.returncode, result.stderr) == (125, b"minicontainer: wait plain: it has no"
                                                  b" health check\n")
    detach(root, "--name", "gone", "--health-cmd", "true", "/bin/busybox", "true")
    result = cli("wait", "--condition", "healthy", "gone")
    assert result.returncode == 125 and b"it ended before it was healthy" in result.stderr
    assert cli("rm", "-f", "plain", "gone").returncode == 0


@pytest.mark.parametrize("args, message", [
    (("--no-healthcheck", "--health-cmd", "true"), b"--no-healthcheck: conflicts with --health-*"),
    (("--health-interval", "1s"), b"--health-interval: needs a health check to tune"),
    (("--health-interval", "-1s", "--health-cmd", "true"), b"--health-interval -1s: not a duration"),
    (("--health-timeout", "1ns", "--health-cmd", "true"), b"at least 1ms"),
])
def test_conflicting_health_options_are_refused(root, args, message):
    result = cli("run", "--root", root, "-d", *args, "/bin/busybox", "true")
    assert result.returncode == 125 and message in result.stderr, result.stderr
    assert result.stderr.count(b"\n") == 1
    foreground = cli("run", "--root", root, "--health-cmd", "true", "/bin/busybox", "true")
    assert foreground.returncode == 125 and b"needs -d" in foreground.stderr


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(option=st.sampled_from(["--health-interval", "--health-timeout", "--health-start-period",
                               "--health-retries"]),
       value=st.one_of(st.text(max_size=20), st.sampled_from(
           ["1x", "1.5.5s", "99999999999h", "-3", "3 ", "\u0663", "1e9s", "0x10", "1s2", ".s"])))
def test_hostile_health_values_are_refused_in_one_line(root, option, value):
    good = r"0|((\d+(\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h))+" if option != "--health-retries" else r"\d+"
    if "\x00" in value or value.startswith("-") and not value[1:2].isdigit() or \
            re.fullmatch(good, value, re.ASCII) and "99999999999h" not in value:
        return
    result = cli("run", "--root", root, "-d", "--health-cmd", "true", option, value,
                 "/bin/busybox", "true")
    assert result.returncode == 125, result
    assert result.stdout == b"" and result.stderr.count(b"\n") == 1, result.stderr
    assert result.stderr.startswith(f"minicontainer: {option} ".encode())
    assert b"Traceback" not in result.stderr
    assert cli("ps", "-a", "-q").stdout == b""


def children(pid):
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            found += [int(p) for p in f.read().split()]
    return found


def test_a_monitor_killed_during_a_check_takes_the_check_with_it(web, state_dir):
    root, volume = web
    id = serve(root, volume, "kept", "--health-cmd", "busybox sleep 1000",
               "--health-interval", "100ms", "--health-timeout", "1m")
    monitor = json.loads((state_dir / id / "state.json").read_text())["monitor"][0]
    # The monitor's children: the holder, and the check once it runs.
    assert wait_for(lambda: len(children(monitor)) >= 2, 30), children(monitor)
    checks = children(monitor)
    assert wait_for(lambda: sleepers("kept"), 30)
    os.kill(monitor, 9)
    assert wait_for(lambda: all(not os.path.exists(f"/proc/{p}") for p in checks), 10), checks
    assert wait_for(lambda: json.loads(cli("inspect", "kept").stdout)[0]["State"]["Status"]
                    in ("exited", "dead"), 10)  # the container went with its monitor, as ever
    assert cli("rm", "-f", "kept").returncode == 0
