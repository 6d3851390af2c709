"""Least privilege inside: capabilities, no_new_privs, seccomp, users.

Each denial is shown to come from minicontainer: the same probe succeeds
with the protection turned off (or on the host)."""
import os
import shutil
import subprocess
import tempfile

import pytest

from _minicontainer import constants, spec


@pytest.fixture
def run(root, door):
    """This module's tests go through both doors: the command line and the library."""
    return lambda *args, **kw: door("run", "--root", root, *args, **kw)


DEFAULT_MASK = sum(1 << spec.capability_numbers()[name] for name in constants.DEFAULT_CAPABILITIES)
ALL_OFF = ("--seccomp", "unconfined", "--cap-add", "ALL")
EPERM = b"error: Operation not permitted\n"
# What the probe can try, and the capability that lifts the filter's refusal
# (None: refused whatever the capabilities), as docker's profile does.
REFUSED = {
    **{name: "SYS_ADMIN" for name in (
        "mount", "umount2", "pivot_root", "unshare", "setns", "bpf",
        "fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree", "mount_setattr",
        "clone-newuser", "clone-newns", "clone-newpid", "clone-newnet", "clone-newuts",
        "clone-newipc", "clone-newcgroup")},
    **{name: None for name in (
        "kexec_load", "kexec_file_load", "keyctl", "add_key", "request_key", "swapon", "swapoff",
        "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register",
        "tiocsti", "tiocsti-high")},
    "init_module": "SYS_MODULE", "finit_module": "SYS_MODULE", "delete_module": "SYS_MODULE",
    "reboot": "SYS_BOOT", "iopl": "SYS_RAWIO", "ioperm": "SYS_RAWIO",
    "open_by_handle_at": "DAC_READ_SEARCH",
    "kcmp": "SYS_PTRACE", "pidfd_getfd": "SYS_PTRACE", "process_madvise": "SYS_PTRACE",
}


def status(run, *options):
    out = run(*options, "/bin/probe", "cat", "/proc/self/status").stdout.decode()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in out.splitlines())}


def test_default_capabilities_nnp_and_seccomp_are_exact(run):
    st = status(run)
    assert DEFAULT_MASK == 0x800405FB
    for field in ("CapPrm", "CapEff", "CapBnd"):
        assert int(st[field], 16) == DEFAULT_MASK, field
    assert int(st["CapInh"], 16) == 0 and int(st["CapAmb"], 16) == 0
    assert st["NoNewPrivs"] == "1" and st["Seccomp"] == "2"


def test_cap_options_change_the_sets(run):
    st = status(run, "--cap-drop", "ALL", "--cap-add", "NET_RAW")
    assert int(st["CapBnd"], 16) == int(st["CapEff"], 16) == 1 << 13
    assert status(run, "--seccomp", "unconfined")["Seccomp"] == "0"


def test_a_non_root_user_has_no_capabilities(run):
    st = status(run, "--user", "1000:1000")
    for field in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
        assert int(st[field], 16) == 0, field
    assert int(st["CapBnd"], 16) == DEFAULT_MASK
    assert st["NoNewPrivs"] == "1"


@pytest.mark.parametrize("name,cap", REFUSED.items())
def test_seccomp_refuses_each_dangerous_call(run, name, cap):
    assert run("/bin/probe", "syscall", name).stdout == EPERM
    if cap is None:  # the filter alone refuses it: with every capability it is still EPERM
        assert run("--cap-add", "ALL", "/bin/probe", "syscall", name).stdout == EPERM
    else:  # docker's rule: the capability that the call needs lifts the refusal
        lifted = run("--cap-add", cap, "/bin/probe", "syscall", name).stdout
        assert lifted and EPERM not in lifted, lifted
    # Control: with the filter off and every capability, the call reaches the kernel.
    allowed = run(*ALL_OFF, "/bin/probe", "syscall", name).stdout
    assert allowed and b"Operation not permitted" not in allowed, allowed


def test_clone3_says_enosys_so_libc_falls_back_to_clone(run):
    assert run("/bin/probe", "syscall", "clone3").stdout == b"error: Function not implemented\n"
    assert run("/bin/probe", "syscall", "clone-plain").stdout == b"ok\n"  # what libc falls back to
    assert run("/bin/busybox", "sh", "-c", "/bin/probe exit 7 & wait $!; echo $?").stdout == b"7\n"
    assert run("--cap-add", "SYS_ADMIN", "/bin/probe", "syscall", "clone3").stdout == b"ok\n"
    assert run(*ALL_OFF, "/bin/probe", "syscall", "clone3").stdout == b"ok\n"


def test_no_user_namespace_from_inside_to_mount_in(run, probe):
    """The way out of a default docker container before its profile caught up:
    a user namespace of one's own, where one is root, and a mount there."""
    assert subprocess.run([probe, "userns-mount"], capture_output=True).stdout == b"mounted\n"
    assert run("/bin/probe", "userns-mount").stdout == EPERM
    # Control: the filter is what stops it; without it the same attack works inside.
    assert run("--seccomp", "unconfined", "/bin/probe", "userns-mount").stdout == b"mounted\n"


def test_raw_packet_sockets_need_net_raw(run, probe):
    assert subprocess.run([probe, "packet"], capture_output=True).stdout == b"ok\n"
    assert run("/bin/probe", "packet").stdout == EPERM
    assert run("--cap-add", "NET_RAW", "/bin/probe", "packet").stdout == b"ok\n"


