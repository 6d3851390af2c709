"""Unit tests for resource limits: parsers, cgroup discovery, and both
writers against directories laid out like real cgroup trees."""
import os
import resource

import pytest
from hypothesis import given, strategies as st

import minicontainer as mc
from _minicontainer import cgroups, errors

MiB = 1 << 20


@pytest.mark.parametrize("text, size", [
    ("64m", 64 * MiB), ("64M", 64 * MiB), ("1g", 1 << 30), ("512k", 512 << 10),
    ("1048576", 1048576), ("1.5g", 3 << 29), ("100b", 100), ("2mb", 2 * MiB),
])
def test_sizes_parse_like_dockers(text, size):
    assert cgroups.parse_size(text, "--memory") == size


@pytest.mark.parametrize("text", ["abc", "-1", "64q", "", "1e3"])
def test_bad_sizes_are_refused(text):
    with pytest.raises(errors.ContainerError) as exc:
        cgroups.parse_size(text, "--memory")
    assert "not a size" in str(exc.value)


@given(size=st.integers(min_value=cgroups.MAX_SIZE + 1, max_value=2**200),
       unit=st.sampled_from(["", "b", "k", "m", "g", "t"]))
def test_a_size_beyond_a_signed_64_bit_number_is_refused_never_wrapped(size, unit):
    """The outside attack found --memory 2**64 + 64m (the library's
    memory=) taken, and the kernel, which reads a limit modulo 2**64, set
    64m; memory=2**200 set 0, and the command was killed at once (137). A
    size beyond 2**63 - 1 bytes is refused in one line."""
    text = f"{-(-size // cgroups.SIZE_UNITS[unit])}{unit}"  # at least `size` bytes
    with pytest.raises(errors.ContainerError) as exc:
        cgroups.parse_size(text, "--memory")
    assert str(exc.value) == f"--memory {text}: above the largest size, 2**63 - 1 bytes"
    # Control: the largest is taken, to the byte (not through a float's rounding).
    assert cgroups.parse_size(str(cgroups.MAX_SIZE), "--memory") == cgroups.MAX_SIZE
    assert cgroups.parse_size("8191t", "--memory") == 8191 << 40


def limits(**kw):
    args = dict(memory=None, memory_swap=None, pids_limit=None, cpus=None, cpu_shares=None,
                stats=False, ulimits=())
    args.update(kw)
    return cgroups.parse_limits(**args)


@pytest.mark.parametrize("kw, message", [
    ({"memory": "4m"}, "below the 6m minimum"),
    ({"memory_swap": "1g"}, "needs --memory too"),
    ({"memory": "1g", "memory_swap": "512m"}, "cannot be below --memory"),
    ({"cpus": 0.001}, "out of range"),
    ({"cpus": 1000.0}, "out of range"),
    ({"cpu_shares": 1}, "out of range: 2 to 262144"),
])
def test_bad_limits_are_refused(kw, message):
    with pytest.raises(errors.ContainerError) as exc:
        limits(**kw)
    assert message in str(exc.value)


def test_limits_parse_and_name_their_controllers():
    got = limits(memory="64m", memory_swap="-1", pids_limit=-1, cpus=0.5, cpu_shares=512)
    assert (got.memory, got.memory_swap, got.pids, got.cpus, got.cpu_shares) == \
        (64 * MiB, -1, 0, 0.5, 512)
    assert got.controllers() == {"memory", "pids", "cpu"}
    assert limits().controllers() == set()
    assert limits(stats=True).controllers() == {"memory", "pids"}


def test_default_nofile_is_dockers_within_the_hosts():
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    expected_hard = 524288 if hard == resource.RLIM_INFINITY else min(524288, hard)
    assert cgroups.parse_ulimits(()) == ((resource.RLIMIT_NOFILE, min(1024, expected_hard), expected_hard),)


def test_ulimits_parse_dockers_syntax():
    got = dict((n, (s, h)) for n, s, h in cgroups.parse_ulimits(["nofile=100:200", "nproc=50"]))
    assert got == {resource.RLIMIT_NOFILE: (100, 200), resource.RLIMIT_NPROC: (50, 50)}


