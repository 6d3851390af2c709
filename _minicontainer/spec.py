"""One description of a container: the Spec every door fills.

Owns: Spec and Limits (run's options, a bundle's config.json and an image's
configuration all become one of these), capability names and numbers, the
network options as values (--publish, --subnet, --network-alias), which namespace a sysctl
belongs to, whether SELinux is on.
May import: constants, errors, syscalls.
"""
import os

from .constants import (
    BASE_NAMESPACES, DEFAULT_HOSTNAME, DEFAULT_STOP_TIMEOUT, KERNEL_MOUNTS, MASKED_PATHS,
    NAMESPACED_SYSCTLS, OPTIONAL_NAMESPACES, READONLY_PATHS,
)
from .errors import ContainerError
from .syscalls import last_capability

# ---------------------------------------------------------------------------
# Resource limits
# The container's cgroups are made by the supervisor before it forks, under
# minicontainer's own cgroup in each hierarchy, with the limits written; PID 1
# joins them before anything of the command runs; at the end whatever is left
# in them is killed, the post-mortem read, and the groups removed. Each
# controller's cgroup version is chosen at run time: v2 where cgroup2 offers
# it, else the v1 hierarchy that has it. Only the two writers differ.
# ---------------------------------------------------------------------------

class Limits:
    """The resource options of a run, parsed and checked."""

    __slots__ = ("memory", "memory_swap", "pids", "cpus", "cpu_shares", "stats", "rlimits",
                 "devices")

    def __init__(self, memory=None, memory_swap=None, pids=None, cpus=None, cpu_shares=None,
                 stats=False, rlimits=(), devices=()):
        self.memory, self.memory_swap, self.pids = memory, memory_swap, pids
        self.cpus, self.cpu_shares, self.stats = cpus, cpu_shares, stats
        self.rlimits = rlimits  # ((resource number, soft, hard), ...)
        # --device's devices cgroup rules, in linux.resources.devices' shape, in order
        self.devices = devices

    def controllers(self):
        """The controllers these limits (and --stats, --device) need."""
        needed = {"devices"} if self.devices else set()
        if self.memory or self.memory_swap or self.stats:
            needed.add("memory")
        if self.pids is not None or self.stats:
            needed.add("pids")
        if self.cpus or self.cpu_shares:
            needed.add("cpu")
        return needed


# ---------------------------------------------------------------------------
# Network (host side)
# --network bridge: the supervisor gives the container an address on the
# bridge minicontainer owns (mc0), under a file lock shared by all runs, and
# a veth pair whose container end is eth0. iproute2's `ip -batch` does the
# netlink work: two short processes a container (pyroute2's import alone
# cost ~170 ms). The bridge stays between containers, as docker's docker0
# does (`minicontainer network prune` removes it); a veth goes with its
# container's network namespace. The last run to leave removes any
# masquerade rule; the holder does it if the supervisor is SIGKILLed (it
# keeps the host's root and /proc: see own_mount_namespace), and every run
# sweeps entries whose owners are gone, judged by pid and start time in the
# host's /proc. An address's owner is the process that lives as long as its
# container: the supervisor, or with run -d the monitor, never `run -d`.
# ---------------------------------------------------------------------------

BRIDGE = "mc0"
DEFAULT_SUBNET = "10.88.0.0/16"


def parse_subnet(text):
    """--subnet CIDR: an IPv4 network with room for the bridge and containers."""
    import ipaddress
    try:
        net = ipaddress.IPv4Network(text, strict=True)
    except ValueError as exc:
        raise ContainerError(f"--subnet {text}", str(exc)) from None
    if net.prefixlen > 29:
        raise ContainerError(f"--subnet {text}", "too small: at most /29")
    return net


PUBLISH_PROTOCOLS = ("tcp", "udp")


def parse_publish(value):
    """-p [HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|/udp] as (host address, host
    port, container port, protocol); the host address defaults to 127.0.0.1,
    the protocol to tcp (docker's; it takes the word in any case)."""
    import ipaddress
    spec, slash, proto = value.partition("/")
    proto = proto.lower() if slash and proto.isascii() else proto if slash else "tcp"
    if proto not in PUBLISH_PROTOCOLS:
        raise ContainerError(f"--publish {value}", f"unknown protocol {proto!r}: expected tcp or udp")
    parts = spec.rsplit(":", 2)
    host_ip = parts[0] if len(parts) == 3 else "127.0.0.1"
    try:
        ipaddress.IPv4Address(host_ip)
        if len(parts) < 2 or not all(p.isascii() and p.isdigit() for p in parts[-2:]):
            raise ValueError  # int() alone takes " 80", "8_0" and other scripts' digits
        host_port, container_port = (int(p) for p in parts[-2:])
        if not (0 < host_port < 65536 and 0 < container_port < 65536):
            raise ValueError
    except ValueError:
        raise ContainerError(f"--publish {value}",
                             "expected [HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|/udp]") from None
    return host_ip, host_port, container_port, proto


