"""Resource limits: cgroups v2 and v1, made before the fork, removed after.

Owns: Cgroup, parse_limits, make_cgroups and make_oci_cgroups (a bundle's
cgroupsPath kept inside its hierarchy), linux.resources written to groups,
device rules, a container's groups found on the host.
May import: constants, errors, syscalls, spec.
"""
import os
import signal

from .constants import (
    CFS_PERIOD_US, CGROUP_CONTROLLERS, DEFAULT_NOFILE, MIN_MEMORY, SIZE_UNITS, ULIMITS,
)
from .errors import ContainerError
from .syscalls import write_at
from .spec import Limits

def is_number(text):
    """Digits 0 to 9 only: int() would also take "６４" or "²"."""
    return text.isascii() and text.isdigit()


MAX_SIZE = 2**63 - 1  # a limit is a signed 64-bit number of bytes, as docker's


def parse_size(text, option):
    """docker's sizes: bytes, or a number with b, k, m, g, t (powers of 1024)."""
    import re
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([bkmgt]?)b?", text.strip().lower(), re.ASCII)
    if not match:
        raise ContainerError(f"{option} {text}", "not a size (e.g. 64m, 1g, 1048576)")
    unit = SIZE_UNITS[match[2]]
    size = int(match[1]) * unit if match[1].isdigit() else int(float(match[1]) * unit)
    if size > MAX_SIZE:  # the kernel reads a limit modulo 2**64: 2**64 + 64m would be 64m
        raise ContainerError(f"{option} {text}", "above the largest size, 2**63 - 1 bytes")
    return size


def parse_limits(memory, memory_swap, pids_limit, cpus, cpu_shares, stats, ulimits):
    """Check every resource option before anything is made; build Limits."""
    mem = parse_size(memory, "--memory") if memory is not None else None
    if mem is not None and mem < MIN_MEMORY:
        raise ContainerError(f"--memory {memory}", "below the 6m minimum (docker's)")
    swap = None
    if memory_swap is not None:
        if mem is None:
            raise ContainerError(f"--memory-swap {memory_swap}", "needs --memory too")
        swap = -1 if memory_swap.strip() == "-1" else parse_size(memory_swap, "--memory-swap")
        if swap != -1 and swap < mem:
            raise ContainerError(f"--memory-swap {memory_swap}",
                                 "is memory plus swap: it cannot be below --memory")
    cpu_count = os.cpu_count() or 1
    if cpus is not None and not 0.01 <= cpus <= cpu_count:
        raise ContainerError(f"--cpus {cpus:g}", f"out of range: 0.01 to {cpu_count} here")
    if cpu_shares is not None and not 2 <= cpu_shares <= 262144:
        raise ContainerError(f"--cpu-shares {cpu_shares}", "out of range: 2 to 262144")
    pids = None if pids_limit is None else (pids_limit if pids_limit > 0 else 0)  # 0: unlimited
    return Limits(mem, swap, pids, cpus, cpu_shares, stats, parse_ulimits(ulimits))


def parse_ulimits(values):
    """--ulimit NAME=SOFT[:HARD], docker's syntax, plus the default for nofile.

    Raising a hard limit needs CAP_SYS_RESOURCE, which minicontainer may not
    have (root lacks it on some hosts), so asking for more is an error.
    """
    import resource
    chosen = {}
    for value in values:
        name, _, numbers = value.partition("=")
        soft_text, _, hard_text = numbers.partition(":")
        if name not in ULIMITS:
            raise ContainerError(f"--ulimit {value}", "unknown limit (known: " + ", ".join(ULIMITS) + ")")
        if not is_number(soft_text) or not (is_number(hard_text) or not hard_text):
            raise ContainerError(f"--ulimit {value}", "expected NAME=SOFT[:HARD] with numbers")
        soft = int(soft_text)
        hard = int(hard_text) if hard_text else soft
        if not 0 <= soft <= hard:
            raise ContainerError(f"--ulimit {value}", "the soft limit must be between 0 and the hard one")
        number = getattr(resource, f"RLIMIT_{name.upper()}")
        host_hard = resource.getrlimit(number)[1]
        if host_hard != resource.RLIM_INFINITY and hard > host_hard:
            raise ContainerError(f"--ulimit {value}", f"above minicontainer's own hard limit {host_hard}"
                                 " (raising it needs CAP_SYS_RESOURCE)")
        chosen[name] = (number, soft, hard)
    if "nofile" not in chosen:
        host_hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        hard = DEFAULT_NOFILE[1] if host_hard == resource.RLIM_INFINITY else min(DEFAULT_NOFILE[1], host_hard)
        chosen["nofile"] = (resource.RLIMIT_NOFILE, min(DEFAULT_NOFILE[0], hard), hard)
    return tuple(chosen.values())


