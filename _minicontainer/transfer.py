"""cp: files into and out of a container's root, as docker cp copies them.

Owns: the container's root as cp sees it (a running one's through its PID
1's /proc/PID/root, so its volumes and --rm's overlay are there; a stopped
one's directory), the ids of its user namespace, docker cp's destination
rules, and the tar stream a container's files leave in. What goes in is
planned and written by deploy's Plan and Writer (rootfs): every path
resolved with the root as "/" by descriptor, no device node made, no hard
link out, nothing written before the whole copy is checked.
May import: constants, errors, syscalls, procs, imageformat, rootfs.
"""
import os
import posixpath
import stat

from .constants import CLONE_NEWUSER, IN_ROOT
from .errors import ContainerError
from .syscalls import filesystem_type, openat2
from .procs import alive
from .imageformat import tar_module
from .rootfs import (
    Op, Plan, Writer, check_name, member_checker, meta_of, open_root, plan_members, plan_tree,
    sweep_staging,
)

# ---------------------------------------------------------------------------
# cp
# The container is hostile and running: any name on the way may be a
# symlink, and may become one while cp runs. So nothing inside the root is
# ever reached by a path string checked then used: every lookup is an
# openat2 below the root's descriptor (RESOLVE_IN_ROOT: ".." and absolute
# links stop at the root), and the walk that reads a tree opens each entry
# by name below its directory's descriptor without following it, reads a
# symlink as a symlink, and a device or FIFO only as a header.
# ---------------------------------------------------------------------------

# Where cp neither reads nor writes (docker cannot copy /proc or /sys either):
# their files are the kernel's, not the container's, and a walk of them
# never ends. A walk that meets one as a mount keeps its directory, empty.
KERNEL_FILESYSTEMS = {0x9FA0: "proc", 0x62656572: "sysfs", 0x63677270: "cgroup2",
                      0x27E0EB: "cgroup", 0x1CD1: "devpts", 0x19800202: "mqueue",
                      0x73636673: "securityfs", 0x64626720: "debugfs", 0x74726163: "tracefs",
                      0xCAFE4A11: "bpf", 0x42494E4D: "binfmt_misc", 0x6E736673: "nsfs"}


