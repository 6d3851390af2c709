"""The container's own set-up: PID 1's steps, in order, and exec's.

Owns: container_main (the recipe: one step a line, each defined above it),
the mounts, /dev, /proc, pivot_root, capabilities, seccomp, the command's
lookup and exec; hiding a process from the container (non-dumpable, its host
command line wiped); exec's way in; hooks. Runs in the forked children: it
imports nothing once forbid_imports has run.
May import: constants, errors, syscalls, procs, spec, rootfs, cgroups.
"""
import _signal
import os
import signal
import sys

from .constants import (
    CLONE_NEWCGROUP, CLONE_NEWIPC, CLONE_NEWNET, CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWUSER,
    CLONE_NEWUTS, DEPLOY_DIR, DEVICES, DEV_LINKS, EXIT_CANNOT_RUN, EXIT_NOT_FOUND, EXIT_OWN_FAILURE,
    IN_ROOT, MAX_FD, MNT_DETACH, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC, MOUNT_ATTR_NOSUID,
    MOUNT_ATTR_OPTIONS, MOUNT_ATTR_RDONLY, MOUNT_PROPAGATION, MS_BIND, MS_MOVE, MS_NODEV, MS_NOEXEC,
    MS_NOSUID, MS_PRIVATE, MS_RDONLY, MS_REC, MS_REMOUNT, PROC_MOUNTS_ALLOWED, PROC_SUPER_MAGIC,
    RESOLVE_NO_SYMLINKS, SCRATCH_DIRS, SUPERBLOCK_FLAGS, SUPERVISED_SIGNALS, TERMINATING_SIGNALS,
)
from .errors import ContainerError
from .syscalls import (
    attach_mount, clone_tree, cloexec_from, die_with_parent, filesystem_type, join_session_keyring,
    last_capability, mount, new_mount, openat2, pivot_root, raise_ambient,
    seccomp_filter, set_link_up, set_mount_attrs, set_personality, set_window_size,
    setdomainname, sethostname, setns, take_controlling_terminal, umount2, unshare, write_at,
)
from .procs import exit_code, in_child, report
from .spec import selinux_enabled, sysctl_namespace
from .rootfs import open_dir_in_root
from .cgroups import join_cgroups, raise_rlimit_ceilings, rlimit_arg

class Handles:
    """What the container's processes hold while it is set up: the report
    socket, the cgroups, the terminal socket (-t), the network's go-ahead,
    and, in PID 1, the seccomp filter, the volumes' detached mounts, and
    descriptors of the container's root, /proc, /dev and /sys (never of the
    host's: those are closed before anything inside the root is resolved)."""

    __slots__ = ("report_fd", "groups", "tty_sock", "seccomp", "volumes", "go_fd",
                 "network", "root_fd", "stdio", "entry", "cgroup_views", "cgroup_links",
                 "exec_fifo", "map_fd", "own_exe", "ns_fds", "devices_deny")

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
        # A bundle's namespaces to join, {clone flag: descriptor}: opened and checked
        # by `create` (open_joined_namespaces), joined as they were checked.
        self.ns_fds = {}
        self.devices_deny = None  # --device: the devices cgroup's deny file, until its nodes are made
        # This interpreter (the host's), for check_command: asked of the host's
        # /proc here, before the fork; the container's root may have no proc.
        self.own_exe = os.stat("/proc/self/exe")


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


def enter_cgroups(spec, handles):
    """Join the container's groups, then a cgroup namespace rooted at them.

    PID 1 joins before anything of the command runs, so nothing escapes the
    limits; the holder stays outside, uncharged, to clean up afterwards. A
    bundle's PID 1 was joined by `create` before its go-ahead: from inside
    a user namespace it could not write the host's cgroup files.
    """
    if not spec.oci:
        join_cgroups(handles.groups, os.getpid())
        if any(rule.get("drop") for rule in spec.limits.devices or ()):
            handles.devices_deny = open_devices_deny(handles.groups)
    if CLONE_NEWCGROUP in spec.ns_paths:
        join_namespace(spec, handles, CLONE_NEWCGROUP)
    elif spec.namespaces & CLONE_NEWCGROUP:
        unshare(CLONE_NEWCGROUP)


def open_devices_deny(groups):
    """The devices cgroup's devices.deny, kept (a file: no way to a directory
    through it) until seal_devices, so that PID 1 takes back the mknod it
    was allowed only to make --device's nodes."""
    group = next((g for g in groups if "devices" in g.controllers), None)
    if group is None:
        return None
    try:
        return os.open("devices.deny", os.O_WRONLY | os.O_CLOEXEC, dir_fd=group.fd)
    except OSError as exc:
        raise ContainerError.from_os(f"open {group.path}/devices.deny", exc) from None


