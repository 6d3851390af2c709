"""`run` for real: the CLI as a subprocess, as root, with real namespaces.

Each isolation check also runs the same probe on the host, where it must
succeed, so no check passes by accident.
"""
import os
import shutil
import signal
import subprocess

import pytest

from _minicontainer import constants

from helpers import REPO, build_static, cli, container_pids, host_mounts, on_terminal, processes_rooted_under, read_until, wait_for


def test_walkthrough_hello_from_the_container(tmp_path, root):
    """The original's walkthrough, verbatim: build, deploy ./containerclient, run it."""
    work = tmp_path / "work"
    work.mkdir()
    build_static(REPO / "examples" / "containerclient.c", work / "containerclient")
    deployed = cli("deploy", "--root", root, "./containerclient", cwd=work)
    assert deployed.returncode == 0, deployed.stderr
    result = cli("run", "--root", root, "./containerclient", cwd=work)
    assert (result.returncode, result.stdout, result.stderr) == (0, b"Hello from the container!\n", b"")


def test_command_runs_as_pid_1(run):
    result = run("/bin/probe", "pid")
    assert result.stdout == b"pid 1 ppid 0\n"


def test_proc_lists_only_container_processes(run, probe):
    host = subprocess.run([probe, "pids"], capture_output=True, text=True).stdout.split()
    assert len(host) > 10  # the probe sees the host's processes on the host
    assert run("/bin/probe", "pids").stdout.split() == [b"1"]
    shell = run("/bin/busybox", "sh", "-c", "/bin/probe pids; exit 0")
    assert sorted(shell.stdout.split()) == [b"1", b"2"]


def test_host_files_are_invisible(tmp_path, run, probe):
    secret = tmp_path / "host-secret"
    secret.write_text("x")
    assert subprocess.run([probe, "exists", secret]).returncode == 0
    assert run("/bin/probe", "exists", secret).returncode == 1
    assert run("/bin/probe", "exists", REPO / "minicontainer.py").returncode == 1


def test_the_host_tree_is_gone_from_mountinfo(run, probe):
    host = subprocess.run([probe, "cat", "/proc/self/mountinfo"], capture_output=True).stdout
    assert len(host.splitlines()) > 2
    inside = run("/bin/probe", "cat", "/proc/self/mountinfo").stdout.decode().splitlines()
    points = [line.split()[4] for line in inside]
    container = {"/", "/proc", "/dev", "/dev/pts", "/dev/shm", "/sys",
                 *constants.READONLY_PATHS, *constants.MASKED_PATHS}
    assert points[0] == "/" and set(points) <= container


def test_environment_is_clean_not_the_hosts(run, probe):
    env = {**os.environ, "MC_HOST_SECRET": "1"}
    assert b"MC_HOST_SECRET=1" in subprocess.run([probe, "env"], capture_output=True, env=env).stdout
    inside = run("/bin/probe", "env", env=env).stdout.decode().splitlines()
    assert not any(line.startswith("MC_HOST_SECRET") for line in inside)
    assert "HOME=/root" in inside and any(line.startswith("PATH=/usr/local/sbin") for line in inside)


def test_working_directory_is_the_container_root(run):
    assert run("/bin/probe", "cwd").stdout == b"/\n"


def test_arguments_pass_byte_for_byte(run):
    args = [b"-la", b"--help", b"", b"a b", b"--root", b"\xff\xfe not utf-8", "é".encode()]
    result = run("/bin/probe", "argv", *[os.fsdecode(a) for a in args])
    assert result.stdout.split(b"\n")[:-1] == [a.hex().encode() for a in args]


@pytest.mark.parametrize("code", [0, 1, 42, 255])
def test_exit_status_passes_through(run, code):
    assert run("/bin/probe", "exit", code).returncode == code


def test_status_of_a_child_killed_by_a_signal_passes_through(run):
    assert run("/bin/busybox", "sh", "-c", "/bin/probe raise 9; exit $?").returncode == 137


def test_pid_1_killed_by_a_signal_gives_128_plus_n(root, start):
    c = start(root, "/bin/probe", "sleep", "30")
    c.wait_ready()
    os.kill(c.pid1(), signal.SIGKILL)
    assert c.wait()[0] == 137


def test_command_not_found_is_127(run):
    result = run("nosuchcommand")
    assert result.returncode == 127
    assert result.stderr == (b"minicontainer: exec nosuchcommand: not found in the container"
                             b" (no such file or directory)\n")


def test_directory_is_126(run):
    result = run("/bin")
    assert (result.returncode, result.stderr) == (126, b"minicontainer: exec /bin: is a directory\n")


def test_not_executable_is_126(root, run):
    (root / "bin" / "data").write_text("x")
    result = run("/bin/data")
    assert result.returncode == 126 and b"not executable" in result.stderr


def test_missing_elf_interpreter_is_126_and_named(tmp_path, root, run):
    dynamic = tmp_path / "dynamic"
    subprocess.run(["gcc", "-o", dynamic, REPO / "tests" / "probe.c"], check=True)
    assert subprocess.run([dynamic, "exit", "3"]).returncode == 3  # runs on the host
    shutil.copy(dynamic, root / "bin" / "dynamic")
    result = run("/bin/dynamic", "exit", "3")
    assert result.returncode == 126
    assert b"its ELF interpreter /lib64/ld-linux-x86-64.so.2 is missing" in result.stderr \
        or b"its ELF interpreter /lib/ld-linux" in result.stderr