# A bundle's rlimits are uint64, infinity 2**64 - 1; setrlimit here takes
# signed numbers, infinity -1: every value from 2**63 on is infinity.
RLIM_INFINITY_OCI = 2**64 - 1
CAP_SYS_RESOURCE = 24


def rlimit_arg(value):
    import resource
    return resource.RLIM_INFINITY if value >= 2**63 else value


def rlimit_name(number):
    import resource
    return next((n for n in dir(resource) if n.startswith("RLIMIT_")
                 and getattr(resource, n) == number), str(number))


def check_rlimits(spec, what):
    """Each rlimit of a bundle (or of exec's process), checked where it is read
    against what can be granted: a hard limit above this process's own needs
    CAP_SYS_RESOURCE on the host, and RLIMIT_NOFILE may not pass fs.nr_open.
    runc finds the same in `create` ("error setting rlimits"), never after
    `start`, when the program would silently not run."""
    import resource
    with open("/proc/self/status") as f:
        effective = next((int(line.split()[1], 16) for line in f if line.startswith("CapEff:")), 0)
    for number, soft, hard in spec.limits.rlimits:
        own = resource.getrlimit(number)[1]
        own = RLIM_INFINITY_OCI if own == resource.RLIM_INFINITY else own
        why = None
        if hard > own and not effective >> CAP_SYS_RESOURCE & 1:
            why = f"above this host's hard limit {own} (raising it needs CAP_SYS_RESOURCE)"
        elif number == resource.RLIMIT_NOFILE:
            with open("/proc/sys/fs/nr_open") as f:
                nr_open = int(f.read())
            if hard > nr_open:
                why = f"above fs.nr_open {nr_open}"
        if why:
            raise ContainerError(f"{what} {rlimit_name(number)}",
                                 f"error setting rlimits: soft {soft}, hard {hard}: {why}")


def raise_rlimit_ceilings(spec):
    """Raise the hard limits a bundle asks above this process's, and only
    those (the soft ones stay), in the earliest process of the container,
    while it has the host's CAP_SYS_RESOURCE: in a user namespace, or once
    its capabilities are dropped, no process can. PID 1 sets the limits
    themselves last (set_rlimits), lowering only. Checked by check_rlimits."""
    import resource
    for number, soft, hard in spec.limits.rlimits:
        own_soft, own_hard = resource.getrlimit(number)
        if own_hard != resource.RLIM_INFINITY and hard > own_hard:
            try:
                resource.setrlimit(number, (own_soft, rlimit_arg(hard)))
            except (OSError, ValueError) as exc:
                raise ContainerError(f"process.rlimits {rlimit_name(number)}", "error setting"
                                     f" rlimits: hard {hard}: {exc}") from None


def cgroup_mounts(mountinfo):
    """From mountinfo text: (cgroup2 mount point or None, {v1 controller: mount point})."""
    hierarchies, v2 = cgroup_hierarchies(mountinfo)
    v1 = {}
    for mount, names in hierarchies:
        for name in names:
            if name in CGROUP_CONTROLLERS or name == "cpuacct":
                v1.setdefault(name, mount)
    return v2, v1


def own_cgroups(proc_self_cgroup):
    """From /proc/self/cgroup text: {"" (the v2 group) or a v1 controller: path}."""
    own = {}
    for line in proc_self_cgroup.splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            own[controller] = path
    return own


