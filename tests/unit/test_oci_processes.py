"""How the OCI verbs find a container's processes, without root: by the PID
namespace only where the container made it, else by its cgroup (a tree of
cgroup.procs files here), and never a pid that has stopped being a member."""
import subprocess

import pytest

import minicontainer as mc
from _minicontainer import cgroups as mc_cgroups, constants, container, errors, lifecycle, procs, spec as mc_spec, state


def entry_with(tmp_path, namespaces, ns_paths=None, pid1=None, cgroups=()):
    store = state.Store(str(tmp_path / "state")).ensure()
    return store.create(None, {"spec": {"namespaces": namespaces, "ns_paths": ns_paths or {}},
                               "pid1": pid1, "cgroups": [list(g) for g in cgroups]})


def sleeper():
    proc = subprocess.Popen(["sleep", "30"])
    return proc, [proc.pid, procs.process_start(proc.pid)]


@pytest.mark.parametrize("namespaces, ns_paths, owns", [
    (constants.CLONE_NEWNS | constants.CLONE_NEWPID, {}, True),               # made: every process in it is ours
    (constants.CLONE_NEWNS, {}, False),                                # left out: the runtime's own
    (constants.CLONE_NEWNS, {str(constants.CLONE_NEWPID): "/proc/7/ns/pid"}, False),  # a pod's, joined
    (None, {}, True),                                           # an entry of run's: always made
])
def test_only_a_pid_namespace_the_container_made_is_its_own(tmp_path, namespaces, ns_paths, owns):
    assert lifecycle.owns_pid_namespace(entry_with(tmp_path, namespaces, ns_paths)) is owns


def test_a_groups_members_are_its_subtrees_and_a_hidden_pid_is_never_one(tmp_path):
    group = tmp_path / "group"
    (group / "sub" / "deeper").mkdir(parents=True)
    (group / "cgroup.procs").write_text("12\n0\n")  # 0: a process of another PID namespace (v2)
    (group / "sub" / "deeper" / "cgroup.procs").write_text("34\n")
    assert sorted(mc_cgroups.cgroup_members(str(group))) == [12, 34]
    assert sorted(mc_cgroups.cgroup_members(str(group), visible=False)) == [0, 12, 34]  # busy all the same
    (group / "cgroup.procs").write_text("")
    (group / "sub" / "deeper" / "cgroup.procs").write_text("")
    assert mc_cgroups.cgroup_members(str(group), visible=False) == []


def test_the_group_searched_is_v2s_then_v1s_freezer(tmp_path):
    v1_pids, v1_freezer, v2 = tmp_path / "pids", tmp_path / "freezer", tmp_path / "unified"
    for path in (v1_pids, v1_freezer, v2):
        path.mkdir()
    (v1_freezer / "freezer.state").write_text("THAWED\n")
    both_v1 = [(1, str(v1_pids)), (1, str(v1_freezer))]
    assert lifecycle.process_group(entry_with(tmp_path, constants.CLONE_NEWNS, cgroups=both_v1)) == \
        (1, str(v1_freezer))
    assert lifecycle.process_group(entry_with(tmp_path, constants.CLONE_NEWNS, cgroups=both_v1 + [(2, str(v2))])) \
        == (2, str(v2))
    gone = [(2, str(tmp_path / "removed"))]
    assert lifecycle.process_group(entry_with(tmp_path, constants.CLONE_NEWNS, cgroups=gone)) is None


def test_kill_all_without_a_cgroup_or_pid_namespace_of_its_own_is_refused(tmp_path):
    """Nothing tells its processes from others: kill --all refuses (runc errors);
    delete --force kills PID 1 alone, and nothing else is touched."""
    (pid1_proc, pid1), (other, _) = sleeper(), sleeper()
    try:
        entry = entry_with(tmp_path, constants.CLONE_NEWNS, pid1=pid1)
        with pytest.raises(errors.ContainerError, match="no cgroup of its own"):
            lifecycle.kill_every_process(entry, 9)
        assert pid1_proc.poll() is None and other.poll() is None
        assert lifecycle.container_processes(entry) == [pid1[0]]  # ps: what is known, PID 1
        lifecycle.kill_every_process(entry, 9, strict=False)
        assert pid1_proc.wait(timeout=5) == -9
        assert other.poll() is None
    finally:
        for proc in (pid1_proc, other):
            proc.kill()
            proc.wait()


def test_a_pid_is_signalled_only_if_still_a_member_once_held(tmp_path):
    """The list is read again after each pid is held by a pidfd: one no longer
    listed (it left, or its pid was recycled) is not signalled."""
    (member, _), (left, _) = sleeper(), sleeper()
    try:
        lifecycle.signal_members([member.pid, left.pid], lambda pids: [member.pid], 9)
        assert member.wait(timeout=5) == -9
        assert left.poll() is None
        lifecycle.signal_members([999999999], lambda pids: [999999999], 9)  # gone: nothing, no error
    finally:
        for proc in (member, left):
            proc.kill()
            proc.wait()


def test_exec_enters_no_namespace_its_caller_shares_with_pid_1(tmp_path):
    """exec's choice, compared in /proc: a process in every namespace of ours
    gives none to enter; a pidfd whose process is gone (its pid may be
    another's by now) falls back to the spec: what it made and joined."""
    proc, _ = sleeper()
    spec = mc_spec.Spec("/", ["x"], namespaces=constants.CLONE_NEWNS | constants.CLONE_NEWPID | constants.CLONE_NEWUTS)
    spec.ns_paths = {constants.CLONE_NEWNET: "/run/netns/pod"}
    pidfd = mc.os.pidfd_open(proc.pid)
    try:
        assert container.namespaces_apart(pidfd, spec) == 0
        proc.kill()
        proc.wait()
        assert container.namespaces_apart(pidfd, spec) == constants.CLONE_NEWNS | constants.CLONE_NEWUTS | constants.CLONE_NEWNET
    finally:
        mc.os.close(pidfd)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
