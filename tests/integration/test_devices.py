"""--device: the host's node made in the container's /dev, allowed in its
devices cgroup with the permissions given, and nothing else; hostile values
refused in one line, with 125, before anything is made."""
import json
import os

import pytest

from helpers import cli, network_leftovers

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
