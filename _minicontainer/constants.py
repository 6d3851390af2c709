"""Kernel names and minicontainer's fixed policies.

Owns: the kernel's constants, named as the man pages name them (CLONE_NEWPID,
MS_REC, RESOLVE_IN_ROOT, ...), docker's exit codes, the default capability
set, masked and read-only paths, devices, signal sets, namespace tables.
May import: nothing of the package (the bottom of the order).
"""
import os
import signal


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
CLOSE_RANGE_CLOEXEC = 1 << 2  # close_range(2): mark, do not close

# pivot_root has no glibc wrapper; its number differs between architectures.
# The calls from openat2 on came after the numbers were unified: the same everywhere.
SYS_PIVOT_ROOT = {"x86_64": 155, "i386": 217, "i686": 217, "aarch64": 41,
                  "riscv64": 41, "armv7l": 218, "ppc64le": 203, "s390x": 217}
SYS_OPENAT2 = 437
SYS_KEYCTL = {"x86_64": 250, "i386": 288, "i686": 288, "aarch64": 219, "riscv64": 219,
              "armv7l": 311, "ppc64le": 271, "s390x": 280}
KEYCTL_JOIN_SESSION_KEYRING = 1
PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE = 47, 2
PR_CAPBSET_READ = 23
PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2  # prctl(2): load a filter (what libseccomp ends in)
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
PROC_SUPER_MAGIC = 0x9FA0  # fstatfs's f_type of a proc file system
# What a bundle may mount inside /proc besides /proc itself: runc's list (the
# files lxcfs serves). Anything else there (a file over
# /proc/sys/kernel/cap_last_cap, say) would change what the runtime reads.
PROC_MOUNTS_ALLOWED = frozenset((
    "/proc/cpuinfo", "/proc/diskstats", "/proc/meminfo", "/proc/stat", "/proc/swaps",
    "/proc/uptime", "/proc/loadavg", "/proc/slabinfo", "/proc/net/dev",
    "/proc/sys/kernel/ns_last_pid"))
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
CGROUP_CONTROLLERS = ("memory", "pids", "cpu", "devices")
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
# --restart: docker's back-off (its restartmanager): the first restart 100 ms
# after the end, each next one twice as late, at most a minute; a run that
# lasted 10 seconds starts the doubling over. Seconds.
RESTART_FIRST, RESTART_MAX, RESTART_RESET = 0.1, 60.0, 10.0
RESTART_POLICIES = ("no", "on-failure", "always", "unless-stopped")
# Health checks: docker's defaults (seconds; retries), the results a
# container keeps (the last 5) and how much of each one's output (4 KiB).
HEALTH_DEFAULTS = {"interval": 30.0, "timeout": 30.0, "start_period": 0.0, "retries": 3}
HEALTH_MAX_SECONDS = 366 * 86400
HEALTH_LOG, HEALTH_OUTPUT = 5, 4096
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
# A library container's supervisor gets it when the library's helper (so, the
# caller) is gone: kill the container, then clean up as after any end. Not
# SIGKILL: a supervisor killed between making the cgroups and forking the
# holder would leave the cgroups with no one to remove them.
SUPERVISOR_PDEATH = signal.SIGRTMIN + 4
# What the supervisor blocks and waits for: the same set, or a signal is lost.
SUPERVISOR_SIGNALS = SUPERVISED_SIGNALS + (HOLDER_DONE, MONITOR_STOP, SUPERVISOR_PDEATH)
# exec, once told to end: how often it looks whether its process has ended
# though unreaped (a tracer holds it), and how long its way in may take to
# reap it before exec takes the status from /proc (seconds).
HELD_POLL, HELD_GRACE = 0.1, 0.5
OCI_NAMESPACES = {"pid": CLONE_NEWPID, "network": CLONE_NEWNET, "mount": CLONE_NEWNS,
                  "ipc": CLONE_NEWIPC, "uts": CLONE_NEWUTS, "cgroup": CLONE_NEWCGROUP,
                  "user": CLONE_NEWUSER}


# What NS_GET_NSTYPE answers: the namespace's clone flag.
NS_GET_NSTYPE = 0xB703


# The sysctls a container may set: those of its own namespaces (runc's list).
NAMESPACED_SYSCTLS = {CLONE_NEWIPC: ("kernel.msgmax", "kernel.msgmnb", "kernel.msgmni",
                                     "kernel.sem", "kernel.shmall", "kernel.shmmax",
                                     "kernel.shmmni", "kernel.shm_rmid_forced", "fs.mqueue."),
                      CLONE_NEWNET: ("net.",), CLONE_NEWUTS: ("kernel.hostname",
                                                              "kernel.domainname")}
