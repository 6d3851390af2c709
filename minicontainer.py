"""minicontainer: a small Linux container in one module.

`deploy` copies programs into a container root (default ./newroot); `run`
starts a command inside that root as PID 1 of its own PID and mount
namespaces, behind pivot_root, with a fresh /proc, and passes its exit
status through the way docker does.

The module reads top to bottom as a container's life: constants, errors,
syscall wrappers, the root filesystem and deploy, the container's set-up
steps (child side), supervision (parent side), and the command line.
"""

__version__ = "0.1.0"

import gc
import os
import signal
import sys

import click


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

MNT_DETACH = 0x2

RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10

AF_INET, SOCK_DGRAM = 2, 2
TIOCSCTTY, TIOCGWINSZ, TIOCSWINSZ = 0x540E, 0x5413, 0x5414
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1

# pivot_root has no glibc wrapper; its number differs between architectures.
# openat2 came after the numbers were unified, so it is 437 everywhere.
SYS_PIVOT_ROOT = {"x86_64": 155, "i386": 217, "i686": 217, "aarch64": 41,
                  "riscv64": 41, "armv7l": 218, "ppc64le": 203, "s390x": 217}
SYS_OPENAT2 = 437
SYS_OPEN_TREE, SYS_MOVE_MOUNT = 428, 429  # the new mount API (Linux 5.2+), also unified
OPEN_TREE_CLONE, OPEN_TREE_CLOEXEC = 0x1, os.O_CLOEXEC
MOVE_MOUNT_F_EMPTY_PATH = 0x4
AT_FDCWD = -100

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

# Podman's default bounding set. Docker's older one adds MKNOD, NET_RAW and
# AUDIT_WRITE; MKNOD without a device cgroup lets root inside create and open
# a host disk's block device, so it stays out unless asked for.
DEFAULT_CAPABILITIES = ("CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL",
                        "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID",
                        "SYS_CHROOT")

# System calls the default seccomp filter makes fail with EPERM: the ones
# that reach past the namespaces (mounts, namespaces, kernel modules, kexec,
# keyrings, bpf, raw I/O ports, file handles, swap, reboot).
SECCOMP_DENIED = ("mount", "umount2", "pivot_root", "unshare", "setns", "kexec_load",
                  "kexec_file_load", "init_module", "finit_module", "delete_module",
                  "keyctl", "add_key", "request_key", "bpf", "open_by_handle_at",
                  "reboot", "swapon", "swapoff", "iopl", "ioperm")
TIOCSTI = 0x5412  # ioctl that pushes bytes into a terminal's input: denied too
SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_ACT_ERRNO_EPERM = 0x00050000 | 1
SCMP_CMP_MASKED_EQ = 7
# 32-bit ABIs the native filter also covers, as docker's profile does.
SCMP_COMPAT_ARCHES = {"x86_64": (0x40000003, 0x4000003E), "aarch64": (0x40000028,)}

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
READ_ONLY_TMPFS = (("/tmp", "mode=1777"), ("/run", "mode=755"))
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
# What the supervisor blocks and waits for: the same set, or a signal is lost.
SUPERVISOR_SIGNALS = SUPERVISED_SIGNALS + (HOLDER_DONE,)


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


_open_how = None


def openat2(dirfd, path, flags, resolve):
    """openat2(2) (Linux 5.6+): open `path` below `dirfd` under `resolve` rules."""
    import ctypes
    global _open_how
    if _open_how is None:
        class OpenHow(ctypes.Structure):
            _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                        ("resolve", ctypes.c_uint64)]
        _open_how = OpenHow
    how = _open_how(flags | os.O_CLOEXEC, 0, resolve)
    return _libc_call("syscall", ctypes.c_long(SYS_OPENAT2), dirfd,
                      _bytes(path), ctypes.byref(how), ctypes.sizeof(how),
                      what=f"open {path} inside the root")


def open_tree_clone(path):
    """open_tree(OPEN_TREE_CLONE): a detached copy of the mount at `path`, as an fd
    that can be attached later, even behind pivot_root (Linux 5.2+)."""
    import ctypes
    return _libc_call("syscall", ctypes.c_long(SYS_OPEN_TREE), AT_FDCWD, _bytes(path),
                      OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC, what=f"open_tree {path}")


def move_mount(tree_fd, target):
    """move_mount(2): attach a detached mount tree at `target`."""
    import ctypes
    _libc_call("syscall", ctypes.c_long(SYS_MOVE_MOUNT), tree_fd, b"", AT_FDCWD, _bytes(target),
               MOVE_MOUNT_F_EMPTY_PATH, what=f"mount --bind (volume) {target}")


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


class SeccompFilter:
    """A libseccomp filter: built while the host's libraries are in sight, loaded
    just before exec. libseccomp writes the BPF and checks the architecture;
    this binds the five calls needed, by soname, at a fraction of the start-up
    cost of a binding that looks the library up with ldconfig on import.
    """

    def __init__(self, denied, denied_ioctls):
        import ctypes
        self.lib = lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
        lib.seccomp_init.restype = ctypes.c_void_p
        lib.seccomp_init.argtypes = [ctypes.c_uint32]
        lib.seccomp_arch_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
        lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
        lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                               ctypes.c_uint, ctypes.c_void_p]
        lib.seccomp_load.argtypes = [ctypes.c_void_p]
        self.ctx = lib.seccomp_init(SCMP_ACT_ALLOW)
        if not self.ctx:
            raise ContainerError("seccomp", "libseccomp could not make a filter")
        for arch in SCMP_COMPAT_ARCHES.get(os.uname().machine, ()):
            lib.seccomp_arch_add(self.ctx, arch)  # -EEXIST or unsupported: fine

        class ArgCmp(ctypes.Structure):
            _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                        ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]

        for name in denied:
            self.deny(name, 0, None)
        for request in denied_ioctls:
            # ioctl's request is an int to the kernel: compare only its low 32 bits,
            # so junk in the high bits cannot slip TIOCSTI past the filter.
            self.deny("ioctl", 1, ctypes.byref(ArgCmp(1, SCMP_CMP_MASKED_EQ, 0xFFFFFFFF, request)))

    def deny(self, name, count, args):
        number = self.lib.seccomp_syscall_resolve_name(name.encode())
        if number < 0:  # not a system call on this architecture (iopl on arm64)
            return
        rc = self.lib.seccomp_rule_add_array(self.ctx, SCMP_ACT_ERRNO_EPERM, number, count, args)
        if rc < 0:
            raise ContainerError(f"seccomp rule for {name}", errno=-rc)

    def load(self):
        """Install the filter. Precondition: no_new_privs is set (or CAP_SYS_ADMIN)."""
        rc = self.lib.seccomp_load(self.ctx)
        if rc < 0:
            raise ContainerError("load the seccomp filter", errno=-rc)


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