class Cgroup:
    """The container's group in one hierarchy. Directory fds opened at creation
    let it be emptied and removed from anywhere, even behind pivot_root."""

    def __init__(self, version, path, controllers):
        self.version, self.path, self.controllers = version, path, frozenset(controllers)
        self.parent_fd = self.fd = None
        # The directories this container made, top first, and so the only ones
        # remove() may take: None for a group made by create() (the leaf);
        # a bundle's cgroupsPath may name a group, or parents, that were there.
        self.made = None

    def create(self):
        parent, name = os.path.split(self.path)
        try:
            self.parent_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            os.mkdir(name, 0o755, dir_fd=self.parent_fd)
            self.fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=self.parent_fd)
        except OSError as exc:
            raise ContainerError.from_os(f"create cgroup {self.path}", exc) from None

    def write(self, name, value):
        write_at(self.fd, name, value, f"write {value} to {self.path}/{name}")

    def read(self, name):
        """A file's text, or None where this kernel lacks it."""
        try:
            fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=self.fd)
        except OSError:
            return None
        with open(fd) as f:
            return f.read()

    def field(self, name, key):
        """The number after `key` in a flat-keyed file (memory.events, cpu.stat)."""
        for line in (self.read(name) or "").splitlines():
            k, _, v = line.partition(" ")
            if k == key:
                return int(v)
        return None

    def kill_all(self):
        """SIGKILL whatever is left: cgroup.kill where v2 has it (5.14+), else pid by pid."""
        if self.version == 2:
            try:
                self.write("cgroup.kill", 1)
                return
            except ContainerError as exc:
                if exc.errno != 2:  # ENOENT: an older kernel
                    raise
        for _ in range(100):
            pids = (self.read("cgroup.procs") or "").split()
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def remove(self):
        """Remove the group once its last task is gone; idempotent. Returns an
        error text if it could not be removed, else None."""
        import time
        if self.fd is None:
            return None
        os.close(self.fd)
        self.fd = None
        name, error = os.path.basename(self.path), None
        for _ in range(200 if self.made is None or self.path in self.made else 0):
            # dying tasks leave a group a moment after SIGKILL
            try:
                os.rmdir(name, dir_fd=self.parent_fd)
                error = None
                break
            except FileNotFoundError:
                error = None
                break
            except OSError as exc:
                error = f"remove cgroup {self.path}: {exc.strerror}"
                if exc.errno != 16:  # EBUSY
                    break
                time.sleep(0.005)
        os.close(self.parent_fd)
        self.parent_fd = None
        return error or remove_made_dirs([d for d in self.made or () if d != self.path])


