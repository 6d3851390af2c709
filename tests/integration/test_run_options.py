"""docker's run options for real: env, workdir, hostname, volumes, tmpfs,
read-only and throw-away roots, terminals, pipes, signals, names."""
import hashlib
import os
import signal
import subprocess
import time

import pytest

from helpers import CLI, cli, container_pids, on_terminal, read_until


def test_env_workdir_and_hostname_seen_inside(tmp_path, run):
    env_file = tmp_path / "env"
    env_file.write_text("FROM_FILE=f\n")
    result = run("-e", "A=1", "-e", "PATH=/bin", "--env-file", env_file, "-w", "/work/here",
                 "--hostname", "box", "/bin/busybox", "sh", "-c", "env; pwd; hostname",
                 env={**os.environ, "HOST_ONLY": "x"})
    out = result.stdout.decode().splitlines()
    assert {"A=1", "PATH=/bin", "FROM_FILE=f"} <= set(out)
    assert not any(line.startswith("HOST_ONLY") for line in out)
    assert out[-2:] == ["/work/here", "box"]


def test_read_only_volume_cannot_be_written_or_remounted(tmp_path, run):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "in").write_text("from host")
    rw = run("-v", f"{shared}:/data", "/bin/busybox", "sh", "-c", "cat /data/in; echo new > /data/out")
    assert rw.stdout == b"from host" and (shared / "out").read_text() == "new\n"  # control
    script = "echo x > /data/denied; busybox mount -o remount,rw /data; echo x > /data/denied2"
    ro = run("-v", f"{shared}:/data:ro", "/bin/busybox", "sh", "-c", script)
    assert b"Read-only file system" in ro.stderr
    assert not (shared / "denied").exists() and not (shared / "denied2").exists()
    # Even root with every capability and no seccomp filter is a different case:
    # the control shows the remount itself is what the defaults prevent.
    allowed = run("-v", f"{shared}:/data:ro", "--cap-add", "ALL", "--seccomp", "unconfined",
                  "/bin/busybox", "sh", "-c", "busybox mount -o remount,rw /data && echo x > /data/via-remount")
    assert allowed.returncode == 0 and (shared / "via-remount").exists()


def test_file_volume_and_tmpfs(tmp_path, run):
    host_file = tmp_path / "config"
    host_file.write_text("conf")
    result = run("-v", f"{host_file}:/etc/app.conf:ro", "--tmpfs", "/cache:size=1m",
                 "/bin/busybox", "sh", "-c", "cat /etc/app.conf; grep ' /cache ' /proc/self/mountinfo")
    assert result.stdout.startswith(b"conf")
    assert b"tmpfs" in result.stdout and b"size=1024k" in result.stdout


def test_read_only_root_blocks_writes_but_not_tmp(run):
    script = "echo x > /f || echo root-denied; echo x > /tmp/f && echo tmp-ok; echo x > /run/f && echo run-ok"
    assert run("--read-only", "/bin/busybox", "sh", "-c", script).stdout == b"root-denied\ntmp-ok\nrun-ok\n"
    no_tmpfs = run("--read-only", "--read-only-tmpfs", "false", "/bin/busybox", "sh", "-c", "echo x > /tmp/f")
    assert no_tmpfs.returncode != 0


def manifest(root):
    """Every path with its type, mode, size and content hash."""
    lines = []
    for top, dirs, files in os.walk(root):
        for name in sorted(dirs + files):
            path = os.path.join(top, name)
            st = os.lstat(path)
            digest = hashlib.sha256(open(path, "rb").read()).hexdigest() if os.path.isfile(path) \
                and not os.path.islink(path) else os.readlink(path) if os.path.islink(path) else ""
            lines.append((os.path.relpath(path, root), st.st_mode, st.st_size, digest))
    return sorted(lines)


def test_throw_away_root_leaves_the_root_byte_identical(root, run):
    before = manifest(root)
    script = "rm -rf /etc /bin/busybox-copy; rm /bin/probe; echo new > /new; mkdir -p /var/x; chmod 700 /tmp; ls /bin"
    result = run("--rm", "/bin/busybox", "sh", "-c", script)
    assert result.returncode == 0 and b"probe" not in result.stdout
    assert manifest(root) == before
    # Control: without --rm the same writes land in the root.
    run("/bin/busybox", "sh", "-c", "echo new > /new")
    assert (root / "new").read_text() == "new\n"


def test_pipes_pass_through_without_a_terminal(root):
    result = subprocess.run([*CLI, "run", "--root", str(root), "/bin/busybox", "cat"],
                            input=b"hi\x00bytes\n", capture_output=True, timeout=30)
    assert result.stdout == b"hi\x00bytes\n"