def dns_name(text):
    """`text` as the name server registers it (lowercase), if it is a host name
    as RFC 1123 has them: at most 253 characters, labels of 1 to 63 letters,
    digits and hyphens, none starting or ending with a hyphen; else None."""
    if not isinstance(text, str) or not text.isascii():
        return None
    text = text[:-1] if text.endswith(".") else text  # one dot, the root's: "web.." is no name
    if not 0 < len(text) <= 253:
        return None
    labels = text.lower().split(".")
    allowed = set("abcdefghijklmnopqrstuvwxyz0123456789-")
    if any(not 0 < len(label) <= 63 or set(label) - allowed or label[0] == "-" or label[-1] == "-"
           for label in labels):
        return None
    return ".".join(labels)


def parse_network_alias(value):
    """--network-alias NAME: a host name (see dns_name), lowercase."""
    name = dns_name(value)
    if name is None:
        raise ContainerError(f"--network-alias {value}", "not a DNS name: at most 253 characters,"
                             " labels of 1 to 63 letters, digits and hyphens, not starting or"
                             " ending with a hyphen")
    return name


def publish_text(published):
    """A published port as docker's ps shows it: 127.0.0.1:5353->53/udp."""
    host_ip, host_port, port, proto = published
    return f"{host_ip}:{host_port}->{port}/{proto}"


# ---------------------------------------------------------------------------
# Container set-up (child side)
# One small function per step, in the order they run; `container_main` below
# calls them one per line. All of it runs in forked children.
# ---------------------------------------------------------------------------

