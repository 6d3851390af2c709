"""The only ctypes: one thin wrapper per system call the set-up needs.

Owns: libc and libseccomp bindings (mount, umount2, pivot_root, unshare,
setns, the new mount API, openat2, pidfd, keyctl, personality), the seccomp
compiler (SeccompFilter, default_seccomp), namespace files opened by path.
May import: constants, errors.
"""
import os
import signal
import sys

from .constants import (
    AF_INET, AT_EMPTY_PATH, AT_FDCWD, AT_RECURSIVE, AT_SYMLINK_NOFOLLOW, CLOSE_RANGE_CLOEXEC,
    ENOSYS, EPERM,
    EXIT_OWN_FAILURE, FSCONFIG_CMD_CREATE, FSCONFIG_SET_FLAG, FSCONFIG_SET_STRING, FSMOUNT_CLOEXEC,
    FSOPEN_CLOEXEC, IFF_UP, KEYCTL_JOIN_SESSION_KEYRING, MOVE_MOUNT_F_EMPTY_PATH,
    MOVE_MOUNT_T_EMPTY_PATH, NAMESPACE_FLAGS, NR_SCMP_ERROR, NS_GET_NSTYPE, OCI_NAMESPACES,
    OPEN_TREE_CLOEXEC, OPEN_TREE_CLONE, PR_CAPBSET_READ, PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE,
    PR_SET_SECCOMP, SECCOMP_MODE_FILTER,
    RESOLVE_NO_MAGICLINKS,
    SCMP_ACTIONS, SCMP_FLTATR_CTL_NNP, SCMP_OPS, SECCOMP_ARCHES, SECCOMP_FLAG_ATTRIBUTES,
    SECCOMP_REFUSED, SIOCGIFFLAGS, SIOCSIFFLAGS, SOCK_DGRAM, SYS_FSCONFIG, SYS_FSMOUNT, SYS_FSOPEN,
    SYS_KEYCTL, SYS_MOUNT_SETATTR, SYS_MOVE_MOUNT, SYS_OPENAT2, SYS_OPEN_TREE, SYS_PIVOT_ROOT,
    TIOCSCTTY, TIOCSTI, TIOCSWINSZ,
)
from .errors import ContainerError

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


# What a container's set-up calls in libc, looked up by warm_libc.
LIBC_CALLS = ("syscall", "mount", "umount2", "unshare", "setns", "fstatfs", "sethostname",
              "setdomainname", "socket", "ioctl", "close_range", "prctl", "personality")


def warm_libc():
    """libc, its functions the set-up calls and the ctypes structures it
    fills, made now, in the process that forks the container's: made in a
    forked child, each lookup (dlsym through every loaded library, a ctypes
    object) and class costs it again, and copies the pages it touches
    (0.4 ms for ten lookups in a child of the helper, measured)."""
    global _libc
    if _libc is None:
        import ctypes
        _libc = ctypes.CDLL(None, use_errno=True)
    for name in LIBC_CALLS:
        try:
            getattr(_libc, name)  # CDLL keeps each function once looked up
        except AttributeError:  # an older libc's lack (close_range): said when it is called
            pass
    open_how_type()
    mount_attr_type()
    SockFprog()


_open_how = None


def open_how_type():
    """struct open_how, defined once."""
    import ctypes
    global _open_how
    if _open_how is None:
        class OpenHow(ctypes.Structure):
            _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                        ("resolve", ctypes.c_uint64)]
        _open_how = OpenHow
    return _open_how


def openat2(dirfd, path, flags, resolve, mode=0):
    """openat2(2) (Linux 5.6+): open `path` below `dirfd` under `resolve` rules."""
    import ctypes
    how = open_how_type()(flags | os.O_CLOEXEC, mode, resolve)
    try:
        return _libc_call("syscall", ctypes.c_long(SYS_OPENAT2), dirfd,
                          _bytes(path), ctypes.byref(how), ctypes.sizeof(how),
                          what=f"open {path} inside the root")
    except ContainerError as exc:
        if exc.errno == 40 and resolve & RESOLVE_NO_MAGICLINKS:  # ELOOP
            exc.why = ("a symlink loop, or a /proc magic link (/proc/self/fd/N, /proc/self/exe),"
                       " which could lead out of the root")
        raise


def filesystem_type(fd, what):
    """fstatfs(2)'s f_type: the kind of file system `fd` (O_PATH will do) is on."""
    import ctypes
    buf = ctypes.create_string_buffer(512)  # struct statfs opens with f_type, a long
    _libc_call("fstatfs", fd, buf, what=what)
    return ctypes.c_long.from_buffer(buf).value


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


def mount_attr_type():
    """struct mount_attr, defined once."""
    import ctypes
    global _mount_attr
    if _mount_attr is None:
        class MountAttr(ctypes.Structure):
            _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                        ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]
        _mount_attr = MountAttr
    return _mount_attr


def set_mount_attrs(fd, attrs, clear=0, propagation=0, recursive=False):
    """mount_setattr(2) (Linux 5.12+): set and clear attributes (read-only, nosuid,
    nodev, noexec, atime) and the propagation of the mount `fd` refers to,
    attached or not; root inside cannot take them off."""
    import ctypes
    attr = mount_attr_type()(attrs, clear, propagation, 0)
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


