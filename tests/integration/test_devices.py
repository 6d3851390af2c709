"""--device: the host's node made in the container's /dev, allowed in its
devices cgroup with the permissions given, and nothing else; hostile values
refused in one line, with 125, before anything is made."""
import json
import os

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from helpers import cli, network_leftovers, wait_for

FUSE = (10, 229)  # the device given
TUN = (10, 200)  # a device not given: the same probe must fail on it


@pytest.fixture(autouse=True)
def devices_here():
    if not os.path.exists("/dev/fuse") or not os.path.isdir("/sys/fs/cgroup/devices"):
        pytest.skip("needs /dev/fuse and the cgroup v1 devices controller")


def out(result):
    return result.stdout.decode().splitlines()


def test_the_given_device_works_and_no_other(run):
    """With MKNOD granted, the same probe (make a node, open it) succeeds for
    the device given and fails with EPERM for another: the devices cgroup
    allows exactly the one."""
    result = run("--cap-add", "MKNOD", "--device", "/dev/fuse", "/bin/busybox", "sh", "-c",
                 "/bin/probe open /dev/fuse r; /bin/probe node /dev/again %d %d;"
                 " /bin/probe node /dev/tun %d %d" % (*FUSE, *TUN))
    assert out(result) == ["ok", "ok", "error: Operation not permitted"], result.stderr
    # Without --device there is no devices cgroup (nor /dev/fuse): the probe of
    # the other device succeeds, so the refusal above is the cgroup's.
    control = run("--cap-add", "MKNOD", "/bin/busybox", "sh", "-c",
                  "/bin/probe open /dev/fuse r; /bin/probe node /dev/tun %d %d" % TUN)
    assert out(control) == ["error: No such file or directory", "ok"], control.stderr


def test_the_permissions_given_are_the_ones_allowed(root):
    """:r lets the container read the node, not write it nor make another;
    the group's list is that one rule and the standard nodes'."""
    started = cli("run", "--root", root, "-d", "--name", "dev", "--cap-add", "MKNOD",
                  "--device", "/dev/fuse:/dev/fuse:r", "/bin/probe", "sleep", "60")
    assert started.returncode == 0, started.stderr
    try:
        def probe(*args):
            return out(cli("exec", "dev", "/bin/probe", *args))
        assert probe("open", "/dev/fuse", "r") == ["ok"]
        assert probe("open", "/dev/fuse", "w") == ["error: Operation not permitted"]
        assert probe("node", "/dev/again", *FUSE) == ["error: Operation not permitted"]
        groups = json.loads(cli("inspect", "dev").stdout)[0]["Cgroups"]
        devices = [path for _, path in groups if path.startswith("/sys/fs/cgroup/devices/")]
        with open(os.path.join(devices[0], "devices.list")) as f:
            rules = f.read().split("\n")
        assert rules[0] == "c 10:229 r" and "a *:* rwm" not in rules
        assert sorted(r for r in rules if r) == sorted(["c 10:229 r", "c 1:3 rwm", "c 1:5 rwm",
                                                       "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm",
                                                       "c 5:0 rwm", "c 5:1 rwm", "c 5:2 rwm",
                                                       "c 136:* rwm"])
    finally:
        cli("rm", "-f", "dev")


def test_a_device_under_another_name(run):
    result = run("--device", "/dev/null:/dev/sub/mynull", "/bin/busybox", "sh", "-c",
                 "busybox ls -l /dev/sub/mynull; busybox cat /dev/sub/mynull && echo read")
    lines = out(result)
    assert lines[0].startswith("crw-rw-rw-") and lines[0].split()[4:6] == ["1,", "3"], lines
    assert lines[1] == "read"


@pytest.mark.parametrize("value, why", [
    ("/etc/passwd", "/etc/passwd is not a character or block device"),
    ("/dev", "/dev is not a character or block device"),
    ("/dev/nosuch", "No such file or directory"),
    ("dev/fuse", "the host path must be absolute"),
    ("/dev/fuse:/tmp/fuse", "the container path must be a name below /dev"),
    ("/dev/fuse:/dev/../etc/fuse", "the container path must be a name below /dev"),
    ("/dev/fuse:/dev", "the container path must be a name below /dev"),
    ("/dev/fuse:fuse:r", "the container path must be absolute"),
    ("/dev/fuse:/dev/fd/9", "/dev/fd/9 is a node, link or mount every container has"),
    ("/dev/fuse:/dev/null", "/dev/null is a node, link or mount every container has"),
    ("/dev/fuse:/dev/pts/9", "/dev/pts/9 is a node, link or mount every container has"),
    # where --network's /etc files are written before they are bound
    ("/dev/fuse:/dev/.minicontainer", "/dev/.minicontainer is a node, link or mount"),
    ("/dev/fuse:/dev/.minicontainer/hosts", "/dev/.minicontainer/hosts is a node, link or mount"),
    ("/dev/fuse:/dev/shm/f", "/dev/shm/f is a node, link or mount every container has"),
    ("/dev/fuse:/dev/fuse:rwx", "bad permissions 'rwx'"),
    ("/dev/fuse:/dev/fuse:", "bad permissions ''"),
    ("/dev/fuse:/dev/fuse:rr", "bad permissions 'rr'"),
    ("/dev/fuse:q", "bad permissions 'q'"),
    ("/dev/fuse:/dev/fuse:r:w", "expected HOST[:CONTAINER][:PERMISSIONS]"),
])
def test_a_bad_device_is_one_line_and_125(run, root, value, why):
    result = run("--device", value, "/bin/probe", "pid")
    assert result.returncode == 125 and result.stdout == b""
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"minicontainer: --device {value}: {why}"), lines
    assert network_leftovers() == []