class Spec:
    """What to run and how: built and checked by the CLI, read by every step."""

    __slots__ = ("root", "command", "workdir", "hostname", "namespaces", "init",
                 "preserve_fds", "caps", "user", "seccomp", "limits", "env", "mounts",
                 "devices", "masked_paths", "readonly_paths", "read_only", "rm", "tty",
                 "winsize", "stop_timeout", "etc_files", "closed_stdio",
                 # What a bundle's config.json can ask for beyond run's options:
                 "cap_sets", "no_new_privs", "umask", "additional_gids", "oom_score_adj",
                 "domainname", "personality", "propagation", "sysctl", "hooks", "ns_paths",
                 "keyring", "oci", "state", "no_pivot", "uid_map", "gid_map", "groups_locked",
                 # What run -d's monitor keeps up: the restart policy, the health check.
                 "restart", "healthcheck")

    def __init__(self, root, command, workdir="/", hostname=DEFAULT_HOSTNAME,
                 namespaces=BASE_NAMESPACES | sum(OPTIONAL_NAMESPACES.values()),
                 init=False, preserve_fds=0, caps=frozenset(), user=None, seccomp=None,
                 limits=None, env=(), mounts=None, devices=(), masked_paths=MASKED_PATHS,
                 readonly_paths=READONLY_PATHS, read_only=False, rm=False, tty=False,
                 winsize=None, stop_timeout=DEFAULT_STOP_TIMEOUT, etc_files=(), closed_stdio=()):
        self.root, self.command, self.workdir = root, tuple(command), workdir
        self.hostname, self.namespaces, self.init = hostname, namespaces, init
        self.preserve_fds = preserve_fds
        self.caps, self.user = caps, user  # user: (uid, gid, home)
        self.seccomp = seccomp  # a policy in the OCI format, or None: unconfined
        self.limits = limits or Limits()
        self.env = tuple(env)
        # Mounts in the OCI format, in order; devices beyond the default ones.
        self.mounts = list(KERNEL_MOUNTS if mounts is None else mounts)
        self.devices, self.masked_paths = tuple(devices), tuple(masked_paths)
        self.readonly_paths = tuple(readonly_paths)
        self.read_only, self.rm = read_only, rm
        self.tty, self.winsize, self.stop_timeout = tty, winsize, stop_timeout
        self.etc_files = tuple(etc_files)  # (name, text): /etc files written for this run
        self.closed_stdio = tuple(closed_stdio)  # of 0, 1, 2: closed for minicontainer too
        self.cap_sets = None  # {"effective", "permitted", "inheritable", "ambient"}: sets
        self.no_new_privs, self.umask, self.additional_gids = True, None, ()
        self.oom_score_adj = self.domainname = self.personality = self.propagation = None
        self.sysctl, self.hooks, self.ns_paths = {}, {}, {}  # ns_paths: {clone flag: path}
        self.keyring = self.oci = False  # oci: created by `create`, started by `start`
        self.state = None  # OCI: the state hooks are given on stdin
        self.no_pivot = False  # create --no-pivot: move the root onto / and chroot
        self.uid_map = self.gid_map = ()  # a user namespace's: (inside, outside, count)
        # Its gid map written without newgidmap by a user: setgroups is denied there,
        # so the supplementary groups stay the caller's.
        self.groups_locked = False
        self.restart = None  # (policy, maximum retries): see options.parse_restart
        self.healthcheck = None

    def to_json(self):
        """The description as JSON data, kept in a container's state entry."""
        data = {name: getattr(self, name) for name in self.__slots__}
        data["caps"] = sorted(self.caps)
        data["limits"] = {name: getattr(self.limits, name) for name in Limits.__slots__}
        data["winsize"] = self.winsize.hex() if self.winsize else None
        data["cap_sets"] = ({k: sorted(v) for k, v in self.cap_sets.items()}
                            if self.cap_sets is not None else None)
        data["ns_paths"] = {str(k): v for k, v in self.ns_paths.items()}
        data["state"] = None  # PID 1's only
        return data

    @classmethod
    def from_json(cls, data):
        """A description back from its JSON data (lists where tuples were: the steps
        only iterate them)."""
        spec = cls.__new__(cls)
        for name in cls.__slots__:
            setattr(spec, name, data.get(name))
        spec.caps = frozenset(spec.caps or ())
        spec.limits = Limits(**{name: (tuple(map(tuple, value)) if name == "rlimits" else value)
                                for name, value in (data.get("limits") or {}).items()})
        spec.winsize = bytes.fromhex(spec.winsize) if spec.winsize else None
        if spec.cap_sets is not None:
            spec.cap_sets = {k: frozenset(v) for k, v in spec.cap_sets.items()}
        spec.ns_paths = {int(k): v for k, v in (spec.ns_paths or {}).items()}
        spec.sysctl, spec.hooks = spec.sysctl or {}, spec.hooks or {}
        spec.no_new_privs = True if spec.no_new_privs is None else spec.no_new_privs
        spec.restart = tuple(spec.restart) if spec.restart else None
        return spec


def sysctl_namespace(key):
    """The namespace flag a sysctl belongs to, or None for the host's own."""
    return next((f for f, names in NAMESPACED_SYSCTLS.items()
                 if any(key == n or (n.endswith(".") and key.startswith(n)) for n in names)), None)


def selinux_enabled():
    return os.path.exists("/sys/fs/selinux/enforce")


def own_bounding_set():
    """minicontainer's own bounding set as a bit mask, from /proc/self/status
    (read each time: a library's caller may drop capabilities as it goes)."""
    fd = os.open("/proc/self/status", os.O_RDONLY | os.O_CLOEXEC)
    try:
        status = os.read(fd, 65536)
    finally:
        os.close(fd)
    at = status.find(b"\nCapBnd:")
    return int(status[at + 8:status.index(b"\n", at + 1)], 16) if at >= 0 else 0


# capabilities(7) names python-prctl's table may lack: it stops at the libcap
# it was built with, and calls its last one LAST_CAP (40 here, which is
# CHECKPOINT_RESTORE: podman's --cap-add ALL names it, and runc knows it).
NEWER_CAPABILITIES = {"PERFMON": 38, "BPF": 39, "CHECKPOINT_RESTORE": 40}


def capability_numbers():
    """Capability names as docker spells them (CHOWN, SYS_ADMIN) to their
    numbers: every one this kernel has. Built once a process (a library
    caller asks for each container), and read-only."""
    global _capability_numbers
    if _capability_numbers is None:
        import prctl
        import types
        numbers = {name.upper(): getattr(prctl, "CAP_" + name.upper())
                   for name in prctl.ALL_CAP_NAMES if name != "last_cap"}
        last = last_capability()
        for name, number in NEWER_CAPABILITIES.items():
            if number <= last:
                numbers.setdefault(name, number)
        _capability_numbers = types.MappingProxyType(numbers)
    return _capability_numbers


_capability_numbers = None