@pytest.mark.parametrize("init", [False, True])
def test_interactive_shell_on_a_real_terminal(root, init):
    options = ["--init"] if init else []
    with on_terminal(root, *options, "-it", "/bin/busybox", "sh", rows=33, columns=101) as term:
        read_until(term.master, b"# ")
        os.write(term.master, b"stty size; tty; echo done-$((6*7))\n")
        out = read_until(term.master, b"done-42")
        assert b"33 101" in out and b"/dev/pts/0" in out
        term.resize(40, 120)
        term.proc.send_signal(signal.SIGWINCH)
        time.sleep(0.3)
        os.write(term.master, b"stty size\n")
        assert b"40 120" in read_until(term.master, b"40 120")
        os.write(term.master, b"sleep 30; echo after-$((1+1))\n")
        time.sleep(0.5)
        os.write(term.master, b"\x03")  # ^C reaches the container's foreground job
        os.write(term.master, b"echo alive-$((2+3))\n")
        out = read_until(term.master, b"alive-5")
        assert b"alive-5" in out and b"after-2" not in out
        os.write(term.master, b"exit 3\n")
        assert term.proc.wait(10) == 3
        assert term.settings() == term.saved  # the host terminal is as it was


def test_ctrl_z_stops_the_foreground_job_inside(root):
    with on_terminal(root, "-t", "/bin/busybox", "sh") as term:
        read_until(term.master, b"# ")
        os.write(term.master, b"sleep 30\n")
        time.sleep(0.5)
        os.write(term.master, b"\x1a")  # ^Z
        assert b"Stopped" in read_until(term.master, b"Stopped")
        os.write(term.master, b"kill -9 %1; wait; echo killed\n")
        assert b"killed" in read_until(term.master, b"killed\r\n")
        os.write(term.master, b"exit 0\n")  # ash refuses the first exit while it counted a stopped job
        os.write(term.master, b"exit 0\n")
        assert term.proc.wait(10) == 0


def test_terminal_is_restored_when_the_container_is_killed(root):
    with on_terminal(root, "-t", "/bin/probe", "sleep", 30) as term:
        assert b"ready" in read_until(term.master, b"ready")
        assert term.settings() != term.saved  # raw while it runs
        os.kill(container_pids(root)[0], signal.SIGKILL)
        assert term.proc.wait(10) == 137
        assert term.settings() == term.saved


def test_tty_without_a_terminal_is_an_error(run):
    result = run("-t", "/bin/probe", "pid")
    assert result.returncode == 125 and b"not a terminal" in result.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
                                 signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH])
def test_each_forwarded_signal_reaches_a_handler(root, start, sig):
    c = start(root, "/bin/probe", "trap", int(sig))
    c.wait_ready()
    c.proc.send_signal(sig)
    assert c.wait()[0] == 1  # the probe caught exactly one


def test_sigwinch_does_not_kill_a_default_pid_1(root, start):
    c = start(root, "/bin/probe", "sleep", 1)
    c.wait_ready()
    c.proc.send_signal(signal.SIGWINCH)
    assert c.wait()[0] == 0


def test_stop_timeout_escalates_to_sigkill(root, start):
    c = start(root, "--stop-timeout", 1, "/bin/probe", "ignore", int(signal.SIGTERM))
    c.wait_ready()
    begun = time.monotonic()
    c.proc.terminate()
    assert c.wait()[0] == 137
    assert time.monotonic() - begun >= 0.9


def test_names_label_and_exclude(root, start, run):
    """docker's rule: a name is taken until its container is removed."""
    c = start(root, "--name", "web_1", "/bin/probe", "sleep", 30)
    c.wait_ready()
    taken = run("--name", "web_1", "/bin/probe", "pid")
    assert taken.returncode == 125 and b"the name is in use by another container" in taken.stderr
    assert run("--name", "web_2", "/bin/probe", "hostname").stdout == b"web-2\n"
    c.proc.terminate()
    c.wait()
    still = run("--name", "web_1", "/bin/probe", "pid")  # exited, but kept: still taken
    assert still.returncode == 125 and b"rm it first" in still.stderr
    assert cli("rm", "web_1", "web_2").returncode == 0
    assert run("--name", "web_1", "/bin/probe", "hostname").stdout == b"web-1\n"  # free again
    assert run("--rm", "--name", "web_3", "/bin/probe", "hostname").stdout == b"web-3\n"
    assert cli("rm", "web_1").returncode == 0
    assert cli("ps", "-a", "-q").stdout == b""  # --rm left nothing
