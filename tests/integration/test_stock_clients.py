"""Stock clients and bundles, as they ship: Debian 12's podman with its own
containers.conf and seccomp.json, and the bundle `runc spec` writes, each run
by minicontainer and by runc side by side (runc is the reference: what it
runs, minicontainer runs the same way).

podman, conmon and runc are needed (Debian's packages of those names; setup.sh
installs them): the tests fail, not skip, where they are missing, so that CI
cannot pass without them.

podman's configuration is Debian's own. The one change: where the host's hard
limits are below podman's default rlimits (1048576 open files and processes,
which root cannot raise without CAP_SYS_RESOURCE), `default_ulimits` is
lowered. podman 4.3 (containers-common 0.50) has no CONTAINERS_CONF_OVERRIDE
and its only drop-in directory is the host-wide /etc/containers/
containers.conf.d, which would change every podman on the machine; so
CONTAINERS_CONF names a copy of /usr/share/containers/containers.conf with
that one line added to its [containers] table, and the test checks that the
copy differs from Debian's by that line alone. Storage, run and temporary
directories are the test's own (--root, --runroot, --tmpdir), and the image is
imported offline from a busybox tarball.
"""
import json
import os
import resource
import shutil
import subprocess
import tarfile
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from helpers import CLI, wait_for

PACKAGES = "podman conmon runc"
DEBIAN_CONF = Path("/usr/share/containers/containers.conf")
PODMAN_RLIMIT_DEFAULT = 1048576  # podman's nofile and nproc for root
# Lowered only where the host cannot grant podman's default (the values the
# conformance harness has used since it first ran podman here).
LOWERED_ULIMITS = {"nofile": (resource.RLIMIT_NOFILE, "nofile=1024:4096"),
                   "nproc": (resource.RLIMIT_NPROC, "nproc=4096:8192")}
# Host paths podman or a runtime writes whatever it is told; none may appear.
HOST_PATHS = ("/run/runc", "/run/minicontainer", "/run/libpod", "/run/containers", "/run/netns",
              "/var/lib/containers", "/var/lib/cni", "/etc/cni/net.d")
IMAGE = "localhost/stock-busybox:latest"