def last_capability():
    """The highest capability number this kernel has, asked of the kernel
    (PR_CAPBSET_READ answers EINVAL past it), never read from
    /proc/sys/kernel/cap_last_cap: in the container's mount namespace that
    file is the container's to mount over, and a 0 there would leave every
    capability above it in the bounding set."""
    global _last_capability
    if _last_capability is None:  # the kernel's: it is the same for the process's life
        last = 0
        while last < 63:
            try:
                _libc_call("prctl", PR_CAPBSET_READ, last + 1, 0, 0, 0, what="PR_CAPBSET_READ")
            except ContainerError:
                break
            last += 1
        _last_capability = last
    return _last_capability


_last_capability = None


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
        lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
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
        self.flags, self._program, self._fprog = tuple(policy.get("flags") or ()), None, None
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

    def program(self):
        """The filter as the kernel takes it (struct sock_filter's), generated
        by libseccomp once and kept: its generation is as costly as the rules."""
        if self._program is None:
            fd = os.memfd_create("seccomp", os.MFD_CLOEXEC)
            try:
                rc = self.lib.seccomp_export_bpf(self.ctx, fd)
                if rc < 0:
                    raise ContainerError("export the seccomp filter", errno=-rc)
                self._program = os.pread(fd, os.lseek(fd, 0, os.SEEK_END), 0)
            finally:
                os.close(fd)
        return self._program

    def fprog(self):
        """The struct sock_fprog that PR_SET_SECCOMP takes, made once (with the
        program's buffer it points to): loading is then one call."""
        if self._fprog is None:
            import ctypes
            program = self.program()
            buffer = ctypes.create_string_buffer(program, len(program))
            self._fprog = (SockFprog()(len(program) // 8, ctypes.addressof(buffer)), buffer)
        return self._fprog[0]

    def load(self):
        """Install the filter. Precondition: no_new_privs is set (or CAP_SYS_ADMIN).

        Without filter flags (TSYNC, LOG, SPEC_ALLOW: libseccomp's to apply),
        the program libseccomp generated is loaded as it is, with the one
        call libseccomp's own load ends in (PR_SET_SECCOMP); no_new_privs,
        which libseccomp's load would also set, is already set (or, for a
        bundle without it, left unset, as it asked)."""
        if self.flags:
            rc = self.lib.seccomp_load(self.ctx)
            if rc < 0:
                raise ContainerError("load the seccomp filter", errno=-rc)
            return
        import ctypes
        _libc_call("prctl", PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(self.fprog()), 0, 0,
                   what="load the seccomp filter")


_sock_fprog = None


def SockFprog():
    """struct sock_fprog, defined once (a ctypes class costs a fraction of a ms)."""
    global _sock_fprog
    if _sock_fprog is None:
        import ctypes

        class sock_fprog(ctypes.Structure):
            _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
        _sock_fprog = sock_fprog
    return _sock_fprog


# Filters built, by policy: libseccomp's build of one (a rule at a time, through
# ctypes) is the costliest step of a container's start. The library's helper
# builds each policy once, before it forks; its containers inherit the build.
_filters = {}
FILTERS_KEPT = 16
_remembered = None  # (policy, no_new_privs, SeccompFilter): remember_seccomp_program's


def seccomp_filter(policy, no_new_privs=True):
    """The SeccompFilter for `policy`, built once per process and policy."""
    if _remembered is not None and _remembered[0] is policy and _remembered[1] == no_new_privs:
        return _remembered[2]  # this very policy object's program, as the helper built it
    key = (repr(policy), no_new_privs)
    built = _filters.get(key)
    if built is None:
        built = SeccompFilter(policy, no_new_privs)
        if len(_filters) < FILTERS_KEPT:
            _filters[key] = built
    return built


def prepared_filter(program):
    """A SeccompFilter for a program built already (libseccomp's, exported),
    its struct sock_fprog made now: loading it is one call, and makes nothing."""
    built = SeccompFilter.__new__(SeccompFilter)
    built.flags, built._program, built._fprog = (), program, None
    built.fprog()
    return built


def remember_seccomp_program(policy, no_new_privs, built):
    """Take `policy`'s filter as built (by the library's helper, ahead, or by
    this process: prepared_filter), loaded as it is, as seccomp_filter's own
    would be. Only for a policy without filter flags (those are libseccomp's
    to apply, at its load)."""
    global _remembered
    if policy.get("flags"):
        return
    # Kept with the policy object itself (its spec's, which PID 1 inherits),
    # and found by identity: no repr of a policy of hundreds of names, whose
    # walk in a forked child copies every page it touches.
    _remembered = (policy, no_new_privs, built)


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
    ppid = os.getppid()
    if ppid == 0:
        # In a new PID namespace getppid() is 0, so read the parent from the
        # host's /proc, which is still mounted until the container mounts its own.
        fd = os.open("/proc/self/stat", os.O_RDONLY | os.O_CLOEXEC)
        try:
            ppid = int(os.read(fd, 4096).rsplit(b")", 1)[1].split()[1])
        finally:
            os.close(fd)
    if ppid != expected_parent:
        os._exit(EXIT_OWN_FAILURE)


def cloexec_from(low):
    """Mark every descriptor from `low` up close-on-exec, in one call
    (close_range(2) with CLOSE_RANGE_CLOEXEC, Linux 5.11): no listing of
    /proc/self/fd, which in the container's root may not be proc at all."""
    import ctypes
    _libc_call("close_range", ctypes.c_uint(low), ctypes.c_uint(0xFFFFFFFF),
               ctypes.c_int(CLOSE_RANGE_CLOEXEC), what="close_range")


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