@pytest.mark.parametrize("value, message", [
    ("bogus=1", "unknown limit"), ("nofile=x", "expected NAME=SOFT[:HARD]"),
    ("nofile=10:5", "soft limit must be"), ("nofile=99999999999", "above minicontainer's own hard limit"),
])
def test_bad_ulimits_are_refused(value, message):
    with pytest.raises(errors.ContainerError) as exc:
        cgroups.parse_ulimits([value])
    assert message in str(exc.value)


HYBRID_MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""


def test_cgroup_mounts_find_both_versions():
    v2, v1 = cgroups.cgroup_mounts(HYBRID_MOUNTINFO)
    assert v2 == "/sys/fs/cgroup/unified"
    assert v1 == {"cpu": "/sys/fs/cgroup/cpu,cpuacct", "cpuacct": "/sys/fs/cgroup/cpu,cpuacct",
                  "memory": "/sys/fs/cgroup/memory", "pids": "/sys/fs/cgroup/pids"}


def test_own_cgroups_read_every_hierarchy():
    text = "9:name=systemd:/\n4:memory:/user/a\n2:cpu,cpuacct:/x\n0::/user.slice/s\n"
    assert cgroups.own_cgroups(text) == {"name=systemd": "/", "memory": "/user/a", "cpu": "/x",
                                    "cpuacct": "/x", "": "/user.slice/s"}


V2_FILES = ("cgroup.procs", "cgroup.kill", "cgroup.events", "cgroup.subtree_control",
            "memory.max", "memory.swap.max", "pids.max", "cpu.max", "cpu.weight", "cpu.stat",
            "memory.peak", "memory.events", "pids.peak")
V1_MEMORY = ("cgroup.procs", "memory.limit_in_bytes", "memory.memsw.limit_in_bytes",
             "memory.max_usage_in_bytes", "memory.oom_control")


@pytest.fixture
def fake_kernel(monkeypatch):
    """Cgroup.create on a plain directory tree: mkdir, then the interface files
    the kernel would show, by version."""
    real_create = cgroups.Cgroup.create

    def create(self):
        real_create(self)
        files = V2_FILES if self.version == 2 else V1_MEMORY + ("pids.max", "cpu.cfs_period_us",
                                                                "cpu.cfs_quota_us", "cpu.shares")
        for name in files:
            os.close(os.open(name, os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=self.fd))

    monkeypatch.setattr(cgroups.Cgroup, "create", create)


def v2_tree(tmp_path, controllers, subtree=""):
    own = tmp_path / "unified" / "user.slice" / "me"
    own.mkdir(parents=True)
    (own / "cgroup.controllers").write_text(" ".join(controllers) + "\n")
    (own / "cgroup.subtree_control").write_text(subtree)
    mountinfo = f"41 31 0:38 / {tmp_path / 'unified'} rw - cgroup2 cgroup2 rw\n"
    return own, mountinfo, "0::/user.slice/me\n"


