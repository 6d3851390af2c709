"""minicontainer: a small Linux container in one module.

`deploy` copies programs into a container root (default ./newroot); `run`
starts a command inside that root as PID 1 of its own PID and mount
namespaces, behind pivot_root, with a fresh /proc, and passes its exit
status through the way docker does; `run -d` keeps it in the background,
and docker's verbs (ps, logs, exec, stop, kill, wait, rm, inspect) see to it.
It is also an OCI runtime with runc's command line (create, start, state,
kill, delete, ...), so podman and containerd can drive it: a bundle's
config.json becomes the same Spec that run's options make. `pull` fills a
root from a registry, and `run` then follows the image's configuration. An
ordinary user runs the same way, without root: in a user namespace of its
own in which it is root, with slirp4netns for a private network.

The module reads top to bottom as a container's life, one banner a section:

    Constants                 kernel names, docker's codes, default policies
    Errors                    ContainerError: "what failed: why", with its errno
    Syscall wrappers          the only ctypes: mount API, openat2, seccomp, ...
    Root filesystem and deploy   plan, check, then write inside the root
    Images                    pull: references, the registry API, the blob cache,
                              layers unpacked beside the root and swapped in
    Resource limits           cgroups v2 and v1, made before the fork
    Network (host side)       the bridge, addresses, veths, published ports;
                              a user's slirp4netns
    State                     containers that outlive a command: entries, moves, logs
    OCI bundles               config.json to Spec, state and features, cgroup resources
    Container set-up          PID 1's steps, in order, from container_main; exec's
    Supervision               supervisor, monitor, holder: fork, wait, signals, exec,
                              create's gate and hooks
    Command line              click: deploy, run, docker's verbs, runc's verbs; main
"""

__version__ = "0.1.0"

import gc

# No cyclic garbage collection while the interpreter and click load (it
# spares their imports some 2 ms of collections), nor in the short-lived
# processes of a container's start (see run_container). deploy and pull,
# which may hold many objects for long, turn it back on.
gc.disable()

import os  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402

import click  # noqa: E402


# ---------------------------------------------------------------------------
# Constants
# Kernel names, so they can be looked up in the man pages as they stand.
# ---------------------------------------------------------------------------

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MS_MOVE = 0x2000

MNT_DETACH = 0x2

RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10
# How every path inside a container's root is resolved: with the root as "/",
# and never through /proc's magic links (/proc/self/fd/N, /proc/self/exe),
# which lead wherever the descriptor or the executable is: the host.
IN_ROOT = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS

AF_INET, SOCK_DGRAM = 2, 2
TIOCSCTTY, TIOCGWINSZ, TIOCSWINSZ = 0x540E, 0x5413, 0x5414
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
SOL_SOCKET, SCM_RIGHTS = 1, 1

# pivot_root has no glibc wrapper; its number differs between architectures.
# The calls from openat2 on came after the numbers were unified: the same everywhere.
SYS_PIVOT_ROOT = {"x86_64": 155, "i386": 217, "i686": 217, "aarch64": 41,
                  "riscv64": 41, "armv7l": 218, "ppc64le": 203, "s390x": 217}
SYS_OPENAT2 = 437
SYS_KEYCTL = {"x86_64": 250, "i386": 288, "i686": 288, "aarch64": 219, "riscv64": 219,
              "armv7l": 311, "ppc64le": 271, "s390x": 280}
KEYCTL_JOIN_SESSION_KEYRING = 1
PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE = 47, 2
PER_LINUX, PER_LINUX32 = 0x0000, 0x0008
# The new mount API (Linux 5.2, mount_setattr 5.12): every mount of the
# container is made detached and attached to a descriptor, never to a path.
SYS_OPEN_TREE, SYS_MOVE_MOUNT, SYS_FSOPEN, SYS_FSCONFIG, SYS_FSMOUNT = 428, 429, 430, 431, 432
SYS_MOUNT_SETATTR = 442
OPEN_TREE_CLONE, OPEN_TREE_CLOEXEC = 0x1, os.O_CLOEXEC
AT_EMPTY_PATH, AT_RECURSIVE = 0x1000, 0x8000
MOVE_MOUNT_F_EMPTY_PATH, MOVE_MOUNT_T_EMPTY_PATH = 0x4, 0x40
FSOPEN_CLOEXEC, FSMOUNT_CLOEXEC = 0x1, 0x1
FSCONFIG_SET_FLAG, FSCONFIG_SET_STRING, FSCONFIG_CMD_CREATE = 0, 1, 6
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC = 0x1, 0x2, 0x4, 0x8
MOUNT_ATTR__ATIME, MOUNT_ATTR_RELATIME, MOUNT_ATTR_NOATIME, MOUNT_ATTR_STRICTATIME = 0x70, 0, 0x10, 0x20
MOUNT_ATTR_NODIRATIME, MOUNT_ATTR_NOSYMFOLLOW = 0x80, 0x200000
MS_UNBINDABLE, MS_SLAVE, MS_SHARED = 1 << 17, 1 << 19, 1 << 20
# Mount options as mount(8) and OCI spell them: (attributes set, attributes cleared).
# An "r" in front (rro, rnosuid) applies it to every mount below too.
MOUNT_ATTR_OPTIONS = {
    "ro": (MOUNT_ATTR_RDONLY, 0), "rw": (0, MOUNT_ATTR_RDONLY),
    "nosuid": (MOUNT_ATTR_NOSUID, 0), "suid": (0, MOUNT_ATTR_NOSUID),
    "nodev": (MOUNT_ATTR_NODEV, 0), "dev": (0, MOUNT_ATTR_NODEV),
    "noexec": (MOUNT_ATTR_NOEXEC, 0), "exec": (0, MOUNT_ATTR_NOEXEC),
    "noatime": (MOUNT_ATTR_NOATIME, MOUNT_ATTR__ATIME),
    "strictatime": (MOUNT_ATTR_STRICTATIME, MOUNT_ATTR__ATIME),
    "norelatime": (MOUNT_ATTR_STRICTATIME, MOUNT_ATTR__ATIME),
    "relatime": (MOUNT_ATTR_RELATIME, MOUNT_ATTR__ATIME),
    "atime": (MOUNT_ATTR_RELATIME, MOUNT_ATTR__ATIME),
    "nostrictatime": (MOUNT_ATTR_RELATIME, MOUNT_ATTR__ATIME),
    "nodiratime": (MOUNT_ATTR_NODIRATIME, 0), "diratime": (0, MOUNT_ATTR_NODIRATIME),
    "nosymfollow": (MOUNT_ATTR_NOSYMFOLLOW, 0), "symfollow": (0, MOUNT_ATTR_NOSYMFOLLOW)}
MOUNT_PROPAGATION = {"private": MS_PRIVATE, "rprivate": MS_PRIVATE, "shared": MS_SHARED,
                     "rshared": MS_SHARED, "slave": MS_SLAVE, "rslave": MS_SLAVE,
                     "unbindable": MS_UNBINDABLE, "runbindable": MS_UNBINDABLE}
SUPERBLOCK_FLAGS = ("sync", "async", "dirsync", "lazytime", "nolazytime", "mand", "nomand",
                    "silent", "loud")
AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
PATH_MAX, NAME_MAX = 4096, 255
MAX_FD = 2**31 - 1  # closerange's end: every descriptor from its start on

# Docker's exit codes for failures that are not the command's own status.
EXIT_OWN_FAILURE = 125  # minicontainer itself failed
EXIT_CANNOT_RUN = 126   # the command exists but cannot be executed
EXIT_NOT_FOUND = 127    # the command does not exist in the container

# Namespaces every container gets, and the ones a user may share with the host.
BASE_NAMESPACES = CLONE_NEWPID | CLONE_NEWNS
OPTIONAL_NAMESPACES = {"uts": CLONE_NEWUTS, "ipc": CLONE_NEWIPC,
                       "network": CLONE_NEWNET, "cgroupns": CLONE_NEWCGROUP}

# The paths docker and runc mask or make read-only in /proc and /sys: kernel
# memory, keyrings, timers that leak host activity, and the knobs of the host.
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
MASKED_PATHS = ("/proc/acpi", "/proc/asound", "/proc/interrupts", "/proc/kcore",
                "/proc/keys", "/proc/latency_stats", "/proc/sched_debug", "/proc/scsi",
                "/proc/timer_list", "/proc/timer_stats", "/sys/firmware",
                "/sys/devices/virtual/powercap")

# /dev holds these and nothing else of the host: (name, major, minor).
DEVICES = (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8),
           ("urandom", 1, 9), ("tty", 5, 0))
DEV_LINKS = (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
             ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"),
             ("ptmx", "pts/ptmx"))

# The mounts every container of `run` gets, first, in the OCI format.
KERNEL_MOUNTS = (
    {"destination": "/proc", "type": "proc", "source": "proc",
     "options": ["nosuid", "noexec", "nodev"]},
    {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
     "options": ["nosuid", "noexec", "mode=755", "size=64k"]},
    {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
     "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
    {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
     "options": ["nosuid", "nodev", "noexec", "mode=1777", "size=64m"]},
    {"destination": "/sys", "type": "sysfs", "source": "sysfs",
     "options": ["ro", "nosuid", "nodev", "noexec"]},
)

# Podman's default bounding set. Docker's older one adds MKNOD, NET_RAW and
# AUDIT_WRITE; MKNOD without a device cgroup lets root inside create and open
# a host disk's block device, so it stays out unless asked for.
DEFAULT_CAPABILITIES = ("CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL",
                        "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID",
                        "SYS_CHROOT")

# The default seccomp policy: docker's, written as what it refuses rather than
# what it allows. Each group is refused with EPERM unless the container holds
# the capability named (docker lifts the same groups for the same
# capabilities, so `--cap-add SYS_ADMIN` behaves as it does there); groups
# with None are refused whatever the capabilities. The kernel would refuse
# most of these anyway for lack of a capability: the filter also stands when
# a capability is gained some other way, as in a new user namespace.
SECCOMP_REFUSED = (
    (None, ("kexec_load", "kexec_file_load",                # replace the running kernel
            "keyctl", "add_key", "request_key",             # keyrings are not namespaced
            "swapon", "swapoff",
            "userfaultfd",                                  # stalls the kernel at will (exploit aid)
            "io_uring_setup", "io_uring_enter", "io_uring_register",  # bypasses seccomp per call
            "uselib", "ustat", "sysfs", "_sysctl", "nfsservctl", "create_module",
            "get_kernel_syms", "query_module", "vm86", "vm86old")),
    ("SYS_ADMIN", ("mount", "umount", "umount2", "pivot_root", "unshare", "setns",
                   "fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree",
                   "mount_setattr",                         # the new mount API, whole
                   "bpf", "fanotify_init", "lookup_dcookie", "perf_event_open",
                   "quotactl", "quotactl_fd", "setdomainname", "sethostname", "syslog")),
    ("SYS_MODULE", ("init_module", "finit_module", "delete_module")),
    ("SYS_BOOT", ("reboot",)),
    ("SYS_RAWIO", ("iopl", "ioperm")),
    ("DAC_READ_SEARCH", ("open_by_handle_at",)),
    ("SYS_PACCT", ("acct",)),
    ("SYS_PTRACE", ("kcmp", "pidfd_getfd", "process_madvise")),
    ("SYS_TIME", ("settimeofday", "stime", "clock_settime", "clock_settime64")),
    ("SYS_TTY_CONFIG", ("vhangup",)),
    ("SYS_NICE", ("get_mempolicy", "set_mempolicy", "set_mempolicy_home_node", "mbind",
                  "move_pages", "migrate_pages")),
)
# clone with any of these flags makes a namespace: refused unless SYS_ADMIN.
# clone3 passes its flags in memory a filter cannot read, so it answers
# ENOSYS instead, and libc falls back to clone, where the flags are seen.
CLONE_NEWUSER = 0x10000000
NAMESPACE_FLAGS = (CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWUSER,
                   CLONE_NEWPID, CLONE_NEWNET)
TIOCSTI = 0x5412  # ioctl that pushes bytes into a terminal's input: refused, always
EPERM, ENOSYS = 1, 38
# libseccomp's numbers for the OCI names of actions and comparisons.
SCMP_ACTIONS = {"SCMP_ACT_KILL": 0x00000000, "SCMP_ACT_KILL_THREAD": 0x00000000,
                "SCMP_ACT_KILL_PROCESS": 0x80000000, "SCMP_ACT_TRAP": 0x00030000,
                "SCMP_ACT_ERRNO": 0x00050000, "SCMP_ACT_TRACE": 0x7FF00000,
                "SCMP_ACT_LOG": 0x7FFC0000, "SCMP_ACT_ALLOW": 0x7FFF0000}
SCMP_OPS = {"SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4,
            "SCMP_CMP_GE": 5, "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7}
NR_SCMP_ERROR = -1  # seccomp_syscall_resolve_name: a name no ABI of libseccomp's knows
SCMP_FLTATR_CTL_NNP, SCMP_FLTATR_CTL_TSYNC, SCMP_FLTATR_CTL_LOG, SCMP_FLTATR_CTL_SSB = 3, 4, 6, 7
SECCOMP_FLAG_ATTRIBUTES = {"SECCOMP_FILTER_FLAG_TSYNC": SCMP_FLTATR_CTL_TSYNC,
                           "SECCOMP_FILTER_FLAG_LOG": SCMP_FLTATR_CTL_LOG,
                           "SECCOMP_FILTER_FLAG_SPEC_ALLOW": SCMP_FLTATR_CTL_SSB}
# 32-bit ABIs the native filter also covers, as docker's profile does.
SECCOMP_ARCHES = {"x86_64": ("SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"),
                  "aarch64": ("SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM")}

# cgroups. The CFS period is the kernel's default; shares map to v2 weights
# as runc maps them. Below docker's 6 MiB floor the set-up itself cannot run.
CGROUP_CONTROLLERS = ("memory", "pids", "cpu")
CFS_PERIOD_US = 100_000
MIN_MEMORY = 6 * 1024 * 1024
SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
# docker's default RLIMIT_NOFILE: soft 1024, hard 524288 (or the host's, if lower).
DEFAULT_NOFILE = (1024, 524288)
ULIMITS = ("core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice",
           "nofile", "nproc", "rss", "rtprio", "rttime", "sigpending", "stack")

DEFAULT_HOSTNAME = "minicontainer"
DEFAULT_ROOT = "newroot"
# --read-only keeps these writable, as tmpfs (podman's --read-only-tmpfs).
READ_ONLY_TMPFS = (("/tmp", "1777"), ("/run", "755"))
# Where --rm puts its throw-away upper layer: a tmpfs mounted, inside the
# container's private mount namespace only, on the first of these that is
# neither the root nor above it.
SCRATCH_DIRS = ("/run", "/tmp", "/mnt", "/var/tmp", "/media", "/srv")
ROOT_ENV = "MINICONTAINER_ROOT"
DEPLOY_DIR = "/bin"
CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Signals minicontainer passes on to the container. SIGCHLD is waited for too.
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP,
                     signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH)
# Those whose default action ends a process; after one of the first four,
# a command still running when --stop-timeout runs out gets SIGKILL.
TERMINATING_SIGNALS = frozenset(FORWARDED_SIGNALS) - {signal.SIGWINCH}
STOP_SIGNALS = frozenset((signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT))
DEFAULT_STOP_TIMEOUT = 10  # seconds, docker's
SUPERVISED_SIGNALS = FORWARDED_SIGNALS + (signal.SIGCHLD,)
# The namespace holder's parent-death signal: it kills the container on
# receipt, so a command that clears its own parent-death signal still dies.
HOLDER_PDEATH = signal.SIGRTMIN
# The holder's word to the supervisor that the container's status is in the
# status pipe: the supervisor need not wait for the holder's own exit, which
# tears down the container's mount namespace (about 2 ms).
HOLDER_DONE = signal.SIGRTMIN + 1
# `create`'s word to the holder: PID 1 is ready; leave it to the caller's reaper.
HOLDER_RELEASE = signal.SIGRTMIN + 3
# `minicontainer stop`'s word to a container's monitor: pass SIGTERM on, and
# leave the SIGKILL after the timeout to the stop command (its -t).
MONITOR_STOP = signal.SIGRTMIN + 2
# What the supervisor blocks and waits for: the same set, or a signal is lost.
SUPERVISOR_SIGNALS = SUPERVISED_SIGNALS + (HOLDER_DONE, MONITOR_STOP)
# exec, once told to end: how often it looks whether its process has ended
# though unreaped (a tracer holds it), and how long its way in may take to
# reap it before exec takes the status from /proc (seconds).
HELD_POLL, HELD_GRACE = 0.1, 0.5


# ---------------------------------------------------------------------------
# Errors
# One exception type. It prints as "what failed: why"; only the CLI prints it.
# ---------------------------------------------------------------------------

class ContainerError(Exception):
    """A failure to report as `minicontainer: what: why` with exit `code`."""

    def __init__(self, what, why=None, errno=None, code=EXIT_OWN_FAILURE):
        super().__init__(what)
        self.what, self.errno, self.code = what, errno, code
        self.why = why if why is not None else (os.strerror(errno) if errno else None)

    def __str__(self):
        return f"{self.what}: {self.why}" if self.why else self.what

    def within(self, context):
        """The same error, with where it happened in front: "context: what: why"."""
        self.what = f"{context}: {self.what}"
        return self

    @classmethod
    def from_os(cls, what, exc, code=EXIT_OWN_FAILURE):
        """Wrap an OSError, keeping its errno and strerror."""
        return cls(what, exc.strerror or str(exc), exc.errno, code)


# ---------------------------------------------------------------------------
# Syscall wrappers
# The only place that touches ctypes. Each raises ContainerError with errno.
# ---------------------------------------------------------------------------

_libc = None


def _libc_call(name, *args, what):
    """Call libc's `name`; on -1 raise ContainerError(what) with errno."""
    global _libc
    if _libc is None:
        import ctypes
        _libc = ctypes.CDLL(None, use_errno=True)
    result = getattr(_libc, name)(*args)
    if result == -1:
        import ctypes
        err = ctypes.get_errno()
        raise ContainerError(what, errno=err)
    return result


def _bytes(path):
    return None if path is None else os.fsencode(path)


def mount(source, target, fstype, flags=0, data=None):
    """mount(2). Precondition: in the container's own mount namespace."""
    shell = f"mount {'-t ' + fstype + ' ' if fstype else ''}{source or 'none'} {target}"
    _libc_call("mount", _bytes(source), _bytes(target), _bytes(fstype),
               flags, _bytes(data), what=shell)


def umount2(target, flags):
    """umount2(2). Precondition: in the container's own mount namespace."""
    _libc_call("umount2", _bytes(target), flags, what=f"umount {target}")


def unshare(flags):
    """unshare(2): os.unshare where Python has it (3.12+), ctypes otherwise."""
    if hasattr(os, "unshare"):
        try:
            os.unshare(flags)
        except OSError as exc:
            raise ContainerError.from_os("unshare", exc) from None
    else:
        _libc_call("unshare", flags, what="unshare")


def pivot_root(new_root, put_old):
    """pivot_root(2). Precondition: new_root is a mount point, mounts private."""
    number = SYS_PIVOT_ROOT.get(os.uname().machine)
    if number is None:
        raise ContainerError("pivot_root", f"unknown on {os.uname().machine}")
    _libc_call("syscall", number, _bytes(new_root), _bytes(put_old),
               what=f"pivot_root {new_root} {put_old}")


RENAME_EXCHANGE = 2


def rename_exchange(old, new):
    """renameat2(RENAME_EXCHANGE): swap two paths in one step."""
    _libc_call("renameat2", AT_FDCWD, _bytes(old), AT_FDCWD, _bytes(new), RENAME_EXCHANGE,
               what=f"exchange {old} with {new}")


_open_how = None


def openat2(dirfd, path, flags, resolve, mode=0):
    """openat2(2) (Linux 5.6+): open `path` below `dirfd` under `resolve` rules."""
    import ctypes
    global _open_how
    if _open_how is None:
        class OpenHow(ctypes.Structure):
            _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                        ("resolve", ctypes.c_uint64)]
        _open_how = OpenHow
    how = _open_how(flags | os.O_CLOEXEC, mode, resolve)
    try:
        return _libc_call("syscall", ctypes.c_long(SYS_OPENAT2), dirfd,
                          _bytes(path), ctypes.byref(how), ctypes.sizeof(how),
                          what=f"open {path} inside the root")
    except ContainerError as exc:
        if exc.errno == 40 and resolve & RESOLVE_NO_MAGICLINKS:  # ELOOP
            exc.why = ("a symlink loop, or a /proc magic link (/proc/self/fd/N, /proc/self/exe),"
                       " which could lead out of the root")
        raise


def write_at(dir_fd, name, value, what, flags=0):
    """Write a value into a kernel file (a cgroup's, a sysctl's) below an open directory."""
    try:
        fd = os.open(name, os.O_WRONLY | os.O_CLOEXEC | flags, dir_fd=dir_fd)
        try:
            os.write(fd, str(value).encode())
        finally:
            os.close(fd)
    except OSError as exc:
        raise ContainerError.from_os(what, exc) from None


def clone_tree(path, dirfd=AT_FDCWD, recursive=False, follow=True):
    """open_tree(OPEN_TREE_CLONE): a detached copy of the mount at `path`, as an fd
    to attach later, even behind pivot_root (Linux 5.2+). Only for paths of
    the host's (before pivot_root) or of the container's own /proc and /dev:
    open_tree follows whatever it meets."""
    import ctypes
    flags = (OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | (AT_RECURSIVE if recursive else 0)
             | (0 if follow else AT_SYMLINK_NOFOLLOW) | (0 if path else AT_EMPTY_PATH))
    return _libc_call("syscall", ctypes.c_long(SYS_OPEN_TREE), dirfd, _bytes(path), flags,
                      what=f"open_tree {path}")


def new_mount(fstype, options=(), attrs=0, source=None):
    """A new, detached mount of a file system (fsopen, fsconfig, fsmount), as an fd.

    options: (key, value) pairs, value None for a flag. The kernel's own
    explanation of a refused option (read from the context) is the error text.
    """
    import ctypes
    fs = _libc_call("syscall", ctypes.c_long(SYS_FSOPEN), _bytes(fstype), FSOPEN_CLOEXEC,
                    what=f"fsopen {fstype}")
    what = f"mount -t {fstype}{' -o ' if options else ''}" + ",".join(
        k if v is None else f"{k}={v}" for k, v in options)
    try:
        for key, value in (("source", source or fstype),) + tuple(options):
            command = FSCONFIG_SET_FLAG if value is None else FSCONFIG_SET_STRING
            _fsconfig(fs, command, key, value, what)
        _fsconfig(fs, FSCONFIG_CMD_CREATE, None, None, what)
        return _libc_call("syscall", ctypes.c_long(SYS_FSMOUNT), fs, FSMOUNT_CLOEXEC, attrs,
                          what=what)
    finally:
        os.close(fs)


def _fsconfig(fs, command, key, value, what):
    import ctypes
    try:
        _libc_call("syscall", ctypes.c_long(SYS_FSCONFIG), fs, command, _bytes(key),
                   _bytes(value), 0, what=what)
    except ContainerError as exc:
        try:  # the file system's own words: "e tmpfs: Bad value for 'size'"
            message = os.read(fs, 512).decode(errors="replace").strip()
        except OSError:
            message = ""
        if message:
            exc.why = message.partition(" ")[2]
        raise


_mount_attr = None


def set_mount_attrs(fd, attrs, clear=0, propagation=0, recursive=False):
    """mount_setattr(2) (Linux 5.12+): set and clear attributes (read-only, nosuid,
    nodev, noexec, atime) and the propagation of the mount `fd` refers to,
    attached or not; root inside cannot take them off."""
    import ctypes
    global _mount_attr
    if _mount_attr is None:
        class MountAttr(ctypes.Structure):
            _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                        ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]
        _mount_attr = MountAttr
    attr = _mount_attr(attrs, clear, propagation, 0)
    _libc_call("syscall", ctypes.c_long(SYS_MOUNT_SETATTR), fd, b"",
               AT_EMPTY_PATH | (AT_RECURSIVE if recursive else 0), ctypes.byref(attr),
               ctypes.sizeof(attr), what="mount_setattr")


def attach_mount(tree_fd, target_fd, target):
    """move_mount(2): attach a detached mount onto the file or directory `target_fd`
    is open on; no path is resolved, so no symlink can redirect it."""
    import ctypes
    _libc_call("syscall", ctypes.c_long(SYS_MOVE_MOUNT), tree_fd, b"", target_fd, b"",
               MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH, what=f"mount on {target}")


def setns(fd, nstype):
    """setns(2): move this thread into the namespace `fd` refers to."""
    if hasattr(os, "setns"):
        try:
            os.setns(fd, nstype)
        except OSError as exc:
            raise ContainerError.from_os("setns", exc) from None
    else:
        _libc_call("setns", fd, nstype, what="setns")


def sethostname(name):
    """sethostname(2). Precondition: in the container's own UTS namespace."""
    data = name.encode()
    _libc_call("sethostname", data, len(data), what=f"set hostname {name}")


def setdomainname(name):
    """setdomainname(2). Precondition: in the container's own UTS namespace."""
    data = name.encode()
    _libc_call("setdomainname", data, len(data), what=f"set domainname {name}")


def set_personality(persona):
    """personality(2): the execution domain (LINUX32 for a 32-bit userland's uname)."""
    _libc_call("personality", persona, what=f"personality {persona:#x}")


def raise_ambient(cap):
    """PR_CAP_AMBIENT_RAISE: keep `cap` across exec for a process that is not root.
    Precondition: `cap` is permitted and inheritable."""
    _libc_call("prctl", PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0,
               what=f"raise the ambient capability {cap}")


def join_session_keyring(name):
    """keyctl(KEYCTL_JOIN_SESSION_KEYRING): a new session keyring, so that the
    container does not share the caller's (keyrings are not namespaced)."""
    import ctypes
    number = SYS_KEYCTL.get(os.uname().machine)
    if number is None:
        raise ContainerError("keyctl", f"unknown on {os.uname().machine}")
    _libc_call("syscall", ctypes.c_long(number), KEYCTL_JOIN_SESSION_KEYRING, _bytes(name),
               what="join a new session keyring")


def set_link_up(name):
    """Bring a network interface up (SIOCGIFFLAGS, SIOCSIFFLAGS on a struct ifreq).
    Precondition: in the container's own network namespace."""
    import ctypes
    sock = _libc_call("socket", AF_INET, SOCK_DGRAM, 0, what="socket")
    try:
        ifreq = ctypes.create_string_buffer(name.encode().ljust(16, b"\0"), 40)
        _libc_call("ioctl", sock, SIOCGIFFLAGS, ifreq, what=f"read the flags of {name}")
        flags = int.from_bytes(ifreq.raw[16:18], sys.byteorder) | IFF_UP
        ctypes.memmove(ctypes.addressof(ifreq) + 16, flags.to_bytes(2, sys.byteorder), 2)
        _libc_call("ioctl", sock, SIOCSIFFLAGS, ifreq, what=f"bring up {name}")
    finally:
        os.close(sock)


_libseccomp = None


def libseccomp():
    """libseccomp, bound by soname: the seven calls used, at a fraction of the
    start-up cost of a binding that looks the library up with ldconfig."""
    global _libseccomp
    if _libseccomp is None:
        import ctypes
        try:
            lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
        except OSError as exc:
            raise ContainerError("seccomp", f"libseccomp is not installed ({exc})") from None
        lib.seccomp_init.restype = ctypes.c_void_p
        lib.seccomp_init.argtypes = [ctypes.c_uint32]
        lib.seccomp_arch_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
        lib.seccomp_arch_resolve_name.argtypes = [ctypes.c_char_p]
        lib.seccomp_arch_resolve_name.restype = ctypes.c_uint32
        lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
        lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                               ctypes.c_uint, ctypes.c_void_p]
        lib.seccomp_load.argtypes = [ctypes.c_void_p]
        lib.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
        _libseccomp = lib
    return _libseccomp


class SeccompFilter:
    """A filter compiled by libseccomp from a policy in the OCI format
    (defaultAction, defaultErrnoRet, architectures, syscalls with names,
    action, errnoRet and args): minicontainer's default and a bundle's alike.
    Built while the host's libraries are in sight, loaded just before exec.
    Rules go in as runc adds them (name by name, libseccomp's
    seccomp_rule_add_array), so a profile compiles to the same program; a
    name libseccomp does not know at all is skipped, as runc does. A name it
    knows only on another of the filter's ABIs (socketcall, waitpid on
    x86_64) resolves to a negative pseudo-number that libseccomp maps for
    each ABI: it must be added, not skipped. Skipped, the x86 part lost
    Debian's allowance of socketcall, and the conditional socket rules that
    libseccomp folds into socketcall on x86 then conflicted (EEXIST)."""

    def __init__(self, policy, no_new_privs=True):
        import ctypes
        self.lib = lib = libseccomp()
        default = seccomp_action(policy.get("defaultAction", "SCMP_ACT_ALLOW"),
                                 policy.get("defaultErrnoRet"), "defaultAction")
        self.ctx = lib.seccomp_init(default)
        if not self.ctx:
            raise ContainerError("seccomp", "libseccomp could not make a filter")
        # libseccomp sets no_new_privs itself when it loads, unless told not to:
        # a bundle may ask for a filter without it (loaded with CAP_SYS_ADMIN).
        attributes = {SCMP_FLTATR_CTL_NNP: int(no_new_privs)}
        for flag in policy.get("flags") or ():
            attributes[SECCOMP_FLAG_ATTRIBUTES[flag]] = 1
        for attribute, value in attributes.items():
            rc = lib.seccomp_attr_set(self.ctx, attribute, value)
            if rc < 0:
                raise ContainerError(f"seccomp attribute {attribute}", errno=-rc)
        for arch in policy.get("architectures") or ():
            token = lib.seccomp_arch_resolve_name(arch.removeprefix("SCMP_ARCH_").lower().encode())
            if not token:
                raise ContainerError(f"seccomp architecture {arch}", "unknown to libseccomp")
            lib.seccomp_arch_add(self.ctx, token)  # -EEXIST for the native one: fine

        class ArgCmp(ctypes.Structure):
            _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                        ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]

        for rule in policy.get("syscalls") or ():
            action = seccomp_action(rule.get("action"), rule.get("errnoRet"), "action")
            if action == default:
                continue  # libseccomp refuses a rule that repeats the default
            args = rule.get("args") or ()
            # libseccomp takes one comparison per argument in a rule; several on
            # the same argument (docker's old profiles) mean any of them: as runc
            # does, one rule each.
            indexes = [a.get("index") for a in args]
            groups = [[a] for a in args] if len(set(indexes)) < len(indexes) else [args]
            try:
                compiled = [((ArgCmp * max(1, len(group)))(*(
                    ArgCmp(a["index"], SCMP_OPS[a["op"]], a.get("value", 0), a.get("valueTwo", 0))
                    for a in group)), len(group)) for group in groups]
            except (KeyError, TypeError) as exc:
                raise ContainerError("seccomp rule", f"bad argument comparison {exc}") from None
            for name in rule.get("names") or ():
                number = lib.seccomp_syscall_resolve_name(name.encode())
                if number == NR_SCMP_ERROR:
                    continue
                for cmps, count in compiled:
                    rc = lib.seccomp_rule_add_array(self.ctx, action, number, count, cmps)
                    if rc < 0:
                        # EEXIST: this rule contradicts an earlier one (same
                        # system call and comparisons, another action); runc
                        # fails on it too ("error adding seccomp rule").
                        raise ContainerError(f"seccomp rule for {name}", errno=-rc)

    def load(self):
        """Install the filter. Precondition: no_new_privs is set (or CAP_SYS_ADMIN)."""
        rc = self.lib.seccomp_load(self.ctx)
        if rc < 0:
            raise ContainerError("load the seccomp filter", errno=-rc)


def seccomp_action(name, errno_ret, field):
    """An OCI action name (and errnoRet) as libseccomp's number."""
    if name not in SCMP_ACTIONS:
        raise ContainerError(f"seccomp {field} {name}", "not an action this runtime supports"
                             f" ({', '.join(SCMP_ACTIONS)})")
    action = SCMP_ACTIONS[name]
    if name == "SCMP_ACT_ERRNO":
        action |= EPERM if errno_ret is None else errno_ret & 0xFFFF
    return action


def default_seccomp(caps):
    """minicontainer's default policy, in the OCI format, for a container whose
    bounding set holds the capabilities named in `caps`."""
    refused = [name for cap, names in SECCOMP_REFUSED if cap not in caps for name in names]
    rules = [{"names": refused, "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM}]
    if "SYS_ADMIN" not in caps:
        index = 1 if os.uname().machine.startswith("s390") else 0  # s390's clone swaps them
        rules += [{"names": ["clone"], "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM,
                   "args": [{"index": index, "value": flag, "valueTwo": flag,
                             "op": "SCMP_CMP_MASKED_EQ"}]} for flag in NAMESPACE_FLAGS]
        rules.append({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS})
    # ioctl's request is an int to the kernel: compare only its low 32 bits,
    # so junk in the high bits cannot slip TIOCSTI past the filter.
    rules.append({"names": ["ioctl"], "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM,
                  "args": [{"index": 1, "value": 0xFFFFFFFF, "valueTwo": TIOCSTI,
                            "op": "SCMP_CMP_MASKED_EQ"}]})
    return {"defaultAction": "SCMP_ACT_ALLOW",
            "architectures": list(SECCOMP_ARCHES.get(os.uname().machine, ())),
            "syscalls": rules}


def set_window_size(fd, winsize):
    """TIOCSWINSZ: give a terminal the size `winsize` (a struct winsize's 8 bytes)."""
    import ctypes
    _libc_call("ioctl", fd, TIOCSWINSZ, ctypes.create_string_buffer(winsize, 8),
               what="set the terminal size")


def take_controlling_terminal(fd):
    """TIOCSCTTY. Precondition: a session leader without a controlling terminal."""
    _libc_call("ioctl", fd, TIOCSCTTY, 0, what="take the terminal as controlling terminal")


def die_with_parent(expected_parent, sig=signal.SIGKILL):
    """Get `sig` when the parent dies; exit now if it already has."""
    import prctl
    prctl.set_pdeathsig(sig)
    # In a new PID namespace getppid() is 0, so read the parent from the
    # host's /proc, which is still mounted until the container mounts its own.
    fd = os.open("/proc/self/stat", os.O_RDONLY | os.O_CLOEXEC)
    try:
        ppid = int(os.read(fd, 4096).rsplit(b")", 1)[1].split()[1])
    finally:
        os.close(fd)
    if ppid != expected_parent:
        os._exit(EXIT_OWN_FAILURE)


# ---------------------------------------------------------------------------
# Root filesystem and deploy
# Everything written into a root is resolved with the root as "/", so a
# symlink planted in the root (bin -> /etc) cannot redirect a host write.
# ---------------------------------------------------------------------------

def check_root(root):
    """Return the root's absolute path, or refuse a root unfit for a container."""
    try:
        st = os.lstat(root)
    except OSError as exc:
        raise ContainerError.from_os(f"root {root}", exc) from None
    import stat
    if stat.S_ISLNK(st.st_mode):
        raise ContainerError(f"root {root}", "is a symlink; give the real directory")
    if not stat.S_ISDIR(st.st_mode):
        raise ContainerError(f"root {root}", "not a directory")
    path = os.path.realpath(root)
    if path == "/":
        raise ContainerError(f"root {root}", "is the host's /; give a container root")
    if any(path == top or path.startswith(top + "/") for top in ("/proc", "/sys", "/dev")):
        raise ContainerError(f"root {root}", "is one of the kernel's file systems; give a"
                             " container root")
    return path


def check_run_root(root):
    """check_root, plus what run mounts on: a symlinked proc, dev or sys would aim a mount elsewhere."""
    path = check_root(root)
    for name in ("proc", "dev", "sys"):
        if os.path.islink(os.path.join(path, name)):
            raise ContainerError(f"root {root}", f"its {name} is a symlink; it must be a directory")
    return path


def open_root(root):
    """Open a checked root directory; the fd anchors every in-root lookup."""
    return os.open(check_root(root), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


ROOT_FILE_MAX = 4 << 20  # a passwd or group file larger than this is not one


def read_root_file(root, path):
    """A text file of the root's (a path, or a directory descriptor), '' if
    missing: resolved with the root as "/" and through no symlink at all,
    opened without blocking (a container can plant a FIFO there between
    runs), a regular file, at most 4 MiB."""
    rootfd = os.dup(root) if isinstance(root, int) else open_root(root)
    try:
        fd = openat2(rootfd, path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY,
                     IN_ROOT | RESOLVE_NO_SYMLINKS)
    except ContainerError as exc:
        if exc.errno == 2:
            return ""
        if exc.errno == 40:  # ELOOP
            raise ContainerError(f"read {path} of the root", "it is (or goes through) a symlink;"
                                 " minicontainer reads only real files there") from None
        raise exc.within(f"read {path} of the root") from None
    finally:
        os.close(rootfd)
    try:
        import stat
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ContainerError(f"read {path} of the root", "not a regular file")
        data = os.read(fd, ROOT_FILE_MAX + 1)
        while len(data) <= ROOT_FILE_MAX and (more := os.read(fd, ROOT_FILE_MAX + 1 - len(data))):
            data += more
    except OSError as exc:
        raise ContainerError.from_os(f"read {path} of the root", exc) from None
    finally:
        os.close(fd)
    if len(data) > ROOT_FILE_MAX:
        raise ContainerError(f"read {path} of the root", f"larger than {ROOT_FILE_MAX >> 20} MiB")
    return data.decode("utf-8", errors="replace")


def open_dir_in_root(rootfd, path, create=False):
    """Open directory `path` (relative to the root) with the root as "/".

    Symlinks inside the root are followed, but never out of it. Missing
    directories are made when `create` is set.
    """
    parts = [p for p in path.split("/") if p not in ("", ".")]
    fd = os.dup(rootfd)
    try:
        for i, part in enumerate(parts):
            prefix = "/".join(parts[:i + 1])
            if create:
                try:
                    os.mkdir(part, 0o755, dir_fd=fd)
                except FileExistsError:
                    pass
                except OSError as exc:
                    raise ContainerError.from_os(f"create /{prefix} in the root", exc) from None
            new = openat2(rootfd, "/" + prefix, os.O_RDONLY | os.O_DIRECTORY, IN_ROOT)
            os.close(fd)
            fd = new
        return fd
    except BaseException:
        os.close(fd)
        raise


# Deploy makes a plan, then applies it. Every source becomes Ops, each naming
# an absolute path inside the root and what goes there; sources are checked
# while planning, so a bad one fails the deploy before anything is written.

class Op:
    """One step of a deploy: what to put at `dst`, an absolute path inside the root.

    kind: dir, file, symlink, hardlink (src: the in-root path linked to),
    remove (a whiteout) or clear (an opaque whiteout). For a file, src is a
    host path or `data` opens the bytes (an archive member). meta: (mode,
    uid, gid, mtime_ns, size).
    """

    __slots__ = ("kind", "dst", "src", "meta", "data")

    def __init__(self, kind, dst, src=None, meta=None, data=None):
        self.kind, self.dst, self.src, self.meta, self.data = kind, dst, src, meta, data


def meta_of(st):
    """The parts of a stat result a deploy keeps."""
    return (st.st_mode & 0o7777, st.st_uid, st.st_gid, st.st_mtime_ns, st.st_size)


class Plan:
    """The ops of a deploy, in order, plus what was skipped and what to close.

    Each op is checked as it is added, against what the root will hold when
    the ops before it are applied: the plan's own entries (`planned`, by
    their names in the archive), what its whiteouts remove (`removed`,
    `cleared`), else the root as it is. So whatever the order of an
    archive's members and layers, the writer is never handed an op that
    cannot be done: a refused archive leaves the root as it was.
    """

    def __init__(self, rootfd):
        self.rootfd, self.ops, self.skipped, self.open_files = rootfd, [], [], []
        self.planned, self.removed, self.targets = {}, set(), {}
        self.foreign = 0  # archive members whose owners a user's deploy cannot keep
        self.image = self.image_source = None  # an image archive's run settings, and its path
        self.layering, self.cleared = False, set()  # image layers: an upper one's files win
        self.root_kinds, self.root_links = {}, {}  # the root does not change while planning
        # Directories already walked, and every name those walks went through:
        # kept until an entry at one of those names (or a whiteout) changes them.
        self.walked, self.walked_through = {}, set()

    def add(self, op):
        """Add an op; a second op for the same place and kind is dropped, except
        that an image layer's file or symlink replaces a lower layer's."""
        if self.planned.get(op.dst) == op.kind and (op.kind == "dir" or op.kind in (
                "symlink", "file") and not self.layering):
            return
        check_name(op.dst, f"deploy {op.src or op.dst}")
        if op.kind in ("symlink", "hardlink") and "\0" in op.src:
            raise ContainerError(f"deploy {op.dst}", "its link target holds a NUL byte; refused")
        parent = os.path.dirname(op.dst)
        if op.dst != "/" and parent not in self.walked:
            seen = []
            names, why = self.walk(parent, seen)
            if why:
                raise ContainerError(f"deploy {op.src or op.dst} to {op.dst}", why)
            self.walked[parent] = names
            self.walked_through.update(seen)
        if op.kind != "dir" and op.dst in self.walked_through:
            self.forget_walks()
        self.planned[op.dst] = op.kind
        if op.kind == "symlink":
            self.targets[op.dst] = op.src
        self.ops.append(op)

    def remove(self, op):
        """Add a whiteout's op: what it removes is no longer planned or there,
        under its name in the archive and where its directory leads."""
        check_name(op.dst, f"deploy: whiteout of {op.dst}")
        self.ops.append(op)
        self.forget_walks()
        parent, name = os.path.split(op.dst)
        paths, why = self.walk(parent)
        for path in {op.dst} | ({os.path.join(p, name) for p in paths} if not why else set()):
            self.removed.add(path)
            for planned in [p for p in self.planned if p == path or p.startswith(path + "/")]:
                del self.planned[planned]

    def clear(self, op):
        """Add an opaque whiteout's op: what lies below its directory is no
        longer planned or there; the directory stays."""
        self.ops.append(op)
        self.forget_walks()
        paths, why = self.walk(op.dst)
        for path in {op.dst.rstrip("/")} | ({p.rstrip("/") for p in paths} if not why else set()):
            self.cleared.add(path)
            for planned in [p for p in self.planned if p.startswith(path + "/")]:
                del self.planned[planned]

    def forget_walks(self):
        self.walked.clear()
        self.walked_through.clear()

    def walk(self, path, seen=None):
        """(names, why): the directory `path` leads to once the ops so far are
        applied, followed as the writer follows it (through symlinks, inside the
        root: an absolute target starts at its top), under every name the plan
        may know it by (the first is through every symlink); or why it cannot be
        had: a file where a directory is needed, a symlink that leads nowhere, a
        loop. A missing directory is made, unless reached through a symlink.
        Every name looked at is added to `seen`."""
        here, hops = ["/"], 0
        todo = [p for p in path.split("/") if p]
        while todo:
            part = todo.pop(0)
            if isinstance(part, tuple):  # the symlink just followed: its own name too
                here.append(part[1])
                continue
            if part == ".":
                continue
            if part == "..":
                here = [os.path.dirname(here[0])]
                continue
            nexts = [os.path.join(h, part) for h in here]
            if seen is not None:
                seen.extend(nexts)
            name, kind = next(((n, k) for n in nexts if (k := self.kind_at(n)) is not None),
                              (nexts[0], None))
            if kind == "dir" or kind is None and not hops:
                here = nexts
            elif kind == "symlink":
                hops += 1
                if hops > 40:
                    return [], f"{path}: {os.strerror(40)}"
                target = self.link_target(name)
                todo = [p for p in target.split("/") if p] + [("name", name)] + todo
                if target.startswith("/"):
                    here = ["/"]
            elif kind is None:
                return [], (f"{path} is (or goes through) a symlink that leads nowhere ({name}"
                            " is not there), where a directory is needed")
            else:
                whose = "this deploy writes" if name in self.planned else "in the root"
                return [], f"{name} is a file {whose}, where a directory is needed"
        return here, None

    def link_target(self, path):
        if path in self.planned:
            return self.targets[path]
        if path not in self.root_links:
            parent, name = os.path.split(path)
            fd = openat2(self.rootfd, parent, os.O_PATH | os.O_DIRECTORY, IN_ROOT)
            try:
                self.root_links[path] = os.readlink(name, dir_fd=fd)
            finally:
                os.close(fd)
        return self.root_links[path]

    def gone(self, path):
        """Whether a whiteout or an opaque marker of this plan removes path:
        it, or a directory above it, was whited out, or one above it cleared."""
        if path == "/" or not (self.removed or self.cleared):
            return False
        parts = path.split("/")
        for i in range(1, len(parts) + 1):
            prefix = "/".join(parts[:i])
            if prefix in self.removed or i < len(parts) and prefix in self.cleared:
                return True
        return False

    def kind_at(self, path):
        """What will be at path when this plan's ops so far are applied: the
        plan's own kind, else the root's ('dir', 'symlink', 'other'), or None."""
        if path in self.planned:
            return self.planned[path]
        if path == "/":
            return "dir"
        if self.gone(path):
            return None
        if path not in self.root_kinds:
            self.root_kinds[path] = self.root_kind(path)
        return self.root_kinds[path]

    def root_kind(self, path):
        """'dir', 'symlink', 'other', or None: what the root (or this plan) has at `path`."""
        import stat
        if path in self.planned:
            return self.planned[path]
        if self.rootfd is None:
            return None
        try:
            fd = openat2(self.rootfd, path, os.O_PATH | os.O_NOFOLLOW,
                         RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
        except ContainerError:
            return None
        try:
            mode = os.fstat(fd).st_mode
        finally:
            os.close(fd)
        return "dir" if stat.S_ISDIR(mode) else "symlink" if stat.S_ISLNK(mode) else "other"

    def close(self):
        for f in self.open_files:
            f.close()


def check_name(path, what):
    """A path inside the root the kernel can take: 255 bytes a name, 4,095 in
    all, and no NUL (a pax header can hold one; no system call takes it)."""
    if "\0" in path:
        raise ContainerError(what, "the name holds a NUL byte; refused")
    data = os.fsencode(path)
    if len(data) >= PATH_MAX or any(len(part) > NAME_MAX for part in data.split(b"/")):
        raise ContainerError(what, f"the name is too long (at most {NAME_MAX} bytes a name and"
                             f" {PATH_MAX - 1} in all); refused")


def readable(path, st):
    """Whether this process can read a source; root reads everything, so no syscall then."""
    import stat
    if os.geteuid() == 0:
        return True
    return os.access(path, os.R_OK | (os.X_OK if stat.S_ISDIR(st.st_mode) else 0))


def plan_sources(plan, sources, to, deps=True):
    """Plan every source: tar archives and images unpack (at the root's top by
    default), directories merge, files are copied with their ELF closure."""
    import stat
    for src in sources:
        try:
            st = os.stat(src)
        except OSError as exc:
            raise ContainerError.from_os(f"deploy {src}", exc) from None
        if not readable(src, st):
            raise ContainerError(f"deploy {src}", os.strerror(13), 13)
        if stat.S_ISDIR(st.st_mode) and os.path.exists(os.path.join(src, "oci-layout")):
            plan_oci_dir(plan, src, to or "/")
        elif stat.S_ISDIR(st.st_mode):
            plan_tree(plan, src, to or DEPLOY_DIR)
        elif stat.S_ISREG(st.st_mode) and src.endswith(TAR_SUFFIXES):
            plan_archive(plan, src, to or "/")
        elif stat.S_ISREG(st.st_mode):
            dst = os.path.join(to or DEPLOY_DIR, os.path.basename(os.path.normpath(src)))
            plan.add(Op("file", dst, src, meta_of(st)))
            if deps:
                for path, lib_dst in elf_closure(src, os.path.dirname(dst)):
                    if path == lib_dst:
                        plan_host_path(plan, path)
                    else:  # found through $ORIGIN: it goes where the program went
                        plan.add(Op("file", lib_dst, os.path.realpath(path),
                                    meta_of(os.stat(path))))
        else:
            raise ContainerError(f"deploy {src}", "not a regular file or a directory")


TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tbz", ".tar.xz", ".txz")


def plan_tree(plan, top, to):
    """A directory's contents: dirs, files (hard links kept), symlinks; special files skipped.

    One lstat per entry, from scandir, as cp -a does it.
    """
    import stat
    first_link = {}
    pending = [(top, to)]
    while pending:
        src_dir, dst_dir = pending.pop()
        try:
            entries = sorted(os.scandir(src_dir), key=lambda e: e.name)
        except OSError as exc:
            raise ContainerError.from_os(f"deploy {src_dir}", exc) from None
        subdirs = []
        for entry in entries:
            dst = f"{dst_dir.rstrip('/')}/{entry.name}"
            st = entry.stat(follow_symlinks=False)
            mode = st.st_mode
            if stat.S_ISLNK(mode):
                plan.add(Op("symlink", dst, os.readlink(entry.path)))
            elif not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                plan.skipped.append(entry.path)
            elif not readable(entry.path, st):
                raise ContainerError(f"deploy {entry.path}", os.strerror(13), 13)
            elif stat.S_ISDIR(mode):
                plan.add(Op("dir", dst, entry.path, meta_of(st)))
                subdirs.append((entry.path, dst))
            elif st.st_nlink > 1 and (st.st_dev, st.st_ino) in first_link:
                plan.add(Op("hardlink", dst, first_link[st.st_dev, st.st_ino]))
            else:
                first_link.setdefault((st.st_dev, st.st_ino), dst)
                plan.add(Op("file", dst, entry.path, meta_of(st)))
        pending.extend(reversed(subdirs))


def plan_host_path(plan, path, depth=0):
    """Put a host file at the same absolute path in the root, as the loader will
    look it up there. Where the root has a real directory, the path goes on
    inside it; otherwise a host symlink on the way (/lib64 -> usr/lib64, a
    library's soname link) is kept as a link and followed."""
    import stat
    if depth > 40:
        raise ContainerError(f"deploy {path}", os.strerror(40), 40)
    parts = [p for p in path.split("/") if p]
    prefix = "/"
    for i, part in enumerate(parts):
        current = os.path.join(prefix, part)
        st = os.lstat(current)
        if plan.root_kind(current) == "dir":
            prefix = current
            continue
        if stat.S_ISLNK(st.st_mode):
            target = os.readlink(current)
            plan.add(Op("symlink", current, target))
            rest = os.path.join(target if target.startswith("/") else os.path.join(prefix, target),
                                *parts[i + 1:])
            return plan_host_path(plan, os.path.normpath(rest), depth + 1)
        plan.add(Op("dir" if i < len(parts) - 1 else "file", current, current, meta_of(st)))
        prefix = current


class ElfInfo:
    """What the loader reads from an ELF file: class, machine, interpreter, needs, paths."""

    __slots__ = ("elfclass", "machine", "interp", "needed", "rpath", "runpath")


_elf_infos = {}


def elf_info(path):
    """Read an ELF file's loader facts with pyelftools; None if it is not ELF.
    Each file is read once per process: a closure meets the same libraries
    again and again (libc, for every program deployed)."""
    if path not in _elf_infos:
        _elf_infos[path] = read_elf_info(path)
    return _elf_infos[path]


def read_elf_info(path):
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile
    import stat
    info = ElfInfo()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO would hang the deploy
            os.close(fd)
            return None
        with open(fd, "rb") as f:
            if f.read(4) != b"\x7fELF":
                return None
            f.seek(0)
            elf = ELFFile(f)
            info.elfclass, info.machine = elf.elfclass, elf["e_machine"]
            info.interp, info.needed, info.rpath, info.runpath = None, [], [], []
            for seg in elf.iter_segments():
                if seg["p_type"] == "PT_INTERP":
                    info.interp = seg.get_interp_name()
                elif seg["p_type"] == "PT_DYNAMIC":
                    for tag in seg.iter_tags():
                        if tag.entry.d_tag == "DT_NEEDED":
                            info.needed.append(tag.needed)
                        elif tag.entry.d_tag == "DT_RPATH":
                            info.rpath += tag.rpath.split(":")
                        elif tag.entry.d_tag == "DT_RUNPATH":
                            info.runpath += tag.runpath.split(":")
    except (ELFError, OSError, ValueError) as exc:
        raise ContainerError(f"read ELF file {path}", str(exc)) from None
    return info


_loader_cache = None


def loader_cache():
    """The host's loader cache, {soname: [paths]}, from `ldconfig -p` (the host's
    own tool reading its cache; the program being deployed is never run). Read
    once per process, however many programs are deployed."""
    global _loader_cache
    if _loader_cache is None:
        _loader_cache = read_loader_cache()
    return _loader_cache


def read_loader_cache():
    import subprocess
    cache = {}
    for ldconfig in ("/sbin/ldconfig", "/usr/sbin/ldconfig"):
        if os.path.exists(ldconfig):
            out = subprocess.run([ldconfig, "-p"], capture_output=True, text=True).stdout
            for line in out.splitlines():
                name, sep, path = line.strip().partition(" => ")
                if sep:
                    cache.setdefault(name.split(" (")[0], []).append(path)
            break
    return cache


def elf_closure(program, program_dir):
    """The host files a dynamically linked program needs, found the way the
    dynamic loader finds them: PT_INTERP, then each DT_NEEDED by DT_RPATH (the
    object's and its loaders', when it has no DT_RUNPATH), DT_RUNPATH, the
    loader cache and the default paths, with $ORIGIN expanded. Each library
    must match the program's ELF class and machine, as the loader requires.

    Returns (host path, path in the root) pairs: the same path, except for
    libraries found through $ORIGIN, which keep their place relative to the
    program, whose own place in the root is `program_dir`.
    """
    main = elf_info(program)
    if main is None or (main.interp is None and not main.needed):
        return []  # a script or a static program
    found = [(main.interp, main.interp)] if main.interp else []
    cache, seen = None, set()
    queue = [(program, main, [], program_dir)]
    while queue:
        obj, info, inherited, obj_dir = queue.pop(0)
        origin = os.path.dirname(os.path.realpath(obj))

        def expand(dirs):  # (host dir, dir in the root)
            out = []
            for d in filter(None, dirs):
                if "$ORIGIN" in d or "${ORIGIN}" in d:
                    d = d.replace("${ORIGIN}", "$ORIGIN")
                    out.append((os.path.normpath(d.replace("$ORIGIN", origin)),
                                os.path.normpath(d.replace("$ORIGIN", obj_dir))))
                else:
                    out.append((d, d))
            return out

        rpath = [] if info.runpath else expand(info.rpath) + inherited
        for name in info.needed:
            if "/" in name:
                candidates = [(name, name)]
            else:
                if cache is None:
                    cache = loader_cache()
                defaults = (["/lib64", "/usr/lib64"] if main.elfclass == 64 else []) + ["/lib", "/usr/lib"]
                dirs = rpath + expand(info.runpath) + [(d, d) for d in defaults]
                candidates = ([(os.path.join(h, name), os.path.join(r, name)) for h, r in dirs[:-len(defaults)]]
                              + [(c, c) for c in cache.get(name, [])]
                              + [(os.path.join(d, name),) * 2 for d in defaults])
            lib = next((c for c in candidates if same_abi(c[0], main)), None)
            if lib is None:
                raise ContainerError(f"deploy {program}", f"it needs {name}, which is not found"
                                     " (searched its RPATH/RUNPATH, the loader cache and the"
                                     " default paths)")
            if os.path.realpath(lib[0]) not in seen:
                seen.add(os.path.realpath(lib[0]))
                found.append(lib)
                queue.append((lib[0], elf_info(lib[0]), rpath, os.path.dirname(lib[1])))
    return found


def same_abi(path, main):
    """Whether a candidate library is a file the loader would take for this program."""
    if not os.path.isfile(path):
        return False
    info = elf_info(path)
    return info is not None and (info.elfclass, info.machine) == (main.elfclass, main.machine)


def member_checker():
    """Check tar members by the standard library's data filter rules, lexically.

    The filter runs against an empty directory so that no host symlink takes
    part; the deploy itself resolves everything inside the root. Kept from
    the rules: leading slashes stripped, '..' out of the root refused, hard
    links out of the root refused, device files and FIFOs skipped. Changed:
    symlinks pointing outside are kept (a root's absolute links are normal,
    and nothing here ever follows one out), and modes and owners are kept as
    tar keeps them for root (the container mounts its root nosuid anyway).
    """
    import tempfile
    tarfile = tar_module()
    empty = tempfile.mkdtemp(prefix="minicontainer-tarcheck-")
    os.rmdir(empty)  # only its name is used: nothing at it can be followed

    def check(member, archive):
        try:
            return tarfile.data_filter(member, empty).name
        except (tarfile.AbsoluteLinkError, tarfile.LinkOutsideDestinationError):
            if member.issym():
                return member.name.lstrip("/")
            raise ContainerError(f"deploy {archive}", f"hard link {member.name} -> {member.linkname}"
                                 " points outside the root; refused") from None
        except tarfile.SpecialFileError:
            return None
        except tarfile.FilterError as exc:
            raise ContainerError(f"deploy {archive}", f"{exc}; refused") from None

    return check


def plan_members(plan, tar, members, archive, to, check):
    """Plan a tar archive's members under `to`; whiteouts are handled by the caller.

    The archive is checked whole before anything is written: besides each
    member's own checks, no member may lie inside a symlink or a file that
    the same archive makes, nor be a directory and a file at once. tar would
    follow or replace; a deploy refuses, rather than guess what was meant.
    """
    seen = {}
    for member in members:
        name = check(member, archive)
        if name is None:
            plan.skipped.append(f"{archive}:{member.name}")
            continue
        dst = os.path.normpath(os.path.join(to, name))
        kind = ("dir" if member.isdir() else "symlink" if member.issym()
                else "hardlink" if member.islnk() else "file")
        if kind != "dir" and os.path.normpath(name) == ".":
            raise ContainerError(f"deploy {archive}", f"member {member.name} is the archive's top"
                                 f" directory ({dst} in the root) but not a directory; refused")
        parts = dst.strip("/").split("/")
        for i in range(1, len(parts)):
            prefix = "/" + "/".join(parts[:i])
            if seen.get(prefix) == "symlink":
                raise ContainerError(f"deploy {archive}", f"member {member.name} goes through the"
                                     f" symlink member {prefix}; refused")
            if seen.get(prefix) in ("file", "hardlink"):
                raise ContainerError(f"deploy {archive}", f"member {member.name} lies inside the"
                                     f" file member {prefix}; refused")
        if dst in seen and (seen[dst] == "dir") != (kind == "dir"):
            raise ContainerError(f"deploy {archive}", f"member {member.name} is both a directory"
                                 " and a file in this archive; refused")
        seen[dst] = kind
        meta = (member.mode & 0o7777, member.uid, member.gid, int(member.mtime * 1e9), member.size)
        if (member.isdir() or member.isreg()) and os.geteuid() != 0 \
                and (member.uid, member.gid) != (os.geteuid(), os.getegid()):
            plan.foreign += 1
        if member.isdir():
            plan.add(Op("dir", dst, None, meta))
        elif member.issym():
            if not member.linkname:  # symlink(2) refuses it: it would fail midway
                raise ContainerError(f"deploy {archive}", f"symlink member {member.name} has an"
                                     " empty target; refused")
            plan.add(Op("symlink", dst, member.linkname))
        elif member.islnk():
            target = os.path.normpath(os.path.join(to, member.linkname.lstrip("/")))
            parents, why = plan.walk(os.path.dirname(target))
            kinds = [plan.kind_at(os.path.join(p, os.path.basename(target))) for p in parents]
            if why or target == "/" or all(k in (None, "dir") for k in kinds):  # link(2) would fail
                raise ContainerError(f"deploy {archive}", f"hard link {member.name} ->"
                                     f" {member.linkname}: the archive (or the root) has no file"
                                     " there to link to; refused")
            plan.add(Op("hardlink", dst, target))
        elif member.isreg():
            plan.add(Op("file", dst, None, meta, data=lambda m=member, t=tar: t.extractfile(m)))


def tar_module():
    """The standard library's tarfile, or its backport (backports.tarfile, a
    dependency before 3.12) where this Python's has no extraction filters:
    they came in 3.11.4, and Debian 12's python3 is 3.11.2."""
    import tarfile
    if hasattr(tarfile, "data_filter"):
        return tarfile
    try:
        from backports import tarfile
    except ImportError:
        raise ContainerError("deploy", f"Python {sys.version.split()[0]}'s tarfile has no data"
                             " filter and backports.tarfile is not installed: pip install"
                             " backports.tarfile") from None
    return tarfile


def open_tar(path, fileobj=None, what=None):
    tarfile = tar_module()
    try:
        return tarfile.open(path, "r:*", fileobj=fileobj)
    except (tarfile.TarError, OSError) as exc:
        raise ContainerError(what or f"deploy {path}", f"not a readable tar archive: {exc}") from None


def plan_archive(plan, path, to):
    """A root filesystem archive, or an image archive: `docker save`'s, or an
    OCI layout made into a tar (podman save --format oci-archive, skopeo's
    oci-archive:)."""
    tar = open_tar(path)
    plan.open_files.append(tar)
    files = ImageFiles(path, tar)
    if files.has("manifest.json") or files.has("oci-layout"):
        plan_image(plan, files, to)
    else:
        plan_members(plan, tar, tar.getmembers(), path, to, member_checker())


def plan_oci_dir(plan, path, to):
    """An OCI image layout directory (oci-layout, index.json, blobs/sha256/...)."""
    files = ImageFiles(path)
    plan.open_files.append(files)
    plan_image(plan, files, to)


def plan_image(plan, files, to):
    """An image's layers, bottom first, each checked against its digest before
    it is read; its run settings are kept for `run` (see image_settings)."""
    layers, plan.image = image_layers(files)
    plan.image_source = os.path.abspath(files.path)
    for name, compression, blob in layers:
        plan.open_files.append(blob)
        plan_layer(plan, open_layer(blob, compression, f"deploy {files.path}:{name}"),
                   f"{files.path}:{name}", to)


class ImageFiles:
    """The files of an image, by their names in it: the members of a tar
    archive, or the files of an OCI layout directory, opened with the
    directory as "/" (a symlink in it cannot lead to a host file) and without
    blocking (a FIFO there cannot hang the deploy). No name is a host path."""

    def __init__(self, path, tar=None):
        self.path, self.tar, self.dirfd = path, tar, None
        if tar is not None:
            self.members = {}
            for member in tar.getmembers():
                self.members.setdefault(os.path.normpath(member.name.lstrip("/")), member)
        else:
            try:
                self.dirfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError as exc:
                raise ContainerError.from_os(f"deploy {path}", exc) from None

    def has(self, name):
        if self.tar is not None:
            return name in self.members
        try:
            os.close(openat2(self.dirfd, name, os.O_PATH, IN_ROOT))
            return True
        except ContainerError:
            return False

    def open(self, name):
        """A binary file object of the image's file `name`, or one line saying it is missing."""
        import stat
        what = f"deploy {self.path}"
        if self.tar is not None:
            member = self.members.get(os.path.normpath(name.lstrip("/")))
            try:
                f = self.tar.extractfile(member) if member is not None else None
            except (KeyError, OSError, self.tar_error()) as exc:
                raise ContainerError(what, f"{name} in the image cannot be read: {exc}") from None
            if f is None:
                raise ContainerError(what, f"{name} is missing from the image (or is no file)")
            return f
        try:
            fd = openat2(self.dirfd, name, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC, IN_ROOT)
        except ContainerError as exc:
            if exc.errno == 2:
                raise ContainerError(what, f"{name} is missing from the image") from None
            raise exc.within(what) from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise ContainerError(what, f"{name} in the image is not a regular file")
        return open(fd, "rb")

    def tar_error(self):
        return tar_module().TarError

    def read(self, name, digest=None, size=None):
        """The bytes of a small file (a manifest, an index, a configuration), at
        most MAX_MANIFEST, checked against its digest where one is known."""
        with self.open(name) as f:
            data = f.read(MAX_MANIFEST + 1)
        if len(data) > MAX_MANIFEST:
            raise ContainerError(f"deploy {self.path}", f"{name} is larger than"
                                 f" {MAX_MANIFEST >> 20} MiB; refused")
        if digest is not None:
            check_digest(self.path, name, digest, size, [data])
        return data

    def blob(self, digest, size=None):
        """A blob by its digest, checked whole against it, opened at its start."""
        name = blob_name(self.path, digest)
        f = self.open(name)
        try:
            check_digest(self.path, name, digest, size, iter(lambda: f.read(1 << 20), b""))
            f.seek(0)
        except BaseException:
            f.close()
            raise
        return name, f

    def close(self):
        if self.dirfd is not None:
            os.close(self.dirfd)
            self.dirfd = None


DIGEST_ALGORITHMS = {"sha256": 64, "sha512": 128}


def blob_name(image, digest):
    """blobs/ALGORITHM/HEX for an OCI descriptor's digest; any other digest
    (a path in disguise: sha256:../../etc/shadow) is refused."""
    import re
    algorithm, _, hexdigits = digest.partition(":") if isinstance(digest, str) else ("", "", "")
    if algorithm not in DIGEST_ALGORITHMS or not re.fullmatch(
            f"[0-9a-f]{{{DIGEST_ALGORITHMS[algorithm]}}}", hexdigits):
        raise ContainerError(f"deploy {image}", f"a digest minicontainer does not check:"
                             f" '{digest}' (sha256: or sha512: and lower-case hex)")
    return f"blobs/{algorithm}/{hexdigits}"


def check_digest(image, name, digest, size, chunks):
    """Refuse a file whose bytes are not those its digest (and size) name."""
    import hashlib
    algorithm, _, expected = digest.partition(":")
    h, n = hashlib.new(algorithm), 0
    for chunk in chunks:
        h.update(chunk)
        n += len(chunk)
    if h.hexdigest() != expected:
        raise ContainerError(f"deploy {image}", f"{name} does not match its digest {digest}"
                             f" (it is {algorithm}:{h.hexdigest()}); refused")
    if size is not None and size != n:
        raise ContainerError(f"deploy {image}", f"{name} is {n} bytes, not the {size} its"
                             " descriptor says; refused")


def image_layers(files):
    """The layers of an image, bottom first, as (name, compression, open blob),
    and its run settings: docker save's manifest.json, else the OCI
    index.json -> (index ->) manifest -> config and layers. Every OCI blob is
    checked against its digest; so are a docker archive's files that are
    named by theirs (blobs/sha256/HEX, HEX.json)."""
    import json
    what = f"deploy {files.path}"
    try:
        if files.has("manifest.json"):
            manifest = json.loads(files.read("manifest.json"))
            if not isinstance(manifest, list) or not manifest:
                raise ValueError("manifest.json is not a list of images")
            config_name, layer_names = manifest[0]["Config"], manifest[0]["Layers"]
            if not isinstance(config_name, str) or not isinstance(layer_names, list) \
                    or not all(isinstance(n, str) for n in layer_names):
                raise ValueError("Config or Layers is not a name")
            settings = image_settings(files.read(config_name, named_digest(config_name)), what)
            layers = []
            try:
                for name in layer_names:
                    digest = named_digest(name)
                    if digest is not None:
                        layers.append((name, None, files.blob(digest)[1]))
                    else:
                        layers.append((name, None, files.open(name)))
            except BaseException:
                for _, _, blob in layers:
                    blob.close()
                raise
            return layers, settings
        index = json.loads(files.read("index.json"))
        doc, seen = index, 0
        while isinstance(doc, dict) and "manifests" in doc:  # an index, of platforms or images
            seen += 1
            if seen > 8:
                raise ValueError("indexes nested more than 8 deep")
            desc = choose_manifest(files.path, doc["manifests"])
            doc = json.loads(files.read(blob_name(files.path, desc["digest"]), desc["digest"],
                                        desc.get("size")))
        config = doc["config"]
        settings = image_settings(files.read(blob_name(files.path, config["digest"]),
                                             config["digest"], config.get("size")), what)
        layers = []
        try:
            for desc in doc["layers"]:
                # gzip, bzip2, xz and plain tar are told apart by tarfile itself
                compression = "zstd" if "zstd" in str(desc.get("mediaType", "")) else None
                name, blob = files.blob(desc["digest"], desc.get("size"))
                layers.append((name, compression, blob))
        except BaseException:
            for _, _, blob in layers:
                blob.close()
            raise
        return layers, settings
    except (KeyError, IndexError, ValueError, TypeError, AttributeError, RecursionError) as exc:
        why = f"no {exc}" if isinstance(exc, KeyError) else str(exc)
        raise ContainerError(what, f"not an image manifest this understands: {why}") from None


def named_digest(name):
    """The sha256 digest a docker archive's file name carries, or None:
    blobs/sha256/HEX (docker 25 on) and HEX.json (a configuration before)."""
    import re
    m = re.fullmatch(r"(?:\./)?(?:blobs/sha256/([0-9a-f]{64})|([0-9a-f]{64})\.json)", name)
    return f"sha256:{m.group(1) or m.group(2)}" if m else None


def choose_manifest(image, entries):
    """The entry of an OCI index to deploy: the host's platform where entries
    name theirs, else the first image (attestations and other artifacts left
    aside); one line listing what there is otherwise."""
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ValueError("manifests is not a list of descriptors")
    wanted = parse_platform(None)
    offered = []
    for entry in entries:
        if entry.get("mediaType", MANIFEST_TYPES[0]) not in MANIFEST_TYPES + INDEX_TYPES:
            continue
        platform = entry.get("platform")
        if not isinstance(platform, dict):
            return entry  # no platform named: a single image, as podman and skopeo save one
        have = (platform.get("os"), platform.get("architecture"), platform.get("variant"))
        if have[0] == "unknown":
            continue  # an attestation
        offered.append(have)
        if have[:2] == wanted[:2] and (wanted[2] is None or have[2] in (None, wanted[2])):
            return entry
    there = ", ".join(platform_name(p) for p in offered
                      if all(isinstance(x, (str, type(None))) for x in p))
    raise ContainerError(f"deploy {image}", f"no image for {platform_name(wanted)}; it has:"
                         f" {there or 'none'}")


def plan_layer(plan, tar, name, to):
    """One image layer: its whiteouts first (they delete what lower layers put
    there), then its files. `.wh..wh..opq` empties a directory, `.wh.NAME`
    deletes NAME."""
    plan.open_files.append(tar)
    check = member_checker()
    members = tar.getmembers()
    for member in members:
        base = os.path.basename(member.name)
        if base.startswith(".wh."):
            where = whiteout_dir(member, name, to)
            if base == ".wh..wh..opq":
                plan.clear(Op("clear", where))
            else:
                plan.remove(Op("remove", os.path.join(where, whiteout_target(member, name))))
            plan.planned.pop(where, None)
    plan.layering = True
    try:
        plan_members(plan, tar, [m for m in members if not os.path.basename(m.name).startswith(".wh.")],
                     name, to, check)
    finally:
        plan.layering = False


def whiteout_dir(member, archive, to):
    """The directory (in the root) a whiteout or an opaque marker acts in: its
    member's, by name alone, whatever the member's type (overlay's own
    whiteouts are character devices, which the member checks skip). A leading
    '/' is dropped, as for every member; a name that climbs out is refused."""
    rel = os.path.normpath(member.name.lstrip("/"))
    if rel == ".." or rel.startswith("../"):
        raise ContainerError(f"deploy {archive}", f"whiteout {member.name} lies outside the root;"
                             " refused")
    where = os.path.normpath(os.path.join(to, os.path.dirname(rel)))
    check_name(where, f"deploy {archive}: whiteout {member.name}")
    return where


def whiteout_target(member, archive):
    """The name a `.wh.NAME` whiteout removes. '.' and '..' (and nothing) are no
    entries of its directory but the directory itself and its parent: `.wh...`
    at the top would remove the directory that holds the root, on the host.
    Refused, as containers/storage refuses them ("invalid whiteout name")."""
    gone = os.path.basename(member.name)[len(".wh."):]
    if gone in ("", ".", ".."):
        raise ContainerError(f"deploy {archive}", f"member {member.name} is a whiteout of"
                             f" '{gone}', which is no entry of its directory; refused")
    return gone


STAGING = ".minicontainer-tmp."  # a deploy's staging directory (at the root's top) or temporary


class Writer:
    """Applies a plan inside the root. Each path is resolved with the root as
    "/" (openat2). Each file, link and symlink is made whole under a temporary
    name in the deploy's staging directory, then renamed into place: it
    appears at its name only when complete, and a symlink planted in the
    root is replaced, never followed. A deploy killed midway leaves only its
    staging directory, which the next deploy removes."""

    def __init__(self, rootfd, link=False):
        self.rootfd, self.link, self.owner = rootfd, link, os.geteuid() == 0
        self.me = (os.geteuid(), os.getegid())
        self.dirfds, self.made, self.late_modes = {}, set(), {}
        self.files = self.links = self.size = 0
        self.warnings = []
        self.tag = f"{os.getpid()}.{process_start(os.getpid())}"
        self.stage_fd = self.stage_dev = None
        self.temps, self.swept = 0, set()

    def dirfd(self, path, create=True, mode=0o755):
        """An fd of a directory of the root, cached; made (with `mode`) if missing
        and `create`, its missing parents first. A directory just made is opened
        from its parent: nothing but it can be at its name. A mode without owner
        rwx is set at the end, as cp -a does, so the directory can be filled."""
        fd = self.dirfds.get(path)
        if fd is not None:
            return fd
        parent, _, name = path.rpartition("/")
        if create and name:
            parent_fd = self.dirfd(parent or "/")
            try:
                os.mkdir(name, mode | 0o700, dir_fd=parent_fd)
                fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                             dir_fd=parent_fd)
                self.made.add(path)
                if mode & 0o700 != 0o700:
                    self.late_modes[path] = mode
            except FileExistsError:
                pass
        if fd is None:
            fd = open_dir_in_root(self.rootfd, path, create=create)
        self.dirfds[path] = fd
        return fd

    def forget(self, path):
        """Drop cached directory fds at or below a removed path, and the modes
        still to be set on them: the number may soon be another directory's."""
        for cached in [p for p in self.dirfds if p == path or p.startswith(path.rstrip("/") + "/")]:
            self.late_modes.pop(cached, None)
            fd = self.dirfds.pop(cached)
            self.swept.discard(fd)
            os.close(fd)

    def stage(self, target_fd):
        """Where to make an entry before renaming it into the directory target_fd:
        the staging directory at the root's top (made at the first use), or,
        when the target is on another file system (a mount inside the root),
        that directory itself, under a temporary name."""
        if self.stage_fd is None:
            name = STAGING + self.tag
            os.mkdir(name, 0o700, dir_fd=self.rootfd)
            self.stage_fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
                                    | os.O_CLOEXEC, dir_fd=self.rootfd)
            self.stage_dev = os.fstat(self.stage_fd).st_dev
        self.temps += 1
        if os.fstat(target_fd).st_dev == self.stage_dev:
            return self.stage_fd, str(self.temps)
        if target_fd not in self.swept:
            sweep_staging(target_fd)
            self.swept.add(target_fd)
        return target_fd, f"{STAGING}{self.tag}.{self.temps}"

    def close(self):
        for path, mode in self.late_modes.items():
            os.fchmod(self.dirfds[path], mode)
        self.late_modes.clear()
        for fd in self.dirfds.values():
            os.close(fd)
        self.dirfds.clear()
        if self.stage_fd is not None:  # empty, unless a failure left a temporary
            os.close(self.stage_fd)
            self.stage_fd = None
            remove_at(self.rootfd, STAGING + self.tag, "remove the deploy's staging directory")

    def apply(self, op):
        try:
            getattr(self, "do_" + op.kind)(op)
        except OSError as exc:
            raise ContainerError.from_os(f"deploy {op.src or op.dst} to {op.dst}", exc) from None

    def do_dir(self, op):
        """Make a directory with its owner and mode. An existing one (or a link to
        one) keeps what it has; anything else there is replaced, as an image
        layer's directory replaces a lower layer's file."""
        import stat
        mode, uid, gid = op.meta[:3]
        parent, name = os.path.split(op.dst)
        if name and op.dst not in self.dirfds:
            parent_fd = self.dirfd(parent)
            try:
                st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
            except FileNotFoundError:
                st = None
            if st is not None and not stat.S_ISDIR(st.st_mode) and not self.leads_to_dir(op.dst, st):
                self.forget(op.dst)
                remove_at(parent_fd, name, f"deploy {op.dst}", st)
        fd = self.dirfd(op.dst, mode=mode)
        if op.dst in self.made and self.owner and (uid, gid) != self.me:
            os.fchown(fd, uid, gid)
            os.fchmod(fd, mode | 0o700 if mode & 0o700 != 0o700 else mode)  # chown clears setgid

    def leads_to_dir(self, path, st):
        import stat
        if not stat.S_ISLNK(st.st_mode):
            return False
        try:
            os.close(openat2(self.rootfd, path, os.O_PATH | os.O_DIRECTORY, IN_ROOT))
            return True
        except ContainerError:
            return False

    def place(self, op, make):
        """Make `op.dst` whole with make(dirfd, name) under a temporary name, then
        rename it into place (over what is there, but never over a directory
        that holds anything: that is kept, with a warning)."""
        import stat
        parent, name = os.path.split(op.dst)
        fd = self.dirfd(parent)
        stage_fd, tmp = self.stage(fd)
        make(stage_fd, tmp)
        try:
            try:
                existing = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                existing = None
            if existing is not None and stat.S_ISDIR(existing.st_mode):
                if not empty_dir(fd, name):
                    self.warnings.append(f"kept the root's directory {op.dst} (the source has a"
                                         f" {op.kind} there)")
                    remove_at(stage_fd, tmp, "remove a temporary of the deploy")
                    return
                remove_at(fd, name, f"deploy {op.dst}", existing)
            # No cached fd may lead where the name led before: a directory
            # removed, or where a symlink replaced now pointed.
            self.forget(op.dst)
            os.rename(tmp, name, src_dir_fd=stage_fd, dst_dir_fd=fd)
        except BaseException:
            try:
                remove_at(stage_fd, tmp, "remove a temporary of the deploy")
            except OSError:
                pass
            raise

    def do_file(self, op):
        if self.link and op.src:
            try:  # --link: hard-link the source
                self.place(op, lambda fd, tmp: os.link(op.src, tmp, dst_dir_fd=fd,
                                                       follow_symlinks=False))
                self.files += 1
                return
            except OSError as exc:
                if exc.errno != 18:  # EXDEV: on another filesystem, so copy
                    raise
                self.link = False
                self.warnings.append(f"--link: {op.src} is on another filesystem than the root;"
                                     " copying instead")
        self.place(op, self.file_maker(op))
        self.files += 1
        self.size += op.meta[4]

    def file_maker(self, op):
        """make(dirfd, name) for a file: its bytes, owner, mode and mtime. With the
        umask at 0 (deploy_paths), a file already owned right is created with its
        final mode; otherwise chown comes first, as it clears setuid bits."""
        mode, uid, gid, mtime_ns, _ = op.meta
        chown = self.owner and (uid, gid) != self.me

        def make(fd, name):
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            out = os.open(name, flags, 0o600 if chown else mode, dir_fd=fd)
            try:
                self.fill(op, out)
                if chown:
                    os.fchown(out, uid, gid)
                    os.fchmod(out, mode)
                os.utime(out, ns=(mtime_ns, mtime_ns))
            except BaseException:
                os.close(out)
                remove_at(fd, name, "remove a temporary of the deploy")
                raise
            os.close(out)

        return make

    @staticmethod
    def fill(op, out):
        """Copy the bytes: copy_file_range from a host file, else from the archive."""
        if op.data is None:
            src = os.open(op.src, os.O_RDONLY | os.O_CLOEXEC)
            try:
                remaining = op.meta[4]
                while remaining > 0:
                    try:
                        n = os.copy_file_range(src, out, remaining)
                    except OSError:  # an older kernel or an odd filesystem
                        n = os.sendfile(out, src, None, remaining)
                    if n == 0:
                        break
                    remaining -= n
            finally:
                os.close(src)
        else:
            import shutil
            with op.data() as src, open(out, "wb", closefd=False) as dst:
                shutil.copyfileobj(src, dst, 1 << 20)

    def do_symlink(self, op):
        self.place(op, lambda fd, name: os.symlink(op.src, name, dir_fd=fd))
        self.links += 1

    def do_hardlink(self, op):
        import stat
        src_parent, src_name = os.path.split(op.src)
        src_fd = self.dirfd(src_parent, create=False)
        if stat.S_ISDIR(os.stat(src_name, dir_fd=src_fd, follow_symlinks=False).st_mode):
            # The file linked to was not written: the root's directory there was kept (place)
            self.warnings.append(f"did not make the hard link {op.dst}: {op.src} is the root's"
                                 " directory, kept")
            return
        self.place(op, lambda fd, name: os.link(src_name, name, src_dir_fd=src_fd, dst_dir_fd=fd,
                                                 follow_symlinks=False))
        self.links += 1

    def do_remove(self, op):
        parent, name = os.path.split(op.dst)
        check_entry(name, f"deploy: whiteout of {op.dst}")  # before anything is looked up
        try:
            fd = self.dirfd(parent, create=False)
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except (OSError, ContainerError):
            return  # nothing there to remove
        self.forget(op.dst)
        remove_at(fd, name, f"deploy: whiteout of {op.dst}", st)

    def do_clear(self, op):
        try:
            fd = self.dirfd(op.dst, create=False)
        except ContainerError:
            return
        for name in os.listdir(fd):
            if not name.startswith(STAGING + self.tag):  # this deploy's own staging
                self.do_remove(Op("remove", os.path.join(op.dst, name)))


def empty_dir(dirfd, name):
    """Whether a directory holds nothing."""
    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
    try:
        return not os.listdir(fd)
    finally:
        os.close(fd)


def check_entry(name, what):
    """Refuse a name that is not one entry of a directory: '' and '.' are the
    directory itself, '..' its parent (for the root's descriptor, the host
    directory that holds the root), and a '/' leads elsewhere."""
    if name in ("", ".", "..") or "/" in name or "\0" in name:
        raise ContainerError(what, f"refused to remove '{name}': it is not an entry of the"
                             " directory (a deploy removes nothing else)")


def remove_at(dirfd, name, what, st=None):
    """Remove the entry `name` of the directory dirfd: a directory with all it
    holds, anything else unlinked; no symlink is followed. The one place where
    a deploy removes anything, so the one place that refuses, whatever a plan
    let through, a name that would reach beyond the entry (check_entry)."""
    import stat
    check_entry(name, what)
    if st is None:
        st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    if stat.S_ISDIR(st.st_mode):
        import shutil
        shutil.rmtree(name, dir_fd=dirfd)
    else:
        os.unlink(name, dir_fd=dirfd)


def sweep_staging(dirfd):
    """Remove what deploys killed midway left in a directory: staging
    directories and temporaries whose deploy (pid and start time) is gone."""
    for name in os.listdir(dirfd):
        if not name.startswith(STAGING):
            continue
        if not alive(owner_of(name[len(STAGING):])):
            try:
                remove_at(dirfd, name, f"remove {name}, left by a deploy that was killed")
            except FileNotFoundError:  # another deploy swept it first
                pass


def describe(op):
    """One line of --dry-run output."""
    if op.kind == "file":
        return f"copy {op.src or '(archive member)'} -> {op.dst}"
    if op.kind == "symlink":
        return f"symlink {op.dst} -> {op.src}"
    if op.kind == "hardlink":
        return f"hardlink {op.dst} -> {op.src}"
    return f"{'mkdir' if op.kind == 'dir' else op.kind} {op.dst}"


# What `run` needs in a root, and a program expects: made by deploy where missing.
SKELETON = (("bin", 0o755), ("dev", 0o755), ("etc", 0o755), ("proc", 0o555), ("root", 0o700),
            ("run", 0o755), ("sys", 0o555), ("tmp", 0o1777))


def make_root(root):
    """Make a missing root (not its parents: a typo should not build a tree).
    Returns whether it was made."""
    if os.path.lexists(root):
        return False
    try:
        os.mkdir(root, 0o755)
    except OSError as exc:
        raise ContainerError.from_os(f"make the root {root}", exc) from None
    return True


def make_skeleton(rootfd):
    """The skeleton's directories the root lacks, with their modes."""
    made = []
    for name, mode in SKELETON:
        try:
            os.mkdir(name, mode, dir_fd=rootfd)
            made.append(name)
        except FileExistsError:
            pass
        except OSError as exc:
            raise ContainerError.from_os(f"make /{name} in the root", exc) from None
    return made


def deploy_paths(root, sources, to=None, deps=True, link=False, dry_run=False, progress=False):
    """Deploy sources into the root, made with its skeleton if missing; return
    the Writer (its counts), the plan and the skeleton directories made.

    Everything is planned and checked before the first write; what a deploy
    killed earlier left behind is swept first. A root this deploy made is
    removed again if the deploy fails: it is left as it was, absent.
    """
    for src in sources:
        check_source_apart(src, root)
    missing = not os.path.lexists(root)
    made_root = False
    if missing and dry_run:
        rootfd = None  # nothing is made: plan against an empty root
    else:
        made_root = make_root(root)
        if made_root and os.path.lexists(image_file(root)):
            os.unlink(image_file(root))  # an image's settings, left from a root removed since
        try:
            rootfd = open_root(root)
        except BaseException:
            if made_root:
                os.rmdir(root)
            raise
    plan = Plan(rootfd)
    writer = Writer(rootfd, link=link)
    umask = os.umask(0)  # modes are set exactly, as the sources have them
    made = []
    done = False
    try:
        plan_sources(plan, sources, to, deps)
        if dry_run:
            made = [name for name, _ in SKELETON] if missing else []
            done = True
            return writer, plan, made
        sweep_staging(rootfd)
        ops = plan.ops
        if progress and len(ops) > 1000:
            with click.progressbar(ops, label="deploying", file=sys.stderr) as bar:
                for op in bar:
                    writer.apply(op)
        else:
            for op in ops:
                writer.apply(op)
        made = make_skeleton(rootfd)
        if plan.image is not None:  # an image archive's Entrypoint, Cmd, ... for run
            write_image_file(image_file(root), {"reference": plan.image_source, "digest": None,
                                                "config": plan.image})
        done = True
        return writer, plan, made
    finally:
        os.umask(umask)
        if rootfd is not None:
            try:
                writer.close()
            finally:
                if made_root and not done:
                    remove_made_root(root, rootfd)
                os.close(rootfd)
        plan.close()


def remove_made_root(root, rootfd):
    """Remove the root a failed deploy made, if its path still names that very
    directory (nothing else may be removed in its place)."""
    try:
        st, mine = os.lstat(root), os.fstat(rootfd)
    except OSError:
        return
    if (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino):
        remove_tree(root)


def check_source_apart(src, root):
    """Refuse a source that is the root, holds it, or is a directory inside it:
    copying it would copy the root (or a part of it) into itself (`deploy
    ./newroot` filled newroot/bin with newroot). A single file of the root may
    be copied or linked (--link) to another place in it. Compared by path
    and, for a bind mount or a second path to the same place, by device and
    inode along both paths."""
    src_path, root_path = os.path.realpath(src), os.path.realpath(root)

    def within(path, top):
        return path == top or path.startswith(top.rstrip("/") + "/")

    def chain(path):  # the (device, inode) of a path and of each directory above it
        ids = []
        while True:
            try:
                st = os.stat(path)
                ids.append((st.st_dev, st.st_ino))
            except OSError:
                pass  # the root to be made, or a source that is not there (told later)
            if path == "/":
                return ids
            path = os.path.dirname(path)

    src_ids, root_ids = chain(src_path), chain(root_path)
    src_id = src_ids[0] if os.path.exists(src_path) else None
    root_id = root_ids[0] if os.path.exists(root_path) else None
    why = None
    if src_path == root_path or src_id is not None and src_id == root_id:
        why = "it is the root"
    elif (within(src_path, root_path) or root_id is not None and root_id in src_ids) \
            and os.path.isdir(src_path):
        why = f"it is a directory inside the root {root}"
    elif within(root_path, src_path) or src_id is not None and src_id in root_ids:
        why = f"it holds the root {root}"
    if why:
        raise ContainerError(f"deploy {src}", f"{why}: a deploy would copy the root into itself;"
                             " refused")


# ---------------------------------------------------------------------------
# Images
# `pull` as skopeo and podman do it: a reference read as docker reads it, the
# OCI distribution API over HTTPS (bearer tokens, credentials, redirects), an
# index resolved to one platform, and every blob checked against its sha256
# while it streams into a content-addressed cache, before anything is
# unpacked. The layers are applied by deploy's own plan and writer into a new
# directory beside the root, which is then swapped with it: the root is
# either the old one or the whole new one. The image's configuration
# (Entrypoint, Cmd, Env, ...) is kept beside the root, never inside it, for
# `run`; a deploy of an image archive records it too.
# ---------------------------------------------------------------------------

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
INDEX_TYPES = ("application/vnd.oci.image.index.v1+json",
               "application/vnd.docker.distribution.manifest.list.v2+json")
MANIFEST_TYPES = ("application/vnd.oci.image.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v2+json")
LAYER_COMPRESSION = {
    "application/vnd.oci.image.layer.v1.tar": None,
    "application/vnd.oci.image.layer.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd": "zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "gzip",
}
IMAGE_KEYS = ("Entrypoint", "Cmd", "Env", "WorkingDir", "User", "ExposedPorts")
MACHINE_PLATFORMS = {"x86_64": ("amd64", None), "aarch64": ("arm64", "v8"), "armv7l": ("arm", "v7"),
                     "armv6l": ("arm", "v6"), "i686": ("386", None), "ppc64le": ("ppc64le", None),
                     "s390x": ("s390x", None), "riscv64": ("riscv64", None)}
MAX_MANIFEST = 4 << 20  # bytes: a manifest or a config larger than this is refused
MAX_BLOB = (1 << 63) - 1  # a descriptor's size is an int64 (OCI image spec)
DOCUMENT_TIMEOUT = 60  # seconds: a manifest, a token or an error body that takes longer is refused


def printable(text, limit=120):
    """Text a registry or an image gave, fit for one line of a message: ASCII
    without control characters, at most `limit` characters."""
    text = "".join(c if " " <= c <= "~" else "?" for c in str(text))
    return text if len(text) <= limit else text[:limit] + "..."


def json_text(value, limit=60):
    """A JSON value as the document has it, for a message (JSON, not Python)."""
    import json
    try:
        text = json.dumps(value, ensure_ascii=True)
    except (TypeError, ValueError, RecursionError):
        text = "?"
    return printable(text, limit)


def url_origin(parts):
    """(scheme, host, port) of split URL parts, the port made explicit: what a
    credential is bound to."""
    return (parts.scheme, (parts.hostname or "").lower(),
            parts.port or {"https": 443, "http": 80}.get(parts.scheme))


class Reference:
    """An image reference as docker reads it: `alpine` is
    docker.io/library/alpine:latest; a first part with a '.' or ':', or
    `localhost`, is a registry; `@sha256:...` pins a digest."""

    def __init__(self, text):
        import re
        self.text = text
        name, _, digest = text.partition("@")
        head, _, last = name.rpartition("/")
        tag = None
        if ":" in last:
            last, _, tag = last.partition(":")
        name = f"{head}/{last}" if head else last
        first, _, rest = name.partition("/")
        if rest and ("." in first or ":" in first or first == "localhost"):
            registry, path = first, rest
        else:
            registry, path = DOCKER_HUB, name
        if registry == DOCKER_HUB and "/" not in path:
            path = f"library/{path}"
        component = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
        why = None
        if not re.fullmatch(r"[a-zA-Z0-9.-]+(?::[0-9]+)?", registry):
            why = f"{registry!r} is not a registry host[:port]"
        elif not re.fullmatch(rf"{component}(?:/{component})*", path) or len(path) > 255:
            why = f"{path!r} is not a repository name (lower-case letters, digits, '.', '_', '-', '/')"
        elif tag is not None and not re.fullmatch(r"[\w][\w.-]{0,127}", tag):
            why = f"{tag!r} is not a tag"
        elif digest and not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
            why = f"{digest!r} is not a sha256 digest (sha256: and 64 hex digits)"
        if why:
            raise ContainerError(f"pull {text}", f"not an image reference: {why}")
        self.registry, self.repository, self.digest = registry, path, digest or None
        self.tag = tag if tag is not None or digest else "latest"

    def __str__(self):
        return (f"{self.registry}/{self.repository}" + (f":{self.tag}" if self.tag else "")
                + (f"@{self.digest}" if self.digest else ""))


def parse_platform(text):
    """--platform OS/ARCH[/VARIANT], or the host's."""
    if text is None:
        arch, variant = MACHINE_PLATFORMS.get(os.uname().machine, (os.uname().machine, None))
        return ("linux", arch, variant)
    parts = text.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise ContainerError(f"--platform {text}", "expected OS/ARCH or OS/ARCH/VARIANT, e.g. linux/arm64")
    return (parts[0], parts[1], parts[2] if len(parts) == 3 else None)


def platform_name(platform):
    return "/".join(p for p in platform if p)


def loopback_host(host):
    import ipaddress
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


def registry_credentials(registry):
    """(user, password) for a registry from $REGISTRY_AUTH_FILE (podman's
    auth.json) or ~/.docker/config.json: their `auths` entries, `auth` being
    base64 of user:password. None when there are none."""
    import base64
    import json
    paths = [os.environ.get("REGISTRY_AUTH_FILE")] if os.environ.get("REGISTRY_AUTH_FILE") else []
    paths.append(os.path.join(os.path.expanduser("~"), ".docker", "config.json"))
    keys = [registry, f"https://{registry}", f"http://{registry}"]
    if registry == DOCKER_HUB:
        keys += ["https://index.docker.io/v1/", "index.docker.io", DOCKER_HUB_API]
    for path in paths:
        try:
            with open(path, "rb") as f:
                auths = json.loads(f.read(MAX_MANIFEST)).get("auths", {})
        except FileNotFoundError:
            continue
        except (OSError, ValueError, AttributeError) as exc:
            raise ContainerError(f"credentials {path}", f"unreadable: {exc}") from None
        for key in keys:
            entry = auths.get(key) or auths.get(key.rstrip("/"))
            if isinstance(entry, dict) and entry.get("auth"):
                try:
                    user, sep, password = base64.b64decode(entry["auth"]).decode().partition(":")
                except (ValueError, UnicodeDecodeError):
                    sep = ""
                if not sep:
                    raise ContainerError(f"credentials {path}", f"the entry for {key} is not"
                                         " base64 of user:password")
                return user, password
    return None


class RegistryClient:
    """The OCI distribution API for one repository: GETs that follow
    redirects (never taking Authorization to another host), answer bearer and
    basic challenges, and turn every failure into one line."""

    def __init__(self, ref, tls_verify=True):
        self.ref, self.tls_verify = ref, tls_verify
        self.host = DOCKER_HUB_API if ref.registry == DOCKER_HUB else ref.registry
        self.scheme = "https"
        self.plain_allowed = loopback_host(self.host) or not tls_verify
        self.authorization, self.probed, self.tls = None, False, None
        self.credentials = registry_credentials(ref.registry)
        self.what = f"pull {ref.text}"

    def fail(self, why):
        return ContainerError(self.what, why)

    def context(self):
        """One TLS context for every connection: loading the system's
        certificate authorities costs some 50 ms."""
        import ssl
        if self.tls is None:
            self.tls = ssl.create_default_context()
            if not self.tls_verify:
                self.tls.check_hostname, self.tls.verify_mode = False, ssl.CERT_NONE
        return self.tls

    def connect(self, scheme, host):
        import http.client
        if scheme == "https":
            return http.client.HTTPSConnection(host, timeout=30, context=self.context())
        return http.client.HTTPConnection(host, timeout=30)

    def url(self, url, what):
        """The parts of a URL to GET, checked: http or https, a host, a numeric
        port, printable ASCII without spaces; or one line of what is wrong."""
        import urllib.parse
        try:
            if not url.isascii() or any(c <= " " or c == "\x7f" for c in url):
                raise ValueError
            parts = urllib.parse.urlsplit(url)
            parts.port  # noqa: B018 (a port that is no number raises here)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError
        except ValueError:
            raise self.fail(f"{what} leads to {printable(url)}: not an http(s) URL with a host") from None
        return parts

    def send(self, url, headers, probe=False):
        """One GET of an absolute URL; the response (its connection kept on it).
        A TLS failure of the first contact (probe) is left to base()."""
        import http.client
        import socket
        import ssl
        parts = self.url(url, "a request")
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        connection = self.connect(parts.scheme, parts.netloc)
        try:
            connection.request("GET", target, headers=headers)
            response = connection.getresponse()
        except ssl.SSLCertVerificationError as exc:
            connection.close()
            raise self.fail(f"TLS failure with {parts.netloc}: {exc.verify_message}"
                            " (--tls-verify=false skips the check, for loopback or test"
                            " registries)") from None
        except ssl.SSLError as exc:
            connection.close()
            if probe:
                raise
            raise self.fail(f"TLS failure with {parts.netloc}: {printable(exc.reason or exc)}") from None
        except socket.gaierror:
            connection.close()
            raise self.fail(f"unknown host {parts.hostname}") from None
        except ConnectionRefusedError:
            connection.close()
            raise self.fail(f"connection refused by {parts.netloc}") from None
        except (socket.timeout, TimeoutError):
            connection.close()
            raise self.fail(f"{parts.netloc} did not answer in 30 s") from None
        except OSError as exc:
            connection.close()
            raise self.fail(f"cannot reach {parts.netloc}: {printable(exc.strerror or exc)}") from None
        except http.client.HTTPException as exc:  # a status line or headers that are not HTTP
            connection.close()
            why = ("a header line too long" if isinstance(exc, http.client.LineTooLong) else
                   "not an HTTP answer" if isinstance(exc, http.client.BadStatusLine) else
                   printable(exc) or "a broken HTTP answer")
            raise self.fail(f"{parts.netloc} answered badly: {why}") from None
        response.connection_ = connection
        return response

    def body(self, response, limit, what):
        """Up to `limit` bytes of a response's body (then its connection is
        closed), or one line: a body that breaks off is the registry's failure,
        and so is one that trickles in for longer than DOCUMENT_TIMEOUT (each
        read's own timeout alone would let a byte every 29 s go on for days)."""
        import http.client
        import socket
        import time
        deadline, data = time.monotonic() + DOCUMENT_TIMEOUT, b""
        try:
            while len(data) < limit:
                if time.monotonic() > deadline:
                    raise self.fail(f"the answer for {what} took longer than {DOCUMENT_TIMEOUT} s")
                chunk = response.read1(min(limit - len(data), 65536))
                if not chunk:
                    break
                data += chunk
        except (http.client.HTTPException, OSError, ValueError, socket.timeout):
            raise self.fail(f"the answer for {what} broke off") from None
        finally:
            response.connection_.close()
        if len(data) < limit and response.length:  # fewer bytes than its Content-Length
            raise self.fail(f"the answer for {what} broke off")
        return data

    def base(self):
        """The first contact: HTTPS, or plain HTTP where allowed and the server
        does not speak TLS (a loopback registry, or --tls-verify=false)."""
        import ssl
        try:
            return self.send(f"https://{self.host}/v2/", {}, probe=True)
        except ssl.SSLError as exc:
            if not self.plain_allowed:
                raise self.fail(f"TLS failure with {self.host}: {exc.reason or exc} (--tls-verify"
                                "=false allows plain HTTP, for loopback or test registries)") from None
        self.scheme = "http"
        return self.send(f"http://{self.host}/v2/", {})

    def get(self, path, accept=None, what=None):
        """GET /v2/<repository>/<path>: a 200 response, or one line of why not."""
        import urllib.parse
        if not self.probed:
            answer = self.base()
            self.probed = True
            self.body(answer, 65536, "/v2/")
            if answer.status == 401:
                self.authorization = self.authorize(answer.getheader("WWW-Authenticate", ""))
        url = f"{self.scheme}://{self.host}/v2/{self.ref.repository}/{path}"
        # The registry's origin: scheme, host and port. Its Authorization goes
        # to it alone, never where a redirect leads (another host, another
        # port, or plain http on the same host and port).
        home = url_origin(urllib.parse.urlsplit(url))
        authorized = False
        for _ in range(6):  # redirects and one challenge
            headers = {"User-Agent": f"minicontainer/{__version__}"}
            if accept:
                headers["Accept"] = ", ".join(accept)
            at_home = url_origin(urllib.parse.urlsplit(url)) == home
            if self.authorization and at_home:
                headers["Authorization"] = self.authorization
            response = self.send(url, headers)
            if response.status in (301, 302, 303, 307, 308):
                location = response.getheader("Location")
                response.connection_.close()  # unread: a redirect's body may never end
                url = self.redirect(url, location, response.status, what or path)
                continue
            if response.status == 401 and at_home and not authorized:
                response.connection_.close()
                self.authorization = self.authorize(response.getheader("WWW-Authenticate", ""))
                authorized = True
                continue
            if response.status == 200:
                return response
            body = self.body(response, 65536, what or path)
            raise self.fail(self.refusal(response.status, body, what or path))
        raise self.fail(f"too many redirects for {what or path}")

    def redirect(self, url, location, status, what):
        """Where a redirect leads, checked: an http(s) URL with a host, and never
        from https down to plain http (where a network could change what
        arrives) unless plain http is allowed there (loopback, or
        --tls-verify=false)."""
        import urllib.parse
        if not location:
            raise self.fail(f"{status} without a Location for {what}")
        try:
            target = urllib.parse.urljoin(url, location)
        except ValueError:
            target = location
        parts = self.url(target, f"the redirect ({status}) for {what}")
        if urllib.parse.urlsplit(url).scheme == "https" and parts.scheme == "http" and \
                self.tls_verify and not loopback_host(parts.netloc):
            raise self.fail(f"the redirect ({status}) for {what} leads from https to plain http"
                            f" ({printable(parts.netloc)}): refused")
        return target

    def refusal(self, status, body, what):
        import json
        codes, messages = set(), []
        try:
            errors = json.loads(body).get("errors")
        except (ValueError, AttributeError, RecursionError):
            errors = None
        for error in errors if isinstance(errors, list) else ():
            if isinstance(error, dict):
                if isinstance(error.get("code"), str):
                    codes.add(error["code"])
                if isinstance(error.get("message"), str):
                    messages.append(error["message"])
        message = printable("; ".join(messages))
        if status == 401:
            return (f"authentication required by {self.ref.registry} (401): credentials go in"
                    " ~/.docker/config.json or $REGISTRY_AUTH_FILE")
        if status == 403:
            return f"access denied by {self.ref.registry} (403)"
        if status == 404 and what == "manifest":
            return f"unknown repository or tag in {self.ref.registry}"
        if status == 404 or codes & {"BLOB_UNKNOWN", "MANIFEST_UNKNOWN", "NAME_UNKNOWN"}:
            return f"{what} not found in {self.ref.registry} ({status})"
        return f"{self.ref.registry} answered {status} for {what}" + (f": {message}" if message else "")

    def authorize(self, challenge):
        """The Authorization for a WWW-Authenticate challenge: an anonymous or
        credentialed bearer token from its realm, or basic credentials."""
        import base64
        import json
        import re
        import urllib.parse
        scheme, _, rest = challenge.partition(" ")
        params = dict(re.findall(r'(\w+)="([^"]*)"', rest))
        basic = None
        if self.credentials:
            basic = "Basic " + base64.b64encode(":".join(self.credentials).encode()).decode()
        if scheme.lower() == "basic":
            if basic is None:
                raise self.fail(self.refusal(401, b"", "the registry"))
            return basic
        if scheme.lower() != "bearer" or "realm" not in params:
            raise self.fail(f"{self.ref.registry} asks for authentication minicontainer does"
                            f" not speak: {printable(challenge) or 'none named'}")
        query = {"scope": f"repository:{self.ref.repository}:pull"}
        if "service" in params:
            query["service"] = params["service"]
        realm = params["realm"]
        parts = self.url(realm, "the token realm")
        headers = {"User-Agent": f"minicontainer/{__version__}"}
        if basic and (parts.scheme == "https" or loopback_host(parts.netloc)):
            headers["Authorization"] = basic  # never a password in the clear beyond this host
        url = realm + ("&" if parts.query else "?") + urllib.parse.urlencode(query)
        response = self.send(url, headers)
        body = self.body(response, MAX_MANIFEST, "a token")
        if response.status != 200:
            raise self.fail(f"the token service {parts.netloc} refused a token"
                            f" ({response.status})" + (": wrong credentials?" if basic else ""))
        try:
            answer = json.loads(body)
            token = answer.get("token") or answer.get("access_token")
        except (ValueError, AttributeError, RecursionError):
            token = None
        if not token or not isinstance(token, str) or len(token) > 65536 or \
                not all("!" <= c <= "~" for c in token):
            raise self.fail(f"the token service {parts.netloc} gave no token")
        return f"Bearer {token}"

    def manifest(self, reference):
        """(media type, bytes, digest) of a manifest or index, its digest checked
        when asked for by digest."""
        import hashlib
        response = self.get(f"manifests/{reference}", INDEX_TYPES + MANIFEST_TYPES, "manifest")
        body = self.body(response, MAX_MANIFEST + 1, f"the manifest {reference}")
        if len(body) > MAX_MANIFEST:
            raise self.fail(f"the manifest {reference} is larger than {MAX_MANIFEST} bytes")
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        if reference.startswith("sha256:") and digest != reference:
            raise self.fail(f"the manifest {reference} arrived as {digest}: refused")
        kind = printable((response.getheader("Content-Type") or "").split(";")[0].strip())
        return kind, body, digest


class BlobCache:
    """Blobs by sha256, verified when written and when read: a file whose
    bytes do not hash to its name is removed, never used. Written under a
    temporary name and renamed, so concurrent pulls of one blob both succeed."""

    def __init__(self, path):
        self.path = path
        for directory in (path, os.path.join(path, "blobs"), os.path.join(path, "blobs", "sha256")):
            try:
                os.makedirs(directory, 0o700, exist_ok=True)
                st = os.lstat(directory)
            except OSError as exc:
                raise ContainerError.from_os(f"the image cache {directory}", exc) from None
            import stat
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
                raise ContainerError(f"the image cache {directory}", "not a directory of yours that"
                                     " only you may write: refused")
        self.tag = f".download-{os.getpid()}.{process_start(os.getpid())}."
        blobs = os.path.join(path, "blobs", "sha256")
        for name in os.listdir(blobs):  # what pulls killed midway left
            if name.startswith(".download-") and not alive(owner_of(name[len(".download-"):])):
                try:
                    os.unlink(os.path.join(blobs, name))
                except FileNotFoundError:
                    pass

    def file(self, digest):
        import re
        if not isinstance(digest, str) or not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
            # Never a path made of what a registry wrote ("sha256:../../x"):
            # a damaged blob is unlinked by that path.
            raise ContainerError("the image cache", f"not a sha256 digest: {json_text(digest)}")
        return os.path.join(self.path, "blobs", "sha256", digest.split(":", 1)[1])

    def open(self, digest, size):
        """The cached blob, opened and checked, or None."""
        import hashlib
        try:
            f = open(os.open(self.file(digest), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "rb")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ContainerError.from_os(f"the image cache {self.file(digest)}", exc) from None
        hasher, length = hashlib.sha256(), 0
        while chunk := f.read(1 << 20):
            hasher.update(chunk)
            length += len(chunk)
        if "sha256:" + hasher.hexdigest() != digest or (size is not None and length != size):
            f.close()
            os.unlink(self.file(digest))  # damaged: fetched again
            return None
        f.seek(0)
        return f

    def store(self, digest, size, response, progress=None):
        """Stream a response into the cache, checking its length and sha256; the
        cached file, opened, or one line of what was wrong."""
        import hashlib
        import http.client
        import tempfile
        fd, temporary = tempfile.mkstemp(prefix=self.tag, dir=os.path.dirname(self.file(digest)))
        hasher, length = hashlib.sha256(), 0
        try:
            with open(fd, "wb") as out:
                try:
                    while chunk := response.read(1 << 16):
                        length += len(chunk)
                        if size is not None and length > size:
                            raise ContainerError(digest, f"more than the {size} bytes its descriptor"
                                                 " gives: refused")
                        hasher.update(chunk)
                        out.write(chunk)
                        if progress:
                            progress(length)
                except (http.client.HTTPException, OSError, ValueError) as exc:
                    why = f": {printable(exc.strerror)}" if getattr(exc, "strerror", None) else ""
                    raise ContainerError(digest, f"truncated download ({length} bytes){why}") from None
            if size is not None and length != size:
                raise ContainerError(digest, f"truncated download: {length} of {size} bytes")
            actual = "sha256:" + hasher.hexdigest()
            if actual != digest:
                raise ContainerError(digest, f"the bytes received hash to {actual}: refused")
            os.rename(temporary, self.file(digest))
        except BaseException:
            os.unlink(temporary)
            raise
        finally:
            response.connection_.close()
        return open(os.open(self.file(digest), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "rb")


def default_cache_dir():
    """/var/cache/minicontainer for root, $XDG_CACHE_HOME or ~/.cache otherwise."""
    if os.geteuid() == 0:
        return "/var/cache/minicontainer"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "minicontainer")


def parse_document(client, body, what):
    """A manifest, an index or a configuration: a JSON object, or one line
    (not JSON, nested past what the parser takes, or not an object)."""
    import json
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise client.fail(f"the {what} is not JSON minicontainer can read") from None
    if not isinstance(document, dict):
        raise client.fail(f"the {what} is not a JSON object but {json_text(document, 30)}")
    return document


def check_descriptor(client, descriptor, what):
    """A descriptor's (digest, size), checked: a sha256 digest (the only one
    a blob is verified against) and its size, an int64 (both required by the
    OCI image spec; without the size a blob's download would have no end)."""
    import re
    if not isinstance(descriptor, dict):
        raise client.fail(f"{what} is not a descriptor (a JSON object) but {json_text(descriptor, 30)}")
    digest, size = descriptor.get("digest"), descriptor.get("size")
    if not isinstance(digest, str) or not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
        raise client.fail(f"{what} has a digest minicontainer does not check: {json_text(digest)}"
                          " (sha256: and 64 hex digits)")
    if type(size) is not int or not 0 <= size <= MAX_BLOB:
        raise client.fail(f"{what} has a size that is no byte count: {json_text(size)}")
    return digest, size


def platform_matches(offered, wanted):
    """Whether an (os, architecture, variant) offered is the one wanted: no
    variant wanted takes any; arm64 without a variant is v8."""
    (os_, arch, variant), (wanted_os, wanted_arch, wanted_variant) = offered, wanted
    return (os_, arch) == (wanted_os, wanted_arch) and (
        wanted_variant is None or variant == wanted_variant
        or (variant is None and (arch, wanted_variant) == ("arm64", "v8")))


def document_platform(client, document, what):
    """The (os, architecture, variant) of an index entry's `platform` or of an
    image configuration; None where it names none."""
    if document is None or ("os" not in document and "architecture" not in document):
        return None
    values = [document.get(key) for key in ("os", "architecture")] + [document.get("variant")]
    if not all(isinstance(v, str) and v for v in values[:2]) or \
            not (values[2] is None or isinstance(values[2], str)):
        raise client.fail(f"{what} has no os and architecture strings: {json_text(document)}")
    return tuple(printable(v, 40) if v else None for v in values)


def choose_platform(client, index, platform, host=False):
    """The manifest descriptor in an index for the platform, or one line
    listing the platforms there are (in docker's words where it was asked
    for with --platform)."""
    document = parse_document(client, index, "index")
    entries = document.get("manifests")
    if not isinstance(entries, list):
        raise client.fail(f"the index has no list of manifests but {json_text(entries, 30)}")
    offered = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise client.fail(f"manifests[{i}] of the index is not an object but {json_text(entry, 30)}")
        found = entry.get("platform")
        if found is not None and not isinstance(found, dict):
            raise client.fail(f"manifests[{i}].platform of the index is not an object but"
                              f" {json_text(found, 30)}")
        found = document_platform(client, found, f"manifests[{i}].platform of the index")
        if found is not None and found[0] != "unknown":  # "unknown": attestations
            offered.append((entry, found))
    for entry, found in offered:
        if platform_matches(found, platform):
            return entry
    there = ", ".join(platform_name(p) for _, p in offered) or "none"
    which = "this host's platform" if host else "the specified platform"
    raise client.fail(f"the image does not provide {which} ({platform_name(platform)});"
                      f" it has: {there}" + (" (choose one with --platform)" if host else ""))


class Progress:
    """One line a layer on a terminal: bytes and rate, updated in place."""

    def __init__(self, enabled):
        self.enabled = enabled

    def start(self, label, size):
        import time
        self.label, self.size, self.started = label, size, time.monotonic()
        self.shown = 0.0

    def update(self, done, final=False):
        import time
        if not self.enabled:
            return
        now = time.monotonic()
        if not final and now - self.shown < 0.1:
            return
        self.shown = now
        rate = done / max(now - self.started, 1e-3)
        line = f"{self.label}: {size_text(done)} of {size_text(self.size or 0)}, {size_text(rate)}/s"
        sys.stderr.write(f"\r\033[K{line}" + ("\n" if final else ""))
        sys.stderr.flush()

    def cached(self, label):
        if self.enabled:
            sys.stderr.write(f"{label}: cached\n")


def size_text(n):
    return f"{n / 1e6:.1f} MB" if n >= 100e3 else f"{n / 1e3:.1f} kB"


def fetch_blob(client, cache, descriptor, label, progress):
    """A blob by its descriptor: from the cache, checked, or downloaded into it."""
    digest, size = check_descriptor(client, descriptor, label)
    found = cache.open(digest, size)
    if found is not None:
        progress.cached(label)
        return found
    response = client.get(f"blobs/{digest}", what=f"{label} {digest}")
    progress.start(label, size)
    try:
        found = cache.store(digest, size, response, progress.update)
    except ContainerError as exc:
        raise client.fail(f"{label} {exc}") from None
    progress.update(size or 0, final=True)
    return found


def image_settings(config_bytes, what):
    """The run settings of an image's configuration: its `config` object's
    Entrypoint, Cmd, Env, WorkingDir, User and ExposedPorts."""
    import json
    try:
        document = json.loads(config_bytes)
        if not isinstance(document, dict):
            raise ValueError("not a JSON object")
        config = document.get("config") or {}
        if not isinstance(config, dict):
            raise ValueError("config is not an object")
        settings = {key: config[key] for key in IMAGE_KEYS if config.get(key) not in (None, "", [])}
        for key in ("Entrypoint", "Cmd", "Env"):
            if key in settings and not (isinstance(settings[key], list)
                                        and all(isinstance(s, str) for s in settings[key])):
                raise ValueError(f"{key} is not a list of strings")
        for key in ("WorkingDir", "User"):
            if key in settings and not isinstance(settings[key], str):
                raise ValueError(f"{key} is not a string")
        if "ExposedPorts" in settings and not isinstance(settings["ExposedPorts"], dict):
            raise ValueError("ExposedPorts is not an object")
    except RecursionError:
        raise ContainerError(what, "not an image configuration this understands: nested too"
                             " deep") from None
    except ValueError as exc:
        why = str(exc) if isinstance(exc, json.JSONDecodeError) or type(exc) is ValueError else "not JSON"
        raise ContainerError(what, f"not an image configuration this understands: {why}") from None
    return settings


def image_file(root):
    """Where a root's image configuration is kept: beside it, where nothing in
    the container can change it."""
    return os.path.abspath(root).rstrip("/") + ".image.json"


def write_image_file(path, image):
    import json
    import tempfile
    fd, temporary = tempfile.mkstemp(prefix=".image-", dir=os.path.dirname(path))
    try:
        with open(fd, "w") as f:
            json.dump(image, f, indent=2)
            f.write("\n")
        os.chmod(temporary, 0o644)
        os.rename(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def read_image_file(root):
    """The image configuration kept beside a root, or None. It tells `run` what
    to run and as whom, so it must be the caller's or root's, written by no
    one else, and not a symlink: a root in a shared directory (/tmp) must not
    take its settings from a file another user planted beside it."""
    path = image_file(root)
    try:
        with open(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "rb") as f:
            import json  # only for a root that has an image
            st = os.fstat(f.fileno())
            if st.st_uid not in (0, os.geteuid()) or st.st_mode & 0o022:
                raise ContainerError(f"the image configuration {path}", "not yours or root's, or"
                                     " writable by others: refused (remove it, or pull again)")
            image = json.loads(f.read(MAX_MANIFEST))
        settings = image["config"]
        if not isinstance(settings, dict):
            raise ValueError("config is not an object")
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ContainerError(f"the image configuration {path}", f"unreadable: {exc}") from None
    return settings


def open_layer(blob, compression, what):
    """A layer blob as a tar archive: gzip read as it is; zstd decompressed
    into a temporary file first (zstandard is imported only for one)."""
    if compression == "zstd":
        import tempfile
        try:
            import zstandard
        except ImportError:
            raise ContainerError(what, "a zstd layer needs the zstandard package (pip install"
                                 " zstandard, or minicontainer[zstd])") from None
        plain = tempfile.TemporaryFile()
        try:
            zstandard.ZstdDecompressor().copy_stream(blob, plain)
        except zstandard.ZstdError as exc:
            raise ContainerError(what, f"not a zstd stream: {exc}") from None
        blob.close()
        plain.seek(0)
        blob = plain
    return open_tar(None, blob, what)


def sweep_pulls(parent, name):
    """Remove what pulls killed midway left beside a root: directories of the
    caller's only (beside a root in /tmp, a name like ours may be anyone's),
    never through a symlink."""
    import stat
    prefix = f".{name}.pull-"
    for entry in os.listdir(parent or "."):
        if not entry.startswith(prefix) or alive(owner_of(entry[len(prefix):])):
            continue
        path = os.path.join(parent, entry)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid():
            remove_tree(path)


def owner_of(tag):
    """The (pid, start time) that a name's "PID.START[...]" part gives, or None:
    how deploys and pulls mark what they leave while they run (see alive)."""
    try:
        pid, start = tag.split(".")[:2]
        return int(pid), int(start)
    except ValueError:
        return None


def remove_tree(path):
    """rmtree without following symlinks, opening directories a user made
    unwritable (a root's /proc is 0555) on the way."""
    import shutil

    def retry(function, failed, info):
        os.chmod(os.path.dirname(failed), 0o700)
        function(failed)
    try:
        shutil.rmtree(path, onerror=retry if os.geteuid() != 0 else None)
    except FileNotFoundError:
        pass


def replace_root(new, root):
    """Put the new root at the root's path in one step: exchanged with the old
    one (then removed), or renamed into place where there was none."""
    if os.path.lexists(root):
        if os.path.islink(root) or not os.path.isdir(root):
            raise ContainerError(f"pull into {root}", "not a directory (a symlink is refused)")
        rename_exchange(new, root)
        remove_tree(new)  # the old root, now at the temporary name
    else:
        os.rename(new, root)


def pull_image(root, text, platform=None, tls_verify=True, cache_dir=None, progress=False):
    """Pull an image into the root: (reference, manifest digest, layer count,
    layer bytes, archive members of other owners made the user's)."""
    import json
    ref = Reference(text)
    client = RegistryClient(ref, tls_verify)
    cache = BlobCache(cache_dir or default_cache_dir())
    shown = Progress(progress)
    wanted = parse_platform(platform)
    kind, body, digest = client.manifest(ref.digest or ref.tag)
    manifest = parse_document(client, body, "manifest")
    if manifest_kind(client, kind, manifest) == "index":
        chosen = choose_platform(client, body, wanted, host=platform is None)
        chosen_digest, _ = check_descriptor(client, chosen, f"the index's entry for {platform_name(wanted)}")
        kind, body, _ = client.manifest(chosen_digest)
        manifest = parse_document(client, body, f"manifest {chosen_digest}")
        if manifest_kind(client, kind, manifest) == "index":
            raise client.fail(f"the index's entry for {platform_name(wanted)} is an index itself:"
                              " minicontainer reads one level")
        platform = None  # the index said which platform it is
    config_descriptor, layer_descriptors = manifest.get("config"), manifest.get("layers")
    check_descriptor(client, config_descriptor, "the manifest's config")
    if not isinstance(layer_descriptors, list):
        raise client.fail(f"the manifest's layers are not a list but {json_text(layer_descriptors, 30)}")
    compressions = []
    for i, descriptor in enumerate(layer_descriptors):
        check_descriptor(client, descriptor, f"layers[{i}] of the manifest")
        media = descriptor.get("mediaType")
        if not isinstance(media, str) or media not in LAYER_COMPRESSION:
            raise client.fail(f"a layer of media type {json_text(media)} minicontainer does not unpack")
        compressions.append(LAYER_COMPRESSION[media])
    if config_descriptor["size"] > MAX_MANIFEST:
        raise client.fail(f"the image configuration is larger than {MAX_MANIFEST} bytes")
    with fetch_blob(client, cache, config_descriptor, "config", Progress(False)) as f:
        config_bytes = f.read(MAX_MANIFEST)
    settings = image_settings(config_bytes, client.what)
    if platform is not None:
        # One manifest, no index: its configuration says the platform, which
        # must be the one asked for (docker refuses it too), not the host's.
        offered = document_platform(client, parse_document(client, config_bytes, "image configuration"),
                                    "the image configuration")
        if offered is None or not platform_matches(offered, wanted):
            raise client.fail(f"the image does not provide the specified platform"
                              f" ({platform_name(wanted)}): it is"
                              f" {platform_name(offered) if offered else 'of no platform it names'}")
    blobs = []
    try:
        for i, descriptor in enumerate(layer_descriptors):
            label = f"layer {i + 1}/{len(layer_descriptors)}"
            blobs.append(fetch_blob(client, cache, descriptor, label, shown))
        layers = [(blob, compression, f"pull {text}: layer {d['digest']}")
                  for blob, compression, d in zip(blobs, compressions, layer_descriptors)]
        foreign = unpack_image(root, layers, {"reference": str(ref), "digest": digest,
                                              "config": settings})
    finally:
        for blob in blobs:
            blob.close()
    size = sum(d["size"] for d in layer_descriptors)
    return ref, digest, len(layer_descriptors), size, foreign


def manifest_kind(client, kind, document):
    """"index" or "manifest", by the Content-Type or else the document's own
    mediaType (or, with neither, its shape); one line for anything else."""
    media = kind or document.get("mediaType")
    if media in INDEX_TYPES or (not media and "manifests" in document and "layers" not in document):
        return "index"
    if media in MANIFEST_TYPES:
        return "manifest"
    named = printable(media, 60) if isinstance(media, str) and media else "untyped"
    raise client.fail(f"a {named} manifest: minicontainer reads OCI and docker v2 manifests and indexes")


def unpack_image(root, layers, image):
    """Apply the layers, bottom first, into a new directory beside the root
    with deploy's plan and writer, add the skeleton, and swap it in; the
    configuration is written beside it. Whatever fails, the root is untouched."""
    root = os.path.abspath(root)
    parent, name = os.path.split(root)
    if not name:
        raise ContainerError(f"pull into {root}", "the host's / is no container root")
    sweep_pulls(parent, name)
    new = os.path.join(parent, f".{name}.pull-{os.getpid()}.{process_start(os.getpid())}")
    try:
        os.mkdir(new, 0o755)
    except OSError as exc:
        raise ContainerError.from_os(f"pull into {root}", exc) from None
    umask = os.umask(0)
    try:
        rootfd = open_root(new)
        plan, writer = Plan(rootfd), Writer(rootfd)
        try:
            for blob, compression, what in layers:
                plan_layer(plan, open_layer(blob, compression, what), what, "/")
            for op in plan.ops:
                writer.apply(op)
            make_skeleton(rootfd)
        finally:
            writer.close()
            os.close(rootfd)
            plan.close()
        os.umask(umask)
        write_image_file(image_file(new), image)
        replace_root(new, root)
        os.rename(image_file(new), image_file(root))
    except BaseException:
        os.umask(umask)
        remove_tree(new)
        if os.path.lexists(image_file(new)):
            os.unlink(image_file(new))
        raise
    return plan.foreign


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

    __slots__ = ("memory", "memory_swap", "pids", "cpus", "cpu_shares", "stats", "rlimits")

    def __init__(self, memory=None, memory_swap=None, pids=None, cpus=None, cpu_shares=None,
                 stats=False, rlimits=()):
        self.memory, self.memory_swap, self.pids = memory, memory_swap, pids
        self.cpus, self.cpu_shares, self.stats = cpus, cpu_shares, stats
        self.rlimits = rlimits  # ((resource number, soft, hard), ...)

    def controllers(self):
        """The controllers these limits (and --stats) need."""
        needed = set()
        if self.memory or self.memory_swap or self.stats:
            needed.add("memory")
        if self.pids is not None or self.stats:
            needed.add("pids")
        if self.cpus or self.cpu_shares:
            needed.add("cpu")
        return needed


def is_number(text):
    """Digits 0 to 9 only: int() would also take "６４" or "²"."""
    return text.isascii() and text.isdigit()


def parse_size(text, option):
    """docker's sizes: bytes, or a number with b, k, m, g, t (powers of 1024)."""
    import re
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([bkmgt]?)b?", text.strip().lower(), re.ASCII)
    if not match:
        raise ContainerError(f"{option} {text}", "not a size (e.g. 64m, 1g, 1048576)")
    return int(float(match[1]) * SIZE_UNITS[match[2]])


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
        for _ in range(200):  # dying tasks leave a group a moment after SIGKILL
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
        return error


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
NET_STATE_DIR = "/run"
NET_LOCK, NET_STATE = "minicontainer-network.lock", "minicontainer-network.json"
NFT_TABLE = "minicontainer"


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


def parse_publish(value):
    """-p [HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp]; the host address defaults to 127.0.0.1."""
    import ipaddress
    spec, _, proto = value.partition("/")
    if proto not in ("", "tcp"):
        raise ContainerError(f"--publish {value}", "only tcp is supported")
    parts = spec.rsplit(":", 2)
    host_ip = parts[0] if len(parts) == 3 else "127.0.0.1"
    try:
        ipaddress.IPv4Address(host_ip)
        host_port, container_port = (int(p) for p in parts[-2:])
        if len(parts) < 2 or not (0 < host_port < 65536 and 0 < container_port < 65536):
            raise ValueError
    except ValueError:
        raise ContainerError(f"--publish {value}",
                             "expected [HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp]") from None
    return host_ip, host_port, container_port


def process_start(pid):
    """A process's start time (clock ticks since boot), or None if it is gone
    (a zombie is gone: it has ended, whether or not it was reaped)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    try:
        return None if fields[0] in (b"Z", b"X") else int(fields[19])
    except (IndexError, ValueError):
        return None


class Network:
    """A container's place on the bridge: address, veth, published ports, and
    the shared state (/run/minicontainer-network.json) saying who else is there,
    each address under the (pid, start time) of the process that took it."""

    host_side = True  # links, addresses and rules on the host, for the holder to undo

    def __init__(self, subnet, publish=(), outbound=False):
        self.subnet, self.publish, self.outbound = subnet, tuple(publish), outbound
        self.gateway = str(subnet[1])
        self.address = None
        self.listeners = []
        self.veth = None
        self.owner = None  # (pid, start time) of the process that holds the address: see allocate
        self.state_dir = self.forward_fd = None

    # -- shared state, under an exclusive lock -------------------------------

    def locked(self):
        import fcntl
        if self.state_dir is None:
            self.state_dir = os.open(NET_STATE_DIR, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        while True:  # the last run out unlinks the lock: make sure ours is still the file
            fd = os.open(NET_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600, dir_fd=self.state_dir)
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if os.stat(NET_LOCK, dir_fd=self.state_dir).st_ino == os.fstat(fd).st_ino:
                    return fd
            except FileNotFoundError:
                pass
            os.close(fd)

    def load(self):
        import json
        try:
            fd = os.open(NET_STATE, os.O_RDONLY | os.O_CLOEXEC, dir_fd=self.state_dir)
            with open(fd) as f:
                state = json.load(f)
        except (OSError, ValueError):
            state = {}
        state.setdefault("containers", {})
        mine = list(self.owner) if self.owner else None
        live = {ip: owner for ip, owner in state["containers"].items()
                if alive(owner) or owner == mine}
        state["containers"] = live  # the sweep: owners that are gone lose their address
        return state

    def save(self, state):
        import json
        tmp = NET_STATE + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600,
                     dir_fd=self.state_dir)
        with open(fd, "w") as f:
            json.dump(state, f)
        os.rename(tmp, NET_STATE, src_dir_fd=self.state_dir, dst_dir_fd=self.state_dir)

    # -- before the fork ------------------------------------------------------

    def allocate(self):
        """Take the lowest free address, make sure the bridge is there (and the
        masquerade rule, for --outbound), and bind the published ports.

        All of it belongs to the process that calls this: the one that runs
        the container and lives as long as it (the supervisor, or run -d's
        monitor), never the one that read the options. A `run -d` ends at
        once; an address it owned would be swept as soon as it did, and
        given to the next container while this one still serves on it."""
        self.owner = (os.getpid(), process_start(os.getpid()))
        fd = self.locked()
        try:
            state = self.load()
            if state.get("subnet", str(self.subnet)) != str(self.subnet) and state["containers"]:
                raise ContainerError(f"--subnet {self.subnet}", f"bridge {BRIDGE} already serves"
                                     f" {state['subnet']} for running containers")
            taken = set(state["containers"])
            free = (str(ip) for ip in self.subnet.hosts() if str(ip) not in taken
                    and str(ip) != self.gateway)
            self.address = next(free, None)
            if self.address is None:
                raise ContainerError(f"--subnet {self.subnet}", "no free address left")
            self.listeners = listen_published(self.publish)
            self.ensure_bridge(state)
            if self.outbound:
                self.ensure_outbound(state)
            state["subnet"] = str(self.subnet)
            state["containers"][self.address] = list(self.owner)
            self.save(state)
        except BaseException:
            self.close_listeners()
            raise
        finally:
            os.close(fd)

    def ensure_bridge(self, state):
        """The bridge, up, with the subnet's first address: made once, then
        kept (the state says for which subnet); nothing to run when it is."""
        there = os.path.exists(f"/sys/class/net/{BRIDGE}")
        if there and state.get("bridge") == str(self.subnet):
            return
        commands = [f"addr flush dev {BRIDGE}" if there else f"link add {BRIDGE} type bridge",
                    f"addr add {self.gateway}/{self.subnet.prefixlen} dev {BRIDGE}",
                    f"link set {BRIDGE} up"]
        ip_batch(f"set up bridge {BRIDGE}", commands)
        state["bridge"] = str(self.subnet)

    def ensure_outbound(self, state):
        """IP forwarding and a masquerade rule, through nft or iptables, once."""
        import shutil
        if state.get("outbound"):
            return
        tool = shutil.which("nft") or shutil.which("iptables")
        if tool is None:
            raise ContainerError("--outbound", "needs nftables (nft) or iptables to masquerade,"
                                 " and neither is installed")
        forward_before = os.pread(self.forwarding(), 8, 0).decode().strip()
        firewall(tool, "add", str(self.subnet))
        os.pwrite(self.forwarding(), b"1", 0)
        state["outbound"] = {"tool": tool, "ip_forward_before": forward_before}

    def forwarding(self):
        """The host's ip_forward switch, opened once. It is per network namespace,
        fixed at open: the holder opens it only once back in the host's."""
        if self.forward_fd is None:
            self.forward_fd = os.open("/proc/sys/net/ipv4/ip_forward", os.O_RDWR | os.O_CLOEXEC)
        return self.forward_fd

    # -- once PID 1 exists ----------------------------------------------------

    def attach(self, pid1):
        """The veth pair: mcvPID on the bridge, eth0 inside with the address and
        a default route through the bridge; configured from here, by `ip`
        run on the host and then in the container's network namespace."""
        self.veth = f"mcv{pid1}"
        container_ns = os.open(f"/proc/{pid1}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        what = "set up the container's network"
        try:
            # The peer goes to the namespace by our descriptor of it, never by
            # a pid that could be another process's by then.
            ip_batch(what, [f"link add {self.veth} type veth peer name eth0"
                            f" address {mac_for(self.address)} netns /proc/self/fd/{container_ns}",
                            f"link set {self.veth} master {BRIDGE} up"], pass_fd=container_ns)
            ip_batch(what, [f"addr add {self.address}/{self.subnet.prefixlen} dev eth0",
                            "link set eth0 up", f"route add default via {self.gateway}"],
                     netns=container_ns)
        finally:
            os.close(container_ns)

    def relay(self):
        """-p: a userspace relay per published port, in threads of the supervisor."""
        import socket
        relay_published(self.listeners, self.publish,
                        lambda port: socket.create_connection((self.address, port), timeout=5))

    def etc_files(self, hostname):
        """/etc/hosts, /etc/hostname, /etc/resolv.conf for inside, written from this run."""
        hosts = (f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
                 f"{self.address}\t{hostname}\n{self.gateway}\thost.minicontainer.internal\n")
        resolv = "# no outbound access: no name servers (minicontainer --outbound adds them)\n"
        if self.outbound:
            servers = [line for line in read_lines("/etc/resolv.conf")
                       if line.startswith("nameserver") and not line.split()[1].startswith("127.")]
            resolv = "".join(f"{line}\n" for line in servers) or "# the host's name servers are local only\n"
        return (("hosts", hosts), ("hostname", f"{hostname}\n"), ("resolv.conf", resolv))

    # -- at the end -------------------------------------------------------------

    def close_listeners(self):
        for sock in self.listeners:
            sock.close()
        self.listeners = []

    def release(self):
        """Give the address back; the last one out removes the masquerade rule
        and restores IP forwarding. The veth goes with the container's network
        namespace (deleting it here would wait for the kernel's RCU grace
        period on the exit path); the bridge stays. Safe to call twice."""
        self.close_listeners()
        if self.address is None:
            return
        fd = self.locked()
        try:
            state = self.load()
            state["containers"].pop(self.address, None)
            outbound, failure = None, None
            if not state["containers"]:
                outbound = state.pop("outbound", None)
            self.save(state)
            if outbound:
                os.pwrite(self.forwarding(), outbound["ip_forward_before"].encode(), 0)
                try:
                    firewall(outbound["tool"], "delete", state.get("subnet", str(self.subnet)))
                except ContainerError as exc:
                    failure = exc  # said after the rest is undone
            if failure is not None:
                raise failure
        finally:
            os.close(fd)
            self.address = None


def mac_for(address):
    """eth0's MAC address, made from its IPv4 address as docker makes it
    (02:42 and the address's four bytes). An address is handed to the next
    container as soon as one ends; the host and the other containers may
    still hold the old one's MAC for it in their neighbour tables (and Linux
    ignores a new one for a second after it confirmed the old: arp locktime),
    so a random MAC would leave the newcomer unreachable, its published ports
    silent, for up to half a minute. The same address, the same MAC."""
    return "02:42:" + ":".join(f"{int(byte):02x}" for byte in address.split("."))


SLIRP_ADDRESS, SLIRP_GATEWAY, SLIRP_DNS = "10.0.2.100", "10.0.2.2", "10.0.2.3"


class SlirpNetwork:
    """--network bridge for a user's container, who cannot make links on the
    host: slirp4netns, a user-mode network stack, gives it eth0 (10.0.2.100/24)
    and reaches the outside on the user's behalf (as rootless podman does);
    the host's loopback stays out of reach. Without --outbound, its default
    route is taken away, so the container reaches nothing beyond slirp's
    network. -p goes through the same relay as root's: the connections to the
    container come from a connector, a process of minicontainer's that joins
    the container's user and network namespaces (never its mount namespace)
    and hands each connected socket back. slirp4netns ends when this process
    closes its exit descriptor; the connector, when its socket closes; both,
    also when this process is SIGKILLed: nothing is left on the host."""

    host_side = False  # nothing of the host's to undo: no links, no addresses, no rules

    def __init__(self, publish=(), outbound=False):
        self.publish, self.outbound = tuple(publish), outbound
        self.address, self.gateway = SLIRP_ADDRESS, SLIRP_GATEWAY
        self.listeners, self.slirp, self.exit_fd = [], None, None
        self.connector = self.connector_sock = None

    def allocate(self):
        """Find slirp4netns, bind the published ports, and fork the connector
        now, while this process has no thread (a user namespace takes only a
        single-threaded process)."""
        import shutil
        import socket
        if shutil.which("slirp4netns") is None:
            raise ContainerError("--network bridge", "a user's container needs slirp4netns"
                                 " for it (apt install slirp4netns), or root")
        if not os.access("/dev/net/tun", os.R_OK | os.W_OK):
            raise ContainerError("--network bridge", "slirp4netns needs /dev/net/tun, which"
                                 " you cannot open here (distributions make it mode 0666)")
        self.listeners = listen_published(self.publish)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        supervisor = os.getpid()
        self.connector = fork()
        if self.connector == 0:
            ours.close()
            for sock in self.listeners:
                sock.close()
            code = 0
            try:
                die_with_parent(supervisor)
                connector_main(theirs, self.address, self.outbound, self.publish)
            except BaseException as exc:
                try:
                    theirs.send(f"error {exc}".encode())
                except OSError:
                    pass
                code = EXIT_OWN_FAILURE
            finally:
                os._exit(code)
        theirs.close()
        self.connector_sock = ours

    def etc_files(self, hostname):
        hosts = (f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
                 f"{self.address}\t{hostname}\n")
        resolv = (f"nameserver {SLIRP_DNS}\n" if self.outbound else
                  "# no outbound access: no name servers (minicontainer --outbound adds them)\n")
        return (("hosts", hosts), ("hostname", f"{hostname}\n"), ("resolv.conf", resolv))

    def attach(self, pid1):
        """slirp4netns for PID 1's namespaces, up and configured; then the
        connector joins them and takes the default route away unless --outbound."""
        import subprocess
        ready_read, ready_write = os.pipe2(os.O_CLOEXEC)
        exit_read, self.exit_fd = os.pipe2(os.O_CLOEXEC)
        try:
            self.slirp = subprocess.Popen(
                ["slirp4netns", "--configure", "--mtu=65520", "--disable-host-loopback",
                 "--enable-sandbox", "--enable-seccomp", f"--ready-fd={ready_write}",
                 f"--exit-fd={exit_read}", str(pid1), "eth0"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                pass_fds=(ready_write, exit_read))
        except OSError as exc:
            raise ContainerError.from_os("slirp4netns", exc) from None
        finally:
            os.close(ready_write)
            os.close(exit_read)
        try:
            ready = os.read(ready_read, 1)
        finally:
            os.close(ready_read)
        if ready != b"1":
            why = self.slirp.stderr.read().decode(errors="replace").strip().splitlines()
            raise ContainerError("slirp4netns", why[-1] if why else "it ended before the network was up")
        self.connector_sock.send(f"pid {pid1}".encode())
        answer = self.connector_sock.recv(4096).decode(errors="replace")
        if answer != "ok":
            raise ContainerError("set up the container's network",
                                 answer.removeprefix("error ") or "the connector ended")

    def relay(self):
        import threading
        lock = threading.Lock()

        def connect(port):
            """A connection to the container's port, made by the connector."""
            import socket
            with lock:
                self.connector_sock.send(port.to_bytes(2, "big"))
                message, fds, _, _ = socket.recv_fds(self.connector_sock, 64, 1)
            if not fds:
                raise ConnectionRefusedError(message.decode(errors="replace"))
            return socket.socket(fileno=fds[0])

        relay_published(self.listeners, self.publish, connect)

    def close_listeners(self):
        """The ports' sockets and the connector's are the supervisor's alone."""
        for sock in self.listeners:
            sock.close()
        self.listeners = []
        if self.connector_sock is not None:
            self.connector_sock.close()
            self.connector_sock = None

    def release(self):
        """slirp4netns and the connector end; nothing else is left."""
        self.close_listeners()
        if self.exit_fd is not None:
            os.close(self.exit_fd)
            self.exit_fd = None
        if self.slirp is not None:
            self.slirp.wait()
            self.slirp.stderr.close()
            self.slirp = None
        if self.connector is not None:
            os.waitpid(self.connector, 0)
            self.connector = None


def connector_main(sock, address, outbound, publish):
    """The connector (see SlirpNetwork): it waits for PID 1's pid, joins its
    user and network namespaces through a pidfd, removes the default route
    unless --outbound, then answers each port number with a socket connected
    to that port of the container's, until its socket closes."""
    import socket
    word = sock.recv(64).decode()
    if not word.startswith("pid "):
        return
    pidfd = os.pidfd_open(int(word[4:]))
    setns(pidfd, CLONE_NEWUSER | CLONE_NEWNET)
    os.close(pidfd)
    if not outbound:
        ip_batch("--network bridge", ["route del default"])
    sock.send(b"ok")
    if not publish:
        return
    while (request := sock.recv(2)):
        port = int.from_bytes(request, "big")
        try:
            upstream = socket.create_connection((address, port), timeout=5)
        except OSError as exc:
            sock.send(f"{exc.strerror}".encode())
            continue
        socket.send_fds(sock, [b"c"], [upstream.fileno()])
        upstream.close()


IP_TOOLS = ("/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip")


def ip_batch(what, commands, netns=None, pass_fd=None):
    """Run iproute2's `ip -batch -` on commands, one a line, stopping at the
    first that fails; in the network namespace `netns` (a descriptor) if
    given, with descriptor `pass_fd` open in it. One line of ip's on failure."""
    tool = next((path for path in IP_TOOLS if os.access(path, os.X_OK)), None)
    if tool is None:
        raise ContainerError(what, "needs iproute2's ip (apt install iproute2)")
    commands_read, commands_write = os.pipe2(os.O_CLOEXEC)
    said_read, said_write = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        try:
            os.dup2(commands_read, 0)
            os.dup2(said_write, 1)
            os.dup2(said_write, 2)
            if pass_fd is not None:
                os.set_inheritable(pass_fd, True)
            if netns is not None:
                setns(netns, CLONE_NEWNET)
            os.execv(tool, [tool, "-batch", "-"])
        finally:
            os._exit(127)
    os.close(commands_read)
    os.close(said_write)
    try:
        os.write(commands_write, "".join(f"{c}\n" for c in commands).encode())
    finally:
        os.close(commands_write)
    said = b""
    while chunk := os.read(said_read, 4096):
        said += chunk
    os.close(said_read)
    status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    if status != 0:
        why = [line for line in said.decode(errors="replace").splitlines()
               if line and not line.startswith("Command failed")]
        raise ContainerError(what, why[0] if why else f"ip exited with {status}")


def prune_network():
    """Remove the bridge and its state when no container is on it: what
    `minicontainer network prune` does. Returns the containers still there."""
    net = Network(parse_subnet(DEFAULT_SUBNET))
    fd = net.locked()
    try:
        state = net.load()
        if state["containers"]:
            return len(state["containers"])
        outbound = state.get("outbound")  # left by runs killed with their holders
        if outbound:
            os.pwrite(net.forwarding(), outbound["ip_forward_before"].encode(), 0)
            firewall(outbound["tool"], "delete", state.get("subnet", DEFAULT_SUBNET))
        if os.path.exists(f"/sys/class/net/{BRIDGE}"):
            ip_batch(f"remove bridge {BRIDGE}", [f"link del {BRIDGE}"])
        for name in (NET_STATE, NET_LOCK):
            try:
                os.unlink(name, dir_fd=net.state_dir)
            except FileNotFoundError:
                pass
        return 0
    finally:
        os.close(fd)


def firewall(tool, action, subnet):
    """Add or delete minicontainer's masquerade rule for the bridge's subnet."""
    import subprocess
    if os.path.basename(tool) == "nft":
        commands = ([[tool, "add", "table", "ip", NFT_TABLE],
                     [tool, "add", "chain", "ip", NFT_TABLE, "postrouting",
                      "{ type nat hook postrouting priority 100 ; }"],
                     [tool, "add", "rule", "ip", NFT_TABLE, "postrouting", "ip", "saddr", subnet,
                      "oifname", "!=", BRIDGE, "masquerade"]]
                    if action == "add" else [[tool, "delete", "table", "ip", NFT_TABLE]])
    else:
        flag = "-A" if action == "add" else "-D"
        commands = [[tool, "-t", "nat", flag, "POSTROUTING", "-s", subnet, "!", "-o", BRIDGE,
                     "-j", "MASQUERADE"]]
    for command in commands:
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise ContainerError(" ".join(command), result.stderr.strip() or "failed")


def read_lines(path):
    try:
        with open(path) as f:
            return [line.strip() for line in f]
    except OSError:
        return []


def listen_published(publish):
    """-p's listening sockets on the host, bound before the container starts,
    so that a port already taken fails the run at once."""
    import socket
    listeners = []
    try:
        for host_ip, host_port, _ in publish:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listeners.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host_ip, host_port))
            except OSError as exc:
                raise ContainerError.from_os(f"--publish {host_ip}:{host_port}", exc) from None
            sock.listen(64)
    except BaseException:
        for sock in listeners:
            sock.close()
        raise
    return listeners


def relay_published(listeners, publish, connect):
    """-p: a userspace relay per published port, in threads of the supervisor;
    connect(port) makes each connection to the container's port."""
    import threading
    for sock, (_, _, port) in zip(listeners, publish):
        threading.Thread(target=accept_loop, args=(sock, port, connect), daemon=True).start()


def accept_loop(listener, port, connect):
    """Accept connections on a published port and relay each to the container."""
    import threading
    while True:
        try:
            client, _ = listener.accept()
        except OSError:  # closed at the end of the run
            return
        try:
            upstream = connect(port)
        except OSError:
            client.close()
            continue
        upstream.settimeout(None)
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=relay_bytes, args=(a, b), daemon=True).start()


def relay_bytes(src, dst):
    """Copy one direction of a relayed connection; half-close when it ends."""
    import socket
    try:
        while data := src.recv(65536):
            dst.sendall(data)
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass


# ---------------------------------------------------------------------------
# State
# Containers that outlive one command line. The state directory (default
# /run/minicontainer: a tmpfs, so a reboot forgets) holds one directory per
# container: state.json (written whole: a temporary file and a rename, under
# the container's lock), the lock, and the log. Every verb is a short-lived
# process that reads it; the monitor of a detached container (its
# supervisor) writes its start and its end, and the holder writes the end
# if the monitor was killed. A process is known by its pid and start time,
# so a recycled pid is never taken for the container.
# ---------------------------------------------------------------------------

STATE_DIR = "/run/minicontainer"
STATE_ENV = "MINICONTAINER_STATE"
LOG_MAX = 16 << 20  # a log keeps at most its last 16 MiB, in two halves

# A container's life: the statuses, and the moves each allows (youki's and
# runc's model). "dead": the file says it runs, but its monitor is gone
# without saying how it ended (a crash, or the monitor and the holder killed).
CREATING, CREATED, RUNNING, PAUSED, EXITED, DEAD = (
    "creating", "created", "running", "paused", "exited", "dead")
MOVES = {"start": (CREATED,), "exec": (RUNNING,), "stop": (RUNNING, PAUSED),
         "kill": (CREATED, RUNNING, PAUSED), "pause": (RUNNING,), "resume": (PAUSED,),
         "rm": (CREATED, EXITED, DEAD), "rm -f": (CREATING, CREATED, RUNNING, PAUSED, EXITED, DEAD)}
NAME_ADJECTIVES = ("brave", "calm", "clever", "eager", "fond", "gentle", "happy", "jolly",
                   "keen", "kind", "lucid", "merry", "nimble", "proud", "quiet", "sharp",
                   "steady", "tender", "vivid", "wise")
NAME_NOUNS = ("badger", "finch", "gecko", "heron", "ibex", "koala", "lynx", "marten",
              "ocelot", "otter", "puffin", "quail", "raven", "stoat", "tapir", "vole",
              "walrus", "wren", "yak", "zebu")


def default_state_dir():
    """root's /run/minicontainer; a user's $XDG_RUNTIME_DIR/minicontainer (as
    podman and runc keep theirs), else /tmp/minicontainer-UID."""
    if os.geteuid() == 0:
        return STATE_DIR
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isabs(runtime):
        return os.path.join(runtime, "minicontainer")
    return f"/tmp/minicontainer-{os.geteuid()}"


def alive(owner):
    """Whether (pid, start time) is still the same running process."""
    return bool(owner) and owner[1] is not None and process_start(owner[0]) == owner[1]


def now_iso():
    """The time as docker writes it (RFC 3339, UTC, nanoseconds)."""
    import time
    ns = time.time_ns()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 10**9)) + f".{ns % 10**9:09d}Z"


def parse_iso(text):
    """Seconds since the epoch of a time now_iso() wrote."""
    import calendar
    import time
    if not text:
        return None
    whole, _, fraction = text.rstrip("Z").partition(".")
    return calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S")) + float(f"0.{fraction or 0}")


def human_duration(seconds):
    """docker's words for a duration: "Less than a second", "3 seconds", "About a minute"."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = round(s / 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = round(s / 3600)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    days = s // 86400
    if days < 14:
        return f"{days} days"
    if days < 60:
        return f"{days // 7} weeks"
    if days < 730:
        return f"{days // 30} months"
    return f"{days // 365} years"


class Container:
    """One state entry: its fields (data, as in state.json) and its moves."""

    def __init__(self, store, id, data):
        self.store, self.id, self.data = store, id, data

    @property
    def name(self):
        return self.data.get("name", self.id[:12])

    @property
    def status(self):
        """The status as it truly is: a running container whose monitor (or, with
        none, whose PID 1) is gone is not shown as running."""
        status = self.data.get("status")
        if status in (CREATING, CREATED, RUNNING, PAUSED):
            monitor = self.data.get("monitor")
            if monitor is not None and not alive(monitor):
                return DEAD
            if monitor is None and status != CREATING and not alive(self.data.get("pid1")):
                return EXITED  # an OCI container: its PID 1 was reaped by whoever held it
        return status

    def check(self, move):
        """Refuse a move the status does not allow, in one place, with one message."""
        status = self.status
        if status not in MOVES[move]:
            why = {RUNNING: "it is running", EXITED: "it is not running (it exited)",
                   DEAD: "it is not running (its monitor died)", CREATED: "it is not started",
                   CREATING: "it is being created", PAUSED: "it is paused"}[status]
            hint = " (stop it first, or rm -f)" if move == "rm" and status in (RUNNING, PAUSED) else ""
            raise ContainerError(f"{move} {self.name}", why + hint)
        return status

    def path(self, name=""):
        return os.path.join(self.store.path, self.id, name)

    def locked(self):
        """An exclusive lock on this entry (flock on its lock file), as a context."""
        return flock_file(self.path("lock"))

    def save(self):
        """Write state.json whole: a temporary file, then a rename."""
        write_json(self.path(), "state.json", self.data)

    def reload(self):
        data = read_json(self.path("state.json"))
        if data is not None:
            self.data = data
        return data is not None

    def update(self, **fields):
        """Set fields under the lock, on the newest state; False if the entry is gone."""
        try:
            with self.locked():
                if not self.reload():
                    return False
                self.data.update(fields)
                self.save()
                return True
        except FileNotFoundError:
            return False

    def remove(self):
        """Remove the entry: under its lock (no writer is half-way), renamed away
        first, so that of two removers one does it and the other finds it gone."""
        import shutil
        gone = os.path.join(self.store.path, f".removed.{self.id}.{os.getpid()}")
        try:
            with self.locked():
                os.rename(self.path(), gone)
        except FileNotFoundError:
            return
        shutil.rmtree(gone)


class Store:
    """The state directory: where entries are made, found and listed."""

    def __init__(self, path=None):
        self.path = os.path.abspath(path or os.environ.get(STATE_ENV) or default_state_dir())

    def ensure(self):
        """Make the directory if it is missing (0700), and check it."""
        try:
            os.makedirs(self.path, 0o700, exist_ok=True)
        except OSError as exc:
            if not os.path.lexists(self.path):
                raise ContainerError.from_os(f"state directory {self.path}", exc) from None
        fd = self.open()  # a symlink, a file or another's refused here
        if fd is None:
            raise ContainerError(f"state directory {self.path}", "removed while it was made")
        os.close(fd)
        return self

    def open(self):
        """The state directory, opened (never through a symlink) and checked to
        be a directory of the caller's that no one else may enter; None if
        there is none. Every verb reads through here, every time: a user's
        default, /tmp/minicontainer-UID, may have been made first by another
        user, who could then forge entries (a `stop` that kills a process of
        the caller's choosing, by another's). Checked by descriptor, so what is
        checked is what is read; in /tmp (sticky) no one else can then rename
        or replace it."""
        import stat
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as exc:
            try:  # a symlink, a file, another's directory we may not enter: say which
                st = os.lstat(self.path)
            except OSError:
                raise ContainerError.from_os(f"state directory {self.path}", exc) from None
            self.refuse(st)
            raise ContainerError.from_os(f"state directory {self.path}", exc) from None
        st = os.fstat(fd)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
            os.close(fd)
            self.refuse(st)
        return fd

    def refuse(self, st):
        """One line that says what the directory is, whose, and what to remove."""
        import stat
        me = os.geteuid()
        advice = f"and try again, or choose another with --root DIR or {STATE_ENV}"
        if stat.S_ISLNK(st.st_mode):
            try:
                target = os.readlink(self.path)
            except OSError:
                target = "?"
            why = f"a symlink (to {target}), not a directory: remove it (rm {self.path}) {advice}"
        elif not stat.S_ISDIR(st.st_mode):
            why = f"not a directory: remove it (rm {self.path}) {advice}"
        elif st.st_uid != me:
            import pwd
            try:
                name = f" ({pwd.getpwuid(st.st_uid).pw_name})"
            except KeyError:
                name = ""
            why = (f"not owned by the current user (uid {me}): it is uid {st.st_uid}'s{name}:"
                   f" have it removed (root can: rm -rf {self.path}) {advice}")
        elif st.st_mode & 0o077:
            why = (f"its mode is {stat.S_IMODE(st.st_mode):04o} (others may enter it): remove it"
                   f" (rm -rf {self.path}) {advice}")
        else:
            return
        raise ContainerError(f"state directory {self.path}", why)

    def check(self):
        """Refuse the directory now if it is not the caller's own (see open)."""
        fd = self.open()
        if fd is not None:
            os.close(fd)
        return self

    def entries(self):
        """Every container, in order of creation: each entry a directory, and
        its state.json a file, neither reached through a symlink."""
        import stat
        fd = self.open()
        if fd is None:
            return []
        found = []
        try:
            for id in os.listdir(fd):
                if id.startswith("."):
                    continue
                try:
                    entry = os.open(id, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                                    dir_fd=fd)
                except OSError:
                    continue
                try:
                    data = read_json("state.json", dir_fd=entry)
                finally:
                    os.close(entry)
                if isinstance(data, dict):
                    found.append(Container(self, id, data))
        finally:
            os.close(fd)
        return sorted(found, key=lambda c: str(c.data.get("created", "")))

    def create(self, name, data, id=None):
        """A new entry, status "creating", with a name no other entry has (docker's
        rule: until it is removed); None for a generated name. An OCI container
        comes with its id, which is also its name."""
        import random
        self.ensure()
        with flock_file(os.path.join(self.path, ".lock")):
            entries = self.entries()
            taken = {c.name for c in entries} | {c.id for c in entries}
            if id is not None:
                if id in taken:
                    raise ContainerError(f"container {id}", "a container with this id already exists")
                name = id
            elif name is None:
                choices = [f"{a}_{n}" for a in NAME_ADJECTIVES for n in NAME_NOUNS]
                free = [c for c in choices if c not in taken]
                name = random.choice(free) if free else f"mc_{os.urandom(4).hex()}"
            elif name in taken:
                raise ContainerError(f"--name {name}", "the name is in use by another container"
                                     " (rm it first)")
            id = id or os.urandom(32).hex()
            os.mkdir(os.path.join(self.path, id), 0o700)
            entry = Container(self, id, dict(data, id=id, name=name, status=CREATING,
                                             created=now_iso()))
            entry.save()
            return entry

    def named(self, ref):
        """Whether a container has exactly this id or name (no prefix)."""
        return any(ref in (c.id, c.name) for c in self.entries())

    def find(self, ref):
        """The container `ref` names: its full id, its name, or a unique id prefix."""
        entries = self.entries()
        for match in ([c for c in entries if c.id == ref], [c for c in entries if c.name == ref],
                      [c for c in entries if ref and c.id.startswith(ref)]):
            if len(match) == 1:
                return match[0]
            if len(match) > 1:
                raise ContainerError(f"container {ref}", f"the id prefix is ambiguous: it matches"
                                     f" {len(match)} containers")
        raise ContainerError(f"container {ref}", "no such container")


class flock_file:
    """An exclusive flock on a file (made if missing), as a context manager."""

    def __init__(self, path):
        self.path = path

    def __enter__(self):
        import fcntl
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        os.close(self.fd)


def write_json(directory, name, data):
    """Write a JSON file whole: a temporary file in the same directory, then a rename."""
    import json
    tmp = os.path.join(directory, f".{name}.{os.getpid()}")
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600), "w") as f:
        json.dump(data, f)
    os.rename(tmp, os.path.join(directory, name))


def read_json(path, dir_fd=None):
    """A JSON file's data, or None if it is missing or (being written)
    unreadable, or not a regular file (never through a symlink, never
    blocking on a FIFO)."""
    import json
    import stat
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        with open(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return None
            return json.load(f)
    except (OSError, ValueError, RecursionError):
        return None


class Log:
    """A detached container's output: records of (stream, time, bytes), in
    container.log; past half of LOG_MAX the file becomes container.log.1 and
    a new one starts, so the log keeps the last part and says how much it
    dropped. Written by the monitor's reader threads, under a lock."""

    def __init__(self, directory, on_drop=None):
        import threading
        self.directory, self.on_drop = directory, on_drop
        self.lock = threading.Lock()
        self.fd = os.open(os.path.join(directory, "container.log"),
                          os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        self.size, self.dropped = os.fstat(self.fd).st_size, 0

    def write(self, stream, data):
        import time
        record = b"%c %d %d\n" % (stream, time.time_ns(), len(data)) + data
        with self.lock:
            if self.size + len(record) > LOG_MAX // 2 and self.size:
                self.rotate()
            os.write(self.fd, record)
            self.size += len(record)

    def rotate(self):
        old = os.path.join(self.directory, "container.log.1")
        try:
            self.dropped += os.stat(old).st_size
        except FileNotFoundError:
            pass
        os.rename(os.path.join(self.directory, "container.log"), old)
        os.close(self.fd)
        self.fd = os.open(os.path.join(self.directory, "container.log"),
                          os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        self.size = 0
        if self.dropped and self.on_drop:
            self.on_drop(self.dropped)

    def pump(self, fd, stream):
        """Copy one of the container's outputs into the log until it closes."""
        while True:
            try:
                data = os.read(fd, 65536)
            except OSError:  # EIO: a terminal's other side is gone
                data = b""
            if not data:
                os.close(fd)
                return
            self.write(stream, data)


def read_records(path, offset=0):
    """(stream, time_ns, bytes) records of a log file from `offset`, and the
    offset after the last whole one."""
    import stat
    records = []
    try:  # never through a symlink, never blocking on a FIFO
        with open(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC), "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return records, offset
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return records, offset
    except OSError as exc:
        raise ContainerError.from_os(f"log {path}", exc) from None
    pos = 0
    while True:
        end = data.find(b"\n", pos)
        if end < 0:
            break
        try:
            stream, stamp, size = data[pos:end].split(b" ")
            stamp, size = int(stamp), int(size)
            if len(stream) != 1 or size < 0:
                raise ValueError
        except ValueError:
            raise ContainerError(f"log {path}", f"not a log minicontainer wrote (a damaged"
                                 f" record at byte {offset + pos})") from None
        if end + 1 + size > len(data):
            break  # a record still being written
        records.append((stream, stamp, data[end + 1:end + 1 + size]))
        pos = end + 1 + size
    return records, offset + pos


# ---------------------------------------------------------------------------
# OCI bundles
# A bundle's config.json becomes the same Spec that run's options make, and
# the same set-up steps serve it. What this host or runtime cannot honour
# fails `create` with one line naming the field, never silently. Every field
# is read through ConfigValue, with its type, before anything is made, and
# nothing the container's program needs is left to be found after `start`.
# ---------------------------------------------------------------------------

OCI_VERSION = "1.0.2"
OCI_NAMESPACES = {"pid": CLONE_NEWPID, "network": CLONE_NEWNET, "mount": CLONE_NEWNS,
                  "ipc": CLONE_NEWIPC, "uts": CLONE_NEWUTS, "cgroup": CLONE_NEWCGROUP,
                  "user": CLONE_NEWUSER}
OCI_HOOKS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart",
             "poststop")
OCI_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_+-.")


def check_oci_id(id):
    """A container id as runc takes it: letters, digits, _ + - ., at most 1024."""
    if not id or len(id) > 1024 or not set(id) <= OCI_ID_CHARS or id[0] == ".":
        raise ContainerError(f"container id {id!r}", "expected letters, digits, '_', '+', '-'"
                             " and '.', not starting with '.'")
    return id


UINT16, UINT32, INT64, UINT64 = (0, 2**16 - 1), (0, 2**32 - 1), (-2**63, 2**63 - 1), (0, 2**64 - 1)


class ConfigValue:
    """One value of a bundle's config.json (or of exec's --process file) and
    where it is in the document ("process.user.uid"), read as the type the
    code needs. null reads as absent, as Go's decoder (and so runc) reads it.
    A wrong type, a NUL or a lone surrogate in a string, a number outside its
    field's range: one ContainerError that names the field. Every field the
    runtime reads goes through here, in `create`, before anything is made."""

    __slots__ = ("value", "path", "source")

    def __init__(self, value, path="", source="config.json"):
        self.value, self.path, self.source = value, path, source

    def bad(self, why):
        return ContainerError(f"{self.source}: {self.path or 'the document'}", why)

    def __getitem__(self, key):
        """A member of an object (absent if the object is)."""
        return ConfigValue(self.object().get(key), f"{self.path}.{key}" if self.path else key,
                           self.source)

    @property
    def absent(self):
        return self.value is None

    def object(self):
        if self.value is None:
            return {}
        if not isinstance(self.value, dict):
            raise self.bad("not an object")
        return self.value

    def members(self):
        """An object's members, as (key, ConfigValue); the keys checked as strings."""
        for key in self.object():
            ConfigValue(key, self.path, self.source).text()
        return [(key, self[key]) for key in self.object()]

    def items(self):
        """An array's elements, each a ConfigValue (an absent array has none)."""
        if self.value is None:
            return []
        if not isinstance(self.value, list):
            raise self.bad("not an array")
        return [ConfigValue(v, f"{self.path}[{i}]", self.source) for i, v in enumerate(self.value)]

    def text(self, default=None, required=False):
        if self.value is None:
            if required:
                raise self.bad("missing")
            return default
        if not isinstance(self.value, str):
            raise self.bad("not a string")
        if "\0" in self.value:
            raise self.bad("a NUL byte in a string")
        try:
            self.value.encode()
        except UnicodeEncodeError:
            raise self.bad("not valid Unicode (a lone surrogate)") from None
        return self.value

    def texts(self):
        """An array of strings (a null in it is no string)."""
        items = self.items()
        for item in items:
            if item.absent:
                raise item.bad("not a string")
        return [item.text() for item in items]

    def integer(self, default=None, limits=INT64):
        if self.value is None:
            return default
        if isinstance(self.value, bool) or not isinstance(self.value, int):
            raise self.bad("not an integer")
        low, high = limits
        if not low <= self.value <= high:
            raise self.bad(f"{self.value} is out of range ({low} to {high})")
        return self.value

    def integers(self, limits=INT64):
        items = self.items()
        for item in items:
            if item.absent:
                raise item.bad("not an integer")
        return [item.integer(limits=limits) for item in items]

    def flag(self, default=False):
        if self.value is None:
            return default
        if not isinstance(self.value, bool):
            raise self.bad("not a boolean")
        return self.value


def refuse_json_constant(name):
    raise ValueError(f"{name} is not a JSON number")


def read_json_document(path, source):
    """A JSON document from a file, as a ConfigValue that must be an object.
    Bad JSON, bad UTF-8, NaN, numbers too long and nesting too deep are one line."""
    import json
    try:
        if path == "-":
            data = sys.stdin.buffer.read()
        else:
            with open(path, "rb") as f:
                data = f.read()
    except OSError as exc:
        raise ContainerError.from_os(f"read {path}", exc) from None
    try:
        value = json.loads(data, parse_constant=refuse_json_constant)
    except RecursionError:
        raise ContainerError(source, "not JSON this runtime reads: nested too deeply") from None
    except ValueError as exc:
        raise ContainerError(source, f"not JSON: {one_line(str(exc))}") from None
    document = ConfigValue(value, "", source)
    if not isinstance(value, dict):
        raise ContainerError(source, "not a JSON object")
    return document


def load_bundle(bundle, id, preserve_fds=0, keyring=True):
    """A bundle's config.json as a Spec, and the parts `create` itself uses
    (linux.cgroupsPath and linux.resources, annotations), every field read
    through ConfigValue: checked in full here, before anything is made."""
    bundle = os.path.abspath(bundle)
    config = read_json_document(os.path.join(bundle, "config.json"), "config.json")
    version = config["ociVersion"].text("")
    if not version.startswith("1."):
        raise ContainerError("config.json: ociVersion", f"{version!r}: this runtime takes 1.x")
    process = config["process"]
    if not process["args"].texts():
        raise ContainerError("config.json: process.args", "missing: nothing to run")
    root = config["root"]["path"].text("")
    if not root:
        raise ContainerError("config.json: root.path", "missing")
    root = os.path.join(bundle, root)
    if not os.path.isdir(root):
        raise ContainerError(f"config.json: root.path {root}", "not a directory")
    linux = config["linux"]
    spec = Spec(os.path.realpath(root), (), mounts=oci_mounts(config["mounts"], bundle),
                masked_paths=oci_paths(linux["maskedPaths"]),
                readonly_paths=oci_paths(linux["readonlyPaths"]),
                read_only=config["root"]["readonly"].flag(),
                hostname=config["hostname"].text() or None,
                preserve_fds=preserve_fds, seccomp=oci_seccomp(linux["seccomp"]))
    spec.domainname = config["domainname"].text()
    load_process(spec, process)
    check_rlimits(spec, "config.json: process.rlimits")
    spec.namespaces, spec.ns_paths = oci_namespaces(linux["namespaces"])
    spec.devices = oci_devices(linux["devices"])
    spec.sysctl = oci_sysctls(linux["sysctl"], spec.namespaces | sum(spec.ns_paths))
    refuse_host_namespace_sysctls(spec)
    spec.hooks = oci_hooks(config["hooks"])
    spec.propagation = oci_propagation(linux["rootfsPropagation"])
    spec.personality = oci_personality(linux["personality"])
    spec.keyring = id if keyring else False
    spec.oci, spec.init = True, False
    spec.uid_map, spec.gid_map = oci_id_map(linux["uidMappings"]), oci_id_map(linux["gidMappings"])
    if spec.namespaces & CLONE_NEWUSER:
        for name, mapping in (("uidMappings", spec.uid_map), ("gidMappings", spec.gid_map)):
            if not any(inside == 0 for inside, _, _ in mapping):
                raise ContainerError(f"config.json: linux.{name}", "a user namespace needs id 0"
                                     " inside mapped (the container's root)")
    elif spec.uid_map or spec.gid_map:
        raise ContainerError(f"config.json: linux.{'uidMappings' if spec.uid_map else 'gidMappings'}",
                             "mappings need a user namespace")
    for unsupported in ("intelRdt", "memoryPolicy", "timeOffsets"):
        if linux[unsupported].object():
            raise ContainerError(f"config.json: linux.{unsupported}", "not supported by this runtime")
    if linux["mountLabel"].text() and selinux_enabled():
        raise ContainerError("config.json: linux.mountLabel", "SELinux labels are not supported")
    cgroups_path = linux["cgroupsPath"].text()
    annotations = {key: value.text() or "" for key, value in config["annotations"].members()}
    return spec, {"annotations": annotations,
                  "linux": {"cgroupsPath": cgroups_path,
                            "resources": oci_resources(linux["resources"])}}


def load_process(spec, process):
    """process (a ConfigValue): args, env, cwd, terminal, user, capabilities,
    rlimits, noNewPrivileges, terminal size, OOM score."""
    import resource
    spec.command = tuple(process["args"].texts())
    spec.env = tuple(oci_env(process["env"]))
    spec.workdir = process["cwd"].text() or "/"
    if not spec.workdir.startswith("/"):
        raise process["cwd"].bad(f"{spec.workdir}: must be absolute")
    spec.tty = process["terminal"].flag()
    user = process["user"]
    spec.user = (user["uid"].integer(0, UINT32), user["gid"].integer(0, UINT32), "/")
    spec.additional_gids = tuple(user["additionalGids"].integers(UINT32))
    spec.umask = user["umask"].integer(None, (0, 0o7777))
    user["username"].text()
    spec.no_new_privs = process["noNewPrivileges"].flag()
    spec.oom_score_adj = process["oomScoreAdj"].integer(None, (-1000, 1000))
    size = process["consoleSize"]
    if size.object():
        spec.winsize = b"".join(size[k].integer(0, UINT16).to_bytes(2, sys.byteorder)
                                for k in ("height", "width")) + bytes(4)
    numbers = capability_numbers()
    held = {n for n in numbers.values() if own_bounding_set() >> n & 1}
    sets = {}
    for name in ("bounding", "effective", "permitted", "inheritable", "ambient"):
        caps = set()
        field = process["capabilities"][name]
        for cap in field.texts():
            number = numbers.get(cap.upper().removeprefix("CAP_"))
            if number is None:
                raise field.bad(f"unknown capability {cap}")
            if number not in held:
                raise field.bad(f"{cap}: this runtime does not hold it itself")
            caps.add(number)
        sets[name] = frozenset(caps)
    spec.caps = sets.pop("bounding")
    spec.cap_sets = sets
    rlimits, seen = [], set()
    what = f"{process.source}: {process['rlimits'].path}"
    for limit in process["rlimits"].items():
        name = limit["type"].text("")
        number = getattr(resource, name, None) if name.startswith("RLIMIT_") else None
        if number is None:
            raise ContainerError(f"{what} {name}", "unknown resource")
        if number in seen:
            raise ContainerError(f"{what} {name}", "given twice")
        seen.add(number)
        soft, hard = limit["soft"].integer(0, UINT64), limit["hard"].integer(0, UINT64)
        if soft > hard:
            raise ContainerError(f"{what} {name}", f"soft {soft} is above hard {hard}")
        rlimits.append((number, soft, hard))
    spec.limits = Limits(rlimits=tuple(rlimits))
    if process["apparmorProfile"].text():
        raise process["apparmorProfile"].bad("AppArmor is not enabled on this host")
    for unsupported in ("scheduler", "ioPriority", "execCPUAffinity"):
        if process[unsupported].object():
            raise process[unsupported].bad("not supported by this runtime")
    if process["selinuxLabel"].text() and selinux_enabled():
        raise process["selinuxLabel"].bad("SELinux labels are not supported")


def oci_env(field):
    """process.env as (name, value) pairs: each NAME=VALUE, as runc insists."""
    env = []
    for item in field.items():
        text = item.text() if not item.absent else None
        name, sep, value = (text or "").partition("=")
        if not sep or not name:
            raise item.bad(f"{text!r}: not NAME=VALUE")
        env.append((name, value))
    return env


def oci_paths(field):
    """linux.maskedPaths or readonlyPaths: absolute paths."""
    paths = field.texts()
    for index, path in enumerate(paths):
        if not path.startswith("/"):
            raise field.items()[index].bad(f"{path}: not an absolute path")
    return paths


def oci_mounts(field, bundle):
    """mounts, in order; a bind's source relative to the bundle. An option is
    one word: a comma in it would smuggle a second one to the file system."""
    mounts = []
    for mount in field.items():
        destination = mount["destination"].text("")
        if not destination.startswith("/"):
            raise mount["destination"].bad(f"{destination!r}: a mount needs an absolute destination")
        entry = {"destination": destination, "type": mount["type"].text() or "",
                 "source": mount["source"].text() or "", "options": mount["options"].texts()}
        for option, item in zip(entry["options"], mount["options"].items()):
            if "," in option:
                raise item.bad(f"{option!r}: a comma in an option (of the mount on {destination})")
            if option in ("idmap", "ridmap") or option.startswith("tmpcopyup"):
                raise item.bad(f"{option}: not supported (the mount on {destination})")
        if entry["type"] == "bind" or {"bind", "rbind"} & set(entry["options"]):
            entry["source"] = os.path.join(bundle, entry["source"])
        elif entry["type"] in ("", "none"):
            raise mount["type"].bad(f"the mount on {destination} is no bind: it needs a type")
        for key in ("uidMappings", "gidMappings"):
            if mount[key].items():
                raise mount[key].bad("idmapped mounts are not supported")
        mounts.append(entry)
    return mounts


# What NS_GET_NSTYPE answers: the namespace's clone flag.
NS_GET_NSTYPE = 0xB703


def open_namespace(path, flag, what):
    """A namespace file by path, opened without blocking and checked to be one
    of the kind asked for: a FIFO, a device or a plain file at a bundle's path
    is refused, never opened for reading (a FIFO would hang, a device act)."""
    import fcntl
    import stat
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError as exc:
        raise ContainerError.from_os(what, exc) from None
    try:
        nsfs = os.stat("/proc/self/ns/net").st_dev
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_dev != nsfs:
            raise ContainerError(what, "not a namespace file (/proc/PID/ns/..., or a bind"
                                 " mount of one)")
        ns = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise ContainerError.from_os(what, exc) from None
    finally:
        os.close(fd)
    try:
        kind = fcntl.ioctl(ns, NS_GET_NSTYPE)
    except OSError as exc:
        os.close(ns)
        raise ContainerError.from_os(what, exc) from None
    if kind != flag:
        os.close(ns)
        names = {v: k for k, v in OCI_NAMESPACES.items()}
        raise ContainerError(what, f"a namespace of type {names.get(kind, kind)}, not"
                             f" {names.get(flag)}")
    return ns


def oci_namespaces(field):
    """linux.namespaces: the flags to make, and {flag: path} to join, each
    path checked now to be a namespace of its type. A type left out is the
    runtime's own, except the mount namespace: a container set up in the
    host's would mount on the host."""
    flags, paths = 0, {}
    for ns in field.items():
        kind = ns["type"].text()
        if kind not in OCI_NAMESPACES:
            raise ContainerError(f"config.json: linux.namespaces {kind}", "not a namespace this"
                                 f" runtime knows ({', '.join(OCI_NAMESPACES)})")
        flag = OCI_NAMESPACES[kind]
        if flag & (flags | sum(paths)):
            raise ContainerError(f"config.json: linux.namespaces {kind}", "given twice")
        path = ns["path"].text()
        if path:
            if kind in ("mount", "user"):
                raise ContainerError(f"config.json: linux.namespaces {kind}",
                                     "joining one by path is not supported")
            os.close(open_namespace(path, flag, f"config.json: {ns.path}.path {path}"))
            paths[flag] = path
        else:
            flags |= flag
    if not flags & CLONE_NEWNS:
        raise ContainerError("config.json: linux.namespaces", "needs a mount namespace: this"
                             " runtime sets up no container in the host's")
    return flags, paths


def refuse_host_namespace_sysctls(spec):
    """A sysctl of a namespace joined by path is the container's to set
    (podman's default network joins the namespace it made, and sets
    net.ipv4.ping_group_range in it), unless that namespace is the runtime's
    own or the host's first. runc refuses a net.* one in "the host's network
    namespace"; here the IPC and UTS ones too. Checked at create."""
    for key in spec.sysctl:
        flag = sysctl_namespace(str(key))
        path = spec.ns_paths.get(flag)
        if path is None:
            continue
        kind = {CLONE_NEWNET: "net", CLONE_NEWIPC: "ipc", CLONE_NEWUTS: "uts"}[flag]
        try:
            joined = os.stat(path)
        except OSError as exc:
            raise ContainerError.from_os(f"config.json: linux.namespaces {path}", exc) from None
        for host in (f"/proc/self/ns/{kind}", f"/proc/1/ns/{kind}"):
            try:
                st = os.stat(host)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) == (joined.st_dev, joined.st_ino):
                raise ContainerError(f"config.json: linux.sysctl {key}", f"not allowed in the host's {kind}"
                                     f" namespace ({path} is the runtime's own)")


def oci_id_map(field):
    """linux.uidMappings or gidMappings as (inside, outside, count) triples."""
    mapping = []
    for entry in field.items():
        values = tuple(entry[key].integer(None, UINT32) for key in ("containerID", "hostID", "size"))
        if None in values:
            raise entry.bad("expected containerID, hostID and size")
        mapping.append(values)
    return tuple(mapping)


def oci_devices(field):
    devices = []
    for device in field.items():
        path = device["path"].text("")
        if not path.startswith("/dev/") or ".." in path.split("/"):
            raise ContainerError(f"config.json: linux.devices {path}", "must be below /dev")
        kind = device["type"].text()
        if kind not in ("c", "b", "u", "p"):
            raise ContainerError(f"config.json: linux.devices {path}",
                                 f"type {kind!r}: not c, b, u or p")
        devices.append({"path": path, "type": kind,
                        "major": device["major"].integer(0, UINT32),
                        "minor": device["minor"].integer(0, UINT32),
                        "fileMode": device["fileMode"].integer(0o666, UINT32),
                        "uid": device["uid"].integer(0, UINT32),
                        "gid": device["gid"].integer(0, UINT32)})
    return devices


# A sysctl's name: words of letters, digits, "_" and "-", joined by single
# dots. "/", "..", "=", "+" and "," never: they smuggle a second sysctl
# (CRI-O's CVE-2022-0811) or climb out of /proc/sys.
SYSCTL_WORD = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


def oci_sysctls(field, namespaces):
    """linux.sysctl: each one of a namespace the container makes or joins by
    path (one of the host's is refused here, and again by PID 1; a joined one
    that is the runtime's own by refuse_host_namespace_sysctls)."""
    sysctls = {}
    for key, value in field.members():
        text = value.text()
        what = f"config.json: linux.sysctl {key}"
        if not all(word and set(word) <= SYSCTL_WORD for word in key.split(".")):
            raise ContainerError(what, "not a sysctl name (words of letters, digits, '_' and"
                                 " '-', joined by dots)")
        if text is None or any(c in text for c in "\n=+,"):
            raise ContainerError(what, f"value {text!r}: one value, without newline, '=', '+' or ','")
        flag = next((f for f, names in NAMESPACED_SYSCTLS.items()
                     if any(key == n or (n.endswith(".") and key.startswith(n)) for n in names)),
                    None)
        if flag is None or not namespaces & flag:
            raise ContainerError(what, "not in a namespace of the container's own: it would"
                                 " change the host")
        sysctls[key] = text
    return sysctls


def oci_hooks(field):
    hooks = {}
    for kind, entries in field.members():
        if kind not in OCI_HOOKS:
            raise entries.bad("not a hook this runtime knows")
        hooks[kind] = []
        for hook in entries.items():
            path = hook["path"].text("")
            if not path.startswith("/"):
                raise hook["path"].bad("a hook's path must be absolute")
            hooks[kind].append({"path": path, "args": hook["args"].texts() or [path],
                                "env": oci_env_texts(hook["env"]),
                                "timeout": hook["timeout"].integer(None, (1, 2**31 - 1))})
    return hooks


def oci_env_texts(field):
    return [f"{name}={value}" for name, value in oci_env(field)]


def oci_propagation(field):
    propagation = field.text()
    if propagation and propagation not in MOUNT_PROPAGATION:
        raise ContainerError(f"config.json: linux.rootfsPropagation {propagation}",
                             f"not one of {', '.join(MOUNT_PROPAGATION)}")
    return propagation or None


def oci_personality(field):
    domain = field["domain"].text()
    field["flags"].texts()
    if domain is None:
        return None
    if domain not in ("LINUX", "LINUX32"):
        raise ContainerError(f"config.json: linux.personality.domain {domain}",
                             "not LINUX or LINUX32")
    return PER_LINUX32 if domain == "LINUX32" else PER_LINUX


def oci_seccomp(field):
    """linux.seccomp, checked here and rebuilt of the fields read; compiled by
    PID 1 (SeccompFilter)."""
    if not field.object():
        return None
    if field["listenerPath"].text():
        raise field["listenerPath"].bad("seccomp user notification is not supported")
    field["listenerMetadata"].text()
    flags = field["flags"].texts()
    for flag in flags:
        if flag not in SECCOMP_FLAG_ATTRIBUTES:
            raise ContainerError(f"config.json: linux.seccomp.flags {flag}", "not supported")
    policy = {"defaultAction": field["defaultAction"].text("SCMP_ACT_ALLOW"),
              "architectures": field["architectures"].texts(), "flags": flags, "syscalls": []}
    errno_ret = field["defaultErrnoRet"].integer(None, UINT32)
    if errno_ret is not None:
        policy["defaultErrnoRet"] = errno_ret
    try:
        seccomp_action(policy["defaultAction"], errno_ret, "defaultAction")
    except ContainerError as exc:
        raise exc.within(f"{field.source}: {field.path}") from None
    for rule in field["syscalls"].items():
        clean = {"names": rule["names"].texts(), "action": rule["action"].text(), "args": []}
        errno_ret = rule["errnoRet"].integer(None, UINT32)
        if errno_ret is not None:
            clean["errnoRet"] = errno_ret
        try:
            seccomp_action(clean["action"], errno_ret, "action")
        except ContainerError as exc:
            raise exc.within(f"{rule.source}: {rule.path}") from None
        for arg in rule["args"].items():
            op = arg["op"].text()
            if op not in SCMP_OPS:
                raise ContainerError(f"config.json: linux.seccomp op {op}",
                                     "not a comparison libseccomp knows")
            clean["args"].append({"index": arg["index"].integer(0, (0, 5)),
                                  "value": arg["value"].integer(0, UINT64),
                                  "valueTwo": arg["valueTwo"].integer(0, UINT64), "op": op})
        policy["syscalls"].append(clean)
    return policy


# linux.resources: each value's type, as the runtime spec's Go structs have it.
RESOURCE_TYPES = {
    "memory": {"limit": INT64, "reservation": INT64, "swap": INT64, "kernel": INT64,
               "kernelTCP": INT64, "swappiness": UINT64, "disableOOMKiller": bool,
               "useHierarchy": bool, "checkBeforeUpdate": bool},
    "cpu": {"shares": UINT64, "quota": INT64, "burst": UINT64, "period": UINT64,
            "realtimeRuntime": INT64, "realtimePeriod": UINT64, "cpus": str, "mems": str,
            "idle": INT64},
    "pids": {"limit": INT64},
    "blockIO": {"weight": UINT16, "leafWeight": UINT16},
    "network": {"classID": UINT32},
}
# cgroup2 files that move processes or change the tree, not limit it: never
# written from linux.resources.unified (cgroup.procs would pull a host
# process into the container's group, where delete --force kills it).
UNIFIED_REFUSED = ("cgroup.procs", "cgroup.threads", "cgroup.kill", "cgroup.subtree_control",
                   "cgroup.type", "cgroup.freeze", "cgroup.events", "cgroup.controllers")


def oci_resources(field):
    """linux.resources (or update's --resources), checked and rebuilt of the
    fields write_resources reads, so that the kernel is given nothing else."""
    resources = {}
    for section, kinds in RESOURCE_TYPES.items():
        values = {}
        for key, kind in kinds.items():
            value = field[section][key]
            values[key] = (value.flag(None) if kind is bool else value.text() if kind is str
                           else value.integer(None, kind))
        resources[section] = {k: v for k, v in values.items() if v is not None}
    for key in BLKIO_DEVICE_FILES:
        resources["blockIO"][key] = [
            {"major": d["major"].integer(0, INT64), "minor": d["minor"].integer(0, INT64),
             **({"rate": d["rate"].integer(0, UINT64)} if key.startswith("throttle") else
                {"weight": d["weight"].integer(None, UINT16)})}
            for d in field["blockIO"][key].items()]
        for device in resources["blockIO"][key]:
            if device.get("rate", device.get("weight")) is None:
                raise field["blockIO"][key].bad("a device's weight is missing")
    resources["hugepageLimits"] = []
    for limit in field["hugepageLimits"].items():
        size = limit["pageSize"].text("")
        if not size or not set(size) <= set("0123456789KMGTB"):
            raise limit["pageSize"].bad(f"{size!r}: not a page size (2MB, 1GB)")
        resources["hugepageLimits"].append({"pageSize": size,
                                            "limit": limit["limit"].integer(0, UINT64)})
    resources["network"]["priorities"] = [
        {"name": p["name"].text(""), "priority": p["priority"].integer(0, UINT32)}
        for p in field["network"]["priorities"].items()]
    resources["unified"] = {}
    for key, value in field["unified"].members():
        if (not key or key.startswith(".") or "/" in key or key in UNIFIED_REFUSED):
            raise ContainerError(f"{field.source}: {field['unified'].path} {key}",
                                 "not a file of a group's limits")
        resources["unified"][key] = value.text(required=True)
    resources["devices"] = []
    for rule in field["devices"].items():
        kind = rule["type"].text() or "a"
        access = rule["access"].text() or "rwm"
        if kind not in ("a", "b", "c") or not access or not set(access) <= set("rwm"):
            raise rule.bad(f"type {kind!r}, access {access!r}: not a device rule")
        resources["devices"].append({"allow": rule["allow"].flag(), "type": kind,
                                     "major": rule["major"].integer(None, INT64),
                                     "minor": rule["minor"].integer(None, INT64),
                                     "access": access})
    for key in ("rdma",):
        if field[key].object():
            raise field[key].bad("not supported by this runtime")
    return resources


def oci_state(entry, status=None, pid=None):
    """The state the runtime spec defines, as `state` prints it and hooks read it."""
    data = entry.data
    return {"ociVersion": OCI_VERSION, "id": entry.id,
            "status": status or oci_status(entry), "pid": pid if pid is not None else (
                data["pid1"][0] if data.get("pid1") and oci_status(entry) != "stopped" else 0),
            "bundle": data.get("bundle", ""), "rootfs": data.get("root", ""),
            "created": data.get("created"), "owner": "",
            "annotations": data.get("annotations") or {}}


def oci_status(entry):
    """creating, created, running, paused or stopped: the spec's names."""
    status = entry.status
    if status == CREATED and not os.path.exists(entry.path("exec.fifo")):
        status = RUNNING  # started a moment ago
    return {EXITED: "stopped", DEAD: "stopped"}.get(status, status)


def oci_features():
    """`features`: what this runtime supports, in the runtime spec's shape."""
    return {"ociVersionMin": "1.0.0", "ociVersionMax": OCI_VERSION,
            "hooks": list(OCI_HOOKS),
            "mountOptions": sorted(set(MOUNT_ATTR_OPTIONS) | {"r" + o for o in MOUNT_ATTR_OPTIONS}
                                   | set(MOUNT_PROPAGATION) | set(SUPERBLOCK_FLAGS)
                                   | {"bind", "rbind"}),
            "linux": {"namespaces": [n for n in OCI_NAMESPACES if n != "user"],
                      "capabilities": sorted("CAP_" + n for n in capability_numbers()),
                      "cgroup": {"v1": True, "v2": True, "systemd": False, "systemdUser": False},
                      "seccomp": {"enabled": True, "actions": sorted(SCMP_ACTIONS),
                                  "operators": sorted(SCMP_OPS),
                                  "archs": sorted(a for arches in SECCOMP_ARCHES.values()
                                                  for a in arches)},
                      "apparmor": {"enabled": False}, "selinux": {"enabled": selinux_enabled()}},
            "annotations": {"org.opencontainers.runtime-spec.features.runtime": "minicontainer",
                            "org.opencontainers.runtime-spec.features.version": __version__}}


def default_config():
    """`spec`: runc's default config.json, with minicontainer's default
    capabilities, masks and seccomp policy."""
    caps = [f"CAP_{name}" for name in DEFAULT_CAPABILITIES]
    return {
        "ociVersion": OCI_VERSION,
        "process": {"terminal": True, "user": {"uid": 0, "gid": 0}, "args": ["sh"],
                    "env": [f"PATH={CONTAINER_PATH}", "TERM=xterm"], "cwd": "/",
                    "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
                    "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
                    "noNewPrivileges": True},
        "root": {"path": "rootfs", "readonly": True},
        "hostname": DEFAULT_HOSTNAME,
        "mounts": [{k: v for k, v in m.items()} for m in KERNEL_MOUNTS[:4]] + [
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}],
        "linux": {"resources": {"devices": [{"allow": False, "access": "rwm"}]},
                  "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount",
                                                       "cgroup")],
                  "maskedPaths": list(MASKED_PATHS), "readonlyPaths": list(READONLY_PATHS),
                  "seccomp": default_seccomp(DEFAULT_CAPABILITIES)},
    }


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
            make_group_dirs(mount, base, names)
            group.parent_fd = os.open(os.path.dirname(base), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            group.fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            # Never to be killed or removed by us: neither its processes nor those of
            # the groups below it (kill --all and delete take the whole subtree, as
            # runc's do; /system.slice's own cgroup.procs is empty).
            if cgroup_members(base, visible=False):
                os.close(group.fd)
                os.close(group.parent_fd)
                raise ContainerError(f"config.json: linux.cgroupsPath {path}", f"{base} already"
                                     " holds processes: a container's group must be its own")
            groups.append(group)
        write_resources(groups, resources or {}, devices)
    except BaseException:
        remove_cgroups(groups)
        raise
    return groups


def make_group_dirs(mount, path, names):
    """mkdir -p below a hierarchy's mount; a new cpuset group gets its parent's
    cpus and mems (it can take no task without them)."""
    parts = os.path.relpath(path, mount).split("/")
    current = mount
    for part in parts:
        current = os.path.join(current, part)
        try:
            os.mkdir(current, 0o755)
        except FileExistsError:
            continue
        except OSError as exc:
            raise ContainerError.from_os(f"create cgroup {current}", exc) from None
        if "cpuset" in names:
            for name in ("cpuset.cpus", "cpuset.mems"):
                with open(os.path.join(os.path.dirname(current), name)) as f:
                    value = f.read().strip()
                with open(os.path.join(current, name), "w") as f:
                    f.write(value)


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
                 "keyring", "oci", "state", "no_pivot", "uid_map", "gid_map", "groups_locked")

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
        return spec


class Handles:
    """What the container's processes hold while it is set up: the report
    socket, the cgroups, the terminal socket (-t), the network's go-ahead,
    and, in PID 1, the seccomp filter, the volumes' detached mounts, and
    descriptors of the container's root, /proc, /dev and /sys (never of the
    host's: those are closed before anything inside the root is resolved)."""

    __slots__ = ("report_fd", "groups", "tty_sock", "seccomp", "volumes", "go_fd",
                 "network", "root_fd", "stdio", "entry", "cgroup_views", "cgroup_links",
                 "exec_fifo", "map_fd")

    def __init__(self, report_fd, groups, tty_sock=None, go_fd=None, network=None, stdio=None,
                 entry=None):
        self.report_fd, self.groups, self.tty_sock = report_fd, groups, tty_sock
        self.go_fd, self.network = go_fd, network  # --network bridge only
        self.stdio, self.entry = stdio, entry  # -d: the log's pipes; a state entry
        self.seccomp = None
        self.volumes = ()
        self.root_fd = None
        self.cgroup_views = self.cgroup_links = ()  # for a `cgroup` mount: (name, host dir)
        self.exec_fifo = None  # OCI create: where PID 1 waits for `start`
        self.map_fd = None  # a user namespace: the holder waits here for its id maps


def make_mounts_private():
    """Stop mount propagation both ways. Precondition: after unshare(NEWNS).

    On systemd hosts / is shared: without this, the container's mounts
    (its /proc, its root bind) would appear on the host and outlive the run.
    """
    mount(None, "/", None, MS_REC | MS_PRIVATE)


def new_session():
    """A session and process group of the container's own.

    Process groups span PID namespaces: sharing minicontainer's would let the
    command kill(0, SIGKILL) minicontainer, its holder and the user's shell
    job. It also leaves the terminal's ^C to minicontainer, which passes it on.
    """
    os.setsid()


def hide_process(title):
    """Nothing of this process (a copy of minicontainer, the host's Python) for
    the container to read: called before the container can see it.

    Non-dumpable, as runc's init is (CVE-2016-9962): without CAP_SYS_PTRACE
    over the host, no one may ptrace it or read its environ, memory, fds or
    exe (the host's interpreter: CVE-2019-5736) until its execve, which makes
    the container's program dumpable again. /proc/PID/cmdline has no such
    guard, so the blocks the kernel shows there and as environ (the host's
    paths, the caller's arguments and variables) are overwritten in place
    with `title` and zeros, and os.environ is emptied (the command gets the
    container's environment, built from the spec). Its comm becomes
    "minicontainer" rather than the interpreter's name.
    Precondition: any write to /proc/self (oom_score_adj) is done: a
    non-dumpable process's /proc files belong to the host's root.
    """
    import ctypes
    import prctl
    fd = os.open("/proc/self/stat", os.O_RDONLY | os.O_CLOEXEC)
    try:
        fields = os.read(fd, 4096).rsplit(b")", 1)[1].split()
    finally:
        os.close(fd)
    # stat(5)'s fields 48 to 51: where argv's and the environment's strings lie.
    arg_start, arg_end, env_start, env_end = (int(f) for f in fields[45:49])
    title = title.encode()[:max(0, arg_end - arg_start - 1)]
    ctypes.memset(arg_start, 0, arg_end - arg_start)
    ctypes.memmove(arg_start, title, len(title))
    ctypes.memset(env_start, 0, env_end - env_start)
    os.environ.clear()
    prctl.set_name("minicontainer")
    prctl.set_dumpable(False)


def become_root_inside(spec):
    """In a user namespace: uid and gid 0 there (mapped to the host's ids the
    maps gave), with no supplementary groups where setgroups is allowed."""
    if spec.namespaces & CLONE_NEWUSER:
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
        if not spec.groups_locked:
            os.setgroups([])


def enter_cgroups(spec, groups):
    """Join the container's groups, then a cgroup namespace rooted at them.

    PID 1 joins before anything of the command runs, so nothing escapes the
    limits; the holder stays outside, uncharged, to clean up afterwards. A
    bundle's PID 1 was joined by `create` before its go-ahead: from inside
    a user namespace it could not write the host's cgroup files.
    """
    if not spec.oci:
        join_cgroups(groups, os.getpid())
    if CLONE_NEWCGROUP in spec.ns_paths:
        join_namespace(spec.ns_paths[CLONE_NEWCGROUP], CLONE_NEWCGROUP)
    elif spec.namespaces & CLONE_NEWCGROUP:
        unshare(CLONE_NEWCGROUP)


def join_namespace(path, flag):
    """setns into the namespace a bundle names by path (/proc/PID/ns/net, /run/netns/x),
    opened as open_namespace does: `create` checked it, but the path may have changed."""
    fd = open_namespace(path, flag, f"join the namespace {path}")
    try:
        setns(fd, flag)
    except ContainerError as exc:
        raise exc.within(f"join the namespace {path}") from None
    finally:
        os.close(fd)


def close_inherited_fds(spec, handles):
    """Close every descriptor but stdio, the --preserve-fds ones and the set-up's
    own sockets and pipes, before anything inside the root is resolved.

    A directory descriptor of the host (minicontainer's cgroup and network
    state directories, or one its caller leaked) is a way out: a command,
    a symlink or -w through /proc/self/fd/N would resolve on the host
    (runc's CVE-2024-21626). None of those is ever a directory.
    """
    keep = {0, 1, 2, handles.report_fd, *range(3, 3 + spec.preserve_fds)}
    if handles.go_fd is not None:
        keep.add(handles.go_fd)
    if handles.tty_sock is not None:
        keep.add(handles.tty_sock.fileno())
    if handles.exec_fifo is not None:  # a FIFO: no way to a file system through it
        keep.add(handles.exec_fifo)
    low = 0
    for fd in sorted(keep):
        if fd > low:
            os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, MAX_FD)


def own_mount_namespace():
    """A mount namespace of PID 1's own, below the holder's.

    pivot_root moves every process of a mount namespace whose root is the old
    root: sharing one, the holder would be moved into the container's root
    too, where /proc is the container's and any lazy import of its Python
    would load a file the container planted. So only PID 1 and its
    descendants pivot; the holder keeps the host's root.
    """
    unshare(CLONE_NEWNS)
    make_mounts_private()


def set_hostname(spec):
    """Name the container's own UTS namespace (and, from a bundle, its NIS
    domain); the host's names are untouched."""
    if spec.namespaces & CLONE_NEWUTS:
        if spec.hostname:
            sethostname(spec.hostname)
        if spec.domainname:
            setdomainname(spec.domainname)


def set_oom_score(spec):
    """A bundle's process.oomScoreAdj, through the host's /proc while it is in
    sight (lowering it needs CAP_SYS_RESOURCE, which root may lack)."""
    if spec.oom_score_adj is None:
        return
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(spec.oom_score_adj))
    except OSError as exc:
        raise ContainerError.from_os(f"process.oomScoreAdj {spec.oom_score_adj}", exc) from None


def join_keyring(spec):
    """A session keyring of the container's own (OCI, unless --no-new-keyring)."""
    if spec.keyring:
        join_session_keyring(f"_ses.{spec.keyring}")


# The sysctls a container may set: those of its own namespaces (runc's list).
NAMESPACED_SYSCTLS = {CLONE_NEWIPC: ("kernel.msgmax", "kernel.msgmnb", "kernel.msgmni",
                                     "kernel.sem", "kernel.shmall", "kernel.shmmax",
                                     "kernel.shmmni", "kernel.shm_rmid_forced", "fs.mqueue."),
                      CLONE_NEWNET: ("net.",), CLONE_NEWUTS: ("kernel.hostname",
                                                              "kernel.domainname")}


def sysctl_namespace(key):
    """The namespace flag a sysctl belongs to, or None for the host's own."""
    return next((f for f, names in NAMESPACED_SYSCTLS.items()
                 if any(key == n or (n.endswith(".") and key.startswith(n)) for n in names)), None)


def write_sysctls(spec):
    """A bundle's linux.sysctl, each in a namespace of the container's (made or
    joined; a sysctl of the host's is refused), through a proc of its own, detached."""
    if not spec.sysctl:
        return
    proc = new_mount("proc", (), MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC)
    try:
        for key, value in spec.sysctl.items():
            flag = sysctl_namespace(key)
            # made, or joined by path (a joined one was checked at create not
            # to be the host's: refuse_host_namespace_sysctls)
            if flag is None or not (spec.namespaces | sum(spec.ns_paths)) & flag \
                    or "/" in key or ".." in key:
                raise ContainerError(f"linux.sysctl {key}", "not in a namespace of the"
                                     " container's own: it would change the host")
            write_at(proc, "sys/" + key.replace(".", "/"), value, f"linux.sysctl {key}={value}",
                     os.O_NOFOLLOW)
    finally:
        os.close(proc)


def bring_up_loopback(spec):
    """A new network namespace has only lo, and down: bring it up."""
    if spec.namespaces & CLONE_NEWNET:
        set_link_up("lo")


def prepare_seccomp(spec):
    """Build the seccomp filter now, while libseccomp is in sight; it is loaded last."""
    return SeccompFilter(spec.seccomp, spec.no_new_privs) if spec.seccomp is not None else None


def wait_for_go(spec, handles):
    """Wait for the supervisor's word: it configures --network bridge from
    outside, or runs a bundle's createRuntime hooks; the word carries the
    state a bundle's own hooks are given (with PID 1's host pid in it)."""
    if handles.go_fd is None:
        return
    word = b""
    while not word.endswith(b"\n") and (data := os.read(handles.go_fd, 65536)):
        word += data
    os.close(handles.go_fd)
    handles.go_fd = None
    if not word.startswith(b"g"):
        raise ContainerError("set-up", "the supervisor could not finish its part")
    spec.state = word[1:].strip()


def throwaway_root(spec):
    """--rm: an overlay of the root whose upper layer lives on a tmpfs mounted
    in this private mount namespace only; it vanishes with the namespace, and
    the root itself is never written. Returns the root to enter."""
    if not spec.rm:
        return spec.root
    scratch = next((d for d in SCRATCH_DIRS if os.path.isdir(d) and not os.path.islink(d)
                    and d != spec.root and not spec.root.startswith(d + "/")), None)
    if scratch is None:
        raise ContainerError("--rm", "found no directory for the throw-away layer's tmpfs")
    mount("tmpfs", scratch, "tmpfs", MS_NOSUID | MS_NODEV, "mode=700")
    st = os.stat(spec.root)
    for name in ("upper", "work", "merged"):
        os.mkdir(f"{scratch}/{name}", 0o755)
    os.chmod(f"{scratch}/upper", st.st_mode & 0o7777)
    os.chown(f"{scratch}/upper", st.st_uid, st.st_gid)
    lower = spec.root.replace("\\", "\\\\").replace(",", "\\,").replace(":", "\\:")
    mount("overlay", f"{scratch}/merged", "overlay", 0,
          f"lowerdir={lower},upperdir={scratch}/upper,workdir={scratch}/work")
    return f"{scratch}/merged"


def bind_root(root):
    """Bind the root onto itself, nosuid and nodev: pivot_root needs a mount point,
    and no setuid file or device node planted in the root may take effect.
    A bind mount does not inherit read-only or noexec from the mount it
    copies: they are carried over, so a root the user mounted read-only stays so."""
    kept = os.statvfs(root).f_flag & (os.ST_RDONLY | os.ST_NOEXEC)
    mount(root, root, None, MS_BIND | MS_REC)
    mount(root, root, None, MS_BIND | MS_REMOUNT | MS_NOSUID | MS_NODEV
          | (MS_RDONLY if kept & os.ST_RDONLY else 0) | (MS_NOEXEC if kept & os.ST_NOEXEC else 0))


def open_root_fd(root, handles):
    """The root (bound onto itself), by descriptor: every mount target, the
    working directory, the command and its interpreters are resolved from
    it, with it as "/", before pivot_root and after."""
    handles.root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)


def forbid_imports():
    """From here on no Python module may be loaded: the file system is about to
    be the container's, and a module it planted (json.py on the interpreter's
    path) would run as minicontainer, with every capability. What the set-up
    needs is imported before; a missed import fails instead of loading."""
    sys.meta_path[:] = [finder for finder in sys.meta_path
                        if getattr(finder, "__name__", "") in ("BuiltinImporter", "FrozenImporter")]
    sys.path_importer_cache.clear()


def enter_root(spec, root):
    """pivot_root into the root and detach the host's tree.

    Unlike chroot, nothing of the host stays reachable: not by "..", not by a
    second chroot, not in mountinfo. Falls back to chroot only where the host
    root cannot be pivoted (an initramfs root), and says so.
    """
    os.chdir(root)
    if spec.no_pivot:  # runc's --no-pivot: for a ramfs root, where pivot_root cannot be
        mount(".", "/", None, MS_MOVE)
        os.chroot(".")
        os.chdir("/")
        return
    try:
        pivot_root(".", ".")  # the old root is stacked on "." ...
    except ContainerError as exc:
        if exc.errno != 22:  # EINVAL: / is rootfs, which cannot be pivoted
            raise
        print("minicontainer: warning: pivot_root is not possible on this host"
              " (initramfs root); using chroot, which is weaker", file=sys.stderr)
        os.chroot(".")
    else:
        umount2(".", MNT_DETACH)  # ... and detached from it here
    os.chdir("/")


def open_target(handles, path, directory):
    """A mount target inside the root, as an O_PATH descriptor: the directory or
    file at `path`, made (with any missing parents) if missing. Every step is
    resolved inside the root, never through a magic link, and made there."""
    import stat
    parent, name = os.path.split(path)
    parent_fd = open_dir_in_root(handles.root_fd, parent, create=True)
    try:
        try:
            if directory:
                os.mkdir(name, 0o755, dir_fd=parent_fd)
            else:
                os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                                 | os.O_CLOEXEC, 0o644, dir_fd=parent_fd))
        except FileExistsError:
            pass
        except OSError as exc:
            why = exc.strerror
            if exc.errno == 30:  # EROFS
                why = f"the root is read-only and has no {path} (make it in the root)"
            raise ContainerError(f"create {path} in the root", why, exc.errno) from None
    finally:
        os.close(parent_fd)
    fd = openat2(handles.root_fd, path, os.O_PATH, IN_ROOT)
    if directory != stat.S_ISDIR(os.fstat(fd).st_mode):
        os.close(fd)
        raise ContainerError(f"mount on {path}", "it is a directory in the root; this mount"
                             " needs a file" if not directory else "it is a file in the root;"
                             " this mount needs a directory")
    return fd


def attach(tree_fd, target_fd, target):
    """Attach a detached mount onto a target descriptor; both are closed."""
    try:
        attach_mount(tree_fd, target_fd, target)
    finally:
        os.close(tree_fd)
        os.close(target_fd)


def parse_mount_options(options):
    """OCI mount options, as mount(8) spells them, sorted into what each part of
    the new mount API takes. Unknown words are the file system's own data
    (mode=755, size=64k, newinstance), passed to it as they are."""
    parsed = {"bind": False, "rbind": False, "set": 0, "clear": 0, "rset": 0, "rclear": 0,
              "propagation": None, "sb": [], "data": []}
    for option in options or ():
        name, sep, value = option.partition("=")
        recursive = name.startswith("r") and name[1:] in MOUNT_ATTR_OPTIONS
        if option in ("bind", "rbind"):
            parsed[option] = True
        elif name in MOUNT_ATTR_OPTIONS or recursive:
            set_, clear = MOUNT_ATTR_OPTIONS[name[1:] if recursive else name]
            key = "r" if recursive else ""
            parsed[key + "set"] = (parsed[key + "set"] & ~clear) | set_
            parsed[key + "clear"] = (parsed[key + "clear"] & ~set_) | clear
        elif name in MOUNT_PROPAGATION:
            parsed["propagation"] = (MOUNT_PROPAGATION[name], name.startswith("r"))
        elif name in SUPERBLOCK_FLAGS:
            parsed["sb"].append((name, None))
        elif name in ("defaults", "auto", "noauto", "_netdev") or name.startswith("x-"):
            pass
        elif name == "context" or name.endswith("context"):  # SELinux: off on this host
            if selinux_enabled():
                parsed["data"].append((name, value))
        else:
            parsed["data"].append((name, value if sep else None))
    return parsed


def selinux_enabled():
    return os.path.exists("/sys/fs/selinux/enforce")


def mount_all(spec, handles):
    """Every mount of the container, in the order given: each made detached (a
    new file system, or a clone of a host path for a bind) and attached onto
    its target, made and resolved inside the root. A bind's source is the
    host's, resolved here, before pivot_root; nothing else is."""
    import stat
    for entry in spec.mounts:
        target = entry["destination"]
        kind, source = entry.get("type") or "", entry.get("source") or ""
        options = parse_mount_options(entry.get("options"))
        try:
            if kind == "cgroup":
                mount_cgroups(handles, target, options)
                continue
            if kind == "bind" or options["bind"] or options["rbind"]:
                tree = clone_tree(source, recursive=options["rbind"])
                directory = stat.S_ISDIR(os.fstat(tree).st_mode)
                if options["set"] or options["clear"]:
                    set_mount_attrs(tree, options["set"], clear=options["clear"])
            else:
                tree = new_mount(kind, options["sb"] + options["data"], options["set"],
                                 source=source or kind)
                directory = True
            try:
                if options["rset"] or options["rclear"]:
                    set_mount_attrs(tree, options["rset"], clear=options["rclear"], recursive=True)
                target_fd = open_target(handles, target, directory)
                try:
                    attach_mount(tree, target_fd, target)
                finally:
                    os.close(target_fd)
                if options["propagation"]:
                    flag, recursive = options["propagation"]
                    set_mount_attrs(tree, 0, propagation=flag, recursive=recursive)
            finally:
                os.close(tree)
        except ContainerError as exc:
            if entry.get("why"):  # the run option that asked for it
                raise exc.within(entry["why"]) from None
            raise


def mount_cgroups(handles, target, options):
    """A `cgroup` mount: a tmpfs at the target (/sys/fs/cgroup), and in it each
    hierarchy of the host's, as the container's own group of it (runc's way):
    a clone of the group's directory, read-only unless asked otherwise."""
    tmpfs = new_mount("tmpfs", (("mode", "755"),), MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV
                      | MOUNT_ATTR_NOEXEC, source="cgroup")
    try:
        target_fd = open_target(handles, target, True)
        try:
            attach_mount(tmpfs, target_fd, target)
        finally:
            os.close(target_fd)
    finally:
        os.close(tmpfs)
    for name, directory in handles.cgroup_views:
        tree = clone_tree(directory, recursive=True)
        try:
            set_mount_attrs(tree, options["set"] | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV
                            | MOUNT_ATTR_NOEXEC, clear=options["clear"], recursive=True)
            attach(tree, open_target(handles, f"{target}/{name}", True), f"{target}/{name}")
        except BaseException:
            os.close(tree)
            raise
    for name, link in handles.cgroup_links:  # cpu -> cpu,cpuacct
        target_fd = open_target(handles, target, True)
        try:
            os.symlink(link, name, dir_fd=target_fd)
        except FileExistsError:
            pass
        finally:
            os.close(target_fd)
    if options["set"] & MOUNT_ATTR_RDONLY:  # the tmpfs itself read-only, once filled
        target_fd = open_target(handles, target, True)
        try:
            set_mount_attrs(target_fd, MOUNT_ATTR_RDONLY)
        finally:
            os.close(target_fd)


def make_devices(spec, handles):
    """/dev's nodes: the harmless default ones (null, zero, full, random,
    urandom, tty) and a bundle's linux.devices, with the usual links (fd,
    stdin, stdout, stderr, ptmx). Made in the container's /dev, by descriptor."""
    import stat
    try:
        dev = openat2(handles.root_fd, "/dev", os.O_PATH | os.O_DIRECTORY, IN_ROOT | RESOLVE_NO_SYMLINKS)
    except ContainerError as exc:
        raise exc.within("make /dev's devices") from None
    try:
        nodes = [(name, stat.S_IFCHR, major, minor, 0o666, 0, 0) for name, major, minor in DEVICES]
        for device in spec.devices or ():
            kind = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}
            nodes.append((device["path"].removeprefix("/dev/"), kind[device["type"]],
                          device.get("major", 0), device.get("minor", 0),
                          device.get("fileMode", 0o666) & 0o777, device.get("uid", 0),
                          device.get("gid", 0)))
        for name, kind, major, minor, mode, uid, gid in nodes:
            parent, _, base = name.rpartition("/")
            where = open_dir_in_root(dev, parent, create=True) if parent else os.dup(dev)
            try:
                try:
                    os.unlink(base, dir_fd=where)  # a bundle's device replaces a default one
                except FileNotFoundError:
                    pass
                try:
                    os.mknod(base, kind | mode, os.makedev(major, minor), dir_fd=where)
                except PermissionError:
                    if not spec.namespaces & CLONE_NEWUSER:
                        raise
                    bind_host_device(name, base, where)  # no mknod in a user namespace
                    continue
                os.chmod(base, mode, dir_fd=where, follow_symlinks=False)  # not the umask's
                if (uid, gid) != (0, 0):
                    os.chown(base, uid, gid, dir_fd=where, follow_symlinks=False)
            except OSError as exc:
                raise ContainerError.from_os(f"make /dev/{name}", exc) from None
            finally:
                os.close(where)
        for name, target in DEV_LINKS:
            try:
                os.symlink(target, name, dir_fd=dev)
            except FileExistsError:
                pass
    finally:
        os.close(dev)


def bind_host_device(name, base, where):
    """The host's /dev/NAME bound onto an empty file (runc's way inside a user
    namespace, where no device node may be made). Before pivot_root: the
    host's /dev is in sight."""
    os.close(os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600,
                     dir_fd=where))
    tree = clone_tree(f"/dev/{name}")
    attach(tree, os.open(base, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=where), f"/dev/{name}")


def protect_paths(spec, handles):
    """readonlyPaths become read-only (a recursive read-only bind of each onto
    itself); maskedPaths are hidden (/dev/null over a file, an empty read-only
    tmpfs over a directory). Each resolved inside the root, by descriptor;
    paths this kernel or root lacks are skipped."""
    import stat
    sealed = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC
    for path in spec.readonly_paths or ():
        target = open_existing(handles, path)
        if target is None:
            continue
        tree = clone_tree("", target, recursive=True, follow=False)
        set_mount_attrs(tree, sealed, recursive=True)
        attach(tree, target, path)
    null = None
    try:
        for path in spec.masked_paths or ():
            target = open_existing(handles, path)
            if target is None:
                continue
            if stat.S_ISDIR(os.fstat(target).st_mode):
                tree = new_mount("tmpfs", (("size", "0"),), sealed)
            else:
                if null is None:
                    null = open_null(handles)
                tree = clone_tree("", null, follow=False)
            attach(tree, target, path)
    finally:
        if null is not None:
            os.close(null)


def open_existing(handles, path):
    """An O_PATH descriptor of `path` inside the root, or None if it is missing."""
    try:
        return openat2(handles.root_fd, path, os.O_PATH, IN_ROOT)
    except ContainerError as exc:
        if exc.errno in (2, 20):  # ENOENT, ENOTDIR
            return None
        raise exc.within(f"mask {path}") from None


def open_null(handles):
    """The container's /dev/null, checked to be the null device (the mask's source)."""
    import stat
    fd = openat2(handles.root_fd, "/dev/null", os.O_PATH, IN_ROOT | RESOLVE_NO_SYMLINKS)
    st = os.fstat(fd)
    if not stat.S_ISCHR(st.st_mode) or st.st_rdev != os.makedev(1, 3):
        os.close(fd)
        raise ContainerError("mask a file", "the container's /dev/null is not the null device")
    return fd


def write_etc_files(spec, handles):
    """/etc/hosts, /etc/hostname, /etc/resolv.conf of this run: written on the
    container's /dev tmpfs and bound read-only over the root's files, which
    stay as they are (an empty file is made as the mount point if missing)."""
    if not spec.etc_files:
        return
    dev = openat2(handles.root_fd, "/dev", os.O_PATH | os.O_DIRECTORY, IN_ROOT | RESOLVE_NO_SYMLINKS)
    try:
        os.mkdir(".minicontainer", 0o755, dir_fd=dev)
        for name, text in spec.etc_files:
            fd = os.open(f".minicontainer/{name}", os.O_WRONLY | os.O_CREAT | os.O_EXCL
                         | os.O_CLOEXEC, 0o644, dir_fd=dev)
            with open(fd, "w") as f:
                f.write(text)
            tree = clone_tree(f".minicontainer/{name}", dev)
            set_mount_attrs(tree, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV)
            try:
                attach(tree, open_target(handles, f"/etc/{name}", False), f"/etc/{name}")
            except ContainerError as exc:
                raise exc.within(f"/etc/{name} for --network") from None
    finally:
        os.close(dev)


def enter_workdir(spec, handles, create=True):
    """-w: made if missing (as docker run does; exec's must exist) and entered
    through a descriptor resolved inside the root; then checked to be inside
    the root, which a working directory reached through a leaked descriptor
    would not be (getcwd() says "(unreachable)", and fails)."""
    try:
        fd = open_dir_in_root(handles.root_fd, spec.workdir, create=create)
    except ContainerError as exc:
        raise exc.within(f"--workdir {spec.workdir}") from None
    try:
        os.fchdir(fd)
    finally:
        os.close(fd)
    try:
        here = os.getcwd()
    except OSError:
        here = None
    if here is None or not here.startswith("/"):
        raise ContainerError(f"--workdir {spec.workdir}", "it is not inside the container's root")


def create_container_hooks(spec):
    """A bundle's createContainer hooks: in the container's namespaces, before
    pivot_root, so their paths are the host's."""
    run_hooks(spec.hooks, "createContainer", spec.state)


def set_root_propagation(spec, handles):
    """A bundle's linux.rootfsPropagation, for the root's mount (and, with an r-,
    those below it); private is where run leaves it."""
    if spec.propagation:
        flag, recursive = MOUNT_PROPAGATION[spec.propagation], spec.propagation.startswith("r")
        set_mount_attrs(handles.root_fd, 0, propagation=flag, recursive=recursive)


def seal_root(spec, handles):
    """--read-only (root.readonly): the root's own mount becomes read-only;
    what is mounted on it keeps its own."""
    if spec.read_only:
        set_mount_attrs(handles.root_fd, MOUNT_ATTR_RDONLY)


def close_other_fds(spec):
    """Only 0, 1, 2 and the --preserve-fds ones reach the command.

    They are marked close-on-exec rather than closed: the report socket must
    stay open until the exec itself succeeds.
    """
    keep = 3 + spec.preserve_fds
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd >= 3:
            try:
                os.set_inheritable(fd, fd < keep)
            except OSError:  # the listing's own descriptor, already closed
                pass


def container_env(spec):
    """The command's environment: the spec's, whole (run's defaults are in it)."""
    return dict(spec.env)


def restore_signals():
    """Every signal back to its default action, none blocked: dispositions and
    the mask survive exec, and minicontainer's caller may have set SIG_IGN
    (a shell's background job ignores SIGINT and SIGQUIT), Python SIGPIPE's
    and SIGXFSZ's, and the supervisor blocked its own set."""
    for sig in signal.valid_signals():
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            try:
                signal.signal(sig, signal.SIG_DFL)
            except (OSError, ValueError):  # glibc's own real-time signals
                pass
    signal.pthread_sigmask(signal.SIG_SETMASK, ())


def resolve_command(command, workdir):
    """Where exec looks for `command` inside the container.

    A bare name is searched in PATH. A relative path like ./app is looked up
    in the working directory, then in /bin where deploy puts programs, so
    deploy-then-run works from any directory.
    """
    if "/" not in command or command.startswith("/"):
        return command
    here = os.path.join(workdir, command)
    if os.path.lexists(here):
        return here
    deployed = os.path.join(DEPLOY_DIR, command)
    return deployed if os.path.lexists(deployed) else here


def read_head(handles, path, size=256):
    """The first bytes of a file of the container's, or None if it is not a
    regular file there (a FIFO planted as a script must not hang PID 1)."""
    import stat
    try:
        fd = openat2(handles.root_fd, path, os.O_RDONLY | os.O_NONBLOCK, IN_ROOT)
    except ContainerError:
        return None
    try:
        return os.read(fd, size) if stat.S_ISREG(os.fstat(fd).st_mode) else None
    except OSError:
        return None
    finally:
        os.close(fd)


def shebang(head):
    """The interpreter a script names on its #! line, or None."""
    if not head or not head.startswith(b"#!"):
        return None
    return os.fsdecode(head[2:].split(b"\n")[0].strip().split(b" ")[0]) or None


def check_command(command, path, spec, env, handles):
    """Refuse a command that leads out of the container before exec follows it.

    The kernel follows /proc's magic links in a command's path and in a
    script's #! line: /proc/self/exe is minicontainer's own interpreter, the
    host's Python (runc's CVE-2019-5736), and /proc/self/fd/N whatever N
    is open on. Each candidate and its chain of interpreters (the kernel
    follows four) is resolved inside the root without magic links, and
    compared with this process's own executable.
    """
    own = os.stat("/proc/self/exe")
    search = [path] if "/" in path else [os.path.join(d, path) for d in env["PATH"].split(":") if d]
    for candidate in search:
        for _ in range(5):
            candidate = os.path.join(spec.workdir, candidate)  # relative: from the working dir
            try:
                st = os.stat(candidate)
            except OSError:
                break
            if (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino):
                raise ContainerError(f"exec {command}", "it leads to the host's Python interpreter"
                                     " (a /proc/self/exe trick); refused", code=EXIT_CANNOT_RUN)
            try:
                os.close(openat2(handles.root_fd, candidate, os.O_PATH, IN_ROOT))
            except ContainerError as exc:
                if exc.errno == 40:  # ELOOP: a magic link, or a loop
                    raise ContainerError(f"exec {command}", f"{candidate} leads through a /proc"
                                         " magic link (or a symlink loop); refused",
                                         code=EXIT_CANNOT_RUN) from None
                break
            candidate = shebang(read_head(handles, candidate))
            if candidate is None:
                break


def attach_terminal(spec, handles):
    """-t: a pseudo-terminal from the container's own devpts. The master goes to
    the supervisor (SCM_RIGHTS), the slave becomes this process's controlling
    terminal and stdio, so job control and ^C work inside."""
    if handles.tty_sock is None:
        return
    import socket
    if os.getsid(0) != os.getpid():  # under --init the command leads a session of its own
        os.setsid()
    master, slave = os.openpty()
    if spec.winsize:
        set_window_size(slave, spec.winsize)
    socket.send_fds(handles.tty_sock, [os.ttyname(slave).encode()], [master])
    os.close(master)
    handles.tty_sock.close()
    take_controlling_terminal(slave)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    if slave > 2:
        os.close(slave)


def close_stdio(spec):
    """Close again what minicontainer's caller had closed: the command gets
    stdio as it was given (minicontainer held /dev/null there meanwhile, so
    no descriptor of its own took the number)."""
    if not spec.tty:
        for fd in spec.closed_stdio:
            os.close(fd)


def find_command(spec, env, handles):
    """The command's path inside the container, checked before exec follows it:
    it leads nowhere out, and it is there, a file, executable (so a created
    container fails at `create`, as runc's does, not at `start`)."""
    command = spec.command[0]
    path = resolve_command(command, spec.workdir)
    check_command(command, path, spec, env, handles)
    candidates = [path] if "/" in path else [os.path.join(d, path) for d in env["PATH"].split(":") if d]
    found = next((c for c in candidates if os.path.exists(c)), None)
    if found is None:
        raise ContainerError(f"exec {command}", "not found in the container (no such file or"
                             " directory)", code=EXIT_NOT_FOUND)
    if "/" in path and os.path.isdir(found):
        raise ContainerError(f"exec {command}", "is a directory", code=EXIT_CANNOT_RUN)
    if "/" in path and not os.access(found, os.X_OK):
        raise ContainerError(f"exec {command}", "not executable (no x permission; permission"
                             " denied)", code=EXIT_CANNOT_RUN)
    return path


def exec_command(spec, path, env, handles):
    """Replace this process with the command; on failure say why, docker-style."""
    try:
        os.execvpe(path, spec.command, env)
    except OSError as exc:
        raise exec_error(spec.command[0], path, env["PATH"], exc, spec, handles) from None


def exec_error(command, path, search_path, exc, spec, handles):
    """Turn a failed exec into 127 (not found) or 126 (found but cannot run).

    Why an ELF file would not run (a missing interpreter, another machine's
    code) takes the ELF library, which is on the host, out of sight: the
    file goes to the supervisor, opened here, to be read there.
    """
    import errno
    what = f"exec {command}"
    candidates = [path] if "/" in path else [os.path.join(d, path) for d in search_path.split(":")]
    found = next((c for c in candidates if os.path.exists(c)), None)
    if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG) and found is None:
        return ContainerError(what, "not found in the container (no such file or directory)",
                              code=EXIT_NOT_FOUND)
    if found and os.path.isdir(found):
        return ContainerError(what, "is a directory", code=EXIT_CANNOT_RUN)
    if exc.errno == errno.EACCES and not os.access(found, os.X_OK):
        return ContainerError(what, "not executable (no x permission; permission denied)",
                              code=EXIT_CANNOT_RUN)
    if exc.errno in (errno.ENOENT, errno.ENOEXEC):
        found = os.path.join(spec.workdir, found)
        head = read_head(handles, found, 4)
        interp = shebang(read_head(handles, found))
        if interp:
            return ContainerError(what, f"its interpreter {interp} is missing in the container",
                                  code=EXIT_CANNOT_RUN)
        if head == b"\x7fELF":
            error = ContainerError(what, code=EXIT_CANNOT_RUN)
            error.elf = (openat2(handles.root_fd, found, os.O_RDONLY | os.O_NONBLOCK, IN_ROOT),
                         exc.errno)
            return error
        if exc.errno == errno.ENOENT:
            return ContainerError(what, "a file it needs is missing in the container",
                                  code=EXIT_CANNOT_RUN)
        return ContainerError(what, "exec format error: not a program this machine can run",
                              code=EXIT_CANNOT_RUN)
    return ContainerError(what, exc.strerror, exc.errno, code=EXIT_CANNOT_RUN)


def limit_capabilities(spec):
    """Bounding set to spec.caps; switch user; effective, permitted, inheritable to match.

    The bounding set is cleared by number up to the kernel's last capability,
    since python-prctl's table may stop short of it; after exec, a root
    command's permitted and effective sets are recomputed from it. Effective,
    permitted and inheritable are lowered in one capset call, so effective
    never stands above permitted (capset refuses that, as when permitted is
    lowered first); inheritable goes empty, and the ambient set with it (it
    must stay inside inheritable). One set_caps call: Capset.limit() costs
    0.6 ms a set, re-parsing its list once per capability.
    """
    limit_bounding_set(spec.caps)
    if spec.cap_sets is not None:  # a bundle's process.capabilities, set by set
        return set_capability_sets(spec)
    if spec.user:
        switch_user(*spec.user[:2], spec.additional_gids, spec.groups_locked)
    lower_capability_sets(spec.caps)


def set_capability_sets(spec):
    """A bundle's five sets as runc sets them: the user is switched with the
    capabilities kept (PR_SET_KEEPCAPS), then effective, permitted and
    inheritable are set, then the ambient ones are raised.

    The kernel raises an ambient capability only when it is both permitted
    and inheritable; runc raises each one and ignores the refusal (its
    capability library drops the error), so a bundle that lists ambient
    capabilities without inheritable ones, as `runc spec`'s own does, runs
    with an empty ambient set. The same here: the ones the kernel would
    refuse are left out, the rest raised (and a refusal of those is an
    error)."""
    import prctl
    sets = spec.cap_sets
    if spec.user:
        prctl.set_keepcaps(True)
        switch_user(*spec.user[:2], spec.additional_gids, spec.groups_locked)
        prctl.set_keepcaps(False)
    every = list(prctl.ALL_CAPS)
    changes = []
    for flag, name in ((prctl.CAP_PERMITTED, "permitted"), (prctl.CAP_EFFECTIVE, "effective"),
                       (prctl.CAP_INHERITABLE, "inheritable")):
        keep = sets.get(name, ())
        changes += [([c for c in every if c not in keep], flag, False),
                    ([c for c in every if c in keep], flag, True)]
    prctl.set_caps(*changes)
    raisable = set(sets.get("permitted", ())) & set(sets.get("inheritable", ()))
    for cap in sorted(set(sets.get("ambient", ())) & raisable):
        raise_ambient(cap)


def limit_bounding_set(keep):
    """Drop every capability but `keep` from the bounding set, by number."""
    import prctl
    with open("/proc/sys/kernel/cap_last_cap") as f:
        last = int(f.read())
    for cap in range(last + 1):
        if cap not in keep:
            prctl.capbset_drop(cap)


def lower_capability_sets(keep):
    """Effective and permitted down to `keep`, inheritable (and so ambient) empty."""
    import prctl
    drop = [cap for cap in prctl.ALL_CAPS if cap not in keep]
    prctl.set_caps((drop, prctl.CAP_EFFECTIVE, False), (drop, prctl.CAP_PERMITTED, False),
                   (list(prctl.ALL_CAPS), prctl.CAP_INHERITABLE, False))


def switch_user(uid, gid, groups=(), groups_locked=False):
    """Become uid:gid with only the given supplementary groups (none for run;
    in a user namespace whose setgroups is denied, the caller's stay); leaving
    uid 0 clears the capabilities, unless they are kept."""
    if not groups_locked:
        os.setgroups(list(groups))
    os.setgid(gid)
    os.setuid(uid)


def forbid_new_privileges():
    """no_new_privs: setuid files and file capabilities grant nothing from here on."""
    import prctl
    prctl.set_no_new_privs(True)


def set_rlimits(spec):
    """The --ulimit values and the default RLIMIT_NOFILE, or a bundle's rlimits:
    only lowering (a higher hard limit was raised by the holder, while it still
    could), checked by the CLI or `create`. Set last, so that no limit
    (nofile=0) can fail the set-up itself."""
    import resource
    for number, soft, hard in spec.limits.rlimits:
        resource.setrlimit(number, (rlimit_arg(soft), rlimit_arg(hard)))


def load_seccomp(handles):
    """Install the filter built before pivot_root (none with --seccomp unconfined)."""
    if handles.seccomp:
        handles.seccomp.load()


def start_command(spec, env, handles):
    """The last steps, in order: signal state, terminal, privileges, seccomp,
    the command found and checked, (a created container: its start), rlimits,
    umask, personality, stdio as given, exec."""
    restore_signals()
    attach_terminal(spec, handles)
    if not spec.no_new_privs:  # without no_new_privs, loading needs CAP_SYS_ADMIN: first
        load_seccomp(handles)
    limit_capabilities(spec)
    if spec.no_new_privs:
        forbid_new_privileges()
        load_seccomp(handles)
    path = find_command(spec, env, handles)
    wait_for_start(spec, handles)
    set_rlimits(spec)
    set_process_details(spec)
    close_stdio(spec)
    exec_command(spec, path, env, handles)


def set_process_details(spec):
    """A bundle's umask and personality (run leaves them as they are)."""
    if spec.umask is not None:
        os.umask(spec.umask)
    if spec.personality is not None:
        set_personality(spec.personality)


def wait_for_start(spec, handles):
    """A created container (OCI `create`) stops here, all set up: it tells `create`
    it is ready, then waits for `start` to write a byte into its exec FIFO,
    then runs the startContainer hooks. A signal that would end it meanwhile
    does (it is PID 1, which the kernel spares signals it has no handler for)."""
    if not spec.oci:
        return
    import prctl
    prctl.set_pdeathsig(0)  # it outlives `create` from here on
    for sig in TERMINATING_SIGNALS:
        signal.signal(sig, lambda number, frame: os._exit(128 + number))
    signal.pthread_sigmask(signal.SIG_UNBLOCK, TERMINATING_SIGNALS)
    report(handles.report_fd, "ready")
    try:
        while not os.read(handles.exec_fifo, 1):
            pass
    except OSError as exc:
        raise ContainerError.from_os("wait for start", exc) from None
    os.close(handles.exec_fifo)
    restore_signals()
    run_hooks(spec.hooks, "startContainer", spec.state)


def run_hooks(hooks, kind, state, fail=True):
    """A bundle's hooks of one kind, in order, each with the container's state
    (JSON bytes) on its stdin and its own args and environment. A hook that
    fails or outlives its timeout fails the step; with fail=False (poststart,
    poststop: the spec's rule) it is only warned about, on stderr."""
    import time
    for hook in (hooks or {}).get(kind) or ():
        what = f"{kind} hook {hook.get('path')}"
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            # A hook: the runtime's (or, for createContainer and startContainer, the
            # container's) namespaces; ends in exec or os._exit.
            try:
                os.dup2(read_end, 0)
                os.closerange(3, MAX_FD)
                env = dict(item.partition("=")[::2] for item in hook.get("env") or ())
                os.execve(hook["path"], hook.get("args") or [hook["path"]], env)
            finally:
                os._exit(127)
        os.close(read_end)
        try:
            os.write(write_end, state)
        except OSError:  # it did not read its stdin: fine
            pass
        os.close(write_end)
        timeout = hook.get("timeout")
        deadline = time.monotonic() + timeout if timeout else None
        while not (status := os.waitpid(pid, os.WNOHANG))[0]:
            if deadline is not None and time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                status = None
                break
            time.sleep(0.002)
        why = (f"ran longer than its timeout ({timeout} s)" if status is None else
               f"exited with {exit_code(status[1])}" if exit_code(status[1]) else None)
        if why and fail:
            raise ContainerError(what, why)
        if why:
            report(2, f"minicontainer: warning: {what}: {why}")


def run_init(spec, env, handles):
    """--init: stay as PID 1, a small trusted init; the command runs as PID 2.

    The init reaps every orphan, forwards signals to the command and exits
    with its status. It is non-dumpable, so the container cannot open its
    /proc/1/exe, fds or memory (the host's Python), and once the command is
    forked it keeps no privilege but CAP_KILL (to signal the command as any
    user), under no_new_privs and the container's seccomp filter.
    """
    import prctl
    prctl.set_dumpable(False)
    pid = os.fork()
    if pid == 0:
        # The command: PID 2 of the container, root, all set-up done; ends in exec.
        in_child(handles.report_fd, start_command, spec, env, handles)
    os.closerange(3, MAX_FD)  # the init needs no descriptor at all
    confine_init(handles)
    return init_loop(pid)


def confine_init(handles):
    """The init's privileges once the command is forked: CAP_KILL alone."""
    import prctl
    limit_bounding_set({prctl.CAP_KILL})
    lower_capability_sets({prctl.CAP_KILL})
    forbid_new_privileges()
    load_seccomp(handles)


def init_loop(command_pid):
    """Reap children, forward signals to the command; return its exit code."""
    while True:
        info = signal.sigwaitinfo(SUPERVISED_SIGNALS)
        if info.si_signo != signal.SIGCHLD:
            os.kill(command_pid, info.si_signo)
            continue
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                pid = 0
            if pid == 0:
                break
            if pid == command_pid:
                return exit_code(status)


def container_main(spec, holder_pid, handles):
    """PID 1 of the new namespaces, root, not yet in the root: the whole set-up
    of the container, in order, ending in exec (or in the init, with --init)."""
    die_with_parent(holder_pid)
    become_root_inside(spec)
    new_session()
    wait_for_go(spec, handles)
    enter_cgroups(spec, handles.groups)
    set_oom_score(spec)
    hide_process("minicontainer init")
    close_inherited_fds(spec, handles)
    own_mount_namespace()
    join_keyring(spec)
    handles.seccomp = prepare_seccomp(spec)
    set_hostname(spec)
    bring_up_loopback(spec)
    write_sysctls(spec)
    root = throwaway_root(spec)
    bind_root(root)
    open_root_fd(root, handles)
    mount_all(spec, handles)
    make_devices(spec, handles)
    write_etc_files(spec, handles)
    protect_paths(spec, handles)
    create_container_hooks(spec)
    seal_root(spec, handles)
    forbid_imports()
    enter_root(spec, root)
    set_root_propagation(spec, handles)
    enter_workdir(spec, handles)
    close_other_fds(spec)
    env = container_env(spec)
    if spec.init:
        return run_init(spec, env, handles)
    start_command(spec, env, handles)


def exec_way_in(spec, handles, pidfd, supervisor_pid, detached, rootless):
    """`exec`'s way into the container: a child of the supervisor in the host's
    PID namespace, which the container never sees. Hidden first (non-dumpable,
    the host's command line and environment wiped: hide_process), it joins
    the container's namespaces through PID 1's pidfd, all but its cgroup
    namespace (a user's: the user namespace first, which it owns, and which
    gives it the right to join the rest), and forks the process into the
    container's PID namespace. So that process is born inside everything,
    already out of the container's reach (runc's init joins the same way):
    the container never sees a process of the host's, in the host's mount or
    network namespace, that it could read or trace before its execve. This
    one tells the supervisor that process's pid (to pass signals to it),
    then passes its status on as its own; with -d it goes."""
    if not detached:
        die_with_parent(supervisor_pid)
    hide_process("minicontainer exec")
    handles.seccomp = prepare_seccomp(spec)
    # Our own pidfd: the process's parent-death check (its /proc shows no parent).
    way_in = os.pidfd_open(os.getpid())
    if not rootless:
        raise_rlimit_ceilings(spec)  # while it has the host's privilege
    forbid_imports()
    apart = enter_namespaces(spec, pidfd, in_user_namespace=rootless)
    process = os.fork()
    if process == 0:
        # The exec'd process: the container's PID namespace and (but its cgroup
        # namespace) all its others, root there; ends in exec.
        in_child(handles.report_fd, exec_main, spec, handles, pidfd, way_in, detached,
                 apart & CLONE_NEWCGROUP)
    report(handles.report_fd, f"pid {process}")
    os.close(handles.report_fd)
    if handles.tty_sock is not None:
        handles.tty_sock.close()
    if detached:
        return 0
    return exit_code(os.waitpid(process, 0)[1])


def exec_main(spec, handles, pidfd, way_in, detached, cgroup_apart):
    """A process joining a running container (exec), forked into it by
    exec_way_in: it joins the container's cgroups and then its cgroup
    namespace (the way in could not have: from inside it, the groups of the
    host it came from are out of sight), and from there takes the same steps
    as PID 1's command. Nothing of the host's (descriptors, working
    directory, environment) reaches the command."""
    if not detached:
        die_with_way_in(way_in)
    new_session()
    join_cgroups(handles.groups, os.getpid())
    if cgroup_apart:
        setns(pidfd, CLONE_NEWCGROUP)
    become_root_inside(spec)
    close_inherited_fds(spec, handles)
    handles.root_fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    enter_workdir(spec, handles, create=False)
    close_other_fds(spec)
    start_command(spec, container_env(spec), handles)


def die_with_way_in(way_in):
    """SIGKILL when the way in ends (it ends when the supervisor does); exit now
    if it already has. Its pidfd says so: inside the container's PID
    namespace, a parent outside it shows as pid 0."""
    import prctl
    import select
    prctl.set_pdeathsig(signal.SIGKILL)
    if select.select([way_in], [], [], 0)[0]:
        os._exit(EXIT_OWN_FAILURE)


def enter_namespaces(spec, pidfd, in_user_namespace=False):
    """Join every namespace of the container's PID 1 that is not this
    process's own (the host's), whether the container made it or joined it
    by path (a pod's network, IPC and UTS namespaces), at once through PID
    1's pidfd (Linux 5.8), but its cgroup namespace (see exec_main): its user
    namespace first, so the process is the container's root there and
    nothing more, then the rest; its PID namespace holds the children forked
    from here on. The mount namespace's join sets the root and the working
    directory to the container's. Returns the namespaces PID 1 is apart in."""
    apart = namespaces_apart(pidfd, spec)
    flags = CLONE_NEWPID | apart & ~CLONE_NEWCGROUP
    if in_user_namespace:  # a user's: the user namespace first, alone (its right to join the rest)
        setns(pidfd, CLONE_NEWUSER)
        flags &= ~CLONE_NEWUSER
    setns(pidfd, flags)
    return apart


# The namespaces exec enters, by their names in /proc/PID/ns.
EXEC_NAMESPACES = (("user", CLONE_NEWUSER), ("mnt", CLONE_NEWNS), ("uts", CLONE_NEWUTS),
                   ("ipc", CLONE_NEWIPC), ("net", CLONE_NEWNET), ("cgroup", CLONE_NEWCGROUP))


def namespaces_apart(pidfd, spec):
    """The flags of the namespaces in which the process behind `pidfd` is not
    where this one is, compared in /proc (device and inode of each ns link).
    Its pid is the pidfd's own, read before and after the comparison: a pid
    still held by the pidfd then was never another process's in between.
    Where /proc cannot tell, the spec's: what the container made or joined."""
    def pid_of():
        with open(f"/proc/self/fdinfo/{pidfd}") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("Pid:"))
    try:
        pid = pid_of()
        flags = 0
        for name, flag in EXEC_NAMESPACES:
            theirs, ours = os.stat(f"/proc/{pid}/ns/{name}"), os.stat(f"/proc/self/ns/{name}")
            if (theirs.st_dev, theirs.st_ino) != (ours.st_dev, ours.st_ino):
                flags |= flag
        if pid > 0 and pid_of() == pid:
            return flags
    except (OSError, StopIteration, ValueError):
        pass
    return (spec.namespaces | sum(spec.ns_paths)) & sum(flag for _, flag in EXEC_NAMESPACES)


# ---------------------------------------------------------------------------
# Supervision
# Process roles: the supervisor (minicontainer, on the host) forks the
# namespace holder, which unshares and forks the container's PID 1. The
# holder passes PID 1's status up; the supervisor forwards signals to PID 1.
# A socket carries the holder's "pid N" and any set-up error (with, for an
# ELF file that would not run, a descriptor of it); its children's ends close
# on exec, so end-of-file means the command is running.
# ---------------------------------------------------------------------------

def in_child(report_fd, fn, *args):
    """Run fn in a forked child that can only end in exec or os._exit.

    An exception never unwinds into the parent's code: it is sent up the
    report socket as one message and the child exits with its code.
    """
    code = EXIT_OWN_FAILURE
    try:
        code = fn(*args)
    except ContainerError as exc:
        code = exc.code
        elf = getattr(exc, "elf", None)
        if elf is not None:  # the supervisor says why this ELF file would not run
            report(report_fd, f"elf {code} {elf[1]} {exc.what}", fds=(elf[0],))
        else:
            report(report_fd, f"error {code} {exc}")
    except BaseException as exc:  # a bug: still one line, never a traceback
        report(report_fd, f"error {code} internal error: {exc!r}")
    finally:
        os._exit(code)


def report(fd, line, fds=()):
    """Send one line up the report socket (a message each), with descriptors if
    any; also used for a last word on stderr. When no one reads the socket
    any more (a created container, once `create` has gone), an error is said
    on stderr instead: the engine's."""
    data = line.replace("\n", " ").encode(errors="replace")[:4000] + b"\n"
    if fd != 2 and line.startswith("error "):
        data_for_stderr = b"minicontainer: " + data.split(b" ", 2)[2]
    else:
        data_for_stderr = None
    try:
        if fds:
            import _socket  # imported by the supervisor before the fork
            sock = _socket.socket(fileno=fd)
            try:
                sock.sendmsg([data], [(SOL_SOCKET, SCM_RIGHTS,
                                       b"".join(f.to_bytes(4, sys.byteorder) for f in fds))])
            finally:
                sock.detach()
        else:
            os.write(fd, data)
    except BrokenPipeError:
        if data_for_stderr is not None:
            try:
                os.write(2, data_for_stderr)
            except OSError:
                pass
    except OSError:
        pass


def exit_code(status):
    """A wait status as a shell would show it: the code, or 128+N for signal N."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def holder_main(spec, handles, supervisor_pid, status_fd):
    """Child of the supervisor, host PID namespace, root: unshare, fork PID 1, hold.

    PID 1 unshares the cgroup namespace itself, once it is in its groups.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, (HOLDER_PDEATH, HOLDER_RELEASE))
    die_with_parent(supervisor_pid, HOLDER_PDEATH)
    take_stdio(handles)
    host_ns = None
    if handles.network is not None:
        handles.network.close_listeners()  # the supervisor serves the published ports
    if handles.network is not None and handles.network.host_side:
        host_ns = tuple(os.open(f"/proc/self/ns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
                        for ns in ("net", "pid"))
    raise_rlimit_ceilings(spec)  # while the holder has the host's privilege
    enter_user_namespace(spec, handles)
    for flag, path in spec.ns_paths.items():  # a bundle's namespaces to join, by path
        if flag != CLONE_NEWCGROUP:  # joined by PID 1, once in its cgroups
            join_namespace(path, flag)
    unshare(spec.namespaces & ~(CLONE_NEWCGROUP | CLONE_NEWUSER))
    make_mounts_private()
    if CLONE_NEWPID in spec.ns_paths:
        # PID 1 is born in sight of the processes already in the namespace it
        # joins: hidden from its first moment. Alone in a new one, it hides
        # itself, after the steps that need it open to its supervisor (a
        # user's slirp4netns joins it) and its /proc its own (oom_score_adj).
        hide_process("minicontainer init")
    holder_pid = os.getpid()
    pid = os.fork()
    if pid == 0:
        # Container PID 1: new PID, mount, UTS, IPC, network namespaces; root.
        in_child(handles.report_fd, container_main, spec, holder_pid, handles)
    report(handles.report_fd, f"pid {pid}")
    os.close(handles.report_fd)
    if handles.tty_sock is not None:
        handles.tty_sock.close()
    code = hold(pid, handles, host_ns, release=spec.oci)
    if os.getppid() == supervisor_pid and not spec.oci:
        os.write(status_fd, bytes([code]))
        os.kill(supervisor_pid, HOLDER_DONE)
    return code


def hold(pid1, handles, host_ns, release=False):
    """Wait for PID 1. If the supervisor dies first, kill PID 1, and with it the
    whole PID namespace: this holds even if the command cleared its own
    parent-death signal, since the holder is out of the container's reach.
    Then remove the cgroups and the network the supervisor can no longer
    remove (back in the host's network namespace for that). A created
    container's holder (release) goes once `create` says PID 1 is ready: PID
    1 then belongs to the engine that called `create` (its child reaper)."""
    orphaned = False
    while True:
        info = signal.sigwaitinfo((signal.SIGCHLD, HOLDER_PDEATH, HOLDER_RELEASE))
        if info.si_signo == HOLDER_RELEASE and release:
            return 0
        if info.si_signo == HOLDER_PDEATH:
            orphaned = True
            os.kill(pid1, signal.SIGKILL)
        done, status = os.waitpid(pid1, os.WNOHANG)
        if done:
            if orphaned:
                clean_up_orphaned(handles, host_ns, exit_code(status))
            return exit_code(status)


def enter_user_namespace(spec, handles):
    """A user namespace first, so that the holder's other namespaces belong to
    it; the supervisor writes its id maps from outside, then says so."""
    if not spec.namespaces & CLONE_NEWUSER:
        return
    unshare(CLONE_NEWUSER)
    report(handles.report_fd, "userns")
    word = os.read(handles.map_fd, 1)
    os.close(handles.map_fd)
    handles.map_fd = None
    if word != b"m":
        raise ContainerError("user namespace", "the supervisor could not write its id maps")


def write_id_maps(pid, spec):
    """A user namespace's uid and gid maps, written for process `pid` from
    outside. root writes any maps itself; a user writes only its own ids, and
    only after denying setgroups there (the kernel's rule, groups_locked); its
    subordinate ranges take newuidmap and newgidmap, which check them against
    /etc/subuid and /etc/subgid."""
    if os.geteuid() != 0 and not spec.groups_locked:
        return run_id_mappers(pid, spec)
    try:
        if spec.groups_locked:
            with open(f"/proc/{pid}/setgroups", "w") as f:
                f.write("deny")
        for name, mapping in (("uid_map", spec.uid_map), ("gid_map", spec.gid_map)):
            with open(f"/proc/{pid}/{name}", "w") as f:
                f.write("".join(f"{inside} {outside} {count}\n" for inside, outside, count in mapping))
    except OSError as exc:
        raise ContainerError.from_os(f"write the user namespace's {name}", exc) from None


def run_id_mappers(pid, spec):
    """newuidmap and newgidmap (setuid root, from the uidmap package) write a
    user's subordinate ranges, once they have checked them."""
    import subprocess
    for tool, mapping in (("newuidmap", spec.uid_map), ("newgidmap", spec.gid_map)):
        argv = [tool, str(pid)] + [str(n) for line in mapping for n in line]
        try:
            done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        except OSError as exc:
            raise ContainerError.from_os(tool, exc) from None
        if done.returncode != 0:
            why = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
            raise ContainerError(f"{tool} {pid}", why)


class IdMaps:
    """The holder's wait for its user namespace's id maps: a pipe, whose word
    the supervisor writes once it has written the maps from outside."""

    def __init__(self, spec):
        self.spec, self.holder = spec, None
        self.read_fd = self.write_fd = None
        if spec.namespaces & CLONE_NEWUSER:
            self.read_fd, self.write_fd = os.pipe2(os.O_CLOEXEC)

    def holder_side(self):
        """In the holder: its end (or None), the supervisor's closed."""
        if self.write_fd is not None:
            os.close(self.write_fd)
        return self.read_fd

    def forked(self, holder):
        self.holder = holder
        if self.read_fd is not None:
            os.close(self.read_fd)
            self.read_fd = None

    def write(self):
        """The holder has made its user namespace: the maps, then the word."""
        try:
            write_id_maps(self.holder, self.spec)
            os.write(self.write_fd, b"m")
        finally:
            self.close()

    def close(self):
        for fd in (self.read_fd, self.write_fd):
            if fd is not None:
                os.close(fd)
        self.read_fd = self.write_fd = None


def subordinate_range(path, user, id):
    """The first range /etc/subuid or /etc/subgid grants a user (by name or
    number): (start, count), or None."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.strip().split(":")
        if len(fields) == 3 and fields[0] in (user, str(id)) and all(x.isdigit() for x in fields[1:]):
            if int(fields[2]) > 0:
                return int(fields[1]), int(fields[2])
    return None


def mapped(mapping, id):
    """Whether an id inside a user namespace has a host id under its map."""
    return any(inside <= id < inside + count for inside, _, count in mapping)


def take_stdio(handles):
    """-d: the container's stdin is /dev/null, its stdout and stderr the pipes
    to the monitor's log; the holder passes them on to PID 1."""
    if handles.stdio is None:
        return
    for fd, source in enumerate(handles.stdio):
        os.dup2(source, fd)
    for source in set(handles.stdio):
        os.close(source)
    handles.stdio = None


def clean_up_orphaned(handles, host_ns, code):
    """The supervisor is gone: remove its cgroups and network state here, write
    the end into the state entry, and say on stderr (still the user's, or the
    log) what could not be undone. The network work happens back in the
    host's network namespace, and with children in the host's PID namespace:
    the container's is dead, and forks into it fail."""
    try:
        remove_cgroups(handles.groups)
        if handles.network is not None and handles.network.host_side:
            setns(host_ns[0], CLONE_NEWNET)
            setns(host_ns[1], CLONE_NEWPID)
            handles.network.release()
    except Exception as exc:  # the supervisor would have printed it; no one else will
        report(2, f"minicontainer: warning: cleaning up after minicontainer was killed: {exc!r}")
    if handles.entry is not None:
        record_end(handles.entry, code, "its monitor was killed")


def read_reports(fd, on_pid=None, until=None, on_userns=None, on_quiet=None):
    """Read the report socket to its end: (PID 1's host pid, or None; error, or None).

    on_pid(pid) runs as soon as the pid arrives, while PID 1 is still being
    set up (it configures --network bridge); an error it raises is reported
    like a set-up error, and takes precedence over PID 1's own. With until,
    reading stops at that word (a created container's "ready"). on_quiet(pid)
    runs whenever the socket has been quiet for HELD_POLL seconds (exec: a
    process the container stopped before its execve must not hold it).
    """
    import _socket
    import select
    sock = _socket.socket(fileno=fd)
    pid = error = own_error = None
    reached = until is None
    try:
        while True:
            if on_quiet is not None and not select.select([sock], [], [], HELD_POLL)[0]:
                on_quiet(pid)
                continue
            data, ancillary, _, _ = sock.recvmsg(4096, 64)
            if not data:
                break
            fds = [int.from_bytes(blob[i:i + 4], sys.byteorder)
                   for level, kind, blob in ancillary if (level, kind) == (SOL_SOCKET, SCM_RIGHTS)
                   for i in range(0, len(blob) - 3, 4)]
            kind, _, rest = data.decode(errors="replace").strip().partition(" ")
            if kind == until and error is None and own_error is None:
                reached = True
                break
            if kind == "userns" and on_userns is not None:
                try:
                    on_userns()
                except ContainerError as exc:
                    own_error = exc
            if kind == "pid":
                pid = int(rest)
                if on_pid is not None:
                    try:
                        on_pid(pid)
                    except ContainerError as exc:
                        own_error = exc
            elif kind == "error" and error is None:
                code, _, message = rest.partition(" ")
                error = ContainerError(message, code=int(code))
            elif kind == "elf" and error is None and fds:
                code, err, message = rest.split(" ", 2)
                error = ContainerError(message, explain_elf(fds.pop(0), int(err)), code=int(code))
            for unused in fds:
                os.close(unused)
    finally:
        sock.close()
    if not reached and error is None and own_error is None:
        # The end before the word: PID 1 was killed during its set-up (by the
        # OOM killer under a memory limit too low for it, say), with no word.
        error = ContainerError("set-up", "the container's process was killed before it was"
                               " ready (a limit too low for its set-up, such as"
                               " linux.resources.memory.limit?)")
    return pid, own_error or error


def explain_elf(fd, err):
    """Why the container's ELF file would not run (err: exec's ENOENT or ENOEXEC).

    Read here, on the host, where the ELF library is, from the descriptor PID
    1 opened inside the root: a regular file only, and its headers only.
    """
    import stat
    fallback = ("its ELF interpreter or a file it needs is missing in the container" if err == 2
                else "exec format error: not a program this machine can run")
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return fallback
        from elftools.elf.elffile import ELFFile
        with open(fd, "rb", closefd=False) as f:
            elf = ELFFile(f)
            if err != 2:
                return (f"exec format error: built for {elf.get_machine_arch()},"
                        f" this machine is {os.uname().machine}")
            for segment in elf.iter_segments():
                if segment["p_type"] == "PT_INTERP" and segment["p_filesz"] <= PATH_MAX:
                    return (f"its ELF interpreter {segment.get_interp_name()} is missing in the"
                            " container (deploy it, or build the program statically)")
    except Exception:  # a damaged file: say less
        pass
    finally:
        os.close(fd)
    return fallback


def signal_disposition(pid, sig):
    """'caught', 'ignored' or 'default': how process `pid` treats `sig` now.

    A blocked signal counts as caught: it stays pending for the process. So
    does one it waits for in sigwaitinfo, which the kernel unblocks (and so
    hides from SigBlk) while the process sleeps there.
    """
    masks = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("SigBlk:", "SigIgn:", "SigCgt:")):
                    masks[line[:6]] = int(line.split()[1], 16)
    except OSError:
        return "default"
    bit = 1 << (sig - 1)
    if (masks.get("SigCgt", 0) | masks.get("SigBlk", 0)) & bit:
        return "caught"
    if masks.get("SigIgn", 0) & bit:
        return "ignored"
    try:
        with open(f"/proc/{pid}/wchan") as f:
            return "caught" if "sigtimedwait" in f.read() else "default"
    except OSError:
        return "default"


def open_pid(pid):
    """A pidfd for the container's PID 1, so no signal can hit a recycled pid."""
    if pid is None:
        return None
    try:
        return os.pidfd_open(pid)
    except OSError:  # already gone
        return None


def send(pidfd, sig):
    """Signal through a pidfd; a process already gone is not an error."""
    try:
        signal.pidfd_send_signal(pidfd, sig)
    except ProcessLookupError:
        pass


def forward(sig, pid1, pidfd, own_init=False):
    """Pass a signal to the container's PID 1; return it if we applied its default.

    PID 1 of a namespace never gets a signal it has no handler for (the
    kernel drops it). A user who presses ^C or sends SIGTERM expects the
    command to end, so for a signal whose default action is to terminate and
    that PID 1 neither catches nor ignores, minicontainer applies that action
    for it: SIGKILL, and the exit status reports the original signal.
    The container has a session of its own, so a terminal's ^C reaches only
    minicontainer and is passed on like any other. minicontainer's own init
    (--init) takes every signal and passes it on.
    """
    how = "caught" if own_init else signal_disposition(pid1, sig)
    if how == "caught":
        send(pidfd, sig)
    elif how == "default" and sig in TERMINATING_SIGNALS:
        send(pidfd, signal.SIGKILL)
        return sig
    return None


def supervise(spec, holder, report_fd, status_fd, tty_sock, on_pid=None, on_started=None,
              detach=None, forward_all=False, on_userns=None):
    """Parent, host namespaces, root: wait for the container and return its exit code.

    The holder reports the status (HOLDER_DONE, then the status pipe) as soon
    as PID 1 is reaped; if instead the holder itself ends first, its own exit
    status stands in, and a holder that was killed takes PID 1 with it. After
    a stop signal (SIGTERM, SIGINT, SIGHUP, SIGQUIT), a command still running
    when --stop-timeout runs out gets SIGKILL, as `docker stop` does; after
    `minicontainer stop`'s word, the timeout is the stop command's.
    on_started(pid1, error) hears once whether the command runs. For `exec`
    (forward_all: its process is not a PID 1), `holder` is its way in, and
    pid1 the process; once told to end, exec ends when that process has,
    even if a tracer in the container holds its exit status (see held_status).
    """
    import time

    def told_to_end_early(pid):
        """exec, before its process runs: the container can stop it (SIGSTOP)
        and so hold this wait. A terminating signal ends it and its way in."""
        if not signal.sigpending() & TERMINATING_SIGNALS:
            return
        if pid is not None:
            try:
                process = os.pidfd_open(pid)
            except OSError:  # gone already
                process = None
            if process is not None:
                send(process, signal.SIGKILL)
                os.close(process)
        os.kill(holder, signal.SIGKILL)

    pid1, error = read_reports(report_fd, on_pid, on_userns=on_userns,
                               on_quiet=told_to_end_early if forward_all else None)
    if forward_all and pid1 is None:  # exec: the process itself, whose pid the fork gave
        pid1 = holder
    if on_started is not None:
        on_started(pid1, error)
    pidfd = open_pid(pid1)
    terminal = None
    if tty_sock is not None and error is None:
        master = receive_terminal(tty_sock)
        if master is not None:
            terminal = detach.terminal(master) if detach is not None else Terminal(master)
    applied = code = deadline = None
    told_to_end = False  # exec: a terminating signal came, so look for a held status
    try:
        while code is None:
            done, status = os.waitpid(holder, os.WNOHANG)
            if done:
                if os.WIFSIGNALED(status) and pidfd is not None:
                    send(pidfd, signal.SIGKILL)  # the holder was killed: its container goes too
                code = exit_code(status)
                break
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            if told_to_end:
                wait = HELD_POLL if wait is None else min(wait, HELD_POLL)
            info = signal.sigtimedwait(SUPERVISOR_SIGNALS, wait) \
                if wait is not None else signal.sigwaitinfo(SUPERVISOR_SIGNALS)
            if info is None and told_to_end and (deadline is None or time.monotonic() < deadline):
                code = held_status(pid1, pidfd, holder)
            elif info is None:  # --stop-timeout ran out
                send(pidfd, signal.SIGKILL)
                deadline = None
            elif info.si_signo == HOLDER_DONE:
                code = os.read(status_fd, 1)[0]
            elif info.si_signo == signal.SIGWINCH and terminal is not None:
                terminal.resize()
            elif info.si_signo == MONITOR_STOP and pidfd is not None:
                applied = forward(signal.SIGTERM, pid1, pidfd, spec.init or forward_all) or applied
            elif info.si_signo != signal.SIGCHLD and pidfd is not None:
                applied = forward(info.si_signo, pid1, pidfd, spec.init or forward_all) or applied
                if info.si_signo in STOP_SIGNALS and deadline is None:
                    deadline = time.monotonic() + spec.stop_timeout
                told_to_end = forward_all and (told_to_end or info.si_signo in TERMINATING_SIGNALS)
    finally:
        if pidfd is not None:
            os.close(pidfd)
        if terminal is not None:
            terminal.close()
    if error is not None:
        raise error
    if applied is not None and code == 128 + signal.SIGKILL:
        return 128 + applied
    return code


def held_status(pid, pidfd, way_in):
    """exec's process has ended but its way in has not reaped it: a tracer in
    the container holds its exit status (a ptraced zombie is reaped by its
    parent only once the tracer has waited for it or let it go), and would
    hold exec for ever. Its status, from the zombie's /proc stat (field 52,
    shown to whoever may trace it: us), or None while it still runs. The way
    in, stuck on it, is killed; the zombie goes to the host's reaper. (It can
    hold it only after the execve: before, the process is non-dumpable.)"""
    import select
    import time
    if pidfd is None or not select.select([pidfd], [], [], 0)[0]:
        return None
    deadline = time.monotonic() + HELD_GRACE  # the way in reaps it in a moment, if it can
    while time.monotonic() < deadline:
        done, status = os.waitpid(way_in, os.WNOHANG)
        if done:  # reaped after all: the way in's status is the process's
            return exit_code(status)
        time.sleep(0.02)
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        status = int(fields[49]) if fields[0] == b"Z" else None
    except (OSError, IndexError, ValueError):
        status = None
    os.kill(way_in, signal.SIGKILL)
    os.waitpid(way_in, 0)
    return exit_code(status) if status is not None else 128 + signal.SIGKILL


class Terminal:
    """-t, supervisor's side: the host terminal in raw mode, relayed both ways to
    the container's pseudo-terminal master by two threads; restored at the end."""

    def __init__(self, master):
        import termios
        import threading
        import tty
        self.master, self.saved = master, termios.tcgetattr(0)
        tty.setraw(0)
        self.output = threading.Thread(target=pump, args=(master, 1), daemon=True)
        self.output.start()
        threading.Thread(target=pump, args=(0, master), daemon=True).start()

    def resize(self):
        """Pass the host terminal's size on; the kernel sends SIGWINCH inside."""
        import fcntl
        fcntl.ioctl(self.master, TIOCSWINSZ, fcntl.ioctl(0, TIOCGWINSZ, bytes(8)))

    def close(self):
        import termios
        self.output.join(timeout=2)  # the last output, up to the master's EIO
        termios.tcsetattr(0, termios.TCSADRAIN, self.saved)
        os.close(self.master)


def receive_terminal(sock):
    """The pty master PID 1 (or, under --init, the command) sent, if it did."""
    import socket
    try:
        _, fds, _, _ = socket.recv_fds(sock, 16, 1, socket.MSG_DONTWAIT)
    except BlockingIOError:
        return None
    return fds[0] if fds else None


def pump(src, dst):
    """Copy bytes from src to dst until either side closes."""
    while True:
        try:
            data = os.read(src, 65536)
        except OSError:  # EIO: the terminal's other side is gone
            return
        if not data:
            return
        try:
            while data:
                data = data[os.write(dst, data):]
        except OSError:
            return


def run_container(spec, network=None, entry=None, detach=None):
    """Start the container; return its exit code and the post-mortem of its cgroups.

    Parent side, host namespaces, root: the supervisor, or with -d the
    monitor. The cgroups are made before the fork and removed after the
    holder is gone, whatever happened in between. With a state entry, the
    start and (after the clean-up) the end are written to it.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, SUPERVISOR_SIGNALS)
    # No cyclic GC from here on, in this process and the forked ones: a
    # collection in a child walks every object it inherited and so copies the
    # pages they sit on. These processes are short-lived and make no cycles.
    gc.disable()
    gc.freeze()
    __import__("ctypes")  # the holder's and PID 1's (mount, ...): loaded once, before the forks
    supervisor_pid = os.getpid()
    label = entry.name if entry is not None else f"{supervisor_pid}-{os.urandom(3).hex()}"
    groups = make_cgroups(spec.limits, f"minicontainer-{label}")
    if entry is not None:
        entry.update(monitor=[supervisor_pid, process_start(supervisor_pid)],
                     cgroups=[[g.version, g.path] for g in groups])
    found, code, ran = {}, EXIT_OWN_FAILURE, False
    go_read = go_write = None
    maps = IdMaps(spec)
    stdio = detach.stdio() if detach is not None and not spec.tty else None
    try:
        if network is not None:
            network.allocate()
            spec.etc_files = network.etc_files(spec.hostname)
            go_read, go_write = os.pipe2(os.O_CLOEXEC)
        read_fd, write_fd = report_channel()
        status_read, status_write = os.pipe2(os.O_CLOEXEC)
        tty_ours = tty_theirs = None
        if spec.tty:
            import socket
            tty_ours, tty_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        holder = fork()
        if holder == 0:
            # Namespace holder: host PID namespace, soon its own mount namespace, root.
            os.close(read_fd)
            os.close(status_read)
            if tty_ours is not None:
                tty_ours.close()
            if go_write is not None:
                os.close(go_write)
            if detach is not None and detach.notify_fd is not None:
                os.close(detach.notify_fd)  # run -d hears the monitor, not the holder
            handles = Handles(write_fd, groups, tty_theirs, go_read, network, stdio, entry)
            handles.map_fd = maps.holder_side()
            in_child(write_fd, holder_main, spec, handles, supervisor_pid, status_write)
        maps.forked(holder)
        os.close(write_fd)
        os.close(status_write)
        if tty_theirs is not None:
            tty_theirs.close()
        if detach is not None:
            detach.started_holder()

        def connect(pid1):
            """Configure --network bridge for PID 1, then let it go on."""
            try:
                network.attach(pid1)
                network.relay()
                os.write(go_write, b"g\n")
            finally:
                os.close(go_write)  # without the word, PID 1 gives up

        def started(pid1, error):
            """The command runs (or could not start): the entry, and -d's caller, hear it."""
            nonlocal ran
            if error is None:
                ran = True
                if entry is not None:
                    entry.update(status=RUNNING, pid1=[pid1, process_start(pid1)],
                                 started=now_iso(), network={} if network is None else
                                 {"IPAddress": network.address, "Gateway": network.gateway})
                if detach is not None:
                    detach.tell(None)  # a failure is told only once all is cleaned up

        try:
            code = supervise(spec, holder, read_fd, status_read, tty_ours,
                             connect if network is not None else None, started, detach,
                             on_userns=maps.write)
        finally:
            os.close(status_read)
            if tty_ours is not None:
                tty_ours.close()
    except ContainerError as exc:
        code = exc.code
        raise
    finally:
        maps.close()
        if go_read is not None:
            os.close(go_read)
        found, errors = remove_cgroups(groups, post_mortem_too=True)
        found["cleanup_errors"] = errors
        try:
            if network is not None:
                network.release()
        finally:
            if detach is not None:
                detach.finish(errors)
            if entry is not None and ran:
                record_end(entry, code)
            elif entry is not None:  # it never ran: it leaves nothing, its name is free again
                entry.remove()
    return code, found


def remove_entry(entry):
    """Remove an entry once no `wait` is still reading it (they hold the waiters
    lock shared while they wait)."""
    import fcntl
    try:
        fd = os.open(entry.path("waiters"), os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except FileNotFoundError:
        return  # removed meanwhile
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        entry.remove()
    finally:
        os.close(fd)


def exec_container(entry, spec, detached=False, keep_stdio=False, pid_file=None,
                   console_socket=None):
    """Run one more process in a running container (exec): its exit code, or 0
    as soon as it runs with -d. Parent side, on the host: like the supervisor
    of a run, with the way in (exec_way_in) in the holder's place; the
    process is no PID 1, so signals are passed on as they are. For an engine
    (keep_stdio), a detached process keeps this stdio and becomes its reaper's."""
    signal.pthread_sigmask(signal.SIG_BLOCK, SUPERVISOR_SIGNALS)
    gc.disable()
    gc.freeze()
    pidfd = open_owner(entry.data.get("pid1"))
    if pidfd is None:
        raise ContainerError(f"exec {entry.name}", "it is not running")
    groups = []
    try:
        for version, path in entry.data.get("cgroups") or ():
            group = Cgroup(version, path, ())
            group.fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            groups.append(group)
        preload(spec)
        read_fd, write_fd = report_channel()
        tty_ours = tty_theirs = None
        if spec.tty and console_socket:
            tty_theirs = connect_console(console_socket)
        elif spec.tty:
            import socket
            tty_ours, tty_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        rootless = os.geteuid() != 0
        supervisor_pid = os.getpid()
        child = fork()
        if child == 0:
            # The way in (exec_way_in): host PID namespace, out of the container's
            # sight; root, or a user. It forks the exec'd process inside.
            os.close(read_fd)
            if tty_ours is not None:
                tty_ours.close()
            if detached and not keep_stdio:
                null = os.open("/dev/null", os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(null, fd)
                os.close(null)
            in_child(write_fd, exec_way_in, spec, Handles(write_fd, groups, tty_theirs), pidfd,
                     supervisor_pid, detached, rootless)
        os.close(write_fd)
        if tty_theirs is not None:
            tty_theirs.close()
        if detached:  # it runs on its own: its reaper's once we are gone
            process, error = read_reports(read_fd)
            os.waitpid(child, 0)  # the way in, gone once the process runs
            if error is not None:
                raise error
            if pid_file:
                write_pid_file(pid_file, process)
            return 0

        def started(process, error):
            if pid_file and error is None:
                write_pid_file(pid_file, process)

        try:
            return supervise(spec, child, read_fd, None, tty_ours, on_started=started,
                             forward_all=True)
        finally:
            if tty_ours is not None:
                tty_ours.close()
    finally:
        os.close(pidfd)
        for group in groups:
            os.close(group.fd)


def report_channel():
    """The report socket (read end, write end): lines, and a descriptor to
    explain a failed exec."""
    import _socket
    ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
    return ours.detach(), theirs.detach()


def fork():
    """os.fork, with Python's buffers flushed first so no output is written twice."""
    sys.stdout.flush()
    sys.stderr.flush()
    return os.fork()


def preload(spec):
    """Import now what the set-up steps import as they go, and load libseccomp:
    a process that joins a container's mount namespace may load no module
    there (forbid_imports)."""
    for name in ("prctl", "resource", "_socket", "select") + (("socket",) if spec.tty else ()):
        __import__(name)
    if spec.seccomp is not None:
        libseccomp()


def open_owner(owner):
    """A pidfd of the process (pid, start time), or None if that process is gone:
    opened first, then checked, so a recycled pid is never taken for it."""
    if not owner:
        return None
    try:
        pidfd = os.pidfd_open(owner[0])
    except OSError:
        return None
    if process_start(owner[0]) != owner[1]:
        os.close(pidfd)
        return None
    return pidfd


def signal_owner(owner, sig):
    """Send `sig` to the process (pid, start time); False if it is gone."""
    pidfd = open_owner(owner)
    if pidfd is None:
        return False
    try:
        send(pidfd, sig)
    finally:
        os.close(pidfd)
    return True


def wait_gone(owner, timeout=None):
    """Wait until the process (pid, start time) has ended; False on timeout."""
    import select
    pidfd = open_owner(owner)
    if pidfd is None:
        return True
    try:
        return bool(select.select([pidfd], [], [], timeout)[0])
    finally:
        os.close(pidfd)


def create_container(spec, entry, config, pid_file=None, console_socket=None):
    """OCI create: set the container up to the last step before its program,
    and leave PID 1 waiting there (on the entry's exec FIFO) for `start`, a
    child of the caller's reaper (conmon, containerd's shim). Nothing of
    minicontainer's stays: the state is in the entry, the clean-up is
    `delete`'s. Parent side, host namespaces, root."""
    import json
    signal.pthread_sigmask(signal.SIG_BLOCK, SUPERVISOR_SIGNALS + (HOLDER_RELEASE,))
    gc.disable()
    gc.freeze()
    linux = config.get("linux") or {}
    groups = make_oci_cgroups(linux.get("cgroupsPath"), linux.get("resources"), entry.id,
                              spec.devices)
    views, links = cgroup_views(groups)
    entry.update(cgroups=[[g.version, g.path] for g in groups])
    fifo = entry.path("exec.fifo")
    holder = pid1 = None
    closing = []
    maps = IdMaps(spec)
    try:
        os.mkfifo(fifo, 0o600)
        # Opened for reading and writing, so that neither end waits: PID 1 keeps
        # it and reads; `start` writes the byte that lets it go.
        exec_fifo = os.open(fifo, os.O_RDWR | os.O_CLOEXEC)
        closing.append(exec_fifo)
        preload(spec)
        read_fd, write_fd = report_channel()
        closing.append(read_fd)
        go_read, go_write = os.pipe2(os.O_CLOEXEC)
        console = connect_console(console_socket) if console_socket else None
        supervisor_pid = os.getpid()
        holder = fork()
        if holder == 0:
            # Namespace holder: host PID namespace; it goes once PID 1 is ready.
            os.close(read_fd)
            os.close(go_write)
            handles = Handles(write_fd, groups, console, go_read, entry=entry)
            handles.exec_fifo, handles.cgroup_views, handles.cgroup_links = exec_fifo, views, links
            handles.map_fd = maps.holder_side()
            in_child(write_fd, holder_main, spec, handles, supervisor_pid, None)
        maps.forked(holder)
        for fd in (write_fd, go_read):
            os.close(fd)
        if console is not None:
            console.close()

        def go(pid):
            """PID 1 exists: the createRuntime hooks, then PID 1's go-ahead, with the
            state its own hooks will be given."""
            nonlocal pid1
            pid1 = pid
            try:
                join_cgroups(groups, pid)  # before anything of the command runs
                state = json.dumps(oci_state(entry, "created", pid)).encode()
                run_hooks(spec.hooks, "createRuntime", state)
                os.write(go_write, b"g" + state + b"\n")
            finally:
                os.close(go_write)

        pid1, error = read_reports(read_fd, go, until="ready", on_userns=maps.write)
        closing.remove(read_fd)
        if error is not None:
            raise error
        if pid_file:
            write_pid_file(pid_file, pid1)
        entry.update(status=CREATED, pid1=[pid1, process_start(pid1)])
    except BaseException:
        if pid1 is not None:
            signal_owner([pid1, process_start(pid1)], signal.SIGKILL)
        remove_cgroups(groups)
        try:
            os.unlink(fifo)
        except FileNotFoundError:
            pass
        raise
    finally:
        maps.close()
        for fd in closing:
            os.close(fd)
        if holder is not None:
            try:
                os.kill(holder, HOLDER_RELEASE)
            except ProcessLookupError:
                pass
            os.waitpid(holder, 0)
    return 0


def connect_console(path):
    """--console-socket: connect to the engine's socket, on the host, for PID 1
    to send its terminal's master through."""
    import socket
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError as exc:
        sock.close()
        raise ContainerError.from_os(f"--console-socket {path}", exc) from None
    return sock


def write_pid_file(path, pid):
    """--pid-file: the host pid, written whole (a temporary file, then a rename)."""
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.tmp")
    try:
        with open(tmp, "w") as f:
            f.write(str(pid))
        os.rename(tmp, path)
    except OSError as exc:
        raise ContainerError.from_os(f"--pid-file {path}", exc) from None


def record_end(entry, code, why=None):
    """Write how the container ended into its entry, after the clean-up; with
    --rm, then remove the entry, once its waiters have read the end. Nothing
    to do if someone removed it already."""
    fields = {"status": EXITED, "exit_code": code, "finished": now_iso()}
    if why:
        fields["end"] = why
    if entry.update(**fields) and entry.data.get("rm"):
        remove_entry(entry)


class Detached:
    """What the monitor of a detached container adds to a supervisor: the pipes
    of the container's output into its log, the word to the `run -d` waiting
    for the start, and the terminal's output (-t) into the log too."""

    def __init__(self, entry, notify_fd):
        self.entry, self.notify_fd = entry, notify_fd
        self.log = Log(entry.path(), on_drop=lambda n: entry.update(log_dropped=n))
        self.readers, self.pipes = [], []

    def stdio(self):
        """(stdin, stdout, stderr) for the holder to pass on: /dev/null and two pipes."""
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        self.pipes = [(out_r, out_w, ord("1")), (err_r, err_w, ord("2"))]
        self.null = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
        return self.null, out_w, err_w

    def started_holder(self):
        """After the fork: read the pipes into the log, in threads of the monitor."""
        import threading
        if self.pipes:
            os.close(self.null)
        for read_end, write_end, stream in self.pipes:
            os.close(write_end)
            self.readers.append(threading.Thread(target=self.log.pump, args=(read_end, stream),
                                                 daemon=True))
            self.readers[-1].start()

    def terminal(self, master):
        """-dt: the terminal's output goes to the log as stdout; nothing types into it."""
        import threading
        self.readers.append(threading.Thread(target=self.log.pump, args=(master, ord("1")),
                                             daemon=True))
        self.readers[-1].start()
        return DetachedTerminal()

    def tell(self, error):
        """Tell the waiting `run -d` that the command runs, or why it does not."""
        if self.notify_fd is None:
            return
        word = "started" if error is None else f"error {error.code} {error}"
        report(self.notify_fd, word)
        os.close(self.notify_fd)
        self.notify_fd = None

    def finish(self, errors):
        """The last output into the log, and any clean-up error after it."""
        for reader in self.readers:
            reader.join(timeout=2)
        for error in errors:
            self.log.write(ord("2"), f"minicontainer: warning: {error}\n".encode())


class DetachedTerminal:
    """A detached container's terminal: the monitor has no terminal to resize from."""

    def resize(self):
        pass

    def close(self):
        pass


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------

root_option = click.option(
    "--root", metavar="DIR", envvar=ROOT_ENV, default=DEFAULT_ROOT, show_default=True,
    help=f"Container root directory (or set {ROOT_ENV}).")


@click.group(context_settings={"help_option_names": ["-h", "--help"]},
             epilog="Documentation: README.md, and docs/ in the repository, one page an area:"
                    " docs/run.md (every run option, exit status, signals), docs/services.md"
                    " (run -d, ps, logs, exec, stop, rm), docs/deploy-and-pull.md,"
                    " docs/networking.md, docs/limits.md, docs/rootless.md,"
                    " docs/oci-runtime.md, docs/security.md.")
@click.version_option(__version__, prog_name="minicontainer",
                      message=f"%(prog)s version %(version)s\nspec: {OCI_VERSION}")
@click.option("--root", "state", metavar="DIR", envvar=STATE_ENV,
              help=f"The state directory, where containers are kept [default: {STATE_DIR};"
                   f" or set {STATE_ENV}].")
@click.option("--log", metavar="FILE", help="Also write errors to FILE (runc's option).")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="json: one JSON object a line, as runc writes them.")
@click.option("--debug", is_flag=True, help="Write what each verb does to the --log file too.")
@click.option("--systemd-cgroup", is_flag=True,
              help="Refused: minicontainer manages cgroups itself (cgroupfs).")
def cli(state, log, log_format, debug, systemd_cgroup):
    """A small Linux container: deploy programs into a root, run them isolated."""
    global LOG
    LOG = (log, log_format, debug) if log else None
    if systemd_cgroup:
        raise ContainerError("--systemd-cgroup", "not supported: minicontainer manages cgroups"
                             " itself, in cgroupfs (use cgroup_manager=cgroupfs)")


def store():
    """The state directory the command line names (the group's --root),
    checked before a verb reads anything of it (and again on every read)."""
    return Store(click.get_current_context().find_root().params.get("state")).check()


@cli.command()
@root_option
@click.option("--to", metavar="DIR",
              help="Directory inside the root to deploy into [default: /bin; / for archives].")
@click.option("--no-deps", is_flag=True, help="Do not copy the shared libraries a program needs.")
@click.option("--link", is_flag=True,
              help="Hard-link files instead of copying them (same filesystem only; the"
                   " container then shares those files with the host).")
@click.option("--dry-run", is_flag=True, help="List what would be done; change nothing.")
@click.argument("paths", nargs=-1, required=True, metavar="PATH...")
def deploy(root, to, no_deps, link, dry_run, paths):
    """Copy programs (with the libraries they need), directories, root filesystem
    archives and images into the container root (made, with the directories
    `run` needs, if it is missing)."""
    gc.enable()
    missing = not os.path.lexists(root)
    writer, plan, made = deploy_paths(root, paths, to, deps=not no_deps, link=link,
                                      dry_run=dry_run, progress=sys.stderr.isatty())
    for path in plan.skipped:
        click.echo(f"minicontainer: warning: skipped {path}: not a file, directory or symlink",
                   err=True)
    for warning in writer.warnings:
        click.echo(f"minicontainer: warning: {warning}", err=True)
    if plan.foreign:
        click.echo(f"minicontainer: warning: {plan.foreign} archive member"
                   f"{'s' * (plan.foreign != 1)} of other owners made yours: only root keeps"
                   " owners (in your containers, your files belong to root)", err=True)
    if dry_run:
        for op in plan.ops:
            click.echo(describe(op))
        for name in made:
            click.echo(f"mkdir /{name} (the skeleton)")
        return 0
    if missing:
        click.echo(f"minicontainer: made the root {root}, with /{', /'.join(made)}", err=True)
    files, links = writer.files, writer.links
    click.echo(f"deployed {files} file{'s' * (files != 1)} ({writer.size} bytes), {links} "
               f"link{'s' * (links != 1)}, {len(plan.skipped)} skipped into {root}")
    return 0


@cli.command()
@root_option
@click.option("--platform", metavar="OS/ARCH[/VARIANT]",
              help="The platform to take from a multi-platform image [default: the host's].")
@click.option("--tls-verify", type=click.BOOL, default=True, show_default=True, metavar="BOOL",
              help="Check the registry's TLS certificate; false also allows plain HTTP.")
@click.option("--cache", "cache_dir", metavar="DIR",
              help="The blob cache [default: /var/cache/minicontainer for root, else"
                   " ~/.cache/minicontainer].")
@click.argument("reference")
def pull(root, platform, tls_verify, cache_dir, reference):
    """Fill the root with an image's file system from a registry (`alpine`,
    `host:port/repo:tag`, `repo@sha256:...`), and keep its configuration
    (Entrypoint, Cmd, Env, WorkingDir, User) beside it for `run`. The root
    is replaced whole, and only once every blob is verified."""
    gc.enable()
    if platform is not None:
        parse_platform(platform)
    ref, digest, count, size, foreign = pull_image(root, reference, platform, tls_verify,
                                                   cache_dir, progress=sys.stderr.isatty())
    if foreign:
        click.echo(f"minicontainer: warning: {foreign} layer member{'s' * (foreign != 1)} of other"
                   " owners made yours: only root keeps owners", err=True)
    click.echo(f"pulled {ref} ({digest}): {count} layer{'s' * (count != 1)},"
               f" {size / 1e6:.1f} MB, into {root}")
    return 0


HOSTNAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")


def check_hostname(name):
    """A hostname the kernel and resolvers accept: RFC 1123 labels of letters,
    digits and inner '-', joined by '.', 64 bytes at most."""
    labels = name.split(".")
    if len(name) > 64 or not all(
            0 < len(label) <= 63 and set(label) <= HOSTNAME_CHARS and label[0] != "-" != label[-1]
            for label in labels):
        raise ContainerError(f"--hostname {name!r}",
                             "not a valid hostname (letters, digits, '-' and '.', 64 at most)")
    return name


def check_preserved_fds(count):
    """--preserve-fds N passes 3..3+N-1 on: each must be open now."""
    for fd in range(3, 3 + count):
        try:
            os.fstat(fd)
        except OSError:
            raise ContainerError(f"--preserve-fds {count}", f"descriptor {fd} is not open") from None
    return count


def user_namespace_maps(userns, uidmap, gidmap):
    """run's user namespace: None (the host's), or (uid map, gid map, groups
    locked). root gets one with --userns private, mapped by --uidmap and
    --gidmap or else by its own /etc/subuid and /etc/subgid ranges. A user
    always gets one: its own ids as root inside, and, where newuidmap and
    newgidmap exist and /etc/subuid and /etc/subgid grant it ranges, those
    ranges as ids 1 and up (podman's way), so that files of other owners in
    the root work."""
    uid, gid = os.geteuid(), os.getegid()
    if uid != 0:
        import shutil
        if userns == "host":
            raise ContainerError("--userns host", "a user's container needs a user namespace"
                                 " of its own to be root in (run as root for the host's)")
        if uidmap or gidmap:
            raise ContainerError("--uidmap" if uidmap else "--gidmap", "only root maps ids;"
                                 " a user's container maps the user's own id and its /etc/subuid"
                                 " and /etc/subgid ranges")
        uid_map, gid_map = [(0, uid, 1)], [(0, gid, 1)]
        if shutil.which("newuidmap") and shutil.which("newgidmap"):
            import pwd
            try:
                name = pwd.getpwuid(uid).pw_name
            except KeyError:
                name = str(uid)
            sub_uids = subordinate_range("/etc/subuid", name, uid)
            sub_gids = subordinate_range("/etc/subgid", name, uid)
            if sub_uids and sub_gids:
                return uid_map + [(1, *sub_uids)], gid_map + [(1, *sub_gids)], False
        return uid_map, gid_map, True
    if userns != "private":
        if uidmap or gidmap:
            raise ContainerError("--uidmap" if uidmap else "--gidmap", "needs --userns private")
        return None
    uid_map, gid_map = [parse_id_map("--uidmap", m) for m in uidmap], [parse_id_map("--gidmap", m) for m in gidmap]
    if not uid_map and not gid_map:
        sub_uids = subordinate_range("/etc/subuid", "root", 0)
        sub_gids = subordinate_range("/etc/subgid", "root", 0)
        if not (sub_uids and sub_gids):
            raise ContainerError("--userns private", "give --uidmap and --gidmap, or a range"
                                 " for root in /etc/subuid and /etc/subgid")
        uid_map, gid_map = [(0, *sub_uids)], [(0, *sub_gids)]
    uid_map, gid_map = uid_map or gid_map, gid_map or uid_map  # one stands for both, as podman's
    for option, mapping in (("--uidmap", uid_map), ("--gidmap", gid_map)):
        if not any(inside == 0 for inside, _, _ in mapping):
            raise ContainerError(option, "must map id 0 inside (the container's root)")
    return uid_map, gid_map, False


def parse_id_map(option, value):
    """CONTAINER_ID:HOST_ID:SIZE, as podman's --uidmap takes it."""
    parts = value.split(":")
    if len(parts) != 3 or not all(p.isascii() and p.isdigit() for p in parts) or int(parts[2]) == 0:
        raise ContainerError(f"{option} {value}", "expected CONTAINER_ID:HOST_ID:SIZE, e.g."
                             " 0:100000:65536")
    inside, outside, count = map(int, parts)
    if inside + count > 1 << 32 or outside + count > 1 << 32:
        raise ContainerError(f"{option} {value}", "past the last id (4294967295)")
    return inside, outside, count


def fit_user_namespace(spec):
    """What a user namespace changes in run's spec: -u must name mapped ids;
    /sys of a network namespace not its own is bound from the host,
    read-only (sysfs cannot be mounted there: runc's rootless spec does the
    same); devpts takes no gid= the namespace does not map."""
    if spec.user and not (mapped(spec.uid_map, spec.user[0]) and mapped(spec.gid_map, spec.user[1])):
        raise ContainerError(f"--user {spec.user[0]}:{spec.user[1]}", "not mapped in the"
                             " container's user namespace (a user's maps only its own id as"
                             " root, unless /etc/subuid and /etc/subgid grant it a range and"
                             " the uidmap package is installed)")
    mounts = []
    for mount in spec.mounts:
        if mount.get("type") == "sysfs" and not spec.namespaces & CLONE_NEWNET:
            mount = {"destination": mount["destination"], "type": "bind", "source": "/sys",
                     "options": ["rbind", "rro", "nosuid", "nodev", "noexec"]}
        elif mount.get("type") == "devpts":
            mount = dict(mount, options=[o for o in mount["options"] if not (
                o.startswith("gid=") and not mapped(spec.gid_map, int(o[4:])))])
        mounts.append(mount)
    spec.mounts = mounts


def check_rootless(spec, network):
    """What a user cannot have is refused, never quietly left out: cgroup
    limits without a cgroup v2 group delegated to the user, and the bridge
    without slirp4netns."""
    needed = spec.limits.controllers()
    if needed:
        v2, own = delegated_cgroup()
        if own is None or not needed <= own:
            where = ("no cgroup v2 group of yours" if v2 is None else
                     f"your cgroup v2 group {v2} is not yours to write" if own is None else
                     f"your cgroup v2 group {v2} has no {', '.join(sorted(needed - own))} controller")
            limits = spec.limits
            asked = [option for option, value in (
                ("--memory", limits.memory), ("--memory-swap", limits.memory_swap),
                ("--pids-limit", limits.pids is not None), ("--cpus", limits.cpus),
                ("--cpu-shares", limits.cpu_shares), ("--stats", limits.stats)) if value]
            raise ContainerError(", ".join(asked), "a user's container needs"
                                 f" a cgroup delegated to it ({where}): run as root, or in a"
                                 " delegated group, e.g. systemd-run --user --scope -p"
                                 " Delegate=yes minicontainer run ...")


def delegated_cgroup():
    """The caller's cgroup v2 directory, and the controllers it may hand to a
    child group there when the caller owns it (systemd's Delegate=yes), else None."""
    with open("/proc/self/mountinfo") as f:
        v2_mount, _ = cgroup_mounts(f.read())
    with open("/proc/self/cgroup") as f:
        own = own_cgroups(f.read())
    if v2_mount is None or "" not in own:
        return None, None
    path = os.path.normpath(os.path.join(v2_mount, own[""].lstrip("/")))
    if not os.access(path, os.W_OK) or not os.access(os.path.join(path, "cgroup.procs"), os.W_OK):
        return path, None
    try:
        with open(os.path.join(path, "cgroup.controllers")) as f:
            return path, set(f.read().split())
    except OSError:
        return path, None


def namespaces_for(**shared):
    """The clone flags for a run, leaving out each namespace the user shares with the host."""
    flags = BASE_NAMESPACES
    for name, flag in OPTIONAL_NAMESPACES.items():
        if shared[name] not in ("host",):
            flags |= flag
    return flags


def parse_security_opts(opts):
    """--security-opt values, docker's syntax; unknown ones are an error, never ignored.

    Returns the protections to turn off. no-new-privileges is always on, so
    asking for it is accepted and changes nothing.
    """
    known = {"systempaths=unconfined": "mask_paths", "seccomp=unconfined": "seccomp",
             "no-new-privileges": None, "no-new-privileges:true": None}
    relaxed = set()
    for opt in opts:
        if opt not in known:
            raise ContainerError(f"--security-opt {opt}", "unknown option (known: "
                                 + ", ".join(sorted(known)) + ")")
        relaxed.add(known[opt])
    return relaxed


def own_bounding_set():
    """minicontainer's own bounding set as a bit mask, from /proc/self/status."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapBnd:"):
                return int(line.split()[1], 16)
    return 0


def capability_names(numbers):
    """The names (docker's spelling) of a set of capability numbers."""
    return frozenset(name for name, number in capability_numbers().items() if number in numbers)


# capabilities(7) names python-prctl's table may lack: it stops at the libcap
# it was built with, and calls its last one LAST_CAP (40 here, which is
# CHECKPOINT_RESTORE: podman's --cap-add ALL names it, and runc knows it).
NEWER_CAPABILITIES = {"PERFMON": 38, "BPF": 39, "CHECKPOINT_RESTORE": 40}


def capability_numbers():
    """Capability names as docker spells them (CHOWN, SYS_ADMIN) to their
    numbers: every one this kernel has."""
    import prctl
    numbers = {name.upper(): getattr(prctl, "CAP_" + name.upper())
               for name in prctl.ALL_CAP_NAMES if name != "last_cap"}
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            last = int(f.read())
    except (OSError, ValueError):
        last = max(prctl.ALL_CAPS)
    for name, number in NEWER_CAPABILITIES.items():
        if number <= last:
            numbers.setdefault(name, number)
    return numbers


def resolve_capabilities(adds, drops):
    """The bounding set for the command: podman's default, then --cap-add/--cap-drop.

    Docker's rules: ALL in --cap-add starts from every capability
    minicontainer holds, ALL in --cap-drop from none, and the named ones are
    then added and dropped. Naming one in both is an error, and so is adding
    one minicontainer itself lacks (as root does CAP_SYS_RESOURCE on some hosts).
    """
    numbers = capability_numbers()

    def parse(values, option):
        names = set()
        for value in values:
            name = value.upper().removeprefix("CAP_")
            if not value.isascii() or (name != "ALL" and name not in numbers):
                raise ContainerError(f"{option} {value}", "unknown capability (see capabilities(7))")
            names.add(name)
        return names

    add, drop = parse(adds, "--cap-add"), parse(drops, "--cap-drop")
    for name in sorted((add & drop) - {"ALL"}):
        raise ContainerError(f"--cap-add {name} and --cap-drop {name}", "contradict each other")
    bounding = own_bounding_set()
    held = {name for name, number in numbers.items() if bounding >> number & 1}
    caps = held if "ALL" in add else set(DEFAULT_CAPABILITIES) & held
    if "ALL" in drop:
        caps = set()
    for name in sorted(add - {"ALL"} - held):
        raise ContainerError(f"--cap-add {name}", "minicontainer does not hold it itself;"
                             " the host withholds it")
    caps = (caps | (add - {"ALL"})) - drop
    return frozenset(numbers[name] for name in caps)


def resolve_user(root, user):
    """--user NAME|UID[:GROUP|GID] as (uid, gid, home), names from the root's own
    /etc/passwd and /etc/group. A uid the root does not list gets the same
    number as its gid and / as its home."""
    name, _, group = user.partition(":")
    if not name or (is_number(name) and int(name) >= 2**32 - 1):
        raise ContainerError(f"--user {user}", "expected NAME or UID, optionally :GROUP or :GID")
    entries = [line.split(":") for line in read_root_file(root, "/etc/passwd").splitlines()]
    entries = [e for e in entries if len(e) >= 7 and is_number(e[2]) and is_number(e[3])]
    if is_number(name):
        uid = int(name)
        entry = next((e for e in entries if int(e[2]) == uid), None)
    else:
        entry = next((e for e in entries if e[0] == name), None)
        if entry is None:
            raise ContainerError(f"--user {user}", f"no user {name!r} in the root's /etc/passwd")
        uid = int(entry[2])
    if is_number(group):
        gid = int(group)
    elif group:
        groups = [line.split(":") for line in read_root_file(root, "/etc/group").splitlines()]
        match = next((g for g in groups if len(g) >= 3 and g[0] == group and is_number(g[2])), None)
        if match is None:
            raise ContainerError(f"--user {user}", f"no group {group!r} in the root's /etc/group")
        gid = int(match[2])
    else:
        gid = int(entry[3]) if entry else uid
    if gid >= 2**32 - 1:
        raise ContainerError(f"--user {user}", "expected NAME or UID, optionally :GROUP or :GID")
    return uid, gid, (entry[5] or "/") if entry else "/"


def parse_env(values, files):
    """-e KEY=VALUE, -e KEY (the host's value, if it has one), --env-file FILE
    (the same, one a line; blank lines and # comments skipped), in order."""
    lines = []
    for path in files:
        try:  # bytes as the file has them: an env value need not be UTF-8
            with open(path, encoding=sys.getfilesystemencoding(), errors="surrogateescape") as f:
                lines += [(f"--env-file {path}", line.rstrip("\n")) for line in f]
        except OSError as exc:
            raise ContainerError.from_os(f"--env-file {path}", exc) from None
    env = []
    for origin, text in lines + [("-e", value) for value in values]:
        if origin != "-e" and (not text.strip() or text.lstrip().startswith("#")):
            continue
        key, sep, value = text.partition("=")
        if not key or "\0" in text or key != key.strip():
            raise ContainerError(f"{origin} {text!r}", "expected KEY=VALUE or KEY")
        if sep:
            env.append((key, value))
        elif key in os.environ:
            env.append((key, os.environ[key]))
    return env


def image_command(image, entrypoint, command):
    """docker's rule: the image's Entrypoint, then COMMAND or else its Cmd;
    --entrypoint replaces the Entrypoint and drops the Cmd."""
    if entrypoint is not None:
        argv = ([entrypoint] if entrypoint else []) + list(command)
    else:
        argv = list(image.get("Entrypoint", [])) + (list(command) or list(image.get("Cmd", [])))
    if not argv:
        raise ContainerError("run", "no command given, and the root has no image that names one"
                             " (see pull)")
    return tuple(argv)


def image_env(image):
    """An image's Env, KEY=VALUE strings, as (key, value) pairs."""
    return [tuple(item.split("=", 1)) if "=" in item else (item, "") for item in image.get("Env", [])]


def run_env(hostname, user, extra):
    """A clean environment for the command, not the host's: PATH, HOME, HOSTNAME
    and TERM; -e and --env-file on top."""
    env = {"PATH": CONTAINER_PATH, "HOME": user[2] if user else "/root", "HOSTNAME": hostname}
    if "TERM" in os.environ:
        env["TERM"] = os.environ["TERM"]
    env.update(extra)
    return list(env.items())


def parse_volume(value):
    """-v HOST:CONTAINER[:ro|rw]: the host path must exist; both absolute.
    Returns the mount, in the OCI format: a bind, nosuid and nodev."""
    parts = value.split(":")
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
        raise ContainerError(f"--volume {value}", "expected HOST:CONTAINER[:ro]")
    src, dst = parts[0], parts[1]
    if not os.path.isabs(src) and not src.startswith("."):
        raise ContainerError(f"--volume {value}", "the host path must be absolute or start with ./")
    dst = check_mount_target("--volume", value, dst)
    if not os.path.exists(src):
        raise ContainerError(f"--volume {value}", f"the host path {src} does not exist")
    read_only = len(parts) == 3 and parts[2] == "ro"
    return {"destination": dst, "type": "bind", "source": os.path.abspath(src),
            "options": ["bind", "nosuid", "nodev"] + (["ro"] if read_only else []),
            "why": f"--volume {dst}"}


# --tmpfs's flags: each word and its opposite; what is not said stays nosuid,
# nodev and noexec.
TMPFS_FLAGS = {"ro": "rw", "rw": "ro", "exec": "noexec", "noexec": "exec", "suid": "nosuid",
               "nosuid": "suid", "dev": "nodev", "nodev": "dev"}
TMPFS_OPTIONS = ("size", "mode", "uid", "gid", "nr_inodes", "nr_blocks")


def parse_tmpfs(value):
    """--tmpfs PATH[:OPTIONS]: docker's options (size=, mode=, uid=, gid=, nr_inodes=,
    ro, exec, suid, dev ...); nosuid, nodev and noexec unless asked otherwise.
    Returns the mount, in the OCI format."""
    target, _, options = value.partition(":")
    target = check_mount_target("--tmpfs", value, target)
    flags, data = ["nosuid", "nodev", "noexec"], []
    for option in filter(None, options.split(",")):
        name, sep, setting = option.partition("=")
        if option in TMPFS_FLAGS:
            flags = [f for f in flags if f not in (option, TMPFS_FLAGS[option])] + [option]
        elif name in TMPFS_OPTIONS and sep and setting:
            data.append(option)
        else:
            raise ContainerError(f"--tmpfs {value}", f"unknown option {option!r}")
    return {"destination": target, "type": "tmpfs", "source": "tmpfs", "options": flags + data,
            "why": f"--tmpfs {target}"}


def run_mounts(volumes, tmpfs, read_only, read_only_tmpfs):
    """run's mounts, in order: the kernel's and /dev's, then -v, --tmpfs, and,
    with --read-only, /tmp and /run as tmpfs where nothing else is mounted."""
    mounts = list(KERNEL_MOUNTS) + [parse_volume(v) for v in volumes] + [parse_tmpfs(t) for t in tmpfs]
    if read_only and read_only_tmpfs:
        taken = {m["destination"] for m in mounts}
        mounts += [{"destination": target, "type": "tmpfs", "source": "tmpfs",
                    "options": ["nosuid", "nodev", f"mode={mode}"]}
                   for target, mode in READ_ONLY_TMPFS if target not in taken]
    return mounts


# Where no volume or tmpfs may go: the kernel's own file systems, which
# minicontainer mounts fresh and masks (a mount there could undo a mask), and
# the devices and links it puts in /dev.
KERNEL_PATHS = ("/proc", "/sys")
DEV_PATHS = frozenset([f"/dev/{name}" for name, _, _ in DEVICES]
                      + [f"/dev/{name}" for name, _ in DEV_LINKS] + ["/dev/pts"])


def check_container_path(option, value, path):
    """An absolute path inside the container, short enough for the kernel."""
    if not path.startswith("/"):
        raise ContainerError(f"{option} {value}", "the container path must be absolute")
    path = "/" + os.path.normpath(path).lstrip("/")  # POSIX keeps a leading "//"
    data = os.fsencode(path)
    if len(data) >= PATH_MAX or any(len(part) > NAME_MAX for part in data.split(b"/")):
        raise ContainerError(f"{option} {value}", f"the container path is too long (at most"
                             f" {PATH_MAX - 1} bytes, and {NAME_MAX} for a name)")
    return path


def check_mount_target(option, value, path):
    """A volume's or a tmpfs's target: not /, not the kernel's, not minicontainer's devices."""
    path = check_container_path(option, value, path)
    if path == "/":
        raise ContainerError(f"{option} {value}", "the container path must not be /")
    for top in KERNEL_PATHS:
        if path == top or path.startswith(top + "/"):
            raise ContainerError(f"{option} {value}", f"{top} is the kernel's: minicontainer mounts"
                                 " and masks it, and a mount there could undo a mask")
    if any(path == dev or path.startswith(dev + "/") for dev in DEV_PATHS):
        raise ContainerError(f"{option} {value}", f"{path} is one of the devices minicontainer"
                             " puts in /dev")
    return path


NAME_CHARS = HOSTNAME_CHARS | {"_", "."}


def hostname_for(name):
    """The hostname a container gets from its --name ('_' becomes '-'), where the
    name makes one; minicontainer's default otherwise (a name like a..b)."""
    if name is not None:
        candidate = name.replace("_", "-")
        try:
            return check_hostname(candidate)
        except ContainerError:
            pass
    return DEFAULT_HOSTNAME


def check_container_name(name):
    """--name: docker's rule for container names."""
    if not (0 < len(name) <= 63 and set(name) <= NAME_CHARS and name[0] not in "_.-"):
        raise ContainerError(f"--name {name!r}", "expected letters, digits, '_', '.' and '-',"
                             " 63 at most, starting with a letter or digit")
    return name


def terminal_size(detach=False):
    """-t: the host terminal's size, to start the container's terminal with
    (24 by 80 for a detached container started from no terminal)."""
    import fcntl
    if not os.isatty(0):
        if detach:
            return (24).to_bytes(2, sys.byteorder) + (80).to_bytes(2, sys.byteorder) + bytes(4)
        raise ContainerError("-t", "the input is not a terminal (drop -t, or run from one)")
    return fcntl.ioctl(0, TIOCGWINSZ, bytes(8))


SHARE = click.Choice(["private", "host"])


class Number(click.ParamType):
    """An integer or a decimal number in ASCII digits: click's own types, like
    int() and float(), also take "６４" or "١٢"."""

    def __init__(self, kind=int, minimum=None):
        self.kind, self.minimum = kind, minimum
        self.name = "integer" if kind is int else "number"

    def convert(self, value, param, ctx):
        import re
        if isinstance(value, (int, float)):
            return value
        pattern = r"[+-]?\d+" if self.kind is int else r"[+-]?(\d+\.?\d*|\.\d+)"
        if not re.fullmatch(pattern, value.strip(), re.ASCII):
            self.fail(f"{value!r} is not {'an integer' if self.kind is int else 'a number'}",
                      param, ctx)
        number = self.kind(value)
        if self.minimum is not None and number < self.minimum:
            self.fail(f"{value} is below the minimum, {self.minimum}", param, ctx)
        return number


@cli.command(context_settings={"allow_interspersed_args": False})
@root_option
@click.option("--hostname", metavar="NAME",
              help=f"Hostname inside the container [default: {DEFAULT_HOSTNAME}].")
@click.option("--network", "--net", type=click.Choice(["none", "host", "bridge", "private"]),
              default="none", show_default=True,
              help="none: own namespace with only lo; host: the host's; bridge (or private):"
                   " an address on minicontainer's bridge.")
@click.option("--subnet", metavar="CIDR", default=DEFAULT_SUBNET, show_default=True,
              help="The bridge's subnet, with --network bridge.")
@click.option("--publish", "-p", multiple=True, metavar="[IP:]HOST_PORT:PORT",
              help="With --network bridge: relay a host port (on 127.0.0.1 by default) to the container.")
@click.option("--outbound", is_flag=True,
              help="With --network bridge: let the container reach beyond the host (masquerade).")
@click.option("--ipc", type=SHARE, default="private", show_default=True,
              help="IPC namespace (System V IPC, POSIX queues).")
@click.option("--uts", type=SHARE, default="private", show_default=True,
              help="UTS namespace (hostname).")
@click.option("--cgroupns", type=SHARE, default="private", show_default=True,
              help="cgroup namespace (the view of /proc/self/cgroup).")
@click.option("--userns", type=SHARE,
              help="User namespace: host for root by default; private (always, for a user):"
                   " the container's root is an unprivileged id outside.")
@click.option("--uidmap", multiple=True, metavar="CONTAINER:HOST:SIZE",
              help="With --userns private (root only): uids to map [default: root's"
                   " /etc/subuid range].")
@click.option("--gidmap", multiple=True, metavar="CONTAINER:HOST:SIZE",
              help="With --userns private (root only): gids to map [default: as --uidmap].")
@click.option("--init", is_flag=True,
              help="Run a small init as PID 1 that reaps zombies and forwards signals.")
@click.option("--preserve-fds", type=Number(int, 0), default=0, metavar="N",
              help="Pass descriptors 3 to 3+N-1 on to the command.")
@click.option("--security-opt", multiple=True, metavar="OPT",
              help="systempaths=unconfined: leave /proc and /sys unmasked;"
                   " seccomp=unconfined: as --seccomp unconfined.")
@click.option("--cap-add", multiple=True, metavar="CAP",
              help="Add a capability to the default set (or ALL).")
@click.option("--cap-drop", multiple=True, metavar="CAP",
              help="Drop a capability from the default set (or ALL).")
@click.option("--seccomp", type=click.Choice(["default", "unconfined"]), default="default",
              show_default=True, help="The seccomp filter; unconfined turns it off.")
@click.option("--user", "-u", metavar="USER[:GROUP]",
              help="Run as this user: a name from the root's /etc/passwd, or UID[:GID].")
@click.option("--memory", "-m", metavar="SIZE", help="Memory limit, e.g. 64m, 1g (at least 6m).")
@click.option("--memory-swap", metavar="SIZE",
              help="Memory plus swap limit (needs --memory); -1 for unlimited swap.")
@click.option("--pids-limit", type=Number(int), metavar="N", help="Most processes at once; 0 or -1: no limit.")
@click.option("--cpus", type=Number(float), metavar="N", help="CPU time as a number of CPUs, e.g. 0.5.")
@click.option("--cpu-shares", "-c", type=Number(int), metavar="N",
              help="Relative CPU weight (default 1024 under contention).")
@click.option("--ulimit", multiple=True, metavar="NAME=SOFT[:HARD]",
              help="A resource limit (only lowering); nofile defaults to 1024:524288.")
@click.option("--stats", is_flag=True,
              help="After the run, print wall time, CPU time, peak memory and pids on stderr.")
@click.option("--env", "-e", multiple=True, metavar="KEY[=VALUE]",
              help="Set an environment variable (KEY alone: the host's value).")
@click.option("--env-file", multiple=True, metavar="FILE", help="Read KEY=VALUE lines from a file.")
@click.option("--workdir", "-w", metavar="DIR",
              help="Working directory inside the container (made if missing) [default: the"
                   " image's, else /].")
@click.option("--entrypoint", metavar="COMMAND",
              help="Run this instead of the image's Entrypoint (and not its Cmd); '' for none.")
@click.option("--volume", "-v", multiple=True, metavar="HOST:CONTAINER[:ro]",
              help="Bind a host file or directory into the container.")
@click.option("--tmpfs", multiple=True, metavar="PATH[:OPTIONS]",
              help="Mount a tmpfs, e.g. /cache:size=64m.")
@click.option("--read-only", is_flag=True, help="Mount the root read-only.")
@click.option("--read-only-tmpfs", type=click.BOOL, default=True, show_default=True,
              metavar="BOOL", help="With --read-only, keep /tmp and /run writable as tmpfs.")
@click.option("--rm", is_flag=True,
              help="Keep nothing: writes go to an overlay that is discarded afterwards, and"
                   " the container's entry (-d, --name) is removed when it ends.")
@click.option("--detach", "-d", is_flag=True,
              help="Run in the background: print the container's id once the command runs;"
                   " its output goes to its log (see logs).")
@click.option("--interactive", "-i", is_flag=True,
              help="Keep stdin attached (it always is; accepted for docker's habit).")
@click.option("--tty", "-t", is_flag=True,
              help="Give the command a pseudo-terminal of its own (job control, ^C, resize).")
@click.option("--stop-timeout", type=Number(int, 0), default=DEFAULT_STOP_TIMEOUT,
              show_default=True, metavar="SECONDS",
              help="After SIGTERM, SIGINT, SIGHUP or SIGQUIT, SIGKILL the command this much later.")
@click.option("--name", metavar="NAME",
              help="Name the container (hostname and cgroup default to it); it is kept, with"
                   " its exit status, until rm (unless --rm).")
@click.argument("command", nargs=-1, type=click.UNPROCESSED, metavar="[COMMAND [ARG]...]")
def run(root, hostname, network, subnet, publish, outbound, ipc, uts, cgroupns, userns, uidmap,
        gidmap, init, preserve_fds, security_opt,
        cap_add, cap_drop, seccomp, user, memory, memory_swap, pids_limit, cpus, cpu_shares,
        ulimit, stats, env, env_file, workdir, entrypoint, volume, tmpfs, read_only,
        read_only_tmpfs, rm, detach, interactive, tty, stop_timeout, name, command):
    """Run COMMAND as PID 1 of a new container; exits with its status.

    Options go before COMMAND; everything after it is passed on untouched.
    Without COMMAND, the root's image (see pull) gives it, as docker does.
    """
    if hostname is not None and uts == "host":
        raise ContainerError("--hostname", "cannot name the container with --uts host")
    root = check_run_root(root)
    image = read_image_file(root) or {}
    command = image_command(image, entrypoint, command)
    workdir = workdir or image.get("WorkingDir") or "/"
    workdir = check_container_path("--workdir", workdir, workdir)
    if user is None:
        user = image.get("User")
    if not command[0]:
        raise ContainerError("exec ''", "not found in the container (an empty command name)",
                             code=EXIT_NOT_FOUND)
    relaxed = parse_security_opts(security_opt)
    bridge = network in ("bridge", "private")
    if (publish or outbound) and not bridge:
        raise ContainerError("--publish" if publish else "--outbound", "needs --network bridge")
    net = None
    if bridge and os.geteuid() != 0:  # a user makes no links on the host: slirp4netns
        net = SlirpNetwork([parse_publish(p) for p in publish], outbound)
    elif bridge:
        net = Network(parse_subnet(subnet), [parse_publish(p) for p in publish], outbound)
    if name is not None:
        check_container_name(name)
    if hostname is None:
        hostname = hostname_for(name)
    caps = resolve_capabilities(cap_add, cap_drop)
    namespaces = namespaces_for(network=network, ipc=ipc, uts=uts, cgroupns=cgroupns)
    maps = user_namespace_maps(userns, uidmap, gidmap)
    if maps is not None:
        namespaces |= CLONE_NEWUSER
    user = resolve_user(root, user) if user is not None else None
    spec = Spec(root, command, workdir=workdir,
                hostname=check_hostname(hostname), namespaces=namespaces,
                init=init, preserve_fds=check_preserved_fds(preserve_fds),
                masked_paths=MASKED_PATHS if "mask_paths" not in relaxed else (),
                readonly_paths=READONLY_PATHS if "mask_paths" not in relaxed else (),
                caps=caps, user=user,
                seccomp=default_seccomp(capability_names(caps))
                if seccomp == "default" and "seccomp" not in relaxed else None,
                limits=parse_limits(memory, memory_swap, pids_limit, cpus, cpu_shares, stats, ulimit),
                env=run_env(hostname if namespaces & CLONE_NEWUTS else os.uname().nodename, user,
                            image_env(image) + parse_env(env, env_file)),
                mounts=run_mounts(volume, tmpfs, read_only, read_only_tmpfs),
                read_only=read_only, rm=rm, tty=tty,
                winsize=terminal_size(detach) if tty else None, stop_timeout=stop_timeout,
                closed_stdio=CLOSED_STDIO)
    if maps is not None:
        spec.uid_map, spec.gid_map, spec.groups_locked = maps
        fit_user_namespace(spec)
    if os.geteuid() != 0:
        check_rootless(spec, net)
    entry = None
    if detach or name is not None:  # docker's rule: a named container is kept until rm
        entry = store().create(name, {
            "root": root, "command": list(command), "spec": spec.to_json(), "rm": rm,
            "detached": detach, "monitor": [os.getpid(), process_start(os.getpid())],
            "ports": [f"{ip}:{host}->{port}/tcp" for ip, host, port in net.publish] if net else []})
    if detach:
        return run_detached(spec, net, entry)
    import time
    started = time.monotonic()
    code, found = run_container(spec, net, entry)
    report_resources(spec.limits, memory, code, found, time.monotonic() - started)
    return code


def run_detached(spec, network, entry):
    """run -d: fork the monitor, wait for its word that the command runs (or why
    not), print the container's id. The monitor leaves this session and
    terminal and keeps no descriptor of the caller's: it outlives them."""
    notify_read, notify_write = os.pipe2(os.O_CLOEXEC)
    if fork() == 0:
        # The monitor: a session of its own, no terminal; root, host namespaces.
        os.close(notify_read)
        in_child(notify_write, monitor_main, spec, network, entry, notify_write)
    os.close(notify_write)
    word = b""
    while not word.endswith(b"\n") and (data := os.read(notify_read, 4096)):
        word += data  # one line: the monitor's word, however long it lives on
    os.close(notify_read)
    kind, _, rest = word.decode(errors="replace").strip().partition(" ")
    if kind == "started":
        click.echo(entry.id)
        return 0
    if kind == "error":  # the monitor has cleaned up, and removed the entry
        code, _, message = rest.partition(" ")
        raise ContainerError(message, code=int(code))
    entry.remove()  # nothing may be left of a container that never ran
    raise ContainerError(f"run -d {entry.name}", "its monitor ended before the command started")


def monitor_main(spec, network, entry, notify_fd):
    """The monitor of a detached container: run it (as the supervisor does),
    logging its output, and write its end into its entry."""
    os.setsid()
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    keep = sorted({0, 1, 2, notify_fd})
    for low, high in zip(keep, keep[1:] + [MAX_FD]):
        os.closerange(low + 1, high)
    os.chdir("/")
    detach = Detached(entry, notify_fd)
    try:
        run_container(spec, network, entry, detach)
    except ContainerError as exc:
        detach.tell(exc)  # said already, if it happened once the command ran
    return 0


# -- the verbs of containers that outlive the command line ------------------

def each_container(refs, act):
    """act(container) for each reference; a failure is said in one line and the
    others go on, as docker does; 125 at the end if any failed."""
    failed = False
    containers = store()  # a state directory not the caller's: refused once, for all
    for ref in refs:
        try:
            act(containers.find(ref), ref)
        except ContainerError as exc:
            say(str(exc))
            failed = True
    return EXIT_OWN_FAILURE if failed else 0


def parse_signal(text):
    """A signal by name (KILL, SIGKILL, kill) or number (9), as docker and runc take it."""
    name = text.strip().upper()
    if name.isascii() and name.isdigit():
        number = int(name)
    else:
        name = name.removeprefix("SIG")
        if name.startswith("RTMIN") or name.startswith("RTMAX"):
            base, _, offset = name.partition("+") if "+" in name else name.partition("-")
            sign = -1 if "-" in name else 1
            number = (signal.SIGRTMIN if base == "RTMIN" else signal.SIGRTMAX) + sign * int(offset or 0)
        else:
            number = getattr(signal, "SIG" + name, None) if name.isalnum() else None
    if not isinstance(number, int) or number not in signal.valid_signals():
        raise ContainerError(f"signal {text}", "not a signal (a name like TERM or KILL, or a number)")
    return number


def kill_container(entry, sig):
    """Send `sig` to a container: through its monitor for the signals a
    supervisor passes on (so that minicontainer's PID 1 rule applies and the
    end is told right), else to its PID 1."""
    monitor = entry.data.get("monitor")
    if sig in FORWARDED_SIGNALS and alive(monitor):
        signal_owner(monitor, sig)
    elif not signal_owner(entry.data.get("pid1"), sig):
        raise ContainerError(f"kill {entry.name}", "it is not running")


def stop_container(entry, timeout):
    """SIGTERM (through the monitor), then SIGKILL after `timeout` seconds; wait
    until the monitor has written the end. A container already ended is done."""
    if entry.status not in (RUNNING, PAUSED, CREATED):
        return
    monitor, pid1 = entry.data.get("monitor"), entry.data.get("pid1")
    if not (alive(monitor) and signal_owner(monitor, MONITOR_STOP)):
        signal_owner(pid1, signal.SIGTERM)
    owner = monitor if alive(monitor) else pid1
    if not wait_gone(owner, timeout):
        signal_owner(pid1, signal.SIGKILL)
        wait_gone(owner, 10)


def wait_container(entry):
    """Wait for a container to end; return its exit code (None if nobody knows it).
    A waiter holds the entry's waiters lock, so a --rm container's monitor
    removes the entry only once every waiter has read how it ended."""
    import fcntl
    import time
    try:
        fd = os.open(entry.path("waiters"), os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except FileNotFoundError:
        raise ContainerError(f"wait {entry.name}", "no such container") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        while entry.reload() and entry.status in (CREATING, CREATED, RUNNING, PAUSED):
            wait_gone(entry.data.get("monitor") or entry.data.get("pid1"), 1)
            time.sleep(0.01)  # the monitor's last write comes just before it ends
        if entry.status == DEAD:
            raise ContainerError(f"wait {entry.name}", "its monitor died without saying how"
                                 " it ended")
        return entry.data.get("exit_code")
    finally:
        os.close(fd)


def remove_container(entry, force):
    """rm: a running container only with force (SIGKILL, then its end); the
    entry, and what a dead one's monitor could not clean (its cgroups)."""
    status = entry.check("rm -f" if force else "rm")
    if status in (RUNNING, PAUSED, CREATED, CREATING):
        signal_owner(entry.data.get("pid1"), signal.SIGKILL)
        wait_gone(entry.data.get("monitor") or entry.data.get("pid1"), 10)
    if status == DEAD:
        remove_cgroups(recorded_cgroups(entry))
    remove_entry(entry)


def recorded_cgroups(entry):
    """The cgroups an entry records, opened for removal (those already gone skipped)."""
    groups = []
    for version, path in entry.data.get("cgroups") or ():
        group = Cgroup(version, path, ())
        try:
            group.parent_fd = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY
                                      | os.O_CLOEXEC)
            group.fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            groups.append(group)
        except OSError:
            if group.parent_fd is not None:
                os.close(group.parent_fd)
    return groups


def describe_status(entry):
    """The STATUS column of ps, in docker's words."""
    import time
    status, now = entry.status, time.time()
    if status == RUNNING:
        return f"Up {human_duration(now - (parse_iso(entry.data.get('started')) or now))}"
    if status == EXITED:
        finished = parse_iso(entry.data.get("finished"))
        code = entry.data.get("exit_code")
        ago = f" {human_duration(now - finished)} ago" if finished else ""
        return f"Exited ({'?' if code is None else code}){ago}"
    return {CREATED: "Created", CREATING: "Created", PAUSED: "Paused", DEAD: "Dead"}[status]


def container_summary(entry):
    """ps --format json's fields."""
    status = entry.status
    return {"Id": entry.id, "Name": entry.name, "Command": entry.data.get("command"),
            "Status": status, "ExitCode": entry.data.get("exit_code") if status == EXITED else None,
            "Pid": entry.data["pid1"][0] if status == RUNNING and entry.data.get("pid1") else 0,
            "Created": entry.data.get("created")}


def inspect_data(entry):
    """inspect's JSON: docker's shape where it has one, and everything the entry holds."""
    status, data = entry.status, entry.data
    spec = data.get("spec") or {}
    return {
        "Id": entry.id, "Name": entry.name, "Created": data.get("created"),
        "Path": (data.get("command") or [""])[0], "Args": (data.get("command") or [])[1:],
        "State": {"Status": status, "Running": status == RUNNING, "Paused": status == PAUSED,
                  "Dead": status == DEAD,
                  "Pid": data["pid1"][0] if status in (RUNNING, PAUSED) and data.get("pid1") else 0,
                  "ExitCode": data.get("exit_code") if status == EXITED else None,
                  "StartedAt": data.get("started"), "FinishedAt": data.get("finished"),
                  "Error": data.get("end", "")},
        "Root": data.get("root"), "Bundle": data.get("bundle"),
        "Config": {"Hostname": spec.get("hostname"), "Env": [f"{k}={v}" for k, v in spec.get("env") or ()],
                   "Cmd": data.get("command"), "WorkingDir": spec.get("workdir"),
                   "Tty": bool(spec.get("tty"))},
        "HostConfig": {"AutoRemove": bool(data.get("rm")), "Ports": data.get("ports") or []},
        # docker's: the bridge address while the container runs, "" without
        # one or once it has ended (the address is then the next container's).
        "NetworkSettings": {key: (data.get("network") or {}).get(key, "")
                            if status in (RUNNING, PAUSED) else "" for key in ("IPAddress", "Gateway")},
        "LogPath": entry.path("container.log") if data.get("detached") else "",
        "Monitor": data.get("monitor"), "Cgroups": data.get("cgroups") or [],
        "Spec": spec,
    }


@cli.group()
def network():
    """The bridge that --network bridge containers share."""


@network.command(name="prune")
def network_prune():
    """Remove the bridge (mc0) and its state when no container is on it; the
    next --network bridge container makes them again."""
    if os.geteuid() != 0:
        raise ContainerError("network prune", "needs root: the bridge is root's")
    left = prune_network()
    if left:
        raise ContainerError("network prune", f"{left} running container{'s' * (left != 1)}"
                             f" still on {BRIDGE}: kept")
    return 0


@cli.command(name="ps")
@click.option("--all", "-a", "show_all", is_flag=True, help="Show every container, not only running ones.")
@click.option("--quiet", "-q", is_flag=True, help="Only the ids.")
@click.option("--format", "-f", "form", type=click.Choice(["table", "json"]), default="table",
              show_default=True, help="json: one JSON array.")
@click.argument("container", required=False)
def ps_command(show_all, quiet, form, container):
    """List containers (running ones; -a: all), as docker ps does; with a
    CONTAINER, its processes' host pids, as runc ps does."""
    import json
    if container is not None:
        pids = container_processes(store().find(container))
        if form == "json":
            click.echo(json.dumps(pids))
        else:
            click.echo("PID")
            for pid in pids:
                click.echo(pid)
        return 0
    entries = [c for c in store().entries() if show_all or c.status == RUNNING]
    if form == "json":
        click.echo(json.dumps([container_summary(c) for c in entries]))
    elif quiet:
        for c in entries:
            click.echo(c.id[:12])
    else:
        import shlex
        import time
        rows = [("CONTAINER ID", "ROOT", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES")]
        for c in entries:
            command = shlex.join(c.data.get("command") or [])
            command = '"' + (command if len(command) <= 20 else command[:19] + "…") + '"'
            created = parse_iso(c.data.get("created")) or time.time()
            rows.append((c.id[:12], c.data.get("root") or "", command,
                         f"{human_duration(time.time() - created)} ago", describe_status(c),
                         ", ".join(c.data.get("ports") or []), c.name))
        print_table(rows)
    return 0


def print_table(rows):
    """Rows of strings as left-aligned columns three spaces apart, as docker and runc print."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("   ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


@cli.command()
@click.option("--follow", "-f", is_flag=True, help="Keep printing output until the container ends.")
@click.option("--tail", metavar="N", type=Number(int, 0), help="Only the last N lines.")
@click.argument("container")
def logs(follow, tail, container):
    """Print a detached container's output: its stdout to stdout, its stderr to stderr."""
    import time
    entry = store().find(container)
    if not entry.data.get("detached"):
        raise ContainerError(f"logs {entry.name}", "it was not started with -d: its output went"
                             " where its run's went, and has no log")
    if entry.data.get("log_dropped"):
        say(f"logs {entry.name}: the log keeps its last {LOG_MAX >> 20} MiB; the"
            f" {entry.data['log_dropped']} bytes before were dropped")
    out = {b"1": sys.stdout.buffer, b"2": sys.stderr.buffer}
    records, offset = read_records(entry.path("container.log.1"))
    current, offset = read_records(entry.path("container.log"))
    records += current
    if tail is not None:
        lines = [(stream, line) for stream, _, data in records
                 for line in data.splitlines(keepends=True)]
        records = [(stream, 0, line) for stream, line in lines[len(lines) - tail:]] if tail else []
    for stream, _, data in records:
        out[stream].write(data)
        out[stream].flush()
    while follow:
        running = entry.reload() and entry.status in (CREATING, CREATED, RUNNING, PAUSED)
        try:
            size = os.stat(entry.path("container.log")).st_size
        except FileNotFoundError:
            size = 0
        if size < offset:  # rotated: the rest of the old file, then the new one from its start
            rest, _ = read_records(entry.path("container.log.1"), offset)
            records, offset = rest, 0
        else:
            records = []
        more, offset = read_records(entry.path("container.log"), offset)
        for stream, _, data in records + more:
            out[stream].write(data)
            out[stream].flush()
        if not running and not more:
            break
        time.sleep(0.1)
    return 0


@cli.command(name="exec", context_settings={"allow_interspersed_args": False})
@click.option("--detach", "-d", is_flag=True,
              help="Return once the command runs (docker's: its output is dropped; runc's: it"
                   " keeps this stdio, for the engine that reaps it).")
@click.option("--interactive", "-i", is_flag=True,
              help="Keep stdin attached (it always is; accepted for docker's habit).")
@click.option("--tty", "-t", is_flag=True, help="Give the command a pseudo-terminal of its own.")
@click.option("--env", "-e", multiple=True, metavar="KEY[=VALUE]", help="Set an environment variable.")
@click.option("--workdir", "-w", "--cwd", metavar="DIR",
              help="Working directory inside the container (must exist).")
@click.option("--user", "-u", metavar="USER[:GROUP]", help="Run as this user (from the container's /etc/passwd).")
@click.option("--process", "-p", "process_file", metavar="FILE",
              help="runc's: the process as JSON (args, env, cwd, user, capabilities, ...).")
@click.option("--pid-file", metavar="FILE", help="Write the process's host pid here.")
@click.option("--console-socket", metavar="SOCKET", help="Send the terminal's master here (with -t).")
@click.option("--cap", "-c", multiple=True, metavar="CAP", help="runc's: one more capability.")
@click.option("--no-new-privs", is_flag=True, help="runc's: set no_new_privs.")
@click.argument("container")
@click.argument("command", nargs=-1, type=click.UNPROCESSED, metavar="[COMMAND [ARG]...]")
def exec_command_line(detach, interactive, tty, env, workdir, user, process_file, pid_file,
                      console_socket, cap, no_new_privs, container, command):
    """Run COMMAND in a running container: its namespaces, cgroups, capabilities,
    no_new_privs and seccomp filter, its environment plus -e. Takes docker's
    options and runc's (--process, --pid-file, --console-socket, --cap)."""
    entry = store().find(container)
    entry.check("exec")
    spec = Spec.from_json(entry.data["spec"])
    oci = bool(entry.data.get("bundle"))
    spec.init, spec.preserve_fds, spec.oci, spec.hooks = False, 0, False, {}
    if process_file:
        load_exec_process(spec, process_file)
    elif not command:
        raise ContainerError("exec", "missing COMMAND (or --process FILE)")
    else:
        spec.command = tuple(command)
    if not spec.command or not spec.command[0]:
        raise ContainerError("exec ''", "not found in the container (an empty command name)",
                             code=EXIT_NOT_FOUND)
    spec.env = list(spec.env or ()) + parse_env(env, ())
    if workdir is not None:
        spec.workdir = check_container_path("--workdir", workdir, workdir)
    if user is not None:
        root_fd = container_root_fd(entry)
        try:
            spec.user = resolve_user(root_fd, user)
        finally:
            os.close(root_fd)
    if cap:
        added = frozenset(capability_numbers()[c.upper().removeprefix("CAP_")] for c in cap
                          if c.upper().removeprefix("CAP_") in capability_numbers())
        spec.caps = frozenset(spec.caps) | added
        if spec.cap_sets is not None:
            spec.cap_sets = {k: frozenset(v) | added for k, v in spec.cap_sets.items()}
    if no_new_privs:
        spec.no_new_privs = True
    spec.tty = spec.tty if process_file else tty
    if console_socket is None:
        spec.tty = spec.tty and not (detach and not oci)
        spec.winsize = terminal_size() if spec.tty else None
    spec.closed_stdio = CLOSED_STDIO
    if os.geteuid() != 0 and not spec.namespaces & CLONE_NEWUSER:
        raise ContainerError("exec", "needs root: the container is root's (try: sudo"
                             " minicontainer exec ...)")
    return exec_container(entry, spec, detached=detach, keep_stdio=oci, pid_file=pid_file,
                          console_socket=console_socket)


def load_exec_process(spec, path):
    """runc exec --process FILE: the process JSON as engines write it, read
    and checked as a bundle's process is."""
    process = read_json_document(path, f"--process {path}")
    if not process["args"].texts():
        raise ContainerError(f"--process {path}", "needs args")
    load_process(spec, process)
    check_rlimits(spec, f"--process {path}: rlimits")


def container_root_fd(entry):
    """The root as the container's PID 1 sees it (its mount namespace: --rm's
    overlay, volumes), opened through /proc/PID/root and checked to be that
    process's; for reading its /etc/passwd inside it."""
    pid1 = entry.data.get("pid1")
    try:
        fd = os.open(f"/proc/{pid1[0]}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except (OSError, TypeError):
        raise ContainerError(f"exec {entry.name}", "it is not running") from None
    if not alive(pid1):
        os.close(fd)
        raise ContainerError(f"exec {entry.name}", "it is not running")
    return fd


@cli.command()
@click.option("--time", "-t", "timeout", type=Number(int, 0), metavar="SECONDS",
              help="Seconds to wait before SIGKILL [default: the container's --stop-timeout].")
@click.argument("containers", nargs=-1, required=True, metavar="CONTAINER...")
def stop(timeout, containers):
    """Stop containers: SIGTERM, then SIGKILL after the timeout."""
    def act(entry, ref):
        stop_container(entry, timeout if timeout is not None
                       else (entry.data.get("spec") or {}).get("stop_timeout", DEFAULT_STOP_TIMEOUT))
        click.echo(ref)
    return each_container(containers, act)


@cli.command()
@click.option("--signal", "-s", "sig", metavar="SIGNAL",
              help="The signal, by name or number [default: KILL; TERM for a created one].")
@click.option("--all", "-a", "every", is_flag=True,
              help="Every process of the container, not only its PID 1 (runc's option).")
@click.argument("args", nargs=-1, required=True, metavar="CONTAINER... | ID [SIGNAL]")
def kill(sig, every, args):
    """Send a signal to containers: docker's `kill [-s SIGNAL] CONTAINER...`
    (SIGKILL by default), and runc's `kill ID [SIGNAL]` (SIGTERM by default)."""
    refs = list(args)
    if sig is None and len(refs) == 2 and is_signal(refs[1]) and not store().named(refs[1]):
        sig = refs.pop()  # runc's form: ID SIGNAL

    def act(entry, ref):
        oci = bool(entry.data.get("bundle"))
        number = parse_signal(sig or ("TERM" if oci else "KILL"))
        if oci and entry.status in (EXITED, DEAD):
            # runc's words and moves, which engines parse: containerd's shim takes
            # "container not running" for a process already gone. --all still
            # reaches what its first process left in its cgroup, and succeeds.
            if not every:
                raise ContainerError(f"kill {entry.name}", "container not running")
            kill_every_process(entry, number, strict=False)
            return
        entry.check("kill")
        if every:
            kill_every_process(entry, number)
        elif oci:
            if not signal_owner(entry.data.get("pid1"), number):
                raise ContainerError(f"kill {entry.name}", "container not running")
        else:
            kill_container(entry, number)
        if not oci:
            click.echo(ref)
    return each_container(refs, act)


def is_signal(text):
    try:
        parse_signal(text)
        return True
    except ContainerError:
        return False


def kill_every_process(entry, sig, strict=True):
    """kill --all: every process of the container and nothing else. Those of
    the PID namespace it made; else (it shares the host's or joined a pod's
    by path, where other processes live) those of its cgroup, frozen while
    they are signalled so that none forks past the list, or all at once by
    cgroup.kill for SIGKILL where cgroup v2 has it: runc's and crun's way.
    With neither (strict: refused, as runc refuses; delete: PID 1 alone)."""
    if owns_pid_namespace(entry):
        ns = pid_namespace_of(entry.data.get("pid1"))
        if ns is not None:
            signal_members(pid_namespace_members(ns),
                           lambda pids: pid_namespace_members(ns, pids), sig)
        return
    group = process_group(entry)
    if group is None:
        if strict:
            raise ContainerError(f"kill --all {entry.name}", "it shares a PID namespace and has"
                                 " no cgroup of its own: its processes cannot be told from others")
        signal_owner(entry.data.get("pid1"), sig)
        return
    version, path = group
    if sig == signal.SIGKILL and version == 2 and os.path.exists(os.path.join(path, "cgroup.kill")):
        try:  # the kernel kills the whole subtree, forks in flight too (5.14+)
            with open(os.path.join(path, "cgroup.kill"), "w") as f:
                f.write("1")
            return
        except OSError as exc:
            raise ContainerError.from_os(f"kill --all {entry.name}: write {path}/cgroup.kill",
                                         exc) from None
    was_frozen = None
    try:
        try:
            was_frozen = freeze_group(version, path, True)
        except ContainerError:
            pass  # not frozen in time (a task in D state): signalled all the same, as runc does
        signal_members(cgroup_members(path), lambda pids: cgroup_members(path), sig)
    finally:
        # A paused container stays paused, unless killed: frozen tasks die only thawed.
        if was_frozen is not True or sig == signal.SIGKILL:
            freeze_group(version, path, False)


def container_processes(entry):
    """ps ID: the host pids of a container's processes, PID 1 first, found as
    kill --all finds them (PID 1 alone where nothing else tells them apart)."""
    pid1 = entry.data.get("pid1")
    if not alive(pid1):
        return []
    if owns_pid_namespace(entry):
        ns = pid_namespace_of(pid1)
        found = pid_namespace_members(ns) if ns is not None else []
    else:
        group = process_group(entry)
        found = cgroup_members(group[1]) if group is not None else [pid1[0]]
    return sorted(set(found), key=lambda pid: (pid != pid1[0], pid))


def owns_pid_namespace(entry):
    """Whether the container made its PID namespace (run's always do): then
    every process in it is the container's."""
    spec = entry.data.get("spec") or {}
    namespaces = spec.get("namespaces")
    return namespaces is None or (bool(namespaces & CLONE_NEWPID)
                                  and str(CLONE_NEWPID) not in (spec.get("ns_paths") or {}))


def pid_namespace_of(owner):
    """The PID namespace (its link text) of the process (pid, start time), or None if gone."""
    pidfd = open_owner(owner)
    if pidfd is None:
        return None
    try:
        return os.readlink(f"/proc/{owner[0]}/ns/pid")
    except OSError:
        return None
    finally:
        os.close(pidfd)  # held while reading: the pid was not recycled under the readlink


def pid_namespace_members(ns, pids=None):
    """The pids (of `pids`, or of every process) whose PID namespace is `ns`."""
    found = []
    for name in pids if pids is not None else filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.readlink(f"/proc/{name}/ns/pid") == ns:
                found.append(int(name))
        except OSError:
            pass
    return found


def process_group(entry):
    """The cgroup whose processes are the container's, as (version, path):
    cgroup v2's where it has one (its freezer and cgroup.kill need no
    controller), else v1's freezer, else any v1 hierarchy; None without one."""
    groups = [(version, path) for version, path in entry.data.get("cgroups") or ()
              if os.path.isdir(path)]
    for version, path in sorted(groups, key=lambda g: (g[0] != 2, not os.path.exists(
            os.path.join(g[1], "freezer.state")))):
        return version, path
    return None


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


def signal_members(pids, still_members, sig):
    """Signal each of `pids` through a pidfd opened first, and only those that
    still_members(pids) lists afterwards: a pid recycled since it was listed
    is never signalled."""
    pidfds = {}
    try:
        for pid in pids:
            try:
                pidfds[pid] = os.pidfd_open(pid)
            except OSError:
                pass  # gone already
        for pid in still_members([str(pid) for pid in pidfds]):
            if pid in pidfds:
                send(pidfds[pid], sig)
    finally:
        for fd in pidfds.values():
            os.close(fd)


@cli.command()
@click.argument("containers", nargs=-1, required=True, metavar="CONTAINER...")
def wait(containers):
    """Wait for containers to end; print each one's exit code."""
    def act(entry, ref):
        code = wait_container(entry)
        click.echo("" if code is None else code)
    return each_container(containers, act)


@cli.command()
@click.option("--force", "-f", is_flag=True, help="Kill a running container first.")
@click.argument("containers", nargs=-1, required=True, metavar="CONTAINER...")
def rm(force, containers):
    """Remove containers (a running one only with -f)."""
    def act(entry, ref):
        remove_container(entry, force)
        click.echo(ref)
    return each_container(containers, act)


@cli.command()
@click.argument("containers", nargs=-1, required=True, metavar="CONTAINER...")
def inspect(containers):
    """Print everything known of containers, as a JSON array."""
    import json
    found = []
    code = each_container(containers, lambda entry, ref: found.append(inspect_data(entry)))
    click.echo(json.dumps(found, indent=4))
    return code


# -- the OCI runtime's verbs (runc's command line) ----------------------------

@cli.command()
@click.option("--bundle", "-b", default=".", metavar="DIR", help="The bundle (config.json, the root).")
@click.option("--pid-file", metavar="FILE", help="Write PID 1's host pid here.")
@click.option("--console-socket", metavar="SOCKET", help="Send the terminal's master here.")
@click.option("--no-pivot", is_flag=True, help="Move the root onto / and chroot (for a ramfs host).")
@click.option("--no-new-keyring", is_flag=True, help="Keep the caller's session keyring.")
@click.option("--preserve-fds", type=Number(int, 0), default=0, metavar="N",
              help="Pass descriptors 3 to 3+N-1 on.")
@click.argument("id")
def create(bundle, pid_file, console_socket, no_pivot, no_new_keyring, preserve_fds, id):
    """Create a container from a bundle: set it up, and leave its process
    waiting, before its program, for `start`."""
    check_oci_id(id)
    preserve_fds = check_preserved_fds(preserve_fds)
    try:
        spec, config = load_bundle(bundle, id, preserve_fds, keyring=not no_new_keyring)
        if spec.tty and not console_socket:
            raise ContainerError("config.json: process.terminal", "needs --console-socket")
    except ContainerError as exc:  # an engine's log holds many containers': say whose
        raise exc.within(f"create {id}") from None
    spec.no_pivot = no_pivot
    if os.geteuid() != 0:
        raise ContainerError("create", "needs root")
    entry = store().create(None, {
        "root": spec.root, "command": list(spec.command), "spec": spec.to_json(),
        "bundle": os.path.abspath(bundle), "annotations": config["annotations"],
        "monitor": None}, id=id)
    try:
        return create_container(spec, entry, config, pid_file, console_socket)
    except BaseException:
        entry.remove()
        raise


@cli.command()
@click.argument("id")
def start(id):
    """Start a created container: its program runs."""
    import json
    entry = store().find(id)
    if not os.path.exists(entry.path("exec.fifo")):
        raise ContainerError(f"start {entry.name}", f"it is not created (it is {oci_status(entry)})")
    entry.check("start")
    spec = Spec.from_json(entry.data["spec"])
    try:
        run_hooks(spec.hooks, "prestart", json.dumps(oci_state(entry, "created")).encode())
    except ContainerError:  # the spec: stop the container, delete it, and say why
        delete_container(entry)
        raise
    try:
        fd = os.open(entry.path("exec.fifo"), os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        why = "its process has exited" if exc.errno == 6 else exc.strerror  # ENXIO: no reader
        raise ContainerError(f"start {entry.name}", why) from None
    try:
        os.write(fd, b"0")
    finally:
        os.close(fd)
    os.unlink(entry.path("exec.fifo"))
    entry.update(status=RUNNING, started=now_iso())
    run_hooks(spec.hooks, "poststart", json.dumps(oci_state(entry, "running")).encode(), fail=False)
    return 0


@cli.command()
@click.argument("id")
def state(id):
    """Print a container's state, as the runtime spec defines it (JSON)."""
    import json
    click.echo(json.dumps(oci_state(store().find(id)), indent=2))
    return 0


@cli.command()
@click.option("--force", "-f", is_flag=True, help="Kill it first if it runs (and succeed if it is gone).")
@click.argument("id")
def delete(force, id):
    """Delete a stopped container (a running or created one only with --force):
    its processes, cgroups and state; then its poststop hooks."""
    containers = store()  # a state directory not the caller's is refused, --force or not
    try:
        entry = containers.find(id)
    except ContainerError:
        if force:
            return 0  # engines delete --force after they deleted: nothing to do
        raise
    status = oci_status(entry)
    if status not in ("stopped",) and not force:
        raise ContainerError(f"delete {entry.name}", f"it is {status}, not stopped (use --force)")
    delete_container(entry)
    return 0


def delete_container(entry):
    """Kill what is left of a container, remove its cgroups and its entry, then
    run its poststop hooks (their failure is only warned about)."""
    import json
    kill_every_process(entry, signal.SIGKILL, strict=False)
    wait_gone(entry.data.get("monitor") or entry.data.get("pid1"), 10)
    remove_cgroups(recorded_cgroups(entry))
    spec = Spec.from_json(entry.data["spec"]) if entry.data.get("spec") else None
    state = json.dumps(oci_state(entry, "stopped")).encode()
    remove_entry(entry)
    if spec is not None:
        run_hooks(spec.hooks, "poststop", state, fail=False)


@cli.command()
@click.option("--resources", "-r", metavar="FILE",
              help="linux.resources as JSON (- for stdin), as podman passes them.")
@click.option("--memory", type=Number(int), metavar="BYTES", help="Memory limit.")
@click.option("--pids-limit", type=Number(int), metavar="N", help="Most processes.")
@click.option("--cpu-shares", type=Number(int), metavar="N", help="CPU weight.")
@click.option("--cpu-quota", type=Number(int), metavar="USEC", help="CFS quota.")
@click.option("--cpu-period", type=Number(int), metavar="USEC", help="CFS period.")
@click.argument("id")
def update(resources, memory, pids_limit, cpu_shares, cpu_quota, cpu_period, id):
    """Change a running container's resources (runc's update)."""
    entry = store().find(id)
    entry.check("kill")  # created, running or paused
    wanted = {}
    if resources:
        wanted = oci_resources(read_json_document(resources, f"--resources {resources}"))
    for section, key, value in (("memory", "limit", memory), ("pids", "limit", pids_limit),
                                ("cpu", "shares", cpu_shares), ("cpu", "quota", cpu_quota),
                                ("cpu", "period", cpu_period)):
        if value is not None:
            wanted.setdefault(section, {})[key] = value
    groups = []
    try:
        for version, path in entry.data.get("cgroups") or ():
            group = Cgroup(version, path, cgroup_controllers_of(version, path))
            group.fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            groups.append(group)
        if not groups:
            raise ContainerError(f"update {entry.name}", "it has no cgroups to update")
        write_resources(groups, wanted)
    finally:
        for group in groups:
            os.close(group.fd)
    return 0


def cgroup_controllers_of(version, path):
    """The controllers of a group's hierarchy, from the host's mountinfo."""
    if version == 2:
        return frozenset()
    with open("/proc/self/mountinfo") as f:
        v1, _ = cgroup_hierarchies(f.read())
    return next((names for mount, names in v1 if path.startswith(mount.rstrip("/") + "/")),
                frozenset())


@cli.command(name="list")
@click.option("--format", "-f", "form", type=click.Choice(["table", "json"]), default="table",
              show_default=True)
@click.option("--quiet", "-q", is_flag=True, help="Only the ids.")
def list_command(form, quiet):
    """List containers as runc does: id, pid, status, bundle, created."""
    import json
    states = [oci_state(c) for c in store().entries()]
    if form == "json":
        click.echo(json.dumps(states))
    elif quiet:
        for st in states:
            click.echo(st["id"])
    else:
        rows = [("ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER")] + [
            (st["id"], str(st["pid"]), st["status"], st["bundle"], st["created"] or "", "root")
            for st in states]
        print_table(rows)
    return 0


@cli.command()
@click.argument("id")
def pause(id):
    """Freeze every process of a running container (the freezer cgroup)."""
    freeze(store().find(id), True)
    return 0


@cli.command()
@click.argument("id")
def resume(id):
    """Thaw a paused container."""
    freeze(store().find(id), False)
    return 0


def freeze(entry, frozen):
    """Freeze or thaw through the container's freezer group (v1 freezer.state,
    or v2 cgroup.freeze), wait until the kernel says it is done, and record it."""
    verb = "pause" if frozen else "resume"
    entry.check(verb)
    for version, path in entry.data.get("cgroups") or ():
        try:
            was = freeze_group(version, path, frozen)
        except ContainerError as exc:
            raise exc.within(f"{verb} {entry.name}") from None
        if was is not None:
            entry.update(status=PAUSED if frozen else RUNNING)
            return
    raise ContainerError(f"{'pause' if frozen else 'resume'} {entry.name}",
                         "it has no freezer cgroup (containers of run have none)")


def freeze_group(version, path, frozen):
    """Freeze or thaw one group and wait until the kernel says it is done.
    Returns whether it was frozen before, or None where it has no freezer."""
    import time
    name, value = (("freezer.state", "FROZEN" if frozen else "THAWED") if version == 1
                   else ("cgroup.freeze", "1" if frozen else "0"))
    target = os.path.join(path, name)
    try:
        with open(target) as f:
            before = f.read().strip() in ("FROZEN", "1")
    except OSError:
        return None
    try:
        with open(target, "w") as f:
            f.write(value)
        for _ in range(500):
            if version == 1:
                with open(target) as f:
                    done = f.read().strip() == value
            else:  # cgroup.freeze says what was asked; cgroup.events says when it is so
                with open(os.path.join(path, "cgroup.events")) as f:
                    done = f"frozen {value}" in f.read().splitlines()
            if done:
                return before
            time.sleep(0.002)
    except OSError as exc:
        raise ContainerError.from_os(f"write {value} to {target}", exc) from None
    raise ContainerError(f"{'freeze' if frozen else 'thaw'} cgroup {path}",
                         "the freezer did not settle")


@cli.command()
def features():
    """Print what this runtime supports, as the runtime spec's features document."""
    import json
    click.echo(json.dumps(oci_features(), indent=2))
    return 0


@cli.command(name="spec")
@click.option("--bundle", "-b", default=".", metavar="DIR", help="Where to write config.json.")
def spec_command(bundle):
    """Write a default config.json: runc's, with minicontainer's capabilities,
    masks and seccomp policy."""
    import json
    path = os.path.join(bundle, "config.json")
    try:
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644), "w") as f:
            json.dump(default_config(), f, indent=2)
    except FileExistsError:
        raise ContainerError(f"spec {path}", "it exists; remove it first") from None
    except OSError as exc:
        raise ContainerError.from_os(f"spec {path}", exc) from None
    return 0


def mib(size):
    return f"{size / (1 << 20):.1f} MiB"


def report_resources(limits, memory_text, code, found, wall):
    """The OOM line and the --stats line, on stderr, after the run."""
    for error in found.get("cleanup_errors", ()):
        click.echo(f"minicontainer: warning: {error}", err=True)
    oom = found.get("oom_kills")
    if oom and code == 128 + signal.SIGKILL:
        click.echo(f"minicontainer: memory limit {memory_text} hit: the kernel's OOM killer"
                   " ended the command", err=True)
    elif oom:
        click.echo(f"minicontainer: warning: memory limit {memory_text} hit: the kernel's OOM"
                   f" killer ended {oom} process{'es' * (oom > 1)} in the container", err=True)
    if limits.stats:
        parts = [f"{wall:.2f} s wall"]
        if found.get("cpu_us") is not None:
            parts.append(f"{found['cpu_us'] / 1e6:.2f} s CPU")
        if found.get("memory_peak") is not None:
            parts.append(f"{mib(found['memory_peak'])} peak memory")
        if found.get("pids_peak") is not None:
            parts.append(f"{found['pids_peak']} peak pids")
        click.echo("minicontainer: stats: " + ", ".join(parts), err=True)


def one_line(text, limit=1000):
    """A message as one printable line of sensible length: control characters
    (a file name or an ELF interpreter from a container can hold any) shown
    escaped, each very long word (a 4,000-character path) cut in its middle."""
    words = []
    for word in text.split(" "):
        word = "".join(c if c.isprintable() else repr(c)[1:-1] for c in word)
        words.append(word if len(word) <= 120 else f"{word[:60]}...{word[-40:]}")
    line = " ".join(words)
    return line if len(line) <= limit else line[:limit - 3] + "..."


# runc's --log FILE and --log-format: where an engine reads why a call failed.
LOG = None


def say(message, level="error"):
    """The one line on stderr through which every failure is told; in the --log
    file too, as a JSON object with an RFC 3339 time when asked (what
    containerd's shim and podman read)."""
    click.echo(f"minicontainer: {one_line(message)}", err=True)
    if LOG is not None:
        import json
        path, form, _ = LOG
        line = (json.dumps({"level": level, "msg": one_line(message), "time": now_iso()})
                if form == "json" else f"{now_iso()} {level}: {one_line(message)}")
        try:
            with open(path, "a") as f:
                f.write(line + "\n")
        except OSError:
            pass


def main(argv=None):
    """Entry point: run the CLI; print any failure as one line; return the exit code."""
    try:
        return cli.main(args=argv, prog_name="minicontainer", standalone_mode=False) or 0
    except ContainerError as exc:
        say(str(exc))
        return exc.code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        say(exc.format_message())
        return EXIT_OWN_FAILURE
    except (click.Abort, KeyboardInterrupt):
        say("interrupted")
        return 128 + signal.SIGINT
    except Exception as exc:  # a bug: still one line, never a traceback
        say(f"internal error: {exc!r}")
        return EXIT_OWN_FAILURE


# Which of stdin, stdout and stderr minicontainer's caller had closed (`>&-`).
CLOSED_STDIO = ()


def hold_stdio():
    """Put /dev/null where the caller closed 0, 1 or 2, and remember which.

    Otherwise the first descriptor minicontainer opens (the report socket,
    say) would take the number, and the command would write into it. The
    container gets them closed again (close_stdio), as it was asked.
    """
    global CLOSED_STDIO
    closed = []
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            closed.append(fd)
    for fd in closed:
        null = os.open("/dev/null", os.O_RDWR)
        if null != fd:
            os.dup2(null, fd)
            os.close(null)
    if 0 in closed:
        sys.stdin = open(0, closefd=False)
    if 1 in closed:
        sys.stdout = open(1, "w", closefd=False)
    if 2 in closed:
        sys.stderr = open(2, "w", errors="backslashreplace", closefd=False)
    CLOSED_STDIO = tuple(closed)


def entry():
    """Console-script entry point: main(), then exit without interpreter teardown.

    Tearing down click's modules costs about as much as starting a container;
    with the output flushed, nothing is lost by skipping it.
    """
    if sys.stdin is None or sys.stdout is None or sys.stderr is None:
        hold_stdio()
    code = main()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:  # a closed pipe: nothing left to say
        pass
    os._exit(code)


if __name__ == "__main__":
    entry()
