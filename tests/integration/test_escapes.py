"""The ways out that runc's and crun's CVEs took, tried against minicontainer.

A descriptor into the host at exec (CVE-2024-21626, "Leaky Vessels"), the
command or its interpreter through /proc/self/fd/N or /proc/self/exe
(CVE-2019-5736), mount targets and the working directory through planted
symlinks, and a container's files read by minicontainer's own Python. Each
attack is shown to work where it should (on the host, with a descriptor of
the host's open, or with the protection off), so no check passes by accident.
Each goes through both doors: the command line and the library (door).
"""
import os
import subprocess
import sys

import pytest

from helpers import cli


def with_fd3(path):
    """subprocess options that give the child `path` (opened O_PATH) as fd 3."""
    fd = os.open(path, os.O_PATH)
    return fd, {"pass_fds": (3,), "preexec_fn": lambda: os.dup2(fd, 3)}


@pytest.fixture
def host_probe(tmp_path, probe):
    """A copy of the probe on the host, outside every test root."""
    path = tmp_path / "host" / "probe"
    path.parent.mkdir()
    path.write_bytes(probe.read_bytes())
    path.chmod(0o755)
    return path


def test_command_through_a_leaked_host_descriptor_is_not_found(door, root, host_probe):
    fd, leak = with_fd3("/")
    try:
        through = f"/proc/self/fd/3{host_probe}"
        # Control: with a descriptor of the host's / as fd 3, the path runs the host's file.
        assert subprocess.run([through, "pid"], capture_output=True, **leak).returncode == 0
        # minicontainer's caller leaks that descriptor; it is closed before anything is resolved.
        result = door("run", "--root", root, through, "pid", **leak)
        assert (result.returncode, result.stdout) == (127, b"")
        # Passed on on purpose, it reaches the command, but exec does not follow it.
        result = cli("run", "--root", root, "--preserve-fds", 1, through, "pid", **leak)
        assert result.returncode == 126 and b"magic link" in result.stderr
    finally:
        os.close(fd)


@pytest.mark.parametrize("options", [(), ("--init",)])
def test_planted_link_to_a_host_file_does_not_run_it(door, root, host_probe, options):
    """CVE-2019-5736's first half: the container's command is a host binary."""
    (root / "bin" / "app").symlink_to(f"/proc/self/fd/3{host_probe}")
    before = host_probe.read_bytes()
    result = door("run", "--root", root, *options, "/bin/app", "pid")
    assert result.returncode in (126, 127) and b"pid" not in result.stdout
    assert host_probe.read_bytes() == before
    fd, leak = with_fd3("/")  # control: the link leads to the host's file where fd 3 is the host's /
    try:
        link = root / "bin" / "app"
        assert subprocess.run([link, "pid"], capture_output=True, **leak).stdout.startswith(b"pid ")
    finally:
        os.close(fd)


def test_interpreter_line_through_a_host_descriptor_is_refused(door, root, host_probe):
    script = root / "bin" / "script"
    script.write_text(f"#!/proc/self/fd/3{host_probe} pid\n")
    script.chmod(0o755)
    result = door("run", "--root", root, "/bin/script")
    assert result.returncode in (126, 127) and b"pid" not in result.stdout
    fd, leak = with_fd3("/")  # control: on the host the kernel follows it
    try:
        assert subprocess.run([script], capture_output=True, **leak).stdout.startswith(b"pid ")
    finally:
        os.close(fd)


def test_workdir_through_a_host_descriptor_is_refused(door, tmp_path, root):
    """CVE-2024-21626: -w into the host, then ../ to read and write its files."""
    secret = tmp_path / "host" / "secret"
    secret.parent.mkdir()
    secret.write_text("host secret")
    (root / "wt").symlink_to(f"/proc/self/fd/3{secret.parent}")
    script = "cat secret; echo written > planted"
    # --preserve-fds is the command line's (the library passes no descriptor on)
    for options in ((), ("--preserve-fds", 1)) if door is cli else ((),):
        fd, leak = with_fd3("/")
        try:
            result = door("run", "--root", root, *options, "-w", "/wt", "/bin/busybox", "sh", "-c",
                         script, **leak)
            # Control: the same link, followed on the host with fd 3 open, reads the secret.
            control = subprocess.run(["cat", root / "wt" / "secret"], capture_output=True, **leak)
        finally:
            os.close(fd)
        assert result.returncode == 125 and b"magic link" in result.stderr
        assert b"host secret" not in result.stdout
        assert control.stdout == b"host secret"
    assert not (secret.parent / "planted").exists()