def join_namespace(spec, handles, flag):
    """setns into the namespace a bundle names by path (/proc/PID/ns/net,
    /run/netns/x) through the descriptor `create` opened and checked, never
    the path again: it may have changed since (a link swapped, the pid of a
    pod's process that ended reused by one of the host's), and the
    container, with its sysctls, would be in a namespace no one checked."""
    path = spec.ns_paths[flag]
    try:
        setns(handles.ns_fds[flag], flag)
    except ContainerError as exc:
        raise exc.within(f"join the namespace {path}") from None


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
    if handles.devices_deny is not None:  # a cgroup file, closed before the command runs
        keep.add(handles.devices_deny)
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
    if spec.seccomp is None:
        return None
    built = seccomp_filter(spec.seccomp, spec.no_new_privs)
    if not built.flags:
        built.fprog()  # generated now: loading it is then one call
    return built


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
    try:
        kept = os.statvfs(root).f_flag & (os.ST_RDONLY | os.ST_NOEXEC)
    except OSError as exc:
        why = exc.strerror
        if exc.errno == 13:  # EACCES: in a user namespace, its root is a mapped uid
            why += (" (in a user namespace the container's root must be able to reach it:"
                    " every directory above it searchable by its mapped uid)")
        raise ContainerError(f"root {root}", why, exc.errno) from None
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
    # The path finders' caches go too (a new, empty one), kept alive rather
    # than freed: freeing their thousands of names would cost this process
    # a copy of each page they sit on (about 0.2 ms), for nothing.
    _discarded.append(sys.path_importer_cache)
    sys.path_importer_cache = {}


_discarded = []


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
                    check_proc_target(handles, target, target_fd, kind)
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


def check_proc_target(handles, target, target_fd, kind):
    """Refuse a mount whose target, as it resolved in the root, is inside
    /proc or on a proc file system, unless it is proc on /proc or on runc's
    short list: a symlink in the rootfs (/x -> /proc/sys/kernel) hides it
    from the check of the destination's name. Checked on the descriptor the
    mount is attached to, so nothing can be swapped in between (runc checks
    its securejoin'd path the same way)."""
    root = os.readlink(f"/proc/self/fd/{handles.root_fd}")
    where = os.readlink(f"/proc/self/fd/{target_fd}")
    resolved = "/" + os.path.relpath(where, root) if where != root else "/"
    if resolved.startswith("/.."):
        raise ContainerError(f"mount on {target}", f"it resolves to {where}, outside the root")
    if resolved == "/proc" and kind == "proc" or resolved in PROC_MOUNTS_ALLOWED:
        return
    if (resolved == "/proc" or resolved.startswith("/proc/")
            or filesystem_type(target_fd, f"fstatfs {target}") == PROC_SUPER_MAGIC):
        raise ContainerError(f"mount on {target}", f"it leads to {resolved}: cannot be mounted"
                             " because it is inside /proc (as runc refuses it)")


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
        nodes = [(name, stat.S_IFCHR, major, minor, 0o666, 0, 0, None)
                 for name, major, minor in DEVICES]
        for device in spec.devices or ():
            kind = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}
            nodes.append((device["path"].removeprefix("/dev/"), kind[device["type"]],
                          device.get("major", 0), device.get("minor", 0),
                          device.get("fileMode", 0o666) & 0o777, device.get("uid", 0),
                          device.get("gid", 0), device.get("hostPath")))
        made = set()
        for name, kind, major, minor, mode, uid, gid, host in nodes:
            parent, _, base = name.rpartition("/")
            where = open_dir_in_root(dev, parent, create=True) if parent else os.dup(dev)
            try:
                if name in made:  # a bundle's device replaces a default one made just now
                    os.unlink(base, dir_fd=where)
                try:
                    os.mknod(base, kind | mode, os.makedev(major, minor), dir_fd=where)
                except FileExistsError:
                    # Not made by this run: /dev is a volume (-v /dev:/dev, or a
                    # directory of the host's), and what is there is the host's.
                    # Never removed or changed (the host's own /dev/null would be
                    # missing meanwhile, and made again as root's, 0666): kept if
                    # it is this very device, as runc keeps what exists.
                    keep_existing_node(name, base, where, kind, os.makedev(major, minor))
                    continue
                except PermissionError:
                    if not spec.namespaces & CLONE_NEWUSER:
                        raise
                    # no mknod in a user namespace: the host's node, checked to be that device
                    bind_host_device(host or f"/dev/{name}", base, where, kind, os.makedev(major, minor))
                    continue
                made.add(name)
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


