"""Faults that used to lose an exit status, hang, or end in a traceback: a
root's file turned into a FIFO, closed standard streams, inherited signal
dispositions, and bad input met only once the container is being set up."""
import os
import signal
import subprocess
import time

import pytest

from helpers import CLI, cli


def test_a_fifo_as_passwd_fails_at_once_instead_of_hanging(root, run):
    passwd = root / "etc" / "passwd"
    passwd.unlink(missing_ok=True)
    os.mkfifo(passwd)
    # Control: a plain reader would wait for a writer that never comes.
    assert subprocess.run(["timeout", "0.5", "cat", passwd]).returncode == 124
    started = time.monotonic()
    result = run("-u", "root", "/bin/probe", "ids")
    assert time.monotonic() - started < 5
    assert result.returncode == 125
    assert result.stderr == b"minicontainer: read /etc/passwd of the root: not a regular file\n"


@pytest.mark.parametrize("kind", ["directory", "symlink", "huge"])
def test_a_passwd_that_is_not_a_plain_file_is_refused(tmp_path, root, run, kind):
    passwd = root / "etc" / "passwd"
    passwd.unlink(missing_ok=True)
    if kind == "directory":
        passwd.mkdir()
        why = b"not a regular file"
    elif kind == "symlink":
        (root / "etc" / "real").write_text("root:x:0:0::/root:/bin/sh\n")
        passwd.symlink_to("real")
        why = b"symlink"
    else:
        with open(passwd, "w") as f:
            f.truncate(5 << 20)  # sparse: no disk
        why = b"larger than 4 MiB"
    result = run("-u", "root", "/bin/probe", "ids")
    assert result.returncode == 125 and why in result.stderr
    assert result.stderr.count(b"\n") == 1 and b"Traceback" not in result.stderr
    # Control: a plain file is read.
    passwd.unlink() if not passwd.is_dir() else passwd.rmdir()
    passwd.write_text("root:x:0:0::/root:/bin/sh\n")
    assert run("-u", "root", "/bin/probe", "ids").stdout.startswith(b"uid 0 ")


def closed(*fds):
    """subprocess options that start minicontainer with these descriptors closed."""
    return {"preexec_fn": lambda: [os.close(fd) for fd in fds]}


def test_closed_stdout_passes_the_exit_status_and_stays_closed(root):
    result = subprocess.run([*CLI, "run", "--root", root, "/bin/probe", "exit", "3"],
                            stderr=subprocess.PIPE, **closed(1))
    assert (result.returncode, result.stderr) == (3, b"")
    # The command gets stdout closed too, as it was asked; not a minicontainer socket.
    script = "echo x || echo stdout-is-closed >&2"
    result = subprocess.run([*CLI, "run", "--root", root, "/bin/busybox", "sh", "-c", script],
                            stderr=subprocess.PIPE, **closed(1))
    assert result.returncode == 0 and b"stdout-is-closed" in result.stderr
    # Control: with stdout open, the same script writes.
    assert cli("run", "--root", root, "/bin/busybox", "sh", "-c", script).stdout == b"x\n"


@pytest.mark.parametrize("fds", [(2,), (0, 1, 2), (0,)])
def test_closed_streams_keep_every_exit_status(root, fds):
    def run(*args):
        return subprocess.run([*CLI, "run", "--root", root, *args], capture_output=False,
                              stdout=subprocess.DEVNULL if 1 not in fds else None,
                              stderr=subprocess.DEVNULL if 2 not in fds else None,
                              **closed(*fds)).returncode
    assert run("/bin/probe", "exit", "3") == 3
    assert run("/bin/not-here") == 127
    assert run("/bin") == 126
    assert run("--memory", "1k", "/bin/probe", "pid") == 125


def test_inherited_ignored_signals_are_reset_for_the_command(root, probe):
    """A shell's background job starts with SIGINT and SIGQUIT ignored."""
    ignore = {"preexec_fn": lambda: [signal.signal(s, signal.SIG_IGN)
                                     for s in (signal.SIGINT, signal.SIGQUIT)]}
    def ignored(out):
        line = next(l for l in out.splitlines() if l.startswith(b"SigIgn:"))
        return int(line.split()[1], 16)
    # Control: a plain child inherits them.
    host = subprocess.run([probe, "cat", "/proc/self/status"], capture_output=True, **ignore)
    both = 1 << (signal.SIGINT - 1) | 1 << (signal.SIGQUIT - 1)
    assert ignored(host.stdout) & both == both  # (with more, under nohup: SIGHUP too)
    inside = cli("run", "--root", root, "/bin/probe", "cat", "/proc/self/status", **ignore)
    assert ignored(inside.stdout) == 0
    proc = subprocess.Popen([*CLI, "run", "--root", root, "/bin/probe", "sleep", "30"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **ignore)
    try:
        assert proc.stdout.readline() == b"ready\n"
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=5) == 130  # not 137 after the 10 s stop timeout
        assert time.monotonic() - started < 5
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()


LONG = "/" + "a" * 5000