def test_v2_writer_writes_every_limit(tmp_path, fake_kernel):
    own, mountinfo, self_cgroup = v2_tree(tmp_path, ["cpuset", "cpu", "io", "memory", "pids"])
    lim = limits(memory="64m", memory_swap="96m", pids_limit=20, cpus=0.5, cpu_shares=512)
    groups = cgroups.make_cgroups(lim, "mc-test", mountinfo, self_cgroup)
    assert [(g.version, sorted(g.controllers)) for g in groups] == [(2, ["cpu", "memory", "pids"])]
    group = own / "mc-test"
    assert (own / "cgroup.subtree_control").read_text() == "+cpu +memory +pids"
    assert (group / "memory.max").read_text() == str(64 * MiB)
    assert (group / "memory.swap.max").read_text() == str(32 * MiB)
    assert (group / "pids.max").read_text() == "20"
    assert (group / "cpu.max").read_text() == "50000 100000"
    assert (group / "cpu.weight").read_text() == str(1 + (512 - 2) * 9999 // 262142)
    cgroups.join_cgroups(groups, 4242)
    assert (group / "cgroup.procs").read_text() == "4242"
    (group / "cpu.stat").write_text("usage_usec 1500000\nuser_usec 1000000\n")
    (group / "memory.peak").write_text("12345\n")
    (group / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    (group / "pids.peak").write_text("7\n")
    assert cgroups.post_mortem(groups) == {"cpu_us": 1500000, "memory_peak": 12345, "oom_kills": 1,
                                      "pids_peak": 7}
    for g in groups:  # the fake tree has files in the group, so rmdir cannot work here
        os.close(g.fd)
        os.close(g.parent_fd)


def test_v2_unlimited_values_are_max(tmp_path, fake_kernel):
    own, mountinfo, self_cgroup = v2_tree(tmp_path, ["memory", "pids"], subtree="memory pids")
    groups = cgroups.make_cgroups(limits(memory="64m", memory_swap="-1", pids_limit=0),
                             "mc-test", mountinfo, self_cgroup)
    assert (own / "mc-test" / "memory.swap.max").read_text() == "max"
    assert (own / "mc-test" / "pids.max").read_text() == "max"
    assert (own / "cgroup.subtree_control").read_text() == "memory pids"  # already enabled
    for g in groups:
        os.close(g.fd)
        os.close(g.parent_fd)


def test_v2_no_internal_processes_rule_is_explained(tmp_path, monkeypatch):
    own, mountinfo, self_cgroup = v2_tree(tmp_path, ["memory"])
    real_open = open

    def busy_open(path, mode="r", *a, **kw):
        if str(path).endswith("cgroup.subtree_control") and "w" in mode:
            raise OSError(16, "Device or resource busy")
        return real_open(path, mode, *a, **kw)

    monkeypatch.setattr(cgroups, "open", busy_open, raising=False)
    with pytest.raises(errors.ContainerError) as exc:
        cgroups.make_cgroups(limits(memory="64m"), "mc-test", mountinfo, self_cgroup)
    assert "no-internal-processes" in str(exc.value)
    assert not (own / "mc-test").exists()


def test_controllers_missing_from_v2_come_from_v1(tmp_path, fake_kernel):
    own, _, _ = v2_tree(tmp_path, ["hugetlb"])
    (tmp_path / "memory" / "mine").mkdir(parents=True)
    mountinfo = (f"41 31 0:38 / {tmp_path / 'unified'} rw - cgroup2 cgroup2 rw\n"
                 f"35 31 0:32 / {tmp_path / 'memory'} rw - cgroup cgroup rw,memory\n")
    self_cgroup = "4:memory:/mine\n0::/user.slice/me\n"
    groups = cgroups.make_cgroups(limits(memory="64m", memory_swap="128m"), "mc-test",
                             mountinfo, self_cgroup)
    assert [(g.version, sorted(g.controllers)) for g in groups] == [(2, []), (1, ["memory"])]
    v1 = tmp_path / "memory" / "mine" / "mc-test"
    assert (v1 / "memory.limit_in_bytes").read_text() == str(64 * MiB)
    assert (v1 / "memory.memsw.limit_in_bytes").read_text() == str(128 * MiB)
    for g in groups:
        os.close(g.fd)
        os.close(g.parent_fd)


def test_no_limit_makes_no_group(tmp_path):
    own, mountinfo, self_cgroup = v2_tree(tmp_path, ["memory"])
    assert cgroups.make_cgroups(limits(), "mc-test", mountinfo, self_cgroup) == []
    assert not (own / "mc-test").exists()


def test_a_controller_the_host_lacks_is_an_error_and_nothing_is_left(tmp_path):
    own, mountinfo, self_cgroup = v2_tree(tmp_path, ["memory"])
    with pytest.raises(errors.ContainerError) as exc:
        cgroups.make_cgroups(limits(pids_limit=5), "mc-test", mountinfo, self_cgroup)
    assert "no pids controller" in str(exc.value)
    assert not (own / "mc-test").exists()