def keep_existing_node(name, base, where, kind, rdev):
    """A node /dev already has (a volume's): used as it is if it is the device
    asked for, else refused, and left untouched either way."""
    import stat
    st = os.stat(base, dir_fd=where, follow_symlinks=False)
    if stat.S_IFMT(st.st_mode) != kind or st.st_rdev != rdev:
        raise ContainerError(f"make /dev/{name}", f"something else is there already (is /dev a"
                             f" volume?): not the device {os.major(rdev)}:{os.minor(rdev)};"
                             " left as it is, and refused")


def seal_devices(spec, handles):
    """--device's rules as asked: a node made under a rule without "m" was
    made with it; now it goes (PID 1 still holds CAP_SYS_ADMIN, which a
    write to devices.deny needs), before anything of the command runs."""
    if handles.devices_deny is None:
        return
    try:
        for rule in spec.limits.devices or ():
            if rule.get("drop"):
                line = f"{rule['type']} {rule['major']}:{rule['minor']} {rule['drop']}"
                try:
                    os.write(handles.devices_deny, line.encode())
                except OSError as exc:
                    raise ContainerError.from_os(f"write {line} to devices.deny", exc) from None
    finally:
        os.close(handles.devices_deny)
        handles.devices_deny = None


def bind_host_device(host, base, where, kind, rdev):
    """The host's node `host` (/dev/NAME for a bundle's, as runc binds it;
    --device's own host path for run's) bound onto an empty file: runc's way
    inside a user namespace, where no device node may be made. Before
    pivot_root: the host's /dev is in sight. What is bound must be the
    device asked for (kind and numbers), whatever the path leads to now."""
    import stat
    os.close(os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600,
                     dir_fd=where))
    tree = clone_tree(host)
    found = os.fstat(tree)
    if stat.S_IFMT(found.st_mode) != kind or found.st_rdev != rdev:
        os.close(tree)
        raise ContainerError(f"bind {host}", f"it is no longer the device"
                             f" {os.major(rdev)}:{os.minor(rdev)}")
    attach(tree, os.open(base, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=where), host)


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
    stay as they are (an empty file is made as the mount point if missing).
    Once bound, the written files' names go: /dev is left as it was, which
    matters where /dev is a volume (a restart would find the directory, and a
    host's /dev would keep it)."""
    if not spec.etc_files:
        return
    dev = openat2(handles.root_fd, "/dev", os.O_PATH | os.O_DIRECTORY, IN_ROOT | RESOLVE_NO_SYMLINKS)
    made, staged = [], False
    try:
        try:
            os.mkdir(".minicontainer", 0o700, dir_fd=dev)
        except OSError as exc:
            raise ContainerError.from_os("/etc/hosts for --network: make /dev/.minicontainer",
                                         exc) from None
        staged = True
        for name, text in spec.etc_files:
            try:
                fd = os.open(f".minicontainer/{name}", os.O_WRONLY | os.O_CREAT | os.O_EXCL
                             | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=dev)
                made.append(name)
                with open(fd, "w") as f:
                    f.write(text)
            except OSError as exc:
                raise ContainerError.from_os(f"/etc/{name} for --network: write it", exc) from None
            tree = clone_tree(f".minicontainer/{name}", dev)
            set_mount_attrs(tree, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV)
            try:
                attach(tree, open_target(handles, f"/etc/{name}", False), f"/etc/{name}")
            except ContainerError as exc:
                raise exc.within(f"/etc/{name} for --network") from None
    finally:
        for name in made:
            try:
                os.unlink(f".minicontainer/{name}", dir_fd=dev)
            except OSError:
                pass
        if staged:
            try:
                os.rmdir(".minicontainer", dir_fd=dev)
            except OSError:
                pass
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
    stay open until the exec itself succeeds. Not by listing /proc/self/fd:
    a bundle need not mount proc (runc runs one without any mount).
    """
    keep = 3 + spec.preserve_fds
    cloexec_from(keep)
    for fd in range(3, keep):
        try:
            os.set_inheritable(fd, True)
        except OSError:  # not open: nothing to pass on
            pass


def container_env(spec):
    """The command's environment: the spec's, whole (run's defaults are in it)."""
    return dict(spec.env)


def restore_signals():
    """Every signal back to its default action, none blocked: dispositions and
    the mask survive exec, and minicontainer's caller may have set SIG_IGN
    (a shell's background job ignores SIGINT and SIGQUIT), Python SIGPIPE's
    and SIGXFSZ's, and the supervisor blocked its own set."""
    # getsignal knows each disposition: the one Python found at its start (a
    # shell's SIG_IGN included), or the one set since; None, one set outside
    # Python (no library of minicontainer's sets any): reset, to be sure.
    # Through _signal, signal's C half: signal's wrappers make an enum of
    # every number they take or give (about 200 here, a tenth of a ms).
    for sig in _signal.valid_signals():
        if sig not in (signal.SIGKILL, signal.SIGSTOP) and \
                _signal.getsignal(sig) != _signal.SIG_DFL:
            try:
                _signal.signal(sig, _signal.SIG_DFL)
            except (OSError, ValueError):  # glibc's own real-time signals
                pass
    _signal.pthread_sigmask(_signal.SIG_SETMASK, ())


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
    own = handles.own_exe
    search = command_candidates(path, env)
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
    candidates = command_candidates(path, env)
    if "/" not in path and not env.get("PATH"):
        # As runc's init: it searches the container's PATH and no default of
        # its own (its environment is the process's), so a bare name with
        # none is not found (exec: "sh": executable file not found in $PATH).
        raise ContainerError(f"exec {command}", "not found in the container (its environment"
                             " has no PATH to search)", code=EXIT_NOT_FOUND)
    # A search takes the first executable file, as execvp and Go's LookPath
    # (runc's) do: a directory of that name (".") is none.
    found = next((c for c in candidates if os.path.exists(c) if "/" in path
                  or (not os.path.isdir(c) and os.access(c, os.X_OK))), None)
    if found is None:
        raise ContainerError(f"exec {command}", "not found in the container (no such file or"
                             " directory)", code=EXIT_NOT_FOUND)
    if "/" in path and os.path.isdir(found):
        raise ContainerError(f"exec {command}", "is a directory", code=EXIT_CANNOT_RUN)
    if "/" in path and not os.access(found, os.X_OK):
        raise ContainerError(f"exec {command}", "not executable (no x permission; permission"
                             " denied)", code=EXIT_CANNOT_RUN)
    return path


def command_candidates(path, env):
    """Where exec will look for `path`: itself if it has a "/", else in each
    directory of the environment's PATH (none without one)."""
    if "/" in path:
        return [path]
    return [os.path.join(d, path) for d in env.get("PATH", "").split(":") if d]


def exec_command(spec, path, env, handles):
    """Replace this process with the command; on failure say why, docker-style."""
    try:
        os.execvpe(path, spec.command, env)
    except OSError as exc:
        raise exec_error(spec.command[0], path, env, exc, spec, handles) from None


def exec_error(command, path, env, exc, spec, handles):
    """Turn a failed exec into 127 (not found) or 126 (found but cannot run).

    Why an ELF file would not run (a missing interpreter, another machine's
    code) takes the ELF library, which is on the host, out of sight: the
    file goes to the supervisor, opened here, to be read there.
    """
    import errno
    what = f"exec {command}"
    candidates = command_candidates(path, env)
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
    for cap in range(last_capability() + 1):
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
    try:
        pid = os.fork()
    except OSError as exc:  # the container's pids limit counts the init too
        raise ContainerError.from_os("--init: fork the command", exc) from None
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
    enter_cgroups(spec, handles)
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
    seal_devices(spec, handles)
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
    import errno
    import select
    if not detached:
        die_with_parent(supervisor_pid)
    hide_process("minicontainer exec")
    handles.seccomp = prepare_seccomp(spec)
    # Our own pidfd: the process's parent-death check (its /proc shows no parent).
    way_in = os.pidfd_open(os.getpid())
    if not rootless:
        raise_rlimit_ceilings(spec)  # while it has the host's privilege
    forbid_imports()
    try:
        apart = enter_namespaces(spec, pidfd, in_user_namespace=rootless)
        process = os.fork()
    except (ContainerError, OSError) as exc:
        if exc.errno in (errno.ESRCH, errno.ENOMEM):
            # PID 1 is ending: its namespaces go (setns: ESRCH), its PID
            # namespace takes no one new (fork: ENOMEM), a moment before its
            # pidfd says it has ended. Wait for that, so the supervisor can tell.
            select.select([pidfd], [], [], 2)
        if isinstance(exc, OSError):
            raise ContainerError.from_os("fork into the container", exc) from None
        raise
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