@pytest.mark.parametrize("args, message", [
    (("--tmpfs", "/proc/x"), b"/proc is the kernel's"),
    (("-v", "/tmp:/sys/kernel"), b"/sys is the kernel's"),
    (("-v", "/tmp:/dev/null"), b"one of the devices minicontainer puts in /dev"),
    (("--tmpfs", "/dev/null/x"), b"one of the devices minicontainer puts in /dev"),
    (("-w", "/dev/null"), b"--workdir /dev/null: open /dev/null inside the root: Not a directory"),
    (("-w", "/proc/new"), b"--workdir /proc/new: create /proc/new in the root"),
    (("-w", "/bin/probe"), b"--workdir /bin/probe: open /bin/probe inside the root: Not a directory"),
    (("--tmpfs", "/bin/probe"), b"--tmpfs /bin/probe: mount on /bin/probe: it is a file in the root;"
                                b" this mount needs a directory"),
    (("-v", "/tmp:/bin/probe"), b"--volume /bin/probe: mount on /bin/probe: it is a file in the root;"
                                b" this mount needs a directory"),
    (("-v", "/etc/hostname:/bin"), b"--volume /bin: mount on /bin: it is a directory in the root;"
                                   b" this mount needs a file"),
    (("-w", LONG), b"the container path is too long"),
    (("-w", "/a" * 2100), b"the container path is too long"),
    (("--ulimit", "nofile=x"), b"expected NAME=SOFT[:HARD] with numbers"),
    (("-m", "\uff16\uff14m"), b"not a size"),
    (("--cap-add", "k\u0131ll"), b"unknown capability"),
    (("--pids-limit", "\uff11\uff10"), b"is not an integer"),
    (("--cpus", "\u0661"), b"is not a number"),
    (("-u", "\u00b2"), b"no user"),
    (("--root", "/proc"), b"root /proc: is one of the kernel's file systems"),
    (("--root", "/sys/kernel"), b"is one of the kernel's file systems"),
])
def test_bad_input_gets_one_line_and_125(root, args, message):
    if args[0] != "--root":
        args = ("--root", root, *args)
    result = cli("run", *args, "/bin/probe", "pid")
    assert result.returncode == 125, result.stderr
    assert message in result.stderr, result.stderr
    assert result.stderr.count(b"\n") == 1 and len(result.stderr) < 400
    assert result.stderr.startswith(b"minicontainer: ") and b"internal error" not in result.stderr


def test_an_empty_command_is_not_found(run):
    result = run("")
    assert (result.returncode, result.stderr) == (
        127, b"minicontainer: exec '': not found in the container (an empty command name)\n")


def test_deep_workdir_is_made(root, run):
    deep = "/d" * 2000  # 4,000 bytes: deep, but within PATH_MAX
    try:
        result = run("-w", deep, "/bin/probe", "cwd")
        assert (result.returncode, result.stdout) == (0, deep.encode() + b"\n")
    finally:  # deeper than Python's own tree walkers go
        subprocess.run(["rm", "-rf", root / "d"], check=True)


def test_nofile_zero_lets_a_static_command_run(run):
    assert run("--ulimit", "nofile=0", "/bin/probe", "exit", "5").returncode == 5
    result = run("--ulimit", "nofile=0", "/bin/probe", "cat", "/etc/passwd")
    assert b"Too many open files" in result.stderr  # the limit holds


def test_env_file_bytes_reach_the_command_as_they_are(tmp_path, run):
    env_file = tmp_path / "app.env"
    env_file.write_bytes(b"RAW=\xff\xfe bytes\n")
    result = run("--env-file", env_file, "/bin/probe", "env")
    assert result.returncode == 0 and b"RAW=\xff\xfe bytes\n" in result.stdout


def test_a_name_that_is_no_hostname_keeps_the_default_one(run):
    result = run("--name", "a..b", "/bin/probe", "hostname")
    assert (result.returncode, result.stdout) == (0, b"minicontainer\n")
    assert run("--name", "web_1", "/bin/probe", "hostname").stdout == b"web-1\n"


def test_a_very_long_path_in_an_error_is_shortened(root, run):
    result = run("/" + "x" * 5000)
    assert result.returncode == 127 and len(result.stderr) < 300 and b"..." in result.stderr


@pytest.fixture
def small_root(tmp_path, template_root):
    """A root on a tiny tmpfs, full: no block and no inode left."""
    path = tmp_path / "small"
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,nr_inodes=64", "tmpfs", path], check=True)
    try:
        for name in ("bin", "dev", "etc", "proc", "sys", "tmp"):
            (path / name).mkdir()
        for name in ("probe", "busybox"):
            (path / "bin" / name).write_bytes((template_root / "bin" / name).read_bytes())
            (path / "bin" / name).chmod(0o755)
        n = 0
        try:
            while True:
                (path / "tmp" / f"f{n}").touch()
                n += 1
        except OSError:
            pass
        with open(path / "tmp" / "f0", "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
            except OSError:
                pass
        yield path
    finally:
        subprocess.run(["umount", path], check=True)


@pytest.mark.parametrize("args, message", [
    (("--tmpfs", "/new"), b"--tmpfs /new: create /new in the root: No space left on device"),
    (("-v", "/tmp:/new/x"), b"--volume /new/x: create /new in the root: No space left on device"),
    (("--network", "bridge", "--subnet", "10.213.0.0/24"),
     b"/etc/hosts for --network: create /etc/hosts in the root: No space left on device"),
])
def test_a_full_root_says_so(small_root, args, message):
    result = cli("run", "--root", small_root, *args, "/bin/probe", "pid")
    assert (result.returncode, result.stderr) == (125, b"minicontainer: " + message + b"\n")
    assert cli("run", "--root", small_root, "/bin/probe", "exit", "4").returncode == 4  # control


def test_a_read_only_root_without_proc_says_what_to_do(tmp_path, root):
    (root / "proc").rmdir()
    ro = tmp_path / "ro"
    ro.mkdir()
    subprocess.run(["mount", "--bind", root, ro], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", ro], check=True)
        result = cli("run", "--root", ro, "/bin/probe", "pid")
    finally:
        subprocess.run(["umount", ro], check=True)
    assert result.returncode == 125
    assert result.stderr == (b"minicontainer: create /proc in the root: the root is read-only and"
                             b" has no /proc (make it in the root)\n")
    assert cli("run", "--root", root, "/bin/probe", "exit", "4").returncode == 4  # control: made