def need(program):
    """A program the tests cannot do without: fail, naming the packages."""
    path = shutil.which(program, path="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    if path is None:
        pytest.fail(f"{program} is not installed: these tests need Debian's {PACKAGES}"
                    f" (apt-get install --no-install-recommends {PACKAGES}; setup.sh installs them)")
    return path


def stock_containers_conf(dest):
    """Debian's containers.conf, with default_ulimits lowered where the host's
    hard limits are below podman's; returns the line added (or None)."""
    text = DEBIAN_CONF.read_text()
    lowered = [value for _, (res, value) in LOWERED_ULIMITS.items()
               if resource.getrlimit(res)[1] < PODMAN_RLIMIT_DEFAULT]
    line = None
    if lowered:
        assert "\ndefault_ulimits" not in text, "Debian's file sets default_ulimits itself"
        line = "default_ulimits = [" + ", ".join(f'"{v}"' for v in lowered) + "]"
        head, sep, tail = text.partition("\n[containers]\n")
        assert sep, "Debian's containers.conf has no [containers] table"
        text = head + sep + line + "\n" + tail
    dest.write_text(text)
    return line


def wrapper(path, argv):
    """An executable script at `path` that runs argv with its own arguments:
    the runtimes' state directories pinned to the test's (podman passes no
    --root, and conmon passes on only PATH of the environment)."""
    path.write_text("#!/bin/sh\nexec " + " ".join(f"'{a}'" for a in argv) + ' "$@"\n')
    path.chmod(0o755)
    return path


def mounts_under(path):
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    return [p for p in points if p == str(path) or p.startswith(f"{path}/")]


def pids_mentioning(text):
    """Processes whose command line names `text` (conmon names the podman root)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if text.encode() in f.read():
                    found.append(int(pid))
        except OSError:
            pass
    return [p for p in found if p != os.getpid()]


def cgroup_dirs(name):
    """Every hierarchy's directory of cgroup `name` (and below) that exists."""
    return sorted(p for p in Path("/sys/fs/cgroup").glob(f"*/{name}") if p.is_dir()) + \
        sorted(p for p in Path("/sys/fs/cgroup").glob(f"{name}") if p.is_dir())


def remove_cgroups(name):
    for top in cgroup_dirs(name):
        for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            d.rmdir()
        top.rmdir()


class Podman:
    """podman with Debian's configuration and a storage of the test's own."""

    def __init__(self, base, runtimes):
        self.base = base
        self.conf = base / "containers.conf"
        self.added = stock_containers_conf(self.conf)
        self.runtimes = runtimes
        self.cgroup_parent = f"stock-clients-{uuid.uuid4().hex[:8]}"
        self.env = dict(os.environ, CONTAINERS_CONF=str(self.conf))
        self.env.pop("CONTAINERS_STORAGE_CONF", None)
        self.env.pop("CONTAINERS_REGISTRIES_CONF", None)
        self.globals = ["--root", base / "root", "--runroot", base / "runroot",
                        "--tmpdir", base / "tmp"]

    def __call__(self, *args, runtime="runc", **kwargs):
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("timeout", 120)
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        argv = [need("podman"), *self.globals, "--runtime", self.runtimes[runtime], *args]
        return subprocess.run([str(a) for a in argv], env=self.env, **kwargs)

    def run_args(self):
        """`podman run`'s options besides the image: no network (the default,
        a CNI bridge, leaves podman's own bridge, iptables chains and IPAM
        state on the host) and a cgroup parent of the test's own (podman never
        removes its default /libpod_parent)."""
        return ["--rm", "--network", "none", "--cgroup-parent", f"/{self.cgroup_parent}"]

    def import_image(self, rootfs_tar):
        # podman 4.3 writes c/image's blob-info cache to /var/lib/containers/cache
        # on import whatever --root says: a private mount namespace with a
        # throw-away tmpfs on /var/lib keeps the host's untouched.
        argv = [need("unshare"), "-m", "--propagation", "private", "--", "sh", "-c",
                'mount -t tmpfs -o size=16m,mode=755 stock-clients-varlib /var/lib && exec "$@"', "sh",
                need("podman"), *self.globals, "import", rootfs_tar, IMAGE]
        result = subprocess.run([str(a) for a in argv], env=self.env, capture_output=True,
                                timeout=120, stdin=subprocess.DEVNULL)
        assert result.returncode == 0, result.stderr.decode()

    def close(self):
        self("rm", "--all", "--force", "--time", "0", timeout=60)
        self("rmi", "--all", "--force", timeout=60)
        for pid in pids_mentioning(str(self.base)):
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        # containers/storage's overlay driver makes its directory a private
        # bind mount of itself and keeps it: podman's, for its storage, not a
        # container's. Unmounted here, deepest first.
        for point in sorted(mounts_under(self.base), key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True)
        wait_for(lambda: not any((d / "cgroup.procs").read_text().strip()
                                 for top in cgroup_dirs(self.cgroup_parent)
                                 for d in [top, *top.rglob("*")] if d.is_dir()), 5)
        remove_cgroups(self.cgroup_parent)


def busybox_tar(dest, busybox):
    """A root file system holding busybox and a few of its names, as a tarball."""
    with tarfile.open(dest, "w") as tar:
        for d in ("bin", "tmp", "proc", "sys", "dev", "etc"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        tar.add(busybox, "bin/busybox")
        for name in ("sh", "echo", "cat", "grep", "sleep"):
            info = tarfile.TarInfo(f"bin/{name}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
    return dest


@pytest.fixture
def runtimes(tmp_path, state_dir):
    """The two runtimes as podman runs them: a `minicontainer` that runs this
    checkout's module, and a `runc`; each keeps its state in the test's dir."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    return {"minicontainer": wrapper(bindir / "minicontainer", [*CLI, "--root", state_dir]),
            "runc": wrapper(bindir / "runc", [need("runc"), "--root", tmp_path / "runc-state"])}


@pytest.fixture
def podman(tmp_path, runtimes, busybox):
    need("conmon")
    # podman refuses a --runroot longer than 50 characters: pytest's tmp_path
    # is too deep, so a short directory of the test's own in /tmp.
    base = Path(tempfile.mkdtemp(prefix="stock-podman.", dir="/tmp"))
    before = {p: os.path.lexists(p) for p in HOST_PATHS}
    made = Podman(base, runtimes)
    try:
        made.import_image(busybox_tar(tmp_path / "rootfs.tar", busybox))
        yield made
    finally:
        made.close()
        shutil.rmtree(base)
    assert {p: os.path.lexists(p) for p in HOST_PATHS} == before, "podman or a runtime wrote to the host"


def test_the_configuration_is_debians_with_only_the_ulimits_lowered(tmp_path):
    added = stock_containers_conf(tmp_path / "containers.conf")
    debian = DEBIAN_CONF.read_text().splitlines()
    ours = (tmp_path / "containers.conf").read_text().splitlines()
    if added is None:
        assert ours == debian
    else:
        assert [line for line in ours if line != added] == debian
        assert added.startswith("default_ulimits = [")
        assert ours.index(added) == ours.index("[containers]") + 1


@pytest.mark.parametrize("runtime", ["runc", "minicontainer"])
def test_podman_as_debian_ships_it_runs_echo_hi(podman, runtime, state_dir, tmp_path):
    """`podman --runtime RUNTIME run --rm IMAGE echo hi`, Debian's seccomp.json,
    capabilities and containers.conf: hi, status 0, and nothing left of the
    container (podman's list, mounts, conmon, the runtime's state, cgroups).
    runc is the positive control."""
    storage_mounts = set(mounts_under(podman.base))
    started = time.monotonic()
    result = podman("run", *podman.run_args(), IMAGE, "echo", "hi", runtime=runtime)
    took = time.monotonic() - started
    assert (result.returncode, result.stdout, result.stderr) == (0, b"hi\n", b""), result.stderr.decode()
    print(f"podman run --rm with {runtime}: {took:.2f} s")
    listed = podman("ps", "--all", "--quiet")
    assert listed.returncode == 0 and listed.stdout == b""
    # Only the storage driver's own mount of its directory may stay; no
    # container root (overlay "merged"), shm or secrets mount.
    assert set(mounts_under(podman.base)) <= storage_mounts | {str(podman.base / "root" / "overlay")}, \
        mounts_under(podman.base)
    assert wait_for(lambda: not pids_mentioning(str(podman.base)), 5), "conmon (or its child) left"
    assert not [p for p in Path(state_dir).glob("*") if p.is_dir()], "minicontainer's state left"
    assert not list((tmp_path / "runc-state").glob("*")), "runc's state left"
    # podman keeps conmon's cgroup (parent/conmon) for the next container;
    # the container's own (parent/libpod-ID) must be gone, and nothing run.
    below = [d for top in cgroup_dirs(podman.cgroup_parent) for d in top.iterdir() if d.is_dir()]
    assert not [d for d in below if d.name != "conmon"], f"cgroups left below the parent: {below}"
    assert wait_for(lambda: not any((d / "cgroup.procs").read_text().strip() for d in below), 5)


# ---- seccomp: Debian's profile, as podman hands it to the runtime -----------

# System calls tried under the profile: (call, what the profile says). x86_64
# numbers; "i386:" ones go through the 32-bit ABI, whose rules libseccomp
# writes from the same names (socketcall, waitpid exist only there).
SYSCALLS = {
    "41,16,3,9": "errno 22",          # socket(AF_NETLINK, SOCK_RAW, NETLINK_AUDIT): errnoRet EINVAL
    "41,16,3,0": "ok",                # socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE)
    "41,2,2,0": "ok",                 # socket(AF_INET, SOCK_DGRAM, 0)
    "135,0xffffffff": "ok",           # personality(query): allowed by an argument rule
    "135,0x1234": "errno 38",         # personality(other): the default, ENOSYS
    "278,-1,0,0,0": "errno 1",        # vmsplice: refused with EPERM by name
    "170,0,0": "errno 1",             # sethostname: EPERM without CAP_SYS_ADMIN
    "1000": "errno 38",               # no such system call: the default
    "39": "ok",                       # getpid
    "i386:20": "ok",                  # getpid, 32-bit
    "i386:7,-1,0,0": "errno 10",      # waitpid (x86 only): allowed, so ECHILD
    "i386:102,1,2,2,0": "ok",         # socketcall(SYS_SOCKET, AF_INET, SOCK_DGRAM)
    "i386:102,1,16,3,9": None,        # socketcall can't be read by a filter: as runc does
    "i386:1000": "errno 38",
}


@pytest.fixture
def podman_seccomp(podman):
    """linux.seccomp of the config.json podman writes for a container: Debian's
    seccomp.json with its includes and excludes resolved for Debian's default
    capabilities and this machine's architectures."""
    created = podman("create", "--network", "none", "--cgroup-parent", f"/{podman.cgroup_parent}",
                     IMAGE, "echo")
    assert created.returncode == 0, created.stderr.decode()
    cid = created.stdout.decode().strip()
    try:
        inited = podman("init", cid)  # writes config.json (by runc: create, no start)
        assert inited.returncode == 0, inited.stderr.decode()
        config = json.loads(next(podman.base.glob(f"root/overlay-containers/{cid}/userdata/config.json"))
                            .read_text())
    finally:
        podman("rm", "--force", "--time", "0", cid)
    return config["linux"]["seccomp"]


@pytest.fixture
def bundle(tmp_path, template_root):
    """`runc spec`'s bundle, unmodified but for the program and terminal, with
    the test root as rootfs."""
    path = tmp_path / "bundle"
    path.mkdir()
    subprocess.run(["cp", "-a", str(template_root), str(path / "rootfs")], check=True)
    subprocess.run([need("runc"), "spec"], cwd=path, check=True, capture_output=True)
    return path


def set_config(bundle, change):
    config = json.loads((bundle / "config.json").read_text())
    change(config)
    (bundle / "config.json").write_text(json.dumps(config))


def run_in(runtime, bundle, tmp_path, name):
    """The bundle's program under `runtime`, to its end: (ran, its output),
    ran false where the runtime refused the bundle. The output goes to a
    file, as an engine gives it: minicontainer's container keeps create's
    stdout and writes to it after create returns. (An OCI container's exit
    status is its engine's to collect, so the program's output is compared.)"""
    out = tmp_path / f"{name}.out"
    with open(out, "wb") as f:
        if runtime == "runc":
            result = subprocess.run([need("runc"), "--root", tmp_path / "runc-state", "run", "--bundle",
                                     bundle, name], stdin=subprocess.DEVNULL, stdout=f, stderr=f,
                                    timeout=60)
            return result.returncode == 0, out.read_text()
        created = subprocess.run([*CLI, "create", "--bundle", bundle, name], stdin=subprocess.DEVNULL,
                                 stdout=f, stderr=f, timeout=60)
    try:
        if created.returncode:
            return False, out.read_text()
        started = subprocess.run([*CLI, "start", name], capture_output=True, timeout=60)
        waited = subprocess.run([*CLI, "wait", name], capture_output=True, timeout=60)
        assert waited.returncode == 0, waited.stderr
        output = out.read_text()
        # a failure in the container's own set-up, after create, is said on its stderr
        return started.returncode == 0 and "minicontainer: " not in output, output
    finally:
        subprocess.run([*CLI, "delete", "--force", name], capture_output=True, timeout=60)


def test_debians_seccomp_profile_filters_the_same_under_runc_and_minicontainer(
        podman_seccomp, bundle, tmp_path):
    """The profile runc runs is accepted (it failed with "seccomp rule for
    socket: File exists"), and every system call tried gets the same answer
    under both runtimes: the denied ones denied with the profile's errno, the
    allowed ones allowed, 64-bit and 32-bit alike."""
    assert podman_seccomp["defaultAction"] == "SCMP_ACT_ERRNO"
    assert "SCMP_ARCH_X86" in podman_seccomp["architectures"]  # the 32-bit part is tested

    def change(config):
        config["process"]["args"] = ["/bin/probe", "sys", *SYSCALLS]
        config["process"]["terminal"] = False
        config["linux"]["seccomp"] = podman_seccomp
    set_config(bundle, change)
    results = {r: run_in(r, bundle, tmp_path, f"seccomp-{r}") for r in ("runc", "minicontainer")}
    assert results["runc"][0], results["runc"]
    answers = dict(line.split(" ", 1) for line in results["runc"][1].splitlines())
    for call, expected in SYSCALLS.items():
        if expected is not None:
            assert answers[call] == expected, (call, answers)
    assert results["minicontainer"] == results["runc"]


def seccomp_program(pid):
    """The classic BPF program of process pid's seccomp filter, as the kernel
    holds it (PTRACE_SECCOMP_GET_FILTER; the process is stopped meanwhile)."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
    libc.ptrace.restype = ctypes.c_long
    PTRACE_SEIZE, PTRACE_INTERRUPT, PTRACE_DETACH, PTRACE_SECCOMP_GET_FILTER = 0x4206, 0x4207, 17, 0x420c
    assert libc.ptrace(PTRACE_SEIZE, pid, None, None) == 0, os.strerror(ctypes.get_errno())
    try:
        libc.ptrace(PTRACE_INTERRUPT, pid, None, None)
        os.waitpid(pid, 0)
        count = libc.ptrace(PTRACE_SECCOMP_GET_FILTER, pid, 0, None)
        assert count > 0, os.strerror(ctypes.get_errno())
        program = ctypes.create_string_buffer(count * 8)
        assert libc.ptrace(PTRACE_SECCOMP_GET_FILTER, pid, 0, program) == count
        return program.raw
    finally:
        libc.ptrace(PTRACE_DETACH, pid, None, None)


def test_the_filter_loaded_is_runcs_program(podman_seccomp, bundle, tmp_path):
    """Not only the same answers: the program the kernel holds for the
    container's process is the one runc loads, instruction for instruction,
    after the few runc puts in front (its stub that answers ENOSYS for system
    calls newer than the profile; the profile's default is ENOSYS already)."""
    def change(config):
        config["process"]["args"] = ["/bin/probe", "sleep", "30"]
        config["process"]["terminal"] = False
        config["linux"]["seccomp"] = podman_seccomp
    set_config(bundle, change)
    runc = [need("runc"), "--root", tmp_path / "runc-state"]
    programs = {}
    with open(tmp_path / "out", "wb") as out:
        assert subprocess.run([*runc, "run", "--detach", "--bundle", bundle, "bpf-runc"],
                              stdin=subprocess.DEVNULL, stdout=out, stderr=out, timeout=60).returncode == 0
        assert subprocess.run([*CLI, "create", "--bundle", bundle, "bpf-mc"], stdin=subprocess.DEVNULL,
                              stdout=out, stderr=out, timeout=60).returncode == 0
    try:
        assert subprocess.run([*CLI, "start", "bpf-mc"], capture_output=True, timeout=60).returncode == 0
        for name, argv in (("runc", runc), ("minicontainer", CLI)):
            state = subprocess.run([*argv, "state", f"bpf-{'runc' if name == 'runc' else 'mc'}"],
                                   capture_output=True, timeout=60)
            pid = json.loads(state.stdout)["pid"]
            # the filter is loaded last, just before exec: wait for it
            assert wait_for(lambda: "Seccomp:\t2" in Path(f"/proc/{pid}/status").read_text(), 5)
            programs[name] = seccomp_program(pid)
    finally:
        subprocess.run([*runc, "delete", "--force", "bpf-runc"], capture_output=True, timeout=60)
        subprocess.run([*CLI, "delete", "--force", "bpf-mc"], capture_output=True, timeout=60)
    ours, theirs = programs["minicontainer"], programs["runc"]
    assert len(ours) > 800 * 8  # Debian's profile, three ABIs
    assert theirs.endswith(ours) and len(theirs) - len(ours) <= 32 * 8, (len(theirs), len(ours))


# ---- capabilities: runc spec's own bundle ------------------------------------

CAP_LINES = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")


def capability_lines(output):
    return {k: v for k, v in (line.split(":\t") for line in output.splitlines() if ":\t" in line)
            if k in CAP_LINES}


def test_runc_specs_bundle_runs_with_the_same_capabilities_as_under_runc(bundle, tmp_path):
    """runc 1.1's default config.json lists ambient capabilities and no
    inheritable ones: the kernel raises none of them, runc ignores that, and
    so does minicontainer now (it failed: "raise the ambient capability 5:
    Operation not permitted")."""
    config = json.loads((bundle / "config.json").read_text())
    assert config["process"]["capabilities"].get("ambient") and \
        not config["process"]["capabilities"].get("inheritable")

    def change(config):
        config["process"]["args"] = ["/bin/busybox", "grep", "^Cap", "/proc/self/status"]
        config["process"]["terminal"] = False
    set_config(bundle, change)
    results = {r: run_in(r, bundle, tmp_path, f"spec-{r}") for r in ("runc", "minicontainer")}
    assert results["runc"][0], results["runc"]
    runc = capability_lines(results["runc"][1])
    assert set(runc) == set(CAP_LINES)
    assert int(runc["CapAmb"], 16) == 0 and runc["CapPrm"] == runc["CapBnd"]
    assert results["minicontainer"][0], results["minicontainer"]
    assert capability_lines(results["minicontainer"][1]) == runc


# capabilities(7), by number
CAPABILITY_NAMES = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
    "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK",
    "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN",
    "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE",
    "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND",
    "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE")


def test_every_capability_the_runtime_holds_is_known_by_name(bundle, tmp_path):
    """As podman's --cap-add ALL asks: every capability this process holds,
    by name, the newest too (CAP_CHECKPOINT_RESTORE, which python-prctl's
    table calls LAST_CAP): the same sets as under runc (it failed: "unknown
    capability CAP_CHECKPOINT_RESTORE")."""
    held = int(capability_lines(Path("/proc/self/status").read_text())["CapBnd"], 16)
    names = [f"CAP_{name}" for number, name in enumerate(CAPABILITY_NAMES) if held >> number & 1]

    def change(config):
        config["process"]["args"] = ["/bin/busybox", "grep", "^Cap", "/proc/self/status"]
        config["process"]["terminal"] = False
        config["process"]["capabilities"] = {"bounding": names, "effective": names, "permitted": names}
    set_config(bundle, change)
    results = {r: run_in(r, bundle, tmp_path, f"all-{r}") for r in ("runc", "minicontainer")}
    assert results["runc"][0], results["runc"]
    assert int(capability_lines(results["runc"][1])["CapBnd"], 16) == held
    assert results["minicontainer"][0], results["minicontainer"]
    assert capability_lines(results["minicontainer"][1]) == capability_lines(results["runc"][1])


CAPS = ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_AUDIT_WRITE", "CAP_SETPCAP",
        "CAP_CHECKPOINT_RESTORE"]
cap_sets = st.lists(st.sampled_from(CAPS), unique=True, max_size=len(CAPS))


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sets=st.fixed_dictionaries({name: cap_sets for name in
                                   ("bounding", "effective", "permitted", "inheritable", "ambient")}),
       uid=st.sampled_from([0, 1000]))
def test_any_five_capability_sets_come_out_as_under_runc(bundle, tmp_path, sets, uid):
    """Whatever the bundle's five sets and user, minicontainer either refuses
    as runc does or runs the program with the same /proc/self/status Cap*
    lines; an ambient capability that is permitted and inheritable is
    raised, as runc raises it."""
    def change(config):
        config["process"]["args"] = ["/bin/busybox", "grep", "^Cap", "/proc/self/status"]
        config["process"]["terminal"] = False
        config["process"]["user"] = {"uid": uid, "gid": uid}
        config["process"]["capabilities"] = sets
    set_config(bundle, change)
    tag = uuid.uuid4().hex[:6]
    runc = run_in("runc", bundle, tmp_path, f"caps-runc-{tag}")
    ours = run_in("minicontainer", bundle, tmp_path, f"caps-mc-{tag}")
    assert ours[0] == runc[0], (sets, uid, runc, ours)
    if not runc[0]:
        return
    assert capability_lines(ours[1]) == capability_lines(runc[1]), (sets, uid)


# ---- sysctls in a namespace joined by path: podman's default network ---------

def test_a_sysctl_of_a_network_namespace_joined_by_path_is_set_as_runc_sets_it(bundle, tmp_path):
    """podman's default network joins the namespace it made, by path, and
    Debian's containers.conf sets net.ipv4.ping_group_range in it: runc sets
    it, minicontainer refused it ("not in a namespace of the container's
    own"). In the runtime's own network namespace both still refuse it."""
    holder = subprocess.Popen(["unshare", "--net", "sleep", "60"])
    try:
        own = os.stat("/proc/self/ns/net").st_ino
        assert wait_for(lambda: os.stat(f"/proc/{holder.pid}/ns/net").st_ino != own, 5)

        def change(config, path=f"/proc/{holder.pid}/ns/net"):
            config["process"]["args"] = ["/bin/busybox", "cat", "/proc/sys/net/ipv4/ping_group_range"]
            config["process"]["terminal"] = False
            config["linux"]["namespaces"] = [ns for ns in config["linux"]["namespaces"]
                                             if ns["type"] != "network"] + [{"type": "network", "path": path}]
            config["linux"]["sysctl"] = {"net.ipv4.ping_group_range": "0 0"}
        set_config(bundle, change)
        host_value = Path("/proc/sys/net/ipv4/ping_group_range").read_text()
        assert host_value != "0\t0\n"
        results = {r: run_in(r, bundle, tmp_path, f"sysctl-{r}") for r in ("runc", "minicontainer")}
        assert results["runc"] == (True, "0\t0\n"), results["runc"]
        assert results["minicontainer"] == results["runc"]
        # written in the joined namespace, not the host's
        assert Path("/proc/sys/net/ipv4/ping_group_range").read_text() == host_value
        joined = subprocess.run(["nsenter", f"--net=/proc/{holder.pid}/ns/net", "cat",
                                 "/proc/sys/net/ipv4/ping_group_range"], capture_output=True, timeout=10)
        assert joined.stdout == b"0\t0\n"

        set_config(bundle, lambda config: change(config, f"/proc/{os.getpid()}/ns/net"))
        results = {r: run_in(r, bundle, tmp_path, f"hostnet-{r}") for r in ("runc", "minicontainer")}
        assert not results["runc"][0], results["runc"]
        assert results["minicontainer"] == (False, "minicontainer: create hostnet-minicontainer: config.json:"
                                            " linux.sysctl net.ipv4.ping_group_range:"
                                            " not allowed in the host's net namespace"
                                            f" (/proc/{os.getpid()}/ns/net is the runtime's own)\n")
    finally:
        holder.kill()
        holder.wait()


def test_the_default_policy_refuses_32_bit_only_calls_on_the_32_bit_abi(run):
    """minicontainer's own policy names vm86 and vm86old, which exist only on
    the 32-bit ABI: they were skipped as unknown, and reached the kernel
    (ENOSYS there); now libseccomp writes them into the filter's x86 part and
    they are refused (EPERM). getpid by the same door is the positive control."""
    result = run("/bin/probe", "sys", "i386:113", "i386:166", "i386:20")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"i386:113 errno 1\ni386:166 errno 1\ni386:20 ok\n"