class ContainerRoot:
    """A container's root opened for cp: `fd` (the root as "/"), whether it is
    the running container's own view (`live`), and its user namespace's id
    maps (None: ids are the host's)."""

    def __init__(self, entry, verb):
        self.entry, self.name, self.verb = entry, entry.name, verb
        self.fd, self.live = None, False
        pid1 = entry.data.get("pid1")
        if alive(pid1):
            try:  # its mount namespace's root: volumes, tmpfs and --rm's overlay included
                fd = os.open(f"/proc/{pid1[0]}/root", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError:
                fd = None
            if fd is not None and same_file(fd, "/"):  # not in its root yet: never the host's
                os.close(fd)
                raise ContainerError(verb, f"container {self.name} is not set up yet; try again")
            if fd is not None and alive(pid1):  # opened before its pid could be another's
                self.fd, self.live = fd, True
                self.uid_map = self.read_map(pid1, "uid_map")
                self.gid_map = self.read_map(pid1, "gid_map")
                if not alive(pid1):
                    self.close()
                    raise ContainerError(f"{verb}", f"container {self.name} ended while cp began")
                return
            if fd is not None:
                os.close(fd)
        root = entry.data.get("root")
        if not root:
            raise ContainerError(verb, f"container {self.name} has no root directory")
        self.fd = open_root(root)
        spec = entry.data.get("spec") or {}
        if (spec.get("namespaces") or 0) & CLONE_NEWUSER:
            self.uid_map = [tuple(m) for m in spec.get("uid_map") or ()]
            self.gid_map = [tuple(m) for m in spec.get("gid_map") or ()]
        else:
            self.uid_map = self.gid_map = None

    @staticmethod
    def read_map(pid1, name):
        with open(f"/proc/{pid1[0]}/{name}") as f:
            found = [tuple(int(n) for n in line.split()) for line in f if line.strip()]
        return None if found == [(0, 0, 2**32 - 1)] else found

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def missing(self, path):
        return ContainerError(self.verb, f"Could not find the file {path} in container {self.name}")

    def open(self, path, flags, what=None):
        """openat2 below the root, as the root's "/": a missing name is docker's
        "Could not find the file"; anything else one line naming the path."""
        try:
            return openat2(self.fd, path, flags | os.O_CLOEXEC, IN_ROOT)
        except ContainerError as exc:
            if exc.errno == 2:
                raise self.missing(path) from None
            raise ContainerError(self.verb, f"{path} in container {self.name}: {exc.why}",
                                 exc.errno) from None

    def check_not_kernel(self, fd, path):
        kind = KERNEL_FILESYSTEMS.get(filesystem_type(fd, f"{self.verb}: {path}") & 0xFFFFFFFF)
        if kind:
            raise ContainerError(self.verb, f"{path} is on the kernel's {kind} file system in"
                                 f" container {self.name}: cp copies only the container's files")

    def check_not_in_volume(self, path):
        """A stopped container's volumes are not mounted in its root: what lies
        at a volume's path there is the empty mount point, and a copy there
        would be hidden by the volume once it runs. Refused, saying where the
        volume's files are."""
        if self.live:
            return
        norm = posixpath.normpath(posixpath.join("/", path))
        for mount in (self.entry.data.get("spec") or {}).get("mounts") or ():
            dst = mount.get("destination") if isinstance(mount, dict) else None
            if (mount.get("type") == "bind" and isinstance(dst, str) and dst != "/"
                    and (norm == dst.rstrip("/") or norm.startswith(dst.rstrip("/") + "/"))):
                raise ContainerError(self.verb, f"{path} is in the volume {dst} (from"
                                     f" {mount.get('source')}), and container {self.name} is not"
                                     " running: copy to or from the volume's directory itself")


def same_file(fd, path):
    st, other = os.fstat(fd), os.stat(path)
    return (st.st_dev, st.st_ino) == (other.st_dev, other.st_ino)


def to_host(mapping, number):
    """A container's uid or gid as the host knows it; None if unmapped."""
    if mapping is None:
        return number
    for inside, outside, count in mapping:
        if inside <= number < inside + count:
            return outside + number - inside
    return None


def to_container(mapping, number):
    """A host uid or gid as the container sees it (the overflow id 65534 if unmapped)."""
    if mapping is None:
        return number
    for inside, outside, count in mapping:
        if outside <= number < outside + count:
            return inside + number - outside
    return 65534


def split_source(path):
    """(path, contents): docker's `SRC/.` copies what a directory holds, not it."""
    contents = path.endswith("/.") or path == "."
    return path, contents


def source_name(path):
    """The name a source is copied under: its last component."""
    return posixpath.basename(posixpath.normpath(path).rstrip("/")) or ""


def destination(src_is_dir, contents, src_name, dst, dst_kind, verb, where=""):
    """docker cp's rules: (the directory written into, the top name there;
    '' for a directory's contents). dst_kind: 'dir', 'file' or None (missing)."""
    if dst_kind == "dir":
        return dst, "" if contents or not src_name else src_name
    parent, base = posixpath.split(dst.rstrip("/") or "/")
    if dst_kind is not None:
        if src_is_dir:
            raise ContainerError(verb, f"cannot copy a directory onto the file {where}{dst}")
        return parent or "/", base
    if not src_is_dir and dst.endswith("/"):
        raise ContainerError(verb, f"{where}{dst}: no such directory (the destination"
                             " directory must exist)")
    return parent or "/", base


def map_owners(plan, uid_map, gid_map, keep, verb):
    """Give each planned file and directory its owner on the host: its own
    (keep: -a) mapped through the user namespace, else the container root's,
    without a setuid or setgid bit that was another owner's (a user's setuid
    file copied in must not become a setuid root file on the host's disk).
    An owner the namespace cannot map refuses the copy, before anything is
    written."""
    for op in plan.ops:
        if op.meta is None:
            continue
        mode, uid, gid, mtime, size = op.meta
        if not keep:
            if (uid, gid) != (0, 0):  # a setuid or setgid bit stays only with its owner
                mode &= ~0o6000
            uid, gid = 0, 0
        host_uid, host_gid = to_host(uid_map, uid), to_host(gid_map, gid)
        if host_uid is None or host_gid is None:
            raise ContainerError(verb, f"{op.dst}: its owner {uid}:{gid} has no id in the"
                                 " container's user namespace; refused (without -a, files are"
                                 " the container root's)")
        op.meta = (mode, host_uid, host_gid, mtime, size)


def in_cp(exc, verb):
    """deploy's planner and writer say "deploy X: why"; in cp it is "cp ...: X: why"."""
    exc.what = exc.what.removeprefix("deploy ").removeprefix("deploy: ")
    return exc.within(verb)


def write_plan(rootfd, plan, verb, sweep=True, into=None):
    """Apply a checked plan below rootfd with deploy's Writer (umask 0: modes
    exactly as planned). Returns the Writer's warnings. `into`: (path, fd) of
    the destination directory, opened already: the Writer writes into that
    directory and never makes it, as deploy's Writer makes a missing parent
    (docker's rule: the destination's directory must exist; a container that
    removes it while cp runs must not get a new directory in its place)."""
    writer = Writer(rootfd)
    if into is not None:
        writer.dirfds[into[0]] = into[1]  # the Writer's now: it closes it
    umask = os.umask(0)
    try:
        if sweep:
            sweep_staging(rootfd)
        for op in plan.ops:
            try:
                writer.apply(op)
            except ContainerError as exc:
                raise in_cp(exc, verb) from None
    finally:
        os.umask(umask)
        writer.close()
    return [f"skipped {path}: not a file, directory or symlink" for path in plan.skipped] \
        + writer.warnings


def copy_in(entry, src, dst, archive=False, follow=False, stdin=None):
    """cp SRC NAME:DST (stdin: a tar stream, for `cp - NAME:DST`). Returns warnings."""
    import tempfile
    verb = f"cp {src} {entry.name}:{dst}"
    dst = posixpath.join("/", dst)
    root = ContainerRoot(entry, verb)
    try:
        root.check_not_in_volume(dst)
        kind, dst = dst_kind_in_root(root, dst)
        if stdin is not None:
            if kind != "dir":
                raise ContainerError(verb, f"destination {entry.name}:{dst} must be a directory")
            to, top = dst, ""
        else:
            st = host_source(src, follow, verb)
            _, contents = split_source(src)
            to, top = destination(stat.S_ISDIR(st.st_mode), contents, source_name(src), dst,
                                  kind, verb, f"{entry.name}:")
        plan = Plan(root.fd)
        spool = into = None
        try:
            # Opened once: the directory checked is the one written into.
            into = root.open(to, os.O_RDONLY | os.O_DIRECTORY)
            root.check_not_kernel(into, to)
            if stdin is not None:
                spool = tempfile.TemporaryFile()
                import shutil
                shutil.copyfileobj(stdin, spool, 1 << 20)
                spool.seek(0)
                from .imageformat import open_layer, read_members
                tar = open_layer(spool, None, f"{verb}: the archive on stdin")
                members = read_members(tar, f"{verb}: the archive on stdin", plan.room)
                try:
                    plan_members(plan, tar, members, "the archive on stdin", to, member_checker())
                except ContainerError as exc:
                    raise in_cp(exc, verb) from None
            else:
                try:
                    plan_host_source(plan, src, st, to, top)
                except ContainerError as exc:
                    raise in_cp(exc, verb) from None
            map_owners(plan, root.uid_map, root.gid_map, archive, verb)
            into, fd = None, into  # the Writer's from here: it closes it
            return write_plan(root.fd, plan, verb, into=(posixpath.normpath(to), fd))
        finally:
            if into is not None:
                os.close(into)
            plan.close()
            if spool is not None:
                spool.close()
    finally:
        root.close()


def dst_kind_in_root(root, path):
    """What is at `path` in the container ('dir', 'file', None) and the path
    to write to: a symlink there is followed once, by its text, as docker
    follows it (its target then resolved inside the root like any path)."""
    try:
        fd = root.open(path, os.O_PATH | os.O_NOFOLLOW)
    except ContainerError as exc:
        if exc.why.startswith("Could not find"):
            return None, path
        raise
    try:
        st = os.fstat(fd)
        if stat.S_ISLNK(st.st_mode):  # once, as docker does; then resolved as any path is
            target = os.readlink("", dir_fd=fd)
            path = posixpath.normpath(posixpath.join(posixpath.dirname(path.rstrip("/")), target))
            os.close(fd)
            fd = None
            try:
                fd = root.open(path, os.O_PATH)
            except ContainerError as exc:
                if exc.why.startswith("Could not find"):
                    return None, path
                raise
            st = os.fstat(fd)
    finally:
        if fd is not None:
            os.close(fd)
    return ("dir" if stat.S_ISDIR(st.st_mode) else "file"), path


def host_source(src, follow, verb):
    """The host source's stat (through a final symlink only with -L)."""
    try:
        st = os.stat(src) if follow else os.lstat(src)
    except OSError as exc:
        raise ContainerError.from_os(verb, exc) from None
    if src.endswith("/") and not stat.S_ISDIR(st.st_mode):
        raise ContainerError(verb, f"{src}: not a directory")
    if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
        raise ContainerError(verb, f"{src}: not a regular file, directory or symlink (cp makes"
                             " no device nodes, FIFOs or sockets)")
    return st


def plan_host_source(plan, src, st, to, top):
    """A host file, symlink or directory tree, planned at `to`/`top` in the root."""
    dst = posixpath.join(to, top) if top else to
    if stat.S_ISDIR(st.st_mode):
        if top:
            plan.add(Op("dir", dst, src, meta_of(st)))
        plan_tree(plan, src, dst)
    elif stat.S_ISLNK(st.st_mode):
        plan.add(Op("symlink", dst, os.readlink(src)))
    else:
        plan.add(Op("file", dst, os.path.realpath(src), meta_of(st)))


def copy_out(entry, src, dst, archive=False, follow=False, stdout=None):
    """cp NAME:SRC DST (stdout: `cp NAME:SRC -`, a tar stream). Returns warnings."""
    import tempfile
    verb = f"cp {entry.name}:{src} {dst}"
    src_path, contents = split_source(posixpath.join("/", src))
    root = ContainerRoot(entry, verb)
    try:
        root.check_not_in_volume(src_path)
        fd = root.open(src_path, os.O_PATH | (0 if follow else os.O_NOFOLLOW))
        try:
            st = os.fstat(fd)
            is_dir = stat.S_ISDIR(st.st_mode)
            if (src.endswith("/") or contents) and not is_dir:
                raise ContainerError(verb, f"{src_path}: not a directory")
            root.check_not_kernel(fd, src_path)
            name = source_name(src_path)
            if stdout is not None:
                write_archive(fd, "" if contents or not name else name, stdout, root, verb)
                return []
            to, top = host_destination(dst, is_dir, contents, name, verb)
            with tempfile.TemporaryFile() as spool:
                write_archive(fd, top, spool, root, verb)
                spool.seek(0)
                return extract_on_host(spool, to, root, archive, verb)
        finally:
            os.close(fd)
    finally:
        root.close()


def host_destination(dst, is_dir, contents, name, verb):
    """docker cp's rules on the host side, where the caller's own symlinks are
    followed (the caller chose the path): (directory, top name). A relative
    DEST is the caller's working directory's (destination's rules take a
    path without a directory as one in "/", as inside a container)."""
    if not dst.startswith("/"):
        dst = os.path.join(os.getcwd(), dst)
    try:
        kind = "dir" if stat.S_ISDIR(os.stat(dst).st_mode) else "file"
    except FileNotFoundError:
        kind = None
        parent = os.path.dirname(dst.rstrip("/")) or "."
        if not os.path.isdir(parent):
            raise ContainerError(verb, f"{parent}: no such directory") from None
    except OSError as exc:
        raise ContainerError.from_os(f"{verb}: {dst}", exc) from None
    return destination(is_dir, contents, name, dst, kind, verb)


def extract_on_host(spool, to, root, archive, verb):
    """Unpack the archive of the container's files into the host directory
    `to`, as deploy unpacks one into a root: with `to` as "/", so no member
    and no symlink of the caller's there leads a write elsewhere. The files
    are the caller's (with -a: their owners, mapped back to the host), and
    without -a lose setuid and setgid, as a chown makes them lose them."""
    try:
        tofd = os.open(to, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise ContainerError.from_os(f"{verb}: {to}", exc) from None
    try:
        from .imageformat import open_layer, read_members
        tar = open_layer(spool, None, verb)
        plan = Plan(tofd)
        try:
            try:
                plan_members(plan, tar, read_members(tar, verb, plan.room), "the copy", "/",
                             member_checker())
            except ContainerError as exc:
                raise in_cp(exc, verb) from None
            if archive:
                map_owners(plan, root.uid_map, root.gid_map, True, verb)
            else:  # the caller's, as a chown to the caller would leave them
                for op in plan.ops:
                    if op.meta is not None:
                        op.meta = (op.meta[0] & ~0o6000, os.geteuid(), os.getegid(), *op.meta[3:])
            return write_plan(tofd, plan, verb, sweep=False)
        finally:
            plan.close()
    finally:
        os.close(tofd)


class Exactly:
    """A file's bytes for a tar member of `size`: cut, or padded with zeros, if
    the container changes the file's length while it is read."""

    def __init__(self, fd, size):
        self.fd, self.left = fd, size

    def read(self, n=-1):
        n = self.left if n < 0 else min(n, self.left)
        data = os.read(self.fd, n) if n else b""
        if not data and n:
            data = bytes(n)
        self.left -= len(data)
        return data


def reopen(fd, flags):
    """Open what an O_PATH descriptor holds, for reading: the very file looked
    at, never one put at its name since."""
    return os.open(f"/proc/self/fd/{fd}", flags | os.O_CLOEXEC)


def write_archive(topfd, top, out, root, verb):
    """Write a tar of what topfd (O_PATH, not followed) holds to `out`, named
    `top` ('' for a directory's contents). Each entry below is opened by name
    in its directory's descriptor without following it: a symlink is
    archived as a symlink, a device or FIFO as a header, nothing is ever read
    through a link. Owners as the container sees them. One descriptor is
    held a directory deep, whatever a directory holds."""
    tarfile = tar_module()
    links, name = {}, top
    stack = []  # (directory fd, its member name, its entries still to archive)
    try:
        tar = tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT)
        try:
            dirfd = add_entry(tar, tarfile, topfd, top, True, links, root, verb)
            if dirfd is not None:
                stack.append((dirfd, top, iter(sorted(os.listdir(dirfd)))))
            while stack:
                dirfd, parent, names = stack[-1]
                child = next(names, None)
                if child is None:
                    os.close(dirfd)
                    stack.pop()
                    continue
                name = f"{parent}/{child}" if parent else child
                try:
                    fd = os.open(child, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
                except FileNotFoundError:
                    continue  # removed while the walk went on
                try:
                    below = add_entry(tar, tarfile, fd, name, False, links, root, verb)
                finally:
                    os.close(fd)
                if below is not None:
                    stack.append((below, name, iter(sorted(os.listdir(below)))))
        finally:
            for dirfd, _, _ in stack:
                os.close(dirfd)
            tar.close()
    except OSError as exc:
        raise ContainerError.from_os(f"{verb}: archive {name or '/'}", exc) from None
    except tarfile.TarError as exc:
        raise ContainerError(verb, f"archive {name or '/'}: {exc}") from None


def add_entry(tar, tarfile, fd, name, first, links, root, verb):
    """Archive one entry (fd: O_PATH, not followed); for a directory to walk,
    return it opened for reading."""
    st = os.fstat(fd)
    info = tarfile.TarInfo(name or ".")
    info.mode, info.mtime = stat.S_IMODE(st.st_mode), st.st_mtime
    info.uid, info.gid = to_container(root.uid_map, st.st_uid), to_container(root.gid_map, st.st_gid)
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        if name:
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        if not first and KERNEL_FILESYSTEMS.get(filesystem_type(fd, verb) & 0xFFFFFFFF):
            return None  # a mount of /proc or /sys below: its directory, empty
        return reopen(fd, os.O_RDONLY | os.O_DIRECTORY)
    if stat.S_ISREG(mode):
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in links:
            info.type, info.linkname = tarfile.LNKTYPE, links[key]
            tar.addfile(info)
            return None
        links[key] = name
        rfd = reopen(fd, os.O_RDONLY | os.O_NONBLOCK)
        try:
            info.size = st.st_size
            tar.addfile(info, Exactly(rfd, st.st_size))
        finally:
            os.close(rfd)
    elif stat.S_ISLNK(mode):
        info.type, info.linkname = tarfile.SYMTYPE, os.readlink("", dir_fd=fd)
        tar.addfile(info)
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode):
        info.type = (tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
                     if stat.S_ISBLK(mode) else tarfile.FIFOTYPE)
        info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
        tar.addfile(info)
    return None  # (a socket: nothing a copy can hold)


def check_container_path(path, verb):
    """A container path cp can look up: no NUL, not too long."""
    check_name(posixpath.join("/", path), verb)