def remove_made_dirs(made):
    """The parents a group's creation made, deepest first; one that holds
    another group now (another container's, made below it since) stays, and
    so do those above it. Returns an error text, or None."""
    for path in reversed(made):
        try:
            os.rmdir(path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            if exc.errno in (16, 39):  # EBUSY, ENOTEMPTY: in use by another group
                return None
            return f"remove cgroup {path}: {exc.strerror}"
    return None


def write_limits_v2(group, limits):
    """The v2 writer: memory.max, memory.swap.max, pids.max, cpu.max, cpu.weight."""
    c = group.controllers
    if "memory" in c and limits.memory:
        group.write("memory.max", limits.memory)
        if limits.memory_swap is not None:
            swap = "max" if limits.memory_swap == -1 else limits.memory_swap - limits.memory
            group.write("memory.swap.max", swap)
    if "pids" in c and limits.pids is not None:
        group.write("pids.max", limits.pids or "max")
    if "cpu" in c and limits.cpus:
        group.write("cpu.max", f"{round(limits.cpus * CFS_PERIOD_US)} {CFS_PERIOD_US}")
    if "cpu" in c and limits.cpu_shares:
        group.write("cpu.weight", 1 + (limits.cpu_shares - 2) * 9999 // 262142)


def write_limits_v1(group, limits):
    """The v1 writer: memory.limit_in_bytes, memory.memsw.limit_in_bytes, pids.max,
    cpu.cfs_period_us and cpu.cfs_quota_us, cpu.shares."""
    c = group.controllers
    if "memory" in c and limits.memory:
        group.write("memory.limit_in_bytes", limits.memory)
        if limits.memory_swap is not None:
            group.write("memory.memsw.limit_in_bytes", limits.memory_swap)
    if "pids" in c and limits.pids is not None:
        group.write("pids.max", limits.pids or "max")
    if "cpu" in c and limits.cpus:
        group.write("cpu.cfs_period_us", CFS_PERIOD_US)
        group.write("cpu.cfs_quota_us", round(limits.cpus * CFS_PERIOD_US))
    if "cpu" in c and limits.cpu_shares:
        group.write("cpu.shares", limits.cpu_shares)


def enable_v2_controllers(own_dir, controllers):
    """Delegate controllers to our children through our own subtree_control.

    The no-internal-processes rule: a non-root v2 group with processes of its
    own cannot hand domain controllers to children; the kernel says EBUSY.
    """
    path = os.path.join(own_dir, "cgroup.subtree_control")
    enabled = set(open(path).read().split())
    wanted = sorted(set(controllers) - enabled)
    if not wanted:
        return
    try:
        with open(path, "w") as f:
            f.write(" ".join("+" + c for c in wanted))
    except OSError as exc:
        why = exc.strerror
        if exc.errno == 16:
            why = ("its group has processes of its own (cgroup v2's no-internal-processes rule);"
                   " start minicontainer in a group of its own, e.g. with systemd-run --scope")
        raise ContainerError(f"enable {' '.join(wanted)} in {path}", why) from None


def make_cgroups(limits, name, mountinfo=None, proc_self_cgroup=None):
    """Create the container's groups and write its limits; on any error remove them.

    Only when a limit or --stats needs a controller: moving a process into a
    cgroup waits for an RCU grace period when cgroups have been idle (12 ms
    measured here), which a run that asked for no limit should not pay; the
    PID namespace alone already ends every process of the container. With
    any group, there is also a v2 group where cgroup2 is mounted: the
    container's kill switch (cgroup.kill) and CPU account (cpu.stat).
    """
    needed = limits.controllers()
    if not needed:
        return []
    mountinfo = mountinfo if mountinfo is not None else open("/proc/self/mountinfo").read()
    proc_self_cgroup = proc_self_cgroup if proc_self_cgroup is not None else open("/proc/self/cgroup").read()
    v2_mount, v1_mounts = cgroup_mounts(mountinfo)
    own = own_cgroups(proc_self_cgroup)
    v2_dir = os.path.join(v2_mount, own[""].lstrip("/")) if v2_mount and "" in own else None
    v2_controllers = set()
    if v2_dir:
        available = set(open(os.path.join(v2_dir, "cgroup.controllers")).read().split())
        v2_controllers = needed & available
    if "devices" in needed and ("devices" not in v1_mounts or "devices" not in own):
        # cgroup v2 filters devices only through eBPF: without a v1 devices
        # hierarchy, --device's node is made and no rule is written (the
        # container still has no CAP_MKNOD to make another unless given it).
        needed = needed - {"devices"}
    per_mount = {}
    for controller in sorted(needed - v2_controllers):
        if controller not in v1_mounts or controller not in own:
            raise ContainerError("cgroups", f"this host has no {controller} controller"
                                 " (neither in cgroup v2 nor mounted as v1)")
        per_mount.setdefault(v1_mounts[controller], set()).add(controller)
    groups = []
    try:  # on any failure, no group is left behind
        if v2_dir:
            if v2_controllers:
                enable_v2_controllers(v2_dir, v2_controllers)
            groups.append(Cgroup(2, os.path.join(v2_dir, name), v2_controllers))
            groups[-1].create()
            write_limits_v2(groups[-1], limits)
        for mount, controllers in per_mount.items():
            own_path = own[next(iter(controllers))].lstrip("/")
            groups.append(Cgroup(1, os.path.join(mount, own_path, name), controllers))
            groups[-1].create()
            write_limits_v1(groups[-1], limits)
            if "devices" in controllers:
                write_device_rules(groups[-1], limits.devices)
    except BaseException:
        remove_cgroups(groups)
        raise
    return groups


def remove_cgroups(groups, post_mortem_too=False):
    """Kill what is left in the groups, optionally read the post-mortem, remove
    them. Never stops half-way; safe to call twice. Returns (post-mortem,
    errors), so one failure cannot leave the other groups behind."""
    errors = []
    for group in groups:
        if group.fd is not None:
            try:
                group.kill_all()
            except ContainerError as exc:
                errors.append(str(exc))
    found = post_mortem(groups) if post_mortem_too else {}
    for group in groups:
        error = group.remove()
        if error:
            errors.append(error)
    return found, errors


def post_mortem(groups):
    """What the kernel kept about the run: {cpu_us, memory_peak, pids_peak, oom_kills}."""
    found = {}
    for g in groups:
        if g.version == 2:
            found.setdefault("cpu_us", g.field("cpu.stat", "usage_usec"))
        if "memory" in g.controllers:
            peak = g.read("memory.peak" if g.version == 2 else "memory.max_usage_in_bytes")
            found["memory_peak"] = int(peak) if peak else None
            events = "memory.events" if g.version == 2 else "memory.oom_control"
            found["oom_kills"] = g.field(events, "oom_kill") or 0
        if "pids" in g.controllers:
            peak = g.read("pids.peak")
            found["pids_peak"] = int(peak) if peak else None
    return found


def join_cgroups(groups, pid):
    """Move `pid` into every group. Precondition: before anything of the command runs."""
    for group in groups:
        group.write("cgroup.procs", pid)


def cgroup_hierarchies(mountinfo):
    """From mountinfo: every cgroup v1 hierarchy as (mount point, its controllers
    and name=), and the cgroup2 mount point or None."""
    v1, v2 = [], None
    for line in mountinfo.splitlines():
        fields = line.split()
        rest = fields[fields.index("-") + 1:]
        if rest[0] == "cgroup2" and v2 is None:
            v2 = fields[4]
        elif rest[0] == "cgroup":
            names = [o for o in rest[2].split(",") if o not in ("rw", "ro", "relatime", "noatime",
                                                               "nosuid", "nodev", "noexec")
                     and not o.startswith("release_agent") and o != "clone_children"]
            v1.append((fields[4], frozenset(names)))
    return v1, v2


def make_oci_cgroups(path, resources, id, devices=()):
    """A bundle's container's groups: at linux.cgroupsPath (absolute: from each
    hierarchy's root; relative: below minicontainer's own group; missing:
    minicontainer-ID there) in every v1 hierarchy and in cgroup2, made with
    their missing parents, then linux.resources written. On an error,
    every group it made is removed."""
    with open("/proc/self/mountinfo") as f:
        v1, v2 = cgroup_hierarchies(f.read())
    with open("/proc/self/cgroup") as f:
        own = own_cgroups(f.read())
    path = path or f"minicontainer-{id}"
    groups = []
    try:
        places = [(2, v2, frozenset(), own.get(""))] if v2 and "" in own else []
        places += [(1, mount, names, own.get(next(iter(names)))) for mount, names in v1]
        for version, mount, names, own_path in places:
            # Lexically, as runc's CleanPath: ".." never climbs out of the hierarchy.
            inside = os.path.normpath("/" + (path if path.startswith("/") else
                                             os.path.join(own_path or "/", path))).lstrip("/")
            if not inside:
                raise ContainerError(f"config.json: linux.cgroupsPath {path}",
                                     "that is the hierarchy's root, not a container's group")
            base = os.path.join(mount, inside)
            group = Cgroup(version, base, names)
            group.made = make_group_dirs(mount, base, names)
            try:
                group.parent_fd = os.open(os.path.dirname(base), os.O_RDONLY | os.O_DIRECTORY
                                          | os.O_CLOEXEC)
                group.fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                # Never to be killed or removed by us: neither its processes nor those of
                # the groups below it (kill --all and delete take the whole subtree, as
                # runc's do; /system.slice's own cgroup.procs is empty).
                if cgroup_members(base, visible=False):
                    raise ContainerError(f"config.json: linux.cgroupsPath {path}", f"{base} already"
                                         " holds processes: a container's group must be its own")
            except BaseException:
                for fd in (group.fd, group.parent_fd):
                    if fd is not None:
                        os.close(fd)
                remove_made_dirs(group.made)
                raise
            groups.append(group)
        write_resources(groups, resources or {}, devices)
    except BaseException:
        remove_cgroups(groups)
        raise
    return groups


def make_group_dirs(mount, path, names):
    """mkdir -p below a hierarchy's mount; a new cpuset group gets its parent's
    cpus and mems (it can take no task without them). Returns the
    directories it made, top first (those that were there are not its to
    remove); on an error, it removes them again."""
    parts = os.path.relpath(path, mount).split("/")
    current, made = mount, []
    try:
        for part in parts:
            current = os.path.join(current, part)
            try:
                os.mkdir(current, 0o755)
            except FileExistsError:
                continue
            made.append(current)
            if "cpuset" in names:
                for name in ("cpuset.cpus", "cpuset.mems"):
                    with open(os.path.join(os.path.dirname(current), name)) as f:
                        value = f.read().strip()
                    with open(os.path.join(current, name), "w") as f:
                        f.write(value)
    except OSError as exc:
        remove_made_dirs(made)
        raise ContainerError.from_os(f"create cgroup {current}", exc) from None
    except BaseException:
        remove_made_dirs(made)
        raise
    return tuple(made)


# linux.resources: each value's file, as (field, controller, v1 file, v2 file, how
# the value is written). None: that version has no such file.
RESOURCE_FILES = (
    ("memory.limit", "memory", "memory.limit_in_bytes", "memory.max", None),
    ("memory.reservation", "memory", "memory.soft_limit_in_bytes", "memory.low", None),
    ("memory.swap", "memory", "memory.memsw.limit_in_bytes", "memory.swap.max", "swap"),
    ("memory.kernel", "memory", "memory.kmem.limit_in_bytes", None, None),
    ("memory.kernelTCP", "memory", "memory.kmem.tcp.limit_in_bytes", None, None),
    ("memory.swappiness", "memory", "memory.swappiness", None, None),
    ("memory.disableOOMKiller", "memory", "memory.oom_control", None, "bool"),
    ("memory.useHierarchy", "memory", "memory.use_hierarchy", None, "bool"),
    ("cpu.shares", "cpu", "cpu.shares", "cpu.weight", "weight"),
    ("cpu.period", "cpu", "cpu.cfs_period_us", None, None),
    ("cpu.quota", "cpu", "cpu.cfs_quota_us", "cpu.max", "quota"),
    ("cpu.realtimePeriod", "cpu", "cpu.rt_period_us", None, None),
    ("cpu.realtimeRuntime", "cpu", "cpu.rt_runtime_us", None, None),
    ("cpu.cpus", "cpuset", "cpuset.cpus", "cpuset.cpus", None),
    ("cpu.mems", "cpuset", "cpuset.mems", "cpuset.mems", None),
    ("cpu.idle", "cpu", None, "cpu.idle", None),
    ("pids.limit", "pids", "pids.max", "pids.max", "max"),
    ("blockIO.weight", "blkio", "blkio.weight", "io.bfq.weight", None),
    ("blockIO.leafWeight", "blkio", "blkio.leaf_weight", None, None),
    ("network.classID", "net_cls", "net_cls.classid", None, None),
)
BLKIO_DEVICE_FILES = {"weightDevice": "blkio.weight_device",
                      "throttleReadBpsDevice": "blkio.throttle.read_bps_device",
                      "throttleWriteBpsDevice": "blkio.throttle.write_bps_device",
                      "throttleReadIOPSDevice": "blkio.throttle.read_iops_device",
                      "throttleWriteIOPSDevice": "blkio.throttle.write_iops_device"}
# Devices a container always may use: those make_devices makes, and terminals.
DEFAULT_DEVICE_RULES = ("c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm",
                        "c 5:0 rwm", "c 5:1 rwm", "c 5:2 rwm", "c 136:* rwm")


def write_resources(groups, resources, devices=()):
    """Write linux.resources into the groups, each value where its controller
    is; a value with no place on this host, or refused by the kernel, names
    its field."""
    def group_of(controller):
        return next((g for g in groups if (g.version == 1 and controller in g.controllers)
                     or (g.version == 2 and controller in cgroup_v2_controllers(g))), None)

    def put(name, group, filename, value):
        try:
            group.write(filename, value)
        except ContainerError as exc:
            raise exc.within(f"config.json: linux.resources.{name}") from None

    memory = resources.get("memory") or {}
    swap_first = "swap" in memory and "limit" in memory  # memsw may not go below the limit
    for name, controller, v1_file, v2_file, how in RESOURCE_FILES:
        section, _, key = name.partition(".")
        value = (resources.get(section) or {}).get(key)
        if value is None or (how == "bool" and not value):
            continue
        group = group_of(controller)
        filename = None if group is None else (v1_file if group.version == 1 else v2_file)
        if filename is None or not os.path.exists(os.path.join(group.path, filename)):
            raise ContainerError(f"config.json: linux.resources.{name}",
                                 f"this host has no place for it (no {controller} controller"
                                 f" file {filename or v1_file or v2_file})")
        if how == "bool":
            value = 1
        elif how == "max" and value <= 0:
            value = "max"
        elif how == "weight" and group.version == 2:
            value = 1 + (value - 2) * 9999 // 262142
        elif how == "quota" and group.version == 2:
            value = f"{'max' if value <= 0 else value} {(resources.get('cpu') or {}).get('period') or CFS_PERIOD_US}"
        elif how == "swap" and group.version == 2:
            value = "max" if value < 0 else value - memory.get("limit", 0)
        if name == "memory.limit" and swap_first and group.version == 1:
            try:
                put(name, group, filename, value)
            except ContainerError:  # lowering: memsw first, then the limit
                put("memory.swap", group, "memory.memsw.limit_in_bytes", memory["swap"])
                put(name, group, filename, value)
            continue
        put(name, group, filename, value)
    for key, filename in BLKIO_DEVICE_FILES.items():
        for device in (resources.get("blockIO") or {}).get(key) or ():
            group = group_of("blkio")
            if group is None:
                raise ContainerError(f"config.json: linux.resources.blockIO.{key}",
                                     "this host has no blkio controller")
            rate = device.get("rate", device.get("weight"))
            put(f"blockIO.{key}", group, filename, f"{device['major']}:{device['minor']} {rate}")
    for limit in resources.get("hugepageLimits") or ():
        group = group_of("hugetlb")
        filename = f"hugetlb.{limit.get('pageSize')}.{'limit_in_bytes' if group and group.version == 1 else 'max'}"
        if group is None or not os.path.exists(os.path.join(group.path, filename)):
            raise ContainerError(f"config.json: linux.resources.hugepageLimits {limit.get('pageSize')}",
                                 f"this host has no place for it (no {filename})")
        put("hugepageLimits", group, filename, limit.get("limit"))
    for priority in (resources.get("network") or {}).get("priorities") or ():
        raise ContainerError("config.json: linux.resources.network.priorities",
                             "this host has no net_prio controller")
    for key, value in (resources.get("unified") or {}).items():
        group = next((g for g in groups if g.version == 2), None)
        if group is None or "/" in key or not os.path.exists(os.path.join(group.path, key)):
            raise ContainerError(f"config.json: linux.resources.unified {key}",
                                 "this host's cgroup2 has no such file")
        put(f"unified.{key}", group, key, value)
    write_device_rules(group_of("devices"), resources.get("devices"), devices)


def cgroup_v2_controllers(group):
    try:
        with open(os.path.join(os.path.dirname(group.path), "cgroup.controllers")) as f:
            return set(f.read().split())
    except OSError:
        return set()


def write_device_rules(group, rules, devices=()):
    """linux.resources.devices, in order, on the v1 devices controller; then the
    devices every container may use, and those linux.devices makes (as runc
    does). A v2-only host cannot (that takes eBPF)."""
    if not rules:
        return
    if group is None:
        raise ContainerError("config.json: linux.resources.devices",
                             "this host has no cgroup v1 devices controller")
    for rule in rules:
        major = "*" if rule.get("major") in (None, -1) else rule["major"]
        minor = "*" if rule.get("minor") in (None, -1) else rule["minor"]
        kind = rule.get("type") or "a"
        line = "a" if kind == "a" and major == minor == "*" else \
            f"{kind} {major}:{minor} {rule.get('access') or 'rwm'}"
        try:
            group.write("devices.allow" if rule.get("allow") else "devices.deny", line)
        except ContainerError as exc:
            raise exc.within("config.json: linux.resources.devices") from None
    for line in DEFAULT_DEVICE_RULES + tuple(
            f"{'c' if d['type'] == 'u' else d['type']} {d.get('major', 0)}:{d.get('minor', 0)} rwm"
            for d in devices or () if d["type"] != "p"):
        group.write("devices.allow", line)


def cgroup_views(groups):
    """For a `cgroup` mount: each v1 hierarchy as the container sees it (its own
    group there), named as the host names it, and the links (cpu -> cpu,cpuacct)."""
    views, links = [], []
    for group in groups:
        if group.version == 2:
            views.append(("unified", group.path))
            continue
        name = ",".join(sorted(n.removeprefix("name=") for n in group.controllers))
        views.append((name, group.path))
        if "," in name:
            links += [(part, name) for part in name.split(",")]
    return tuple(views), tuple(links)


def cgroup_members(path, visible=True):
    """The pids in a group and in the groups below it (runc's GetAllPids).
    cgroup v2 lists a process of another PID namespace as 0: counted only
    where visible is False (is the subtree busy?), never signalled."""
    found = []
    for top, _, _ in os.walk(path):
        try:
            with open(os.path.join(top, "cgroup.procs")) as f:
                found += [int(pid) for pid in f.read().split()]
        except (OSError, ValueError):
            pass
    return [pid for pid in found if pid > 0] if visible else found