@pytest.mark.parametrize("option", ["--volume", "--tmpfs", "--workdir"])
def test_mount_targets_through_a_host_descriptor_make_nothing_on_the_host(door, tmp_path, root, option):
    host_dir = tmp_path / "host"
    host_dir.mkdir()
    (root / "wt").symlink_to(f"/proc/self/fd/3{host_dir}")
    value = {"--volume": f"{tmp_path}:/wt/sub", "--tmpfs": "/wt/dir", "--workdir": "/wt/new"}[option]
    fd, leak = with_fd3("/")
    try:
        result = door("run", "--root", root, option, value, "/bin/probe", "pid", **leak)
    finally:
        os.close(fd)
    assert result.returncode == 125 and b"magic link" in result.stderr
    assert list(host_dir.iterdir()) == []
    # Control: a link that stays inside the root is followed, and the target made there.
    (root / "wt").unlink()
    (root / "wt").symlink_to("/inside")
    (root / "inside").mkdir()
    assert door("run", "--root", root, option, value, "/bin/probe", "pid").returncode == 0
    assert [p.name for p in (root / "inside").iterdir()] == [value.rsplit("/", 1)[1]]


@pytest.mark.parametrize("link", ["../../../../../../..", "/"])
def test_mount_targets_climbing_out_stay_inside(door, tmp_path, root, link):
    """A relative or absolute link that would climb out resolves at the root's /."""
    (root / "up").symlink_to(link)
    assert door("run", "--root", root, "--tmpfs", "/up/made-here", "/bin/probe", "pid").returncode == 0
    assert (root / "made-here").is_dir()
    assert not os.path.exists("/made-here")


def test_no_descriptor_of_the_hosts_reaches_set_up_or_command(door, root):
    """Whatever its caller leaked, only 0-2 reach the command, and nothing opened
    by minicontainer (cgroup or network state directories) is still open there."""
    fd, leak = with_fd3("/")
    try:
        result = door("run", "--root", root, "-m", "64m", "--pids-limit", 50, "/bin/probe", "fds",
                     **leak)
        control = subprocess.run([root / "bin" / "probe", "fds"], capture_output=True, **leak)
    finally:
        os.close(fd)
    assert control.stdout == b"0\n1\n2\n3\n"  # the leak is there for a plain child
    assert (result.returncode, result.stdout) == (0, b"0\n1\n2\n")


# Inside, the environment is minicontainer's own: MARK is unset, and a module
# that ran would leave /planted-module-ran in the root.
PLANTED = ("import os\n"
           "open(os.environ.get('MARK', '/planted-module-ran'), 'w').write(__name__)\n")


def plant_modules(root):
    """A module of every standard library name, and of minicontainer's own
    dependencies, on each directory of the interpreter's path, inside the root."""
    names = set(sys.stdlib_module_names) | {"click", "prctl", "_prctl", "elftools", "zstandard", "backports"}
    dirs = [d for d in sys.path if d.startswith("/")]
    for directory in dirs:
        target = root / directory.lstrip("/")
        target.mkdir(parents=True, exist_ok=True)
        for name in names:
            (target / f"{name}.py").write_text(PLANTED)
    return dirs


def test_modules_planted_in_the_root_never_load(door, tmp_path, root):
    """minicontainer's processes after pivot_root see the container's files; a
    lazily imported module would run with every capability. None may load."""
    dirs = plant_modules(root)
    for options in ((), ("--init",), ("--ulimit", "nofile=64"), ("-u", "1000", "-w", "/new")):
        result = door("run", "--root", root, *options, "/bin/probe", "exit", 0)
        assert result.returncode == 0, (options, result.stderr)
        assert not (root / "planted-module-ran").exists(), options
    bad = door("run", "--root", root, "/bin/not-here")  # a failure path too
    assert bad.returncode == 127 and not (root / "planted-module-ran").exists()
    # Control: the same interpreter, looking in those directories, loads them.
    marker = tmp_path / "marker"
    path = [str(root / d.lstrip("/")) for d in dirs]
    subprocess.run([sys.executable, "-S", "-c", f"import sys; sys.path[:] = {path!r}; import json"],
                   env={"MARK": str(marker)}, capture_output=True)
    assert marker.read_text() == "json"
