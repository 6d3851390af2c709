"""Resource limits for real, as root, on this host's cgroups (v1 memory, pids
and cpu; cgroup2 for the container's own group). Each limit is shown to bite
only when set: the same probe runs free without it."""
import os
import re
import signal
import subprocess

from _minicontainer import cgroups
from helpers import container_cgroups, wait_for


def test_no_limit_means_no_cgroup(root, start):
    c = start(root, "/bin/probe", "sleep", 30)
    c.wait_ready()
    assert container_cgroups() == []


def test_fork_bomb_is_stopped_by_pids_limit(run):
    assert run("/bin/probe", "forks", 40).stdout == b"forked 40\n"  # control
    assert run("--pids-limit", 20, "/bin/probe", "forks", 40).stdout == b"forked 19\n"
    assert subprocess.run(["true"]).returncode == 0  # the host still forks


def test_memory_limit_ends_the_command_with_137_and_says_why(run):
    assert run("/bin/probe", "alloc", 200).stdout == b"allocated 200\n"  # control
    result = run("--memory", "64m", "/bin/probe", "alloc", 200)
    assert result.returncode == 137
    assert result.stderr == (b"minicontainer: memory limit 64m hit: the kernel's OOM killer"
                             b" ended the command\n")


def cpu_share(output):
    cpu, wall = map(float, re.fullmatch(rb"cpu (\S+) wall (\S+)\n", output).groups())
    return cpu / wall


def test_cpus_throttle_a_busy_loop(run):
    assert cpu_share(run("/bin/probe", "spin", 1).stdout) > 0.8  # control
    assert 0.15 < cpu_share(run("--cpus", 0.25, "/bin/probe", "spin", 1).stdout) < 0.35


def test_stats_report_a_post_mortem(run):
    result = run("--stats", "/bin/busybox", "sh", "-c", "/bin/probe alloc 20; /bin/probe forks 3")
    line = result.stderr.decode()
    match = re.fullmatch(r"minicontainer: stats: (\S+) s wall, (\S+) s CPU, (\S+) MiB peak memory,"
                         r" (\d+) peak pids\n", line)
    assert match, line
    # sh execs its last command in place: the probe and its 3 children
    assert float(match[3]) >= 20 and int(match[4]) == 4


def test_container_is_in_its_groups_before_the_command_runs(root, start):
    c = start(root, "--memory", "64m", "--pids-limit", 50, "/bin/probe", "sleep", 30)
    c.wait_ready()
    groups = container_cgroups()
    pid1 = str(c.pid1())
    kinds = {path.split("/")[4] for path in groups}
    assert {"unified", "memory", "pids"} <= kinds
    for path in groups:
        assert pid1 in open(os.path.join(path, "cgroup.procs")).read().split(), path
    v2 = next(p for p in groups if "/unified/" in p)
    assert "populated 1" in open(os.path.join(v2, "cgroup.events")).read()
    c.proc.terminate()
    assert c.wait()[0] == 143


def test_cgroup_namespace_is_rooted_at_the_containers_group(run):
    lines = run("--memory", "64m", "/bin/probe", "cat", "/proc/self/cgroup").stdout.decode().split()
    assert all(line.endswith(":/") for line in lines), lines
    shared = run("--cgroupns", "host", "--memory", "64m", "/bin/probe", "cat", "/proc/self/cgroup")
    assert b"minicontainer-" in shared.stdout


def test_no_group_is_left_after_an_error(root, run):
    (root / "bin" / "data").write_text("x")
    assert run("--memory", "64m", "/bin/data").returncode == 126
    (root / "proc").rmdir()
    (root / "proc").write_text("not a directory")
    result = run("--memory", "64m", "/bin/probe", "pid")
    assert result.returncode == 125 and b"mount on /proc: it is a file in the root; this mount needs a directory" in result.stderr
    assert container_cgroups() == []


def test_no_group_is_left_after_sigkill_of_minicontainer(root, start):
    c = start(root, "--memory", "64m", "--pids-limit", 50, "/bin/probe", "sleep", 30)
    c.wait_ready()
    assert container_cgroups()
    c.proc.kill()
    c.proc.wait()
    assert wait_for(lambda: container_cgroups() == [], 2.0)


def test_v2_group_kill_and_events_for_real(tmp_path):
    """cgroup2 here carries only hugetlb, but groups, cgroup.procs, cgroup.events
    and cgroup.kill work: exercise them directly."""
    v2_mount, _ = cgroups.cgroup_mounts(open("/proc/self/mountinfo").read())
    own = cgroups.own_cgroups(open("/proc/self/cgroup").read())[""].lstrip("/")
    groups = [cgroups.Cgroup(2, os.path.join(v2_mount, own, "minicontainer-test-v2"), ())]
    groups[0].create()
    try:
        sleeper = subprocess.Popen(["sleep", "30"])
        cgroups.join_cgroups(groups, sleeper.pid)
        assert groups[0].field("cgroup.events", "populated") == 1
        groups[0].kill_all()
        assert sleeper.wait(5) == -signal.SIGKILL
        assert wait_for(lambda: groups[0].field("cgroup.events", "populated") == 0, 2.0)
    finally:
        found, errors = cgroups.remove_cgroups(groups)
    assert errors == [] and container_cgroups() == []


def test_out_of_range_limit_is_refused_before_anything_starts(run):
    result = run("--cpus", 0.5, "--cpu-shares", 1, "/bin/probe", "pid")
    assert result.returncode == 125 and b"--cpu-shares 1: out of range" in result.stderr
    assert container_cgroups() == []


def test_nofile_default_and_override(run):
    hard = __import__("resource").getrlimit(__import__("resource").RLIMIT_NOFILE)[1]
    script = "ulimit -n; ulimit -Hn"
    assert run("/bin/busybox", "sh", "-c", script).stdout.split() == \
        [b"1024", str(min(hard, 524288)).encode()]
    assert run("--ulimit", "nofile=100:200", "/bin/busybox", "sh", "-c", script).stdout.split() == \
        [b"100", b"200"]
    too_many = run("--ulimit", f"nofile={hard + 1}", "/bin/probe", "pid")
    assert too_many.returncode == 125 and b"CAP_SYS_RESOURCE" in too_many.stderr