def test_mounting_is_refused_inside(run):
    assert run("/bin/probe", "mount", "/tmp").stdout == b"error: Operation not permitted\n"
    assert run(*ALL_OFF, "/bin/probe", "mount", "/tmp").stdout == b"ok\n"  # only inside


def test_read_only_proc_sys_cannot_be_remounted(run):
    script = "busybox mount -o remount,rw /proc/sys 2>&1; echo rc=$?"
    assert b"rc=0" not in run("/bin/busybox", "sh", "-c", script).stdout
    assert b"rc=0" in run(*ALL_OFF, "/bin/busybox", "sh", "-c", script).stdout


def test_mknod_is_out_unless_asked_for(run):
    assert run("/bin/probe", "mknod", "/dev/disk").stdout == b"error: Operation not permitted\n"
    assert run("--cap-add", "MKNOD", "/bin/probe", "mknod", "/dev/disk").stdout == b"ok\n"


def test_user_option_sets_ids_and_clears_groups(root, run):
    assert run("--user", "1000:1001", "/bin/probe", "ids").stdout == \
        b"uid 1000 euid 1000 gid 1001 egid 1001 groups\n"
    (root / "etc" / "passwd").write_text("app:x:1234:2345:App:/home/app:/bin/sh\n")
    (root / "etc" / "group").write_text("staff:x:50:app\n")
    assert run("--user", "app:staff", "/bin/probe", "ids").stdout == \
        b"uid 1234 euid 1234 gid 50 egid 50 groups\n"
    assert b"HOME=/home/app\n" in run("--user", "app", "/bin/probe", "env").stdout
    bad = run("--user", "nobody-here", "/bin/probe", "ids")
    assert bad.returncode == 125 and b"no user 'nobody-here'" in bad.stderr


@pytest.fixture
def setuid_probe(probe):
    """A setuid-root copy of the probe in a directory any user can reach."""
    directory = tempfile.mkdtemp(prefix="mc-suid-")
    os.chmod(directory, 0o755)
    path = os.path.join(directory, "suid-probe")
    shutil.copy(probe, path)
    os.chown(path, 0, 0)
    os.chmod(path, 0o4755)
    yield path
    shutil.rmtree(directory)


def test_setuid_binary_in_the_root_gains_nothing(root, run, setuid_probe):
    as_user = {"preexec_fn": lambda: (os.setgid(1000), os.setuid(1000))}
    host = subprocess.run([setuid_probe, "ids"], capture_output=True, **as_user).stdout
    assert host.startswith(b"uid 1000 euid 0 ")  # it works on the host
    shutil.copy(setuid_probe, root / "bin" / "suid-probe")
    os.chmod(root / "bin" / "suid-probe", 0o4755)
    inside = run("--user", "1000", "/bin/suid-probe", "ids").stdout
    assert inside.startswith(b"uid 1000 euid 1000 ")


@pytest.mark.parametrize("plant", ["script", "symlink"])
def test_proc_self_exe_trick_cannot_run_the_hosts_python(tmp_path, root, run, plant):
    script = "#!/proc/self/exe\nprint('host python ran')\n"
    control = tmp_path / "control"
    control.write_text(script)
    control.chmod(0o755)
    # Control: exec'd from Python on the host, the trick runs that Python.
    assert subprocess.run([control], capture_output=True).stdout == b"host python ran\n"
    evil = root / "bin" / "evil"
    if plant == "script":
        evil.write_text(script)
        evil.chmod(0o755)
    else:
        evil.symlink_to("/proc/self/exe")
    for options in ((), ("--init",)):
        result = run(*options, "/bin/evil")
        assert result.returncode == 126
        assert b"host's Python interpreter" in result.stderr and b"host python ran" not in result.stdout


def test_init_cannot_be_inspected_from_the_container(run):
    """The init is the host's Python: its exe and descriptors stay closed to root inside."""
    script = "readlink /proc/1/fd/1 >/dev/null 2>&1 && echo fd-open; readlink /proc/1/exe || echo exe-closed"
    assert run("--init", "/bin/busybox", "sh", "-c", script).stdout == b"exe-closed\n"
    # Control: with CAP_SYS_PTRACE the kernel would let root through.
    opened = run("--init", "--cap-add", "SYS_PTRACE", "/bin/busybox", "sh", "-c", script).stdout
    assert b"fd-open" in opened and b"python" in opened


def test_the_init_keeps_only_cap_kill_and_the_filter(run):
    """--init's PID 1 is minicontainer's Python: once the command is forked it
    keeps CAP_KILL alone (to signal the command as any user), under seccomp."""
    out = run("--init", "--cap-add", "SYS_PTRACE", "/bin/busybox", "cat", "/proc/1/status").stdout
    st = {k: v.strip() for k, _, v in (line.decode().partition(":") for line in out.splitlines())}
    kill = 1 << spec.capability_numbers()["KILL"]
    assert int(st["CapEff"], 16) == int(st["CapPrm"], 16) == int(st["CapBnd"], 16) == kill
    assert st["NoNewPrivs"] == "1" and st["Seccomp"] == "2"
    # Control: the command itself has the container's set.
    assert int(status(run, "--init")["CapEff"], 16) == DEFAULT_MASK