def read_root_file(root, path):
    """A text file of the root's, resolved with the root as "/"; '' if missing."""
    rootfd = open_root(root)
    try:
        fd = openat2(rootfd, path, os.O_RDONLY, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
    except ContainerError as exc:
        if exc.errno == 2:
            return ""
        raise
    finally:
        os.close(rootfd)
    with open(fd, encoding="utf-8", errors="replace") as f:
        return f.read()


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
            new = openat2(rootfd, prefix, os.O_RDONLY | os.O_DIRECTORY,
                          RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
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
    """The ops of a deploy, in order, plus what was skipped and what to close."""

    def __init__(self, rootfd):
        self.rootfd, self.ops, self.skipped, self.open_files = rootfd, [], [], []
        self.planned = {}

    def add(self, op):
        """Add an op; a second op for the same place and kind is dropped."""
        if self.planned.get(op.dst) == op.kind and op.kind in ("dir", "symlink", "file"):
            return
        self.planned[op.dst] = op.kind
        self.ops.append(op)

    def root_kind(self, path):
        """'dir', 'symlink', 'other', or None: what the root (or this plan) has at `path`."""
        import stat
        if path in self.planned:
            return self.planned[path]
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
    info = ElfInfo()
    try:
        with open(path, "rb") as f:
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
    import tarfile
    import tempfile
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
    """Plan a tar archive's members under `to`; whiteouts are handled by the caller."""
    for member in members:
        name = check(member, archive)
        if name is None:
            plan.skipped.append(f"{archive}:{member.name}")
            continue
        dst = os.path.normpath(os.path.join(to, name))
        meta = (member.mode & 0o7777, member.uid, member.gid, int(member.mtime * 1e9), member.size)
        if member.isdir():
            plan.add(Op("dir", dst, None, meta))
        elif member.issym():
            plan.add(Op("symlink", dst, member.linkname))
        elif member.islnk():
            plan.add(Op("hardlink", dst, os.path.normpath(os.path.join(to, member.linkname.lstrip("/")))))
        elif member.isreg():
            plan.add(Op("file", dst, None, meta, data=lambda m=member, t=tar: t.extractfile(m)))


def open_tar(path, fileobj=None):
    import tarfile
    try:
        return tarfile.open(path, "r:*", fileobj=fileobj)
    except (tarfile.TarError, OSError) as exc:
        raise ContainerError(f"deploy {path}", f"not a readable tar archive: {exc}") from None


def plan_archive(plan, path, to):
    """A root filesystem archive, or a `docker save` / OCI image archive."""
    tar = open_tar(path)
    plan.open_files.append(tar)
    names = set(tar.getnames())
    if "manifest.json" in names or "oci-layout" in names or "index.json" in names:
        def read(name):
            f = tar.extractfile(name)
            if f is None:
                raise ContainerError(f"deploy {path}", f"{name} missing from the image")
            return f
        layers = image_layers(path, lambda name: read(name).read())
        for layer in layers:
            plan_layer(plan, open_tar(f"{path}:{layer}", read(layer)), f"{path}:{layer}", to)
    else:
        plan_members(plan, tar, tar.getmembers(), path, to, member_checker())


def plan_oci_dir(plan, path, to):
    """An OCI image layout directory (index.json, blobs/sha256/...)."""
    def read(name):
        with open(os.path.join(path, name), "rb") as f:
            return f.read()
    for layer in image_layers(path, read):
        f = open(os.path.join(path, layer), "rb")
        plan.open_files.append(f)
        plan_layer(plan, open_tar(f"{path}/{layer}", f), f"{path}/{layer}", to)


def image_layers(image, read):
    """The layer files of an image, bottom first: docker save's manifest.json,
    else the OCI index.json -> manifest -> layers."""
    import json
    try:
        try:
            manifest = json.loads(read("manifest.json"))
            return manifest[0]["Layers"]
        except (ContainerError, FileNotFoundError):
            pass  # no docker manifest: an OCI layout
        blob = lambda digest: "blobs/" + digest.replace(":", "/")
        index = json.loads(read("index.json"))
        desc = index["manifests"][0]
        doc = json.loads(read(blob(desc["digest"])))
        while "manifests" in doc:  # an index of per-platform manifests
            doc = json.loads(read(blob(doc["manifests"][0]["digest"])))
        for layer in doc["layers"]:
            if "zstd" in layer.get("mediaType", ""):
                raise ContainerError(f"deploy {image}", "zstd-compressed layers are not supported")
        return [blob(layer["digest"]) for layer in doc["layers"]]
    except (KeyError, IndexError, ValueError, TypeError) as exc:
        raise ContainerError(f"deploy {image}", f"not an image manifest this understands: {exc!r}") from None


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
            checked = check(member, name) or member.name
            where = os.path.normpath(os.path.join(to, os.path.dirname(checked)))
            if base == ".wh..wh..opq":
                plan.ops.append(Op("clear", where))
            else:
                plan.ops.append(Op("remove", os.path.join(where, base[4:])))
            plan.planned.pop(where, None)
    plan_members(plan, tar, [m for m in members if not os.path.basename(m.name).startswith(".wh.")],
                 name, to, check)


class Writer:
    """Applies a plan inside the root. Each path is resolved with the root as
    "/" (openat2), and each file is made with O_EXCL|O_NOFOLLOW or written
    under a temporary name and renamed over the old one, so a symlink planted
    in the root is replaced, never followed."""

    def __init__(self, rootfd, link=False):
        self.rootfd, self.link, self.owner = rootfd, link, os.geteuid() == 0
        self.me = (os.geteuid(), os.getegid())
        self.dirfds, self.made, self.late_modes = {}, set(), []
        self.files = self.links = self.size = 0
        self.warnings = []

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
                    self.late_modes.append((fd, mode))
            except FileExistsError:
                pass
        if fd is None:
            fd = open_dir_in_root(self.rootfd, path, create=create)
        self.dirfds[path] = fd
        return fd

    def forget(self, path):
        """Drop cached directory fds at or below a removed path."""
        for cached in [p for p in self.dirfds if p == path or p.startswith(path.rstrip("/") + "/")]:
            os.close(self.dirfds.pop(cached))

    def close(self):
        for fd, mode in self.late_modes:
            os.fchmod(fd, mode)
        self.late_modes.clear()
        for fd in self.dirfds.values():
            os.close(fd)
        self.dirfds.clear()

    def apply(self, op):
        try:
            getattr(self, "do_" + op.kind)(op)
        except OSError as exc:
            raise ContainerError.from_os(f"deploy {op.src or op.dst} to {op.dst}", exc) from None

    def do_dir(self, op):
        """Make a directory with its owner and mode; an existing one (or a link
        to one) keeps what it has."""
        mode, uid, gid = op.meta[:3]
        fd = self.dirfd(op.dst, mode=mode)
        if op.dst in self.made and self.owner and (uid, gid) != self.me:
            os.fchown(fd, uid, gid)
            os.fchmod(fd, mode | 0o700 if mode & 0o700 != 0o700 else mode)  # chown clears setgid

    def place(self, op, make):
        """Create `op.dst` with make(dirfd, name); if something is there, make it
        under a temporary name and rename it over (never into a directory)."""
        import stat
        parent, name = os.path.split(op.dst)
        fd = self.dirfd(parent)
        try:
            make(fd, name)
            return
        except FileExistsError:
            pass
        existing = os.stat(name, dir_fd=fd, follow_symlinks=False)
        if stat.S_ISDIR(existing.st_mode):
            if not skeleton_dir(fd, name):
                self.warnings.append(f"kept the root's directory {op.dst} (the source has a"
                                     f" {op.kind} there)")
                return
            self.forget(op.dst)  # no cached fd may lead into the removed directory
            shutil_rmtree(name, fd)
        tmp = f".{name}.minicontainer-{os.getpid()}"
        make(fd, tmp)
        os.rename(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)

    def do_file(self, op):
        if self.link and op.src:
            parent, _, name = op.dst.rpartition("/")
            if self.try_link(op.src, self.dirfd(parent or "/"), name):
                self.files += 1
                return
            if self.link:  # something is there: link under a temporary name, rename over it
                self.place(op, lambda fd, tmp: os.link(op.src, tmp, dst_dir_fd=fd,
                                                       follow_symlinks=False))
                self.files += 1
                return
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
                os.unlink(name, dir_fd=fd)
                raise
            os.close(out)

        return make

    def try_link(self, src, fd, name):
        """--link: hard-link the source. Something already there: False, to be
        replaced by a copy. On another filesystem: say so once, and copy."""
        try:
            os.link(src, name, dst_dir_fd=fd, follow_symlinks=False)
            return True
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno != 18:  # EXDEV
                raise
            self.link = False
            self.warnings.append(f"--link: {src} is on another filesystem than the root;"
                                 " copying instead")
            return False

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
        src_parent, src_name = os.path.split(op.src)
        src_fd = self.dirfd(src_parent, create=False)
        self.place(op, lambda fd, name: os.link(src_name, name, src_dir_fd=src_fd, dst_dir_fd=fd,
                                                 follow_symlinks=False))
        self.links += 1

    def do_remove(self, op):
        import stat
        parent, name = os.path.split(op.dst)
        try:
            fd = self.dirfd(parent, create=False)
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except (OSError, ContainerError):
            return  # nothing there to remove
        self.forget(op.dst)
        if stat.S_ISDIR(st.st_mode):
            shutil_rmtree(name, fd)
        else:
            os.unlink(name, dir_fd=fd)

    def do_clear(self, op):
        try:
            fd = self.dirfd(op.dst, create=False)
        except ContainerError:
            return
        for name in os.listdir(fd):
            self.do_remove(Op("remove", os.path.join(op.dst, name)))


def skeleton_dir(dirfd, name):
    """An empty directory, or one holding only newroot's .keep placeholder."""
    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dirfd)
    try:
        return set(os.listdir(fd)) <= {".keep"}
    finally:
        os.close(fd)


def shutil_rmtree(name, dirfd):
    """Remove a tree below dirfd without following symlinks (rmtree's fd-based walk)."""
    import shutil
    shutil.rmtree(name, dir_fd=dirfd)


def describe(op):
    """One line of --dry-run output."""
    if op.kind == "file":
        return f"copy {op.src or '(archive member)'} -> {op.dst}"
    if op.kind == "symlink":
        return f"symlink {op.dst} -> {op.src}"
    if op.kind == "hardlink":
        return f"hardlink {op.dst} -> {op.src}"
    return f"{'mkdir' if op.kind == 'dir' else op.kind} {op.dst}"


def deploy_paths(root, sources, to=None, deps=True, link=False, dry_run=False, progress=False):
    """Deploy sources into the root; return the Writer (its counts) and the plan."""
    rootfd = open_root(root)
    plan = Plan(rootfd)
    writer = Writer(rootfd, link=link)
    umask = os.umask(0)  # modes are set exactly, as the sources have them
    try:
        plan_sources(plan, sources, to, deps)
        if dry_run:
            return writer, plan
        ops = plan.ops
        if progress and len(ops) > 1000:
            with click.progressbar(ops, label="deploying", file=sys.stderr) as bar:
                for op in bar:
                    writer.apply(op)
        else:
            for op in ops:
                writer.apply(op)
        return writer, plan
    finally:
        os.umask(umask)
        writer.close()
        plan.close()
        os.close(rootfd)


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


def parse_size(text, option):
    """docker's sizes: bytes, or a number with b, k, m, g, t (powers of 1024)."""
    import re
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([bkmgt]?)b?", text.strip().lower())
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
        try:
            soft = int(soft_text)
            hard = int(hard_text) if hard_text else soft
        except ValueError:
            raise ContainerError(f"--ulimit {value}", "expected NAME=SOFT[:HARD] with numbers") from None
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


def cgroup_mounts(mountinfo):
    """From mountinfo text: (cgroup2 mount point or None, {v1 controller: mount point})."""
    v2, v1 = None, {}
    for line in mountinfo.splitlines():
        fields = line.split()
        rest = fields[fields.index("-") + 1:]
        if rest[0] == "cgroup2" and v2 is None:
            v2 = fields[4]
        elif rest[0] == "cgroup":
            for option in rest[2].split(","):
                if option in CGROUP_CONTROLLERS or option == "cpuacct":
                    v1.setdefault(option, fields[4])
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
        try:
            fd = os.open(name, os.O_WRONLY | os.O_CLOEXEC, dir_fd=self.fd)
            try:
                os.write(fd, str(value).encode())
            finally:
                os.close(fd)
        except OSError as exc:
            raise ContainerError.from_os(f"write {value} to {self.path}/{name}", exc) from None

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
# a veth pair whose container end is eth0. pyroute2 does the netlink work;
# it is imported only here (it costs ~170 ms). The last run to leave removes
# the bridge and any masquerade rule; the holder does it if the supervisor is
# SIGKILLed, and every run sweeps entries whose owners are gone. The shared
# state lives in /run, reached through a directory fd opened up front, so
# the holder can still reach it from behind pivot_root.
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
    """A process's start time (clock ticks since boot), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


class Network:
    """A container's place on the bridge: address, veth, published ports, and
    the shared state (/run/minicontainer/network.json) saying who else is there."""

    def __init__(self, subnet, publish=(), outbound=False):
        self.subnet, self.publish, self.outbound = subnet, tuple(publish), outbound
        self.gateway = str(subnet[1])
        self.address = None
        self.listeners = []
        self.veth = None
        self.owner = (os.getpid(), process_start(os.getpid()))
        self.state_dir = self.host_root = self.forward_fd = None

    # -- shared state, under an exclusive lock -------------------------------

    def locked(self):
        import fcntl
        if self.state_dir is None:
            self.state_dir = os.open(NET_STATE_DIR, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            self.host_root = os.open("/", os.O_PATH | os.O_CLOEXEC)
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
        live = {ip: owner for ip, owner in state["containers"].items()
                if process_start(owner[0]) == owner[1] or owner == list(self.owner)}
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
        masquerade rule, for --outbound), and bind the published ports."""
        import socket
        import subprocess  # noqa: F401  the holder may have to undo a rule from behind pivot_root
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
            for host_ip, host_port, _ in self.publish:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind((host_ip, host_port))
                except OSError as exc:
                    sock.close()
                    raise ContainerError.from_os(f"--publish {host_ip}:{host_port}", exc) from None
                sock.listen(64)
                self.listeners.append(sock)
            self.ensure_bridge()
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

    def ensure_bridge(self):
        from pyroute2 import IPRoute
        from pyroute2.netlink.exceptions import NetlinkError
        try:
            with IPRoute() as ip:
                if not ip.link_lookup(ifname=BRIDGE):
                    ip.link("add", ifname=BRIDGE, kind="bridge")
                index = ip.link_lookup(ifname=BRIDGE)[0]
                addresses = [a.get_attr("IFA_ADDRESS") for a in ip.get_addr(index=index)]
                if self.gateway not in addresses:
                    ip.addr("add", index=index, address=self.gateway, prefixlen=self.subnet.prefixlen)
                ip.link("set", index=index, state="up")
        except NetlinkError as exc:
            raise ContainerError(f"set up bridge {BRIDGE}", exc.args[-1] if exc.args else str(exc)) from None

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
        """The host's ip_forward switch, opened once (it is per network namespace,
        fixed at open, so the holder can still use it from the container's)."""
        if self.forward_fd is None:
            self.forward_fd = os.open("/proc/sys/net/ipv4/ip_forward", os.O_RDWR | os.O_CLOEXEC)
        return self.forward_fd

    # -- once PID 1 exists ----------------------------------------------------

    def attach(self, pid1):
        """The veth pair: mcvPID on the bridge, eth0 inside with the address and
        a default route through the bridge; configured from here, through a
        netlink socket opened in the container's network namespace."""
        from pyroute2 import IPRoute
        from pyroute2.netlink.exceptions import NetlinkError
        self.veth = f"mcv{pid1}"
        host_ns = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        container_ns = os.open(f"/proc/{pid1}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            with IPRoute() as ip:
                ip.link("add", ifname=self.veth, kind="veth",
                        peer={"ifname": "eth0", "net_ns_fd": container_ns})
                ip.link("set", index=ip.link_lookup(ifname=self.veth)[0],
                        master=ip.link_lookup(ifname=BRIDGE)[0], state="up")
            setns(container_ns, CLONE_NEWNET)
            try:
                inside = IPRoute()
            finally:
                setns(host_ns, CLONE_NEWNET)
            with inside:
                eth0 = inside.link_lookup(ifname="eth0")[0]
                inside.addr("add", index=eth0, address=self.address, prefixlen=self.subnet.prefixlen)
                inside.link("set", index=eth0, state="up")
                inside.route("add", dst="default", gateway=self.gateway)
        except NetlinkError as exc:
            raise ContainerError("set up the container's network", str(exc)) from None
        finally:
            os.close(host_ns)
            os.close(container_ns)

    def relay(self):
        """-p: a userspace relay per published port, in threads of the supervisor."""
        import threading
        for sock, (_, _, port) in zip(self.listeners, self.publish):
            threading.Thread(target=accept_loop, args=(sock, self.address, port), daemon=True).start()

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
        """Give the address back; the last one out removes the bridge and the
        masquerade rule and restores IP forwarding. Safe to call twice."""
        from pyroute2 import IPRoute
        self.close_listeners()
        if self.address is None:
            return
        fd = self.locked()
        try:
            with IPRoute() as ip:
                # The kernel deletes the veth too, some time after the namespace
                # is gone: one that vanished before our delete is just gone.
                delete_link(ip, self.veth)  # both ends go
                state = self.load()
                state["containers"].pop(self.address, None)
                if state["containers"]:
                    self.save(state)
                    return
                delete_link(ip, BRIDGE)
            outbound, failure = state.pop("outbound", None), None
            if outbound:
                os.pwrite(self.forwarding(), outbound["ip_forward_before"].encode(), 0)
                try:
                    firewall(outbound["tool"], "delete", state.get("subnet", str(self.subnet)),
                             self.host_root)
                except ContainerError as exc:
                    failure = exc  # said after the rest is undone
            for name in (NET_STATE, NET_LOCK):
                try:
                    os.unlink(name, dir_fd=self.state_dir)
                except FileNotFoundError:
                    pass
            if failure is not None:
                raise failure
        finally:
            os.close(fd)
            self.address = None


def delete_link(ip, name):
    """Delete a network link if it is there; one that is already gone is fine."""
    from pyroute2.netlink.exceptions import NetlinkError
    if not name:
        return
    try:
        for index in ip.link_lookup(ifname=name):
            ip.link("del", index=index)
    except NetlinkError as exc:
        if exc.code != 19:  # ENODEV: gone in the meantime
            raise ContainerError(f"delete network link {name}", os.strerror(exc.code), exc.code) from None


def firewall(tool, action, subnet, host_root=None):
    """Add or delete minicontainer's masquerade rule for the bridge's subnet.
    From the holder, behind pivot_root, the tool runs chrooted to the host root."""
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
    back = (lambda: (os.fchdir(host_root), os.chroot("."))) if host_root is not None else None
    for command in commands:
        result = subprocess.run(command, capture_output=True, text=True, preexec_fn=back)
        if result.returncode != 0:
            raise ContainerError(" ".join(command), result.stderr.strip() or "failed")


def read_lines(path):
    try:
        with open(path) as f:
            return [line.strip() for line in f]
    except OSError:
        return []


def accept_loop(listener, address, port):
    """Accept connections on a published port and relay each to the container."""
    import socket
    import threading
    while True:
        try:
            client, _ = listener.accept()
        except OSError:  # closed at the end of the run
            return
        try:
            upstream = socket.create_connection((address, port), timeout=5)
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
# Container set-up (child side)
# One small function per step, in the order they run; `container_main` below
# calls them one per line. All of it runs in forked children.
# ---------------------------------------------------------------------------

class Spec:
    """What to run and how: built and checked by the CLI, read by every step."""

    __slots__ = ("root", "command", "workdir", "hostname", "namespaces", "init",
                 "preserve_fds", "mask_paths", "caps", "user", "seccomp", "limits",
                 "env", "volumes", "tmpfs", "read_only", "read_only_tmpfs", "rm", "tty",
                 "winsize", "stop_timeout", "etc_files")

    def __init__(self, root, command, workdir="/", hostname=DEFAULT_HOSTNAME,
                 namespaces=BASE_NAMESPACES | sum(OPTIONAL_NAMESPACES.values()),
                 init=False, preserve_fds=0, mask_paths=True, caps=frozenset(),
                 user=None, seccomp=True, limits=None, env=(), volumes=(), tmpfs=(),
                 read_only=False, read_only_tmpfs=True, rm=False, tty=False, winsize=None,
                 stop_timeout=DEFAULT_STOP_TIMEOUT, etc_files=()):
        self.root, self.command, self.workdir = root, tuple(command), workdir
        self.hostname, self.namespaces, self.init = hostname, namespaces, init
        self.preserve_fds, self.mask_paths = preserve_fds, mask_paths
        self.caps, self.user, self.seccomp = caps, user, seccomp  # user: (uid, gid, home)
        self.limits = limits or Limits()
        self.env, self.volumes, self.tmpfs = tuple(env), tuple(volumes), tuple(tmpfs)
        self.read_only, self.read_only_tmpfs, self.rm = read_only, read_only_tmpfs, rm
        self.tty, self.winsize, self.stop_timeout = tty, winsize, stop_timeout
        self.etc_files = tuple(etc_files)  # (name, text): /etc files written for this run


class Handles:
    """What the container's processes hold while it is set up: the report pipe,
    the cgroups, the terminal socket (-t), and, in PID 1, the host root fd
    (to explain a failed exec), the seccomp filter and the volume sources."""

    __slots__ = ("report_fd", "groups", "tty_sock", "host_root", "seccomp", "volumes",
                 "go_fd", "network")

    def __init__(self, report_fd, groups, tty_sock=None, go_fd=None, network=None):
        self.report_fd, self.groups, self.tty_sock = report_fd, groups, tty_sock
        self.go_fd, self.network = go_fd, network  # --network bridge only
        self.host_root = self.seccomp = None
        self.volumes = ()


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


def enter_cgroups(spec, groups):
    """Join the container's groups, then a cgroup namespace rooted at them.

    PID 1 joins before anything of the command runs, so nothing escapes the
    limits; the holder stays outside, uncharged, to clean up afterwards.
    """
    join_cgroups(groups, os.getpid())
    if spec.namespaces & CLONE_NEWCGROUP:
        unshare(CLONE_NEWCGROUP)


def set_hostname(spec):
    """Name the container's own UTS namespace; the host's name is untouched."""
    if spec.namespaces & CLONE_NEWUTS:
        sethostname(spec.hostname)


def bring_up_loopback(spec):
    """A new network namespace has only lo, and down: bring it up."""
    if spec.namespaces & CLONE_NEWNET:
        set_link_up("lo")


def bind_root(root):
    """Bind the root onto itself, nosuid and nodev: pivot_root needs a mount point,
    and no setuid file or device node planted in the root may take effect."""
    mount(root, root, None, MS_BIND | MS_REC)
    mount(root, root, None, MS_BIND | MS_REMOUNT | MS_NOSUID | MS_NODEV)


def enter_root(root):
    """pivot_root into the root and detach the host's tree.

    Unlike chroot, nothing of the host stays reachable: not by "..", not by a
    second chroot, not in mountinfo. Falls back to chroot only where the host
    root cannot be pivoted (an initramfs root), and says so. Every later mount
    target is resolved inside the root, so no symlink in it can lead out.
    """
    os.chdir(root)
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


def mount_point(path, create=True):
    """Check that a mount target inside the root is a real directory; make it if missing.

    Returns False when it is missing and not to be made.
    """
    import stat
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        if not create:
            return False
        os.mkdir(path, 0o755)
        return True
    if not stat.S_ISDIR(st.st_mode):
        raise ContainerError(f"mount {path}", "the root's mount point is not a directory")
    return True


def mount_proc():
    """Mount a fresh /proc. Precondition: PID 1 of the new PID namespace, inside the root."""
    mount_point("/proc")
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)


def mount_dev():
    """A small tmpfs /dev with the harmless devices, a private devpts and /dev/shm."""
    import stat
    mount_point("/dev")
    mount("tmpfs", "/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=755,size=64k")
    for name, major, minor in DEVICES:
        os.mknod(f"/dev/{name}", stat.S_IFCHR | 0o666, os.makedev(major, minor))
        os.chmod(f"/dev/{name}", 0o666)  # not the umask's
    for name, target in DEV_LINKS:
        os.symlink(target, f"/dev/{name}")
    os.mkdir("/dev/pts")
    mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
          "newinstance,ptmxmode=0666,mode=0620,gid=5")
    os.mkdir("/dev/shm")
    mount("shm", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=64m")


def mount_sys():
    """A read-only sysfs, where the root has a /sys folder."""
    if mount_point("/sys", create=False):
        mount("sysfs", "/sys", "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)


def protect_system_paths(spec):
    """Make the host's knobs in /proc read-only and mask what leaks host secrets.

    A read-only bind stops writes; masking hides: /dev/null over a file, an
    empty read-only tmpfs over a directory. Paths this kernel lacks are skipped.
    """
    if not spec.mask_paths:
        return
    flags = MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC
    for path in READONLY_PATHS:
        if os.path.exists(path):
            mount(path, path, None, MS_BIND | MS_REC)
            mount(path, path, None, flags)
    for path in MASKED_PATHS:
        if os.path.isdir(path):
            mount("tmpfs", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=0")
        elif os.path.exists(path):
            mount("/dev/null", path, None, MS_BIND)


def open_volume_sources(spec):
    """Clone each volume's host path as a detached mount while the host is in
    sight; they are attached after pivot_root, so every target resolves inside
    the container and no symlink of the root can aim one at the host."""
    return tuple(open_tree_clone(src) for src, _, _ in spec.volumes)


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


def make_target(path, directory):
    """A mount target inside the container: a directory, or an empty file for a file."""
    if directory:
        os.makedirs(path, exist_ok=True)
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if not os.path.lexists(path):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644))


def mount_volumes(spec, handles):
    """-v HOST:CONTAINER[:ro]: bind the held sources, nosuid and nodev, and read-only
    when asked (the container cannot remount: no CAP_SYS_ADMIN, and seccomp)."""
    import stat
    for fd, (src, target, read_only) in zip(handles.volumes, spec.volumes):
        make_target(target, stat.S_ISDIR(os.fstat(fd).st_mode))
        move_mount(fd, target)
        mount(None, target, None, MS_BIND | MS_REMOUNT | MS_NOSUID | MS_NODEV
              | (MS_RDONLY if read_only else 0))
        os.close(fd)
    handles.volumes = ()


def mount_tmpfs(spec):
    """--tmpfs PATH[:OPTIONS]: a fresh tmpfs (nosuid, nodev, noexec unless asked)."""
    for target, flags, data in spec.tmpfs:
        make_target(target, True)
        mount("tmpfs", target, "tmpfs", flags, data)


def wait_for_network(handles):
    """--network bridge: the supervisor configures eth0 from outside; wait for its word."""
    if handles.go_fd is None:
        return
    word = os.read(handles.go_fd, 1)
    os.close(handles.go_fd)
    if word != b"g":
        raise ContainerError("network", "the supervisor could not set it up")


def write_etc_files(spec):
    """/etc/hosts, /etc/hostname, /etc/resolv.conf of this run: written on the
    container's /dev tmpfs and bound over the root's files, which stay as they are."""
    if not spec.etc_files:
        return
    os.mkdir("/dev/.minicontainer", 0o755)
    for name, text in spec.etc_files:
        with open(f"/dev/.minicontainer/{name}", "w") as f:
            f.write(text)
        make_target(f"/etc/{name}", False)
        mount(f"/dev/.minicontainer/{name}", f"/etc/{name}", None, MS_BIND)
        mount(None, f"/etc/{name}", None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


def make_workdir(spec):
    """-w: the working directory is made if missing, as docker does."""
    os.makedirs(spec.workdir, exist_ok=True)


def seal_root(spec):
    """--read-only: the root becomes read-only, with /tmp and /run as tmpfs
    unless the user mounted something there or said --read-only-tmpfs=false."""
    if not spec.read_only:
        return
    taken = {target for _, target, _ in spec.volumes} | {target for target, _, _ in spec.tmpfs}
    for target, data in READ_ONLY_TMPFS if spec.read_only_tmpfs else ():
        if target not in taken:
            make_target(target, True)
            mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, data)
    mount(None, "/", None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


def close_other_fds(spec):
    """Only 0, 1, 2 and the --preserve-fds ones reach the command.

    They are marked close-on-exec rather than closed: the report pipe must
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
    """A clean environment for the command, not the host's; -e and --env-file on top."""
    hostname = spec.hostname if spec.namespaces & CLONE_NEWUTS else os.uname().nodename
    home = spec.user[2] if spec.user else "/root"
    env = {"PATH": CONTAINER_PATH, "HOME": home, "HOSTNAME": hostname}
    if "TERM" in os.environ:
        env["TERM"] = os.environ["TERM"]
    env.update(spec.env)
    return env


def restore_signals():
    """Undo what the supervisor and Python changed: the mask and SIG_IGNs survive exec."""
    for sig in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(sig, signal.SIG_DFL)
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


def shebang(path):
    """The interpreter a script names on its #! line, or None."""
    try:
        with open(path, "rb") as f:
            head = f.read(256)
    except OSError:
        return None
    if not head.startswith(b"#!"):
        return None
    return os.fsdecode(head[2:].split(b"\n")[0].strip().split(b" ")[0]) or None


def refuse_host_interpreter(command, path, search_path):
    """Never exec minicontainer's own interpreter, which is the host's Python.

    The kernel resolves /proc/self/exe, and a #!/proc/self/exe script or a
    symlink to it, in the exec-ing process: that is this Python, and the
    command would get a handle on a host binary (runc's CVE-2019-5736).
    Each candidate and its chain of interpreters (the kernel follows four) is
    compared with this process's own executable.
    """
    own = os.stat("/proc/self/exe")
    candidates = [path] if "/" in path else [os.path.join(d, path) for d in search_path.split(":")]
    for candidate in candidates:
        for _ in range(5):
            try:
                st = os.stat(candidate)
            except OSError:
                break
            if (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino):
                raise ContainerError(f"exec {command}", "it leads to the host's Python interpreter"
                                     " (a /proc/self/exe trick); refused", code=EXIT_CANNOT_RUN)
            candidate = shebang(candidate)
            if candidate is None:
                break


def attach_terminal(spec, handles):
    """-t: a pseudo-terminal from the container's own devpts. The master goes to
    the supervisor (SCM_RIGHTS), the slave becomes this process's controlling
    terminal and stdio, so job control and ^C work inside."""
    if handles.tty_sock is None:
        return
    import socket
    if os.getpid() != 1:  # under --init the command leads a session of its own
        os.setsid()
    master, slave = os.openpty()
    if spec.winsize:
        set_window_size(slave, spec.winsize)
    socket.send_fds(handles.tty_sock, [b"t"], [master])
    os.close(master)
    handles.tty_sock.close()
    take_controlling_terminal(slave)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    if slave > 2:
        os.close(slave)


def exec_command(spec, env, host_root):
    """Replace this process with the command; on failure say why, docker-style."""
    path = resolve_command(spec.command[0], spec.workdir)
    refuse_host_interpreter(spec.command[0], path, env["PATH"])
    try:
        os.execvpe(path, spec.command, env)
    except OSError as exc:
        raise exec_error(spec.command[0], path, env["PATH"], exc, host_root) from None


def exec_error(command, path, search_path, exc, host_root):
    """Turn a failed exec into 127 (not found) or 126 (found but cannot run)."""
    import errno
    what = f"exec {command}"
    candidates = [path] if "/" in path else [os.path.join(d, path) for d in search_path.split(":")]
    found = next((c for c in candidates if os.path.exists(c)), None)
    if exc.errno in (errno.ENOENT, errno.ENOTDIR) and found is None:
        return ContainerError(what, "not found in the container", code=EXIT_NOT_FOUND)
    if found and os.path.isdir(found):
        return ContainerError(what, "is a directory", code=EXIT_CANNOT_RUN)
    if exc.errno == errno.EACCES and not os.access(found, os.X_OK):
        return ContainerError(what, "not executable (no x permission)", code=EXIT_CANNOT_RUN)
    if exc.errno in (errno.ENOENT, errno.ENOEXEC):
        why = explain_program(found, exc.errno, host_root)
        return ContainerError(what, why, code=EXIT_CANNOT_RUN)
    return ContainerError(what, exc.strerror, exc.errno, code=EXIT_CANNOT_RUN)


def explain_program(path, err, host_root):
    """Say why an existing file would not run: a missing interpreter (ENOENT)
    or a format this machine cannot run (ENOEXEC).

    Runs only after a failed exec, where no command code has run. The host's
    site-packages are out of sight behind pivot_root, so the ELF library is
    imported from the host root kept open for this (close-on-exec).
    """
    interp = shebang(path)
    if interp:
        return f"its interpreter {interp} is missing in the container"
    try:
        f = open(path, "rb")
    except OSError as exc:
        return f"{exc.strerror} (reading it to say more)"
    if f.read(4) != b"\x7fELF":
        if err == 2:
            return "a file it needs is missing in the container"
        return "exec format error: not a program this machine can run"
    try:
        os.fchdir(host_root)
        os.chroot(".")
        from elftools.elf.elffile import ELFFile
        elf = ELFFile(f)
        if err != 2:
            return (f"exec format error: built for {elf.get_machine_arch()},"
                    f" this machine is {os.uname().machine}")
        interp = next(s.get_interp_name() for s in elf.iter_segments()
                      if s["p_type"] == "PT_INTERP")
    except Exception:  # no privilege, no library, a damaged file: say less
        return "its ELF interpreter or a file it needs is missing in the container"
    return (f"its ELF interpreter {interp} is missing in the container"
            " (deploy it, or build the program statically)")


def prepare_seccomp(spec):
    """Build the seccomp filter now, while libseccomp is in sight; it is loaded last."""
    return SeccompFilter(SECCOMP_DENIED, (TIOCSTI,)) if spec.seccomp else None


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
    import prctl
    with open("/proc/sys/kernel/cap_last_cap") as f:
        last = int(f.read())
    for cap in range(last + 1):
        if cap not in spec.caps:
            prctl.capbset_drop(cap)
    if spec.user:
        switch_user(*spec.user[:2])
    drop = [cap for cap in prctl.ALL_CAPS if cap not in spec.caps]
    prctl.set_caps((drop, prctl.CAP_EFFECTIVE, False), (drop, prctl.CAP_PERMITTED, False),
                   (list(prctl.ALL_CAPS), prctl.CAP_INHERITABLE, False))


def switch_user(uid, gid):
    """Become uid:gid with no supplementary groups; leaving uid 0 clears the capabilities."""
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)


def forbid_new_privileges():
    """no_new_privs: setuid files and file capabilities grant nothing from here on."""
    import prctl
    prctl.set_no_new_privs(True)


def set_rlimits(spec):
    """The --ulimit values and the default RLIMIT_NOFILE; only lowering, checked by the CLI."""
    import resource
    for number, soft, hard in spec.limits.rlimits:
        resource.setrlimit(number, (soft, hard))


def start_command(spec, env, handles):
    """The last steps, in order: signal state, rlimits, terminal, privileges,
    seccomp, exec."""
    restore_signals()
    set_rlimits(spec)
    attach_terminal(spec, handles)
    limit_capabilities(spec)
    forbid_new_privileges()
    if handles.seccomp:
        handles.seccomp.load()
    exec_command(spec, env, handles.host_root)


def run_init(spec, env, handles):
    """--init: stay as PID 1, a small trusted init; the command runs as PID 2.

    The init reaps every orphan, forwards signals to the command and exits
    with its status. It is non-dumpable, so the container cannot open its
    /proc/1/exe, fds or memory (the host's Python).
    """
    import prctl
    prctl.set_dumpable(False)
    pid = os.fork()
    if pid == 0:
        # The command: PID 2 of the container, root, all set-up done; ends in exec.
        in_child(handles.report_fd, start_command, spec, env, handles)
    os.closerange(3, 1 << 20)  # the init needs no descriptor at all
    return init_loop(pid)


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
    new_session()
    enter_cgroups(spec, handles.groups)
    handles.host_root = os.open("/", os.O_PATH | os.O_CLOEXEC)  # only to explain a failed exec
    handles.seccomp = prepare_seccomp(spec)
    handles.volumes = open_volume_sources(spec)
    set_hostname(spec)
    bring_up_loopback(spec)
    wait_for_network(handles)
    root = throwaway_root(spec)
    bind_root(root)
    enter_root(root)
    mount_proc()
    mount_dev()
    mount_sys()
    mount_volumes(spec, handles)
    mount_tmpfs(spec)
    write_etc_files(spec)
    make_workdir(spec)
    protect_system_paths(spec)
    seal_root(spec)
    close_other_fds(spec)
    os.chdir(spec.workdir)
    env = container_env(spec)
    if spec.init:
        return run_init(spec, env, handles)
    start_command(spec, env, handles)


# ---------------------------------------------------------------------------
# Supervision
# Process roles: the supervisor (minicontainer, on the host) forks the
# namespace holder, which unshares and forks the container's PID 1. The
# holder passes PID 1's status up; the supervisor forwards signals to PID 1.
# A pipe carries the holder's "pid N" and any set-up error; its write ends
# close on exec, so end-of-file means the command is running.
# ---------------------------------------------------------------------------

def in_child(report_fd, fn, *args):
    """Run fn in a forked child that can only end in exec or os._exit.

    An exception never unwinds into the parent's code: it is sent up the
    pipe as one line and the child exits with its code.
    """
    code = EXIT_OWN_FAILURE
    try:
        code = fn(*args)
    except ContainerError as exc:
        code = exc.code
        report(report_fd, f"error {code} {exc}")
    except BaseException as exc:  # a bug: still one line, never a traceback
        report(report_fd, f"error {code} internal error: {exc!r}")
    finally:
        os._exit(code)


def report(fd, line):
    """Send one line up the pipe; lines under PIPE_BUF are written atomically."""
    data = line.replace("\n", " ").encode(errors="replace")[:4000] + b"\n"
    try:
        os.write(fd, data)
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
    signal.pthread_sigmask(signal.SIG_BLOCK, (HOLDER_PDEATH,))
    die_with_parent(supervisor_pid, HOLDER_PDEATH)
    host_ns = None
    if handles.network is not None:
        handles.network.close_listeners()  # the supervisor serves the published ports
        host_ns = tuple(os.open(f"/proc/self/ns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
                        for ns in ("net", "pid"))
    unshare(spec.namespaces & ~CLONE_NEWCGROUP)
    make_mounts_private()
    holder_pid = os.getpid()
    pid = os.fork()
    if pid == 0:
        # Container PID 1: new PID, mount, UTS, IPC, network namespaces; root.
        in_child(handles.report_fd, container_main, spec, holder_pid, handles)
    report(handles.report_fd, f"pid {pid}")
    os.close(handles.report_fd)
    if handles.tty_sock is not None:
        handles.tty_sock.close()
    code = hold(pid, handles, host_ns)
    if os.getppid() == supervisor_pid:
        os.write(status_fd, bytes([code]))
        os.kill(supervisor_pid, HOLDER_DONE)
    return code


def hold(pid1, handles, host_ns):
    """Wait for PID 1. If the supervisor dies first, kill PID 1, and with it the
    whole PID namespace: this holds even if the command cleared its own
    parent-death signal, since the holder is out of the container's reach.
    Then remove the cgroups and the network the supervisor can no longer
    remove (back in the host's network namespace for that)."""
    orphaned = False
    while True:
        info = signal.sigwaitinfo((signal.SIGCHLD, HOLDER_PDEATH))
        if info.si_signo == HOLDER_PDEATH:
            orphaned = True
            os.kill(pid1, signal.SIGKILL)
        done, status = os.waitpid(pid1, os.WNOHANG)
        if done:
            if orphaned:
                clean_up_orphaned(handles, host_ns)
            return exit_code(status)


def clean_up_orphaned(handles, host_ns):
    """The supervisor is gone: remove its cgroups and network state here, and say
    on stderr (still the user's) what could not be undone. The network work
    happens back in the host's network namespace, and with children in the
    host's PID namespace: the container's is dead, and forks into it fail."""
    try:
        remove_cgroups(handles.groups)
        if handles.network is not None:
            setns(host_ns[0], CLONE_NEWNET)
            setns(host_ns[1], CLONE_NEWPID)
            handles.network.release()
    except Exception as exc:  # the supervisor would have printed it; no one else will
        report(2, f"minicontainer: warning: cleaning up after minicontainer was killed: {exc!r}")


def read_reports(fd, on_pid=None):
    """Read the pipe to EOF: (PID 1's host pid, or None; error, or None).

    on_pid(pid) runs as soon as the pid arrives, while PID 1 is still being
    set up (it configures --network bridge); an error it raises is reported
    like a set-up error, and takes precedence over PID 1's own.
    """
    pid, error, own_error, buffer = None, None, None, b""
    while True:
        data = os.read(fd, 4096)
        buffer += data
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            kind, _, rest = line.decode(errors="replace").partition(" ")
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
        if not data:
            break
    os.close(fd)
    return pid, own_error or error


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


def forward(info, pid1, pidfd, own_init=False):
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
    how = "caught" if own_init else signal_disposition(pid1, info.si_signo)
    if how == "caught":
        send(pidfd, info.si_signo)
    elif how == "default" and info.si_signo in TERMINATING_SIGNALS:
        send(pidfd, signal.SIGKILL)
        return info.si_signo
    return None


def supervise(spec, holder, report_fd, status_fd, tty_sock, on_pid=None):
    """Parent, host namespaces, root: wait for the container and return its exit code.

    The holder reports the status (HOLDER_DONE, then the status pipe) as soon
    as PID 1 is reaped; if instead the holder itself ends first, its own exit
    status stands in, and a holder that was killed takes PID 1 with it. After
    a stop signal (SIGTERM, SIGINT, SIGHUP, SIGQUIT), a command still running
    when --stop-timeout runs out gets SIGKILL, as `docker stop` does.
    """
    import time
    pid1, error = read_reports(report_fd, on_pid)
    pidfd = open_pid(pid1)
    terminal = Terminal.attach(tty_sock) if tty_sock is not None and error is None else None
    applied = code = deadline = None
    try:
        while code is None:
            done, status = os.waitpid(holder, os.WNOHANG)
            if done:
                if os.WIFSIGNALED(status) and pidfd is not None:
                    send(pidfd, signal.SIGKILL)  # the holder was killed: its container goes too
                code = exit_code(status)
                break
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            info = signal.sigtimedwait(SUPERVISOR_SIGNALS, wait) \
                if wait is not None else signal.sigwaitinfo(SUPERVISOR_SIGNALS)
            if info is None:  # --stop-timeout ran out
                send(pidfd, signal.SIGKILL)
                deadline = None
            elif info.si_signo == HOLDER_DONE:
                code = os.read(status_fd, 1)[0]
            elif info.si_signo == signal.SIGWINCH and terminal is not None:
                terminal.resize()
            elif info.si_signo != signal.SIGCHLD and pidfd is not None:
                applied = forward(info, pid1, pidfd, spec.init) or applied
                if info.si_signo in STOP_SIGNALS and deadline is None:
                    deadline = time.monotonic() + spec.stop_timeout
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

    @classmethod
    def attach(cls, sock):
        """Receive the master PID 1 (or, under --init, the command) sent, if it did."""
        import socket
        try:
            _, fds, _, _ = socket.recv_fds(sock, 16, 1, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return None
        return cls(fds[0]) if fds else None

    def resize(self):
        """Pass the host terminal's size on; the kernel sends SIGWINCH inside."""
        import fcntl
        fcntl.ioctl(self.master, TIOCSWINSZ, fcntl.ioctl(0, TIOCGWINSZ, bytes(8)))

    def close(self):
        import termios
        self.output.join(timeout=2)  # the last output, up to the master's EIO
        termios.tcsetattr(0, termios.TCSADRAIN, self.saved)
        os.close(self.master)


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


def run_container(spec, name=None, network=None):
    """Start the container; return its exit code and the post-mortem of its cgroups.

    Parent side, host namespaces, root. The cgroups are made before the fork
    and removed after the holder is gone, whatever happened in between.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, SUPERVISOR_SIGNALS)
    # No cyclic GC from here on, in this process and the forked ones: a
    # collection in a child walks every object it inherited and so copies the
    # pages they sit on. These processes are short-lived and make no cycles.
    gc.disable()
    gc.freeze()
    supervisor_pid = os.getpid()
    label = name or f"{supervisor_pid}-{os.urandom(3).hex()}"
    groups = make_cgroups(spec.limits, f"minicontainer-{label}")
    found = {}
    go_read = go_write = None
    try:
        if network is not None:
            network.allocate()
            spec.etc_files = network.etc_files(spec.hostname)
            go_read, go_write = os.pipe2(os.O_CLOEXEC)
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        status_read, status_write = os.pipe2(os.O_CLOEXEC)
        tty_ours = tty_theirs = None
        if spec.tty:
            import socket
            tty_ours, tty_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        sys.stdout.flush()
        sys.stderr.flush()
        holder = os.fork()
        if holder == 0:
            # Namespace holder: host PID namespace, soon its own mount namespace, root.
            os.close(read_fd)
            os.close(status_read)
            if tty_ours is not None:
                tty_ours.close()
            if go_write is not None:
                os.close(go_write)
            in_child(write_fd, holder_main, spec,
                     Handles(write_fd, groups, tty_theirs, go_read, network),
                     supervisor_pid, status_write)
        os.close(write_fd)
        os.close(status_write)
        if tty_theirs is not None:
            tty_theirs.close()

        def connect(pid1):
            """Configure --network bridge for PID 1, then let it go on."""
            try:
                network.attach(pid1)
                network.relay()
                os.write(go_write, b"g")
            finally:
                os.close(go_write)  # without the word, PID 1 gives up

        try:
            code = supervise(spec, holder, read_fd, status_read, tty_ours,
                             connect if network is not None else None)
        finally:
            os.close(status_read)
            if tty_ours is not None:
                tty_ours.close()
    finally:
        if go_read is not None:
            os.close(go_read)
        found, errors = remove_cgroups(groups, post_mortem_too=True)
        found["cleanup_errors"] = errors
        if network is not None:
            network.release()
    return code, found


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------

root_option = click.option(
    "--root", metavar="DIR", envvar=ROOT_ENV, default=DEFAULT_ROOT, show_default=True,
    help=f"Container root directory (or set {ROOT_ENV}).")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="minicontainer")
def cli():
    """A small Linux container: deploy programs into a root, run them isolated."""


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
    archives and images into the container root."""
    writer, plan = deploy_paths(root, paths, to, deps=not no_deps, link=link, dry_run=dry_run,
                                progress=sys.stderr.isatty())
    for path in plan.skipped:
        click.echo(f"minicontainer: warning: skipped {path}: not a file, directory or symlink",
                   err=True)
    for warning in writer.warnings:
        click.echo(f"minicontainer: warning: {warning}", err=True)
    if dry_run:
        for op in plan.ops:
            click.echo(describe(op))
        return 0
    files, links = writer.files, writer.links
    click.echo(f"deployed {files} file{'s' * (files != 1)} ({writer.size} bytes), {links} "
               f"link{'s' * (links != 1)}, {len(plan.skipped)} skipped into {root}")
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


def capability_numbers():
    """Capability names as docker spells them (CHOWN, SYS_ADMIN) to their numbers."""
    import prctl
    return {name.upper(): getattr(prctl, "CAP_" + name.upper()) for name in prctl.ALL_CAP_NAMES}


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
            if name != "ALL" and name not in numbers:
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
    if not name or (name.isdigit() and int(name) >= 2**32 - 1):
        raise ContainerError(f"--user {user}", "expected NAME or UID, optionally :GROUP or :GID")
    entries = [line.split(":") for line in read_root_file(root, "/etc/passwd").splitlines()]
    entries = [e for e in entries if len(e) >= 7 and e[2].isdigit() and e[3].isdigit()]
    if name.isdigit():
        uid = int(name)
        entry = next((e for e in entries if int(e[2]) == uid), None)
    else:
        entry = next((e for e in entries if e[0] == name), None)
        if entry is None:
            raise ContainerError(f"--user {user}", f"no user {name!r} in the root's /etc/passwd")
        uid = int(entry[2])
    if group.isdigit():
        gid = int(group)
    elif group:
        groups = [line.split(":") for line in read_root_file(root, "/etc/group").splitlines()]
        match = next((g for g in groups if len(g) >= 3 and g[0] == group and g[2].isdigit()), None)
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
        try:
            with open(path) as f:
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


def parse_volume(value):
    """-v HOST:CONTAINER[:ro|rw]: the host path must exist; both absolute."""
    parts = value.split(":")
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
        raise ContainerError(f"--volume {value}", "expected HOST:CONTAINER[:ro]")
    src, dst = parts[0], parts[1]
    if not os.path.isabs(src) and not src.startswith("."):
        raise ContainerError(f"--volume {value}", "the host path must be absolute or start with ./")
    if not os.path.isabs(dst) or os.path.normpath(dst) == "/":
        raise ContainerError(f"--volume {value}", "the container path must be absolute, and not /")
    if not os.path.exists(src):
        raise ContainerError(f"--volume {value}", f"the host path {src} does not exist")
    return os.path.abspath(src), os.path.normpath(dst), len(parts) == 3 and parts[2] == "ro"


TMPFS_FLAGS = {"ro": (MS_RDONLY, 0), "rw": (0, MS_RDONLY), "exec": (0, MS_NOEXEC),
               "noexec": (MS_NOEXEC, 0), "suid": (0, MS_NOSUID), "nosuid": (MS_NOSUID, 0),
               "dev": (0, MS_NODEV), "nodev": (MS_NODEV, 0)}


def parse_tmpfs(value):
    """--tmpfs PATH[:OPTIONS]: docker's options (size=, mode=, uid=, gid=, nr_inodes=,
    ro, exec, suid, dev ...); nosuid, nodev and noexec unless asked otherwise."""
    target, _, options = value.partition(":")
    if not os.path.isabs(target) or os.path.normpath(target) == "/":
        raise ContainerError(f"--tmpfs {value}", "the container path must be absolute, and not /")
    flags, data = MS_NOSUID | MS_NODEV | MS_NOEXEC, []
    for option in filter(None, options.split(",")):
        name = option.partition("=")[0]
        if option in TMPFS_FLAGS:
            flags = (flags | TMPFS_FLAGS[option][0]) & ~TMPFS_FLAGS[option][1]
        elif name in ("size", "mode", "uid", "gid", "nr_inodes", "nr_blocks"):
            data.append(option)
        else:
            raise ContainerError(f"--tmpfs {value}", f"unknown option {option!r}")
    return os.path.normpath(target), flags, ",".join(data)


NAME_CHARS = HOSTNAME_CHARS | {"_", "."}


def claim_name(name):
    """--name: docker's rule for names; a name is held by an abstract Unix socket
    for as long as any of this run's processes lives (the kernel releases it
    even after SIGKILL, so nothing is left behind). Returns the socket."""
    import socket
    if not (0 < len(name) <= 63 and set(name) <= NAME_CHARS and name[0] not in "_.-"):
        raise ContainerError(f"--name {name!r}", "expected letters, digits, '_', '.' and '-',"
                             " 63 at most, starting with a letter or digit")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(f"\0minicontainer/{name}")
    except OSError:
        sock.close()
        raise ContainerError(f"--name {name}", "a running container already has this name") from None
    return sock


def terminal_size():
    """-t: the host terminal's size, to start the container's terminal with."""
    import fcntl
    if not os.isatty(0):
        raise ContainerError("-t", "the input is not a terminal (drop -t, or run from one)")
    return fcntl.ioctl(0, TIOCGWINSZ, bytes(8))


SHARE = click.Choice(["private", "host"])


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
@click.option("--init", is_flag=True,
              help="Run a small init as PID 1 that reaps zombies and forwards signals.")
@click.option("--preserve-fds", type=click.IntRange(min=0), default=0, metavar="N",
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
@click.option("--pids-limit", type=int, metavar="N", help="Most processes at once; 0 or -1: no limit.")
@click.option("--cpus", type=float, metavar="N", help="CPU time as a number of CPUs, e.g. 0.5.")
@click.option("--cpu-shares", "-c", type=int, metavar="N",
              help="Relative CPU weight (default 1024 under contention).")
@click.option("--ulimit", multiple=True, metavar="NAME=SOFT[:HARD]",
              help="A resource limit (only lowering); nofile defaults to 1024:524288.")
@click.option("--stats", is_flag=True,
              help="After the run, print wall time, CPU time, peak memory and pids on stderr.")
@click.option("--env", "-e", multiple=True, metavar="KEY[=VALUE]",
              help="Set an environment variable (KEY alone: the host's value).")
@click.option("--env-file", multiple=True, metavar="FILE", help="Read KEY=VALUE lines from a file.")
@click.option("--workdir", "-w", metavar="DIR", default="/", show_default=True,
              help="Working directory inside the container (made if missing).")
@click.option("--volume", "-v", multiple=True, metavar="HOST:CONTAINER[:ro]",
              help="Bind a host file or directory into the container.")
@click.option("--tmpfs", multiple=True, metavar="PATH[:OPTIONS]",
              help="Mount a tmpfs, e.g. /cache:size=64m.")
@click.option("--read-only", is_flag=True, help="Mount the root read-only.")
@click.option("--read-only-tmpfs", type=click.BOOL, default=True, show_default=True,
              metavar="BOOL", help="With --read-only, keep /tmp and /run writable as tmpfs.")
@click.option("--rm", is_flag=True,
              help="Throw-away root: writes go to an overlay that is discarded afterwards.")
@click.option("--interactive", "-i", is_flag=True,
              help="Keep stdin attached (it always is; accepted for docker's habit).")
@click.option("--tty", "-t", is_flag=True,
              help="Give the command a pseudo-terminal of its own (job control, ^C, resize).")
@click.option("--stop-timeout", type=click.IntRange(min=0), default=DEFAULT_STOP_TIMEOUT,
              show_default=True, metavar="SECONDS",
              help="After SIGTERM, SIGINT, SIGHUP or SIGQUIT, SIGKILL the command this much later.")
@click.option("--name", metavar="NAME", help="Name the container (hostname and cgroup default to it).")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED,
                metavar="COMMAND [ARG]...")
def run(root, hostname, network, subnet, publish, outbound, ipc, uts, cgroupns, init,
        preserve_fds, security_opt,
        cap_add, cap_drop, seccomp, user, memory, memory_swap, pids_limit, cpus, cpu_shares,
        ulimit, stats, env, env_file, workdir, volume, tmpfs, read_only, read_only_tmpfs, rm,
        interactive, tty, stop_timeout, name, command):
    """Run COMMAND as PID 1 of a new container; exits with its status.

    Options go before COMMAND; everything after it is passed on untouched.
    """
    if hostname is not None and uts == "host":
        raise ContainerError("--hostname", "cannot name the container with --uts host")
    if not os.path.isabs(workdir):
        raise ContainerError(f"--workdir {workdir}", "must be an absolute path")
    relaxed = parse_security_opts(security_opt)
    bridge = network in ("bridge", "private")
    if (publish or outbound) and not bridge:
        raise ContainerError("--publish" if publish else "--outbound", "needs --network bridge")
    net = Network(parse_subnet(subnet), [parse_publish(p) for p in publish], outbound) \
        if bridge else None
    root = check_run_root(root)
    name_lock = claim_name(name) if name is not None else None
    if hostname is None:
        hostname = name.replace("_", "-") if name is not None else DEFAULT_HOSTNAME
    spec = Spec(root, command, workdir=os.path.normpath(workdir),
                hostname=check_hostname(hostname),
                namespaces=namespaces_for(network=network, ipc=ipc, uts=uts, cgroupns=cgroupns),
                init=init, preserve_fds=check_preserved_fds(preserve_fds),
                mask_paths="mask_paths" not in relaxed,
                caps=resolve_capabilities(cap_add, cap_drop),
                user=resolve_user(root, user) if user is not None else None,
                seccomp=seccomp == "default" and "seccomp" not in relaxed,
                limits=parse_limits(memory, memory_swap, pids_limit, cpus, cpu_shares, stats, ulimit),
                env=parse_env(env, env_file), volumes=[parse_volume(v) for v in volume],
                tmpfs=[parse_tmpfs(t) for t in tmpfs], read_only=read_only,
                read_only_tmpfs=read_only_tmpfs, rm=rm, tty=tty,
                winsize=terminal_size() if tty else None, stop_timeout=stop_timeout)
    if os.geteuid() != 0:
        raise ContainerError("run", "needs root (try: sudo minicontainer run ...)")
    import time
    started = time.monotonic()
    code, found = run_container(spec, name, net)
    if name_lock is not None:
        name_lock.close()  # the holder's copy keeps the name until the container is gone
    report_resources(spec.limits, memory, code, found, time.monotonic() - started)
    return code


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


def main(argv=None):
    """Entry point: run the CLI; print any failure as one line; return the exit code."""
    try:
        return cli.main(args=argv, prog_name="minicontainer", standalone_mode=False) or 0
    except ContainerError as exc:
        click.echo(f"minicontainer: {exc}", err=True)
        return exc.code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        click.echo(f"minicontainer: {exc.format_message()}", err=True)
        return EXIT_OWN_FAILURE
    except (click.Abort, KeyboardInterrupt):
        click.echo("minicontainer: interrupted", err=True)
        return 128 + signal.SIGINT
    except Exception as exc:  # a bug: still one line, never a traceback
        click.echo(f"minicontainer: internal error: {exc!r}", err=True)
        return EXIT_OWN_FAILURE


def entry():
    """Console-script entry point: main(), then exit without interpreter teardown.

    Tearing down click's modules costs about as much as starting a container;
    with the output flushed, nothing is lost by skipping it.
    """
    code = main()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:  # a closed pipe: nothing left to say
        pass
    os._exit(code)


if __name__ == "__main__":
    entry()