def test_wrong_architecture_is_126(root, run, probe):
    data = bytearray(probe.read_bytes())
    data[18:20] = (183 if os.uname().machine != "aarch64" else 62).to_bytes(2, "little")
    (root / "bin" / "foreign").write_bytes(bytes(data))
    (root / "bin" / "foreign").chmod(0o755)
    result = run("/bin/foreign")
    assert result.returncode == 126 and b"exec format error: built for" in result.stderr


@pytest.mark.parametrize("bad", ["/", "missing", "file", "symlink"])
def test_bad_root_is_125_before_anything_runs(tmp_path, bad):
    (tmp_path / "file").write_text("")
    (tmp_path / "symlink").symlink_to(tmp_path)
    path = bad if bad == "/" else tmp_path / bad
    result = cli("run", "--root", path, "/bin/probe", "pid")
    assert result.returncode == 125
    assert result.stderr.startswith(b"minicontainer: root ") and result.stderr.count(b"\n") == 1


def test_bad_option_is_125(run):
    result = run("--no-such-option", "/bin/probe")
    assert result.returncode == 125 and result.stderr.count(b"\n") == 1


def test_relative_command_runs_the_deployed_program(root, run):
    assert run("./probe", "exit", "5").returncode == 5


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signal_to_minicontainer_ends_a_default_pid_1(root, start, sig):
    """PID 1 ignores signals it has no handler for; minicontainer applies the default."""
    c = start(root, "/bin/probe", "sleep", "30")
    c.wait_ready()
    c.proc.send_signal(sig)
    assert c.wait()[0] == 128 + sig


def test_signal_to_minicontainer_reaches_a_handler_once(root, start):
    c = start(root, "/bin/probe", "trap", signal.SIGTERM)
    c.wait_ready()
    c.proc.send_signal(signal.SIGTERM)
    assert c.wait()[0] == 1  # the probe's own status: it caught one SIGTERM


def test_ignored_signal_stays_ignored_and_sigkill_leaves_nothing(root, start):
    c = start(root, "/bin/probe", "ignore", signal.SIGTERM)
    c.wait_ready()
    c.proc.send_signal(signal.SIGTERM)
    with pytest.raises(subprocess.TimeoutExpired):
        c.proc.wait(0.5)
    assert processes_rooted_under(root)
    c.proc.kill()  # SIGKILL minicontainer itself
    c.proc.wait()
    assert wait_for(lambda: not processes_rooted_under(root), 1.0)


def test_killing_minicontainer_kills_the_container_within_a_second(root, start):
    c = start(root, "/bin/busybox", "sh", "-c", "/bin/probe sleep 30 & /bin/probe sleep 30; exit 0")
    c.wait_ready()
    assert wait_for(lambda: len(container_pids(root)) == 3, 2.0)
    c.proc.kill()
    c.proc.wait()
    assert wait_for(lambda: not processes_rooted_under(root), 1.0)


@pytest.mark.parametrize("trap, code", [(False, 130), (True, 1)])
def test_ctrl_c_on_the_terminal(root, trap, code):
    """^C stops a default PID 1 with 130, and reaches a handler exactly once."""
    args = ("trap", signal.SIGINT) if trap else ("sleep", 30)
    with on_terminal(root, "/bin/probe", *args) as term:
        assert b"ready" in read_until(term.master, b"ready")
        os.write(term.master, b"\x03")
        assert term.proc.wait(10) == code


def test_mounts_do_not_leak_to_a_shared_host_mount(tmp_path, template_root, start):
    """On systemd hosts / is shared; a shared tmpfs here reproduces that."""
    shared = tmp_path / "shared"
    shared.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", shared], check=True)
    try:
        subprocess.run(["mount", "--make-shared", shared], check=True)
        # Control: a mount namespace that keeps propagation does leak here.
        control = shared / "control"
        control.mkdir()
        subprocess.run(["unshare", "--mount", "--propagation", "unchanged",
                        "mount", "-t", "tmpfs", "none", control], check=True)
        assert str(control) in host_mounts()
        subprocess.run(["umount", control], check=True)

        root = shared / "root"
        subprocess.run(["cp", "-a", template_root, root], check=True)
        before = host_mounts()
        c = start(root, "/bin/probe", "sleep", "30")
        c.wait_ready()
        assert host_mounts() == before  # nothing propagated while it runs
        c.proc.send_signal(signal.SIGTERM)
        assert c.wait()[0] == 143
        assert host_mounts() == before
        assert not os.listdir(root / "proc")
    finally:
        subprocess.run(["umount", "-R", shared], check=True)


def test_installed_console_script_runs(tmp_path):
    script = shutil.which("minicontainer")
    if script is None:
        pytest.skip("minicontainer is not installed on PATH (run setup.sh)")
    result = subprocess.run([script, "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and "minicontainer version" in result.stdout