def test_a_device_path_through_a_volume_is_refused(run, tmp_path):
    """A volume below /dev is this run's mount: no node goes into it."""
    (tmp_path / "vol").mkdir()
    result = run("-v", f"{tmp_path / 'vol'}:/dev/vol", "--device", "/dev/fuse:/dev/vol/fuse",
                 "/bin/probe", "pid")
    assert result.returncode == 125 and b"/dev/vol/fuse is a node, link or mount" in result.stderr
    assert list((tmp_path / "vol").iterdir()) == []


@pytest.mark.parametrize("option, target", [
    ("-v", "/dev/.minicontainer"), ("-v", "/dev/.minicontainer/hosts"),
    ("--tmpfs", "/dev/.minicontainer"),
])
def test_a_mount_where_the_etc_files_are_staged_is_refused_at_once(run, tmp_path, option, target):
    """A mount at /dev/.minicontainer made --network's set-up fail inside PID 1
    with an internal error (FileExistsError(17, ...)): refused before anything."""
    (tmp_path / "vol").mkdir()
    value = f"{tmp_path / 'vol'}:{target}" if option == "-v" else target
    result = run(option, value, "--network", "bridge", "/bin/probe", "pid")
    assert result.returncode == 125 and result.stdout == b""
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("minicontainer: --") and \
        f"{target.rstrip('/')} is one of the devices" in lines[0], lines
    assert list((tmp_path / "vol").iterdir()) == []
    assert network_leftovers() == []


def host_dev(tmp_path):
    """A directory standing for a host's /dev given as a volume (-v /dev:/dev):
    its null device with the host's own mode and owner."""
    import stat
    dev = tmp_path / "hostdev"
    dev.mkdir()
    os.mknod(dev / "null", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    os.chown(dev / "null", 4321, 4321)
    return dev


def test_a_volume_at_dev_keeps_the_hosts_nodes_and_gets_no_staging_left(run, tmp_path):
    """With /dev a volume (-v /dev:/dev), the set-up unlinked the host's
    /dev/null and made it again (0666, root's: missing meanwhile, changed
    after), and left /dev/.minicontainer there, so the next run (a restart)
    failed. Now what the host has is used as it is, and nothing is left; twice,
    as a restart meets it. The positive control: the run works and has its
    /etc/hosts."""
    dev = host_dev(tmp_path)
    before = os.lstat(dev / "null")
    for _ in range(2):
        result = run("-v", f"{dev}:/dev", "--network", "bridge", "/bin/busybox", "cat", "/etc/hosts")
        assert result.returncode == 0, result.stderr
        assert "host.minicontainer.internal" in result.stdout.decode()
        after = os.lstat(dev / "null")
        assert (after.st_ino, after.st_mode, after.st_uid, after.st_rdev) == \
            (before.st_ino, before.st_mode, before.st_uid, before.st_rdev)
        assert not os.path.lexists(dev / ".minicontainer")
    # (a veth goes with its network namespace, which the kernel tears down a moment later)
    assert wait_for(lambda: network_leftovers() == [], 10), network_leftovers()


def test_a_volume_at_dev_with_another_file_at_a_nodes_name_is_refused_untouched(run, tmp_path):
    """A regular file where /dev/zero would be made is the host's: it was
    unlinked and replaced by a device node; now the run is refused in one
    line and the file stays."""
    dev = host_dev(tmp_path)
    (dev / "zero").write_text("the host's\n")
    result = run("-v", f"{dev}:/dev", "/bin/busybox", "true")
    assert result.returncode == 125 and result.stdout == b""
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("minicontainer: make /dev/zero: something"
                                                   " else is there already"), lines
    assert (dev / "zero").read_text() == "the host's\n"


NAME_PARTS = st.sampled_from([".minicontainer", "null", "fd", "pts", "shm", "mqueue", "console",
                              "ptmx", "hosts", "x", ".", "..", "", "a b", "-"])


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(NAME_PARTS, min_size=1, max_size=3))
def test_any_device_name_is_refused_at_create_or_works(run, parts):
    """The class: wherever --device puts its node below /dev, with --network's
    /etc files beside it, the run either is refused at once in one line (125,
    before anything runs) or works with the node there; never an internal
    error from PID 1's set-up."""
    target = "/dev/" + "/".join(parts)
    result = run("--device", f"/dev/null:{target}", "--network", "bridge", "/bin/busybox", "sh",
                 "-c", f"busybox test -c '{target}' && busybox cat /etc/hosts")
    lines = result.stderr.decode().splitlines()
    if result.returncode == 125:
        assert len(lines) == 1 and lines[0].startswith(f"minicontainer: --device /dev/null:{target}: "), lines
    else:
        assert result.returncode == 0 and b"host.minicontainer.internal" in result.stdout, lines
    assert "internal error" not in result.stderr.decode()
