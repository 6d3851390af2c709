"""Root filesystems and deploy: plan, check, then write inside the root.

Owns: the root's checks (check_root, check_run_root), the skeleton, deploy's
planner and writer (every write resolved inside the root by descriptor, every
removal through remove_at), archives and images deployed from a file or an
OCI layout (with the ELF closures elf finds), the image's settings file beside
the root.
May import: constants, errors, syscalls, procs, imageformat, elf.
"""
import os
import sys


from .constants import (
    DEPLOY_DIR, IN_ROOT, NAME_MAX, PATH_MAX, RESOLVE_IN_ROOT, RESOLVE_NO_MAGICLINKS,
    RESOLVE_NO_SYMLINKS,
)
from .errors import ContainerError
from .syscalls import openat2
from .procs import alive, owner_of, process_start
from .imageformat import (
    INDEX_TYPES, MANIFEST_TYPES, MAX_MANIFEST, check_image_healthcheck, open_layer, parse_platform,
    platform_name, read_members, tar_module,
)
from .elf import elf_closure

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
    their names in the archive and where they land through symlinks, less
    what the writer keeps; `implied`, the directories made on the way),
    what its whiteouts and replacements remove (`removed`, `cleared`), else
    the root as it is. So whatever the order of an
    archive's members and layers, the writer is never handed an op that
    cannot be done: a refused archive leaves the root as it was.
    """

    def __init__(self, rootfd):
        self.rootfd, self.ops, self.skipped, self.open_files = rootfd, [], [], []
        self.planned, self.removed, self.targets = {}, set(), {}
        self.implied = set()  # directories the writer makes on the way to an op's parent
        self.foreign = 0  # archive members whose owners a user's deploy cannot keep
        self.image = self.image_source = None  # an image archive's run settings, and its path
        self.layering, self.cleared = False, set()  # image layers: an upper one's files win
        self.root_kinds, self.root_links = {}, {}  # the root does not change while planning
        # Directories already walked, and every name those walks went through:
        # kept until an entry at one of those names (or a whiteout) changes them.
        self.walked, self.walked_through = {}, set()
        # What archive members will write, against the room the root's file
        # system has now: a member's size is what the writer writes (a sparse
        # member's holes too), so a bomb is refused before it fills the disk.
        self.archive_bytes, self.room = 0, None
        if rootfd is not None:
            try:
                fs = os.fstatvfs(rootfd)
                self.room = fs.f_bavail * fs.f_frsize
            except OSError:
                pass

    def take(self, size, what):
        """Count an archive member's bytes; refuse them past the room there is."""
        self.archive_bytes += size
        if self.room is not None and self.archive_bytes > self.room:
            raise ContainerError(what, f"its files need {self.archive_bytes} bytes or more, and the"
                                 f" root's file system has {self.room} free; refused")

    def add(self, op):
        """Add an op; a second op for the same place and kind is dropped, except
        that an image layer's file or symlink replaces a lower layer's."""
        if self.planned.get(op.dst) == op.kind and (op.kind == "dir" or op.kind in (
                "symlink", "file") and not self.layering):
            return
        check_name(op.dst, f"deploy {op.src or op.dst}")
        if op.kind in ("symlink", "hardlink") and "\0" in op.src:
            raise ContainerError(f"deploy {op.dst}", "its link target holds a NUL byte; refused")
        parent, base = os.path.split(op.dst)
        places = [op.dst]
        if op.dst != "/":
            if parent not in self.walked:
                seen = []
                names, why = self.walk(parent, seen)
                if why:
                    raise ContainerError(f"deploy {op.src or op.dst} to {op.dst}", why)
                self.walked[parent] = names
                self.walked_through.update(seen)
                # The writer makes what is missing (walk: only before any symlink)
                parts = names[0].split("/")
                self.implied.update(prefix for i in range(2, len(parts) + 1)
                                    if self.kind_at(prefix := "/".join(parts[:i])) is None)
            # The entry is known by every name of its directory, first where the
            # writer puts it: a layer's d/f, with d -> a in the root, is a/f, and
            # a later a/f/x must meet the file there, not a directory to make.
            places += [os.path.join(name, base) for name in self.walked[parent]]
        self.ops.append(op)
        if op.dst == "/" or not self.replaces(op, places[1]):
            return
        if any(place in self.walked_through for place in places):
            self.forget_walks()
        # What was below the place is no longer there by its name: a directory
        # is replaced only when empty (Writer.place), and a symlink's names led
        # into its target, which stays. (Nothing is below anything else.)
        now = self.kind_at(places[1])
        purge = now == "symlink" or now == "dir" and op.kind != "dir"
        for place in places:
            if purge:
                self.unplan(lambda p: p.startswith(place + "/"))
                self.cleared.add(place)
            self.planned[place] = op.kind
            if op.kind == "symlink":
                self.targets[place] = op.src

    def replaces(self, op, place):
        """Whether the writer puts op at `place` (where it lands, through every
        symlink), as the plan must then record; or keeps what is there, as it
        does a directory that holds anything under a file or a symlink
        (Writer.place), a symlink that leads to a directory under a directory
        (Writer.do_dir), and a directory that a hard link names (do_hardlink)."""
        now = self.kind_at(place)
        if op.kind == "dir":
            return now != "symlink" or bool(self.walk(place)[1])
        if op.kind == "hardlink":
            parents, why = self.walk(os.path.dirname(op.src))
            if not why and self.kind_at(os.path.join(parents[0], os.path.basename(op.src))) == "dir":
                return False
        return now != "dir" or not self.holds(place)

    def holds(self, path):
        """Whether the directory at `path` holds anything once the ops so far
        are applied: an entry this plan writes there, under any name of the
        directory, or one of the root's that no whiteout or replacement took."""
        names, why = self.walk(path)
        if why:
            return False
        if any(p.startswith(name + "/") for p in (*self.planned, *self.implied) for name in names):
            return True
        if self.rootfd is None:
            return False
        try:
            fd = openat2(self.rootfd, names[0], os.O_RDONLY | os.O_DIRECTORY, IN_ROOT)
        except ContainerError:
            return False
        try:
            entries = os.listdir(fd)
        finally:
            os.close(fd)
        return any(not any(self.gone(os.path.join(name, entry)) for name in names)
                   for entry in entries)

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
            self.unplan(lambda p: p == path or p.startswith(path + "/"))

    def clear(self, op):
        """Add an opaque whiteout's op: what lies below its directory is no
        longer planned or there; the directory stays."""
        self.ops.append(op)
        self.forget_walks()
        paths, why = self.walk(op.dst)
        for path in {op.dst.rstrip("/")} | ({p.rstrip("/") for p in paths} if not why else set()):
            self.cleared.add(path)
            self.unplan(lambda p: p.startswith(path + "/"))

    def unplan(self, which):
        """Forget what the plan writes (or makes on the way) at the paths which() picks."""
        for planned in [p for p in self.planned if which(p)]:
            del self.planned[planned]
        self.implied -= {p for p in self.implied if which(p)}

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
            name, kind = nexts[0], self.kind_at(nexts[0])  # where it is: the plan keeps it there
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
        if path == "/" or path in self.implied:
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
        if "\0" in member.name or "\0" in member.linkname:  # a pax header can hold one
            raise ContainerError(f"deploy {archive}", "a member's name or link target holds a"
                                 " NUL byte; refused")
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
            kind = None if why else plan.kind_at(os.path.join(parents[0], os.path.basename(target)))
            if why or target == "/" or kind in (None, "dir"):  # link(2) would fail
                raise ContainerError(f"deploy {archive}", f"hard link {member.name} ->"
                                     f" {member.linkname}: the archive (or the root) has no file"
                                     " there to link to; refused")
            plan.add(Op("hardlink", dst, target))
        elif member.isreg():
            plan.take(member.size, f"deploy {archive}")
            plan.add(Op("file", dst, None, meta, data=lambda m=member, t=tar: t.extractfile(m)))


def plan_archive(plan, path, to):
    """A root filesystem archive, or an image archive: `docker save`'s, or an
    OCI layout made into a tar (podman save --format oci-archive, skopeo's
    oci-archive:)."""
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise ContainerError.from_os(f"deploy {path}", exc) from None
    plan.open_files.append(f)
    tar = open_layer(f, None, f"deploy {path}")
    plan.open_files.append(tar)
    files = ImageFiles(path, tar)
    if files.has("manifest.json") or files.has("oci-layout"):
        plan_image(plan, files, to)
    else:
        plan_members(plan, tar, files.member_list, path, to, member_checker())


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
            self.members, self.member_list = {}, read_members(tar, f"deploy {path}")
            for member in self.member_list:
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
    room = None if plan.room is None else plan.room - plan.archive_bytes
    members = read_members(tar, f"deploy {name}", room)
    for member in members:
        base = os.path.basename(member.name)
        if base.startswith(".wh."):
            where = whiteout_dir(member, name, to)
            if base == ".wh..wh..opq":
                plan.clear(Op("clear", where))
            else:
                plan.remove(Op("remove", os.path.join(where, whiteout_target(member, name))))
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

    def forget_removed(self):
        """After a directory is removed: drop the cached fds of the directories
        it took, under whatever name they were cached (d/x, with d -> a, is
        a/x, and a whiteout of a/x takes it): a later op there makes the
        directory again, not write into the removed one."""
        for cached in [p for p, fd in self.dirfds.items() if os.fstat(fd).st_nlink == 0]:
            self.forget(cached)

    def stage(self, target_fd):
        """Where to make an entry before renaming it into the directory target_fd:
        the staging directory at the root's top (made at the first use), or,
        when the target is on another file system (a mount inside the root),
        that directory itself, under a temporary name."""
        if self.stage_fd is None and self.stage_dev is None:
            name = STAGING + self.tag
            try:
                os.mkdir(name, 0o700, dir_fd=self.rootfd)
            except OSError as exc:
                if exc.errno != 30:  # EROFS: a read-only root (cp into a volume): beside the target
                    raise
                self.stage_dev = -1
            else:
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
                self.forget_removed()
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
        import stat
        parent, name = os.path.split(op.dst)
        check_entry(name, f"deploy: whiteout of {op.dst}")  # before anything is looked up
        try:
            fd = self.dirfd(parent, create=False)
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except (OSError, ContainerError):
            return  # nothing there to remove
        self.forget(op.dst)
        remove_at(fd, name, f"deploy: whiteout of {op.dst}", st)
        if stat.S_ISDIR(st.st_mode):
            self.forget_removed()

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
            import click
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
IMAGE_KEYS = ("Entrypoint", "Cmd", "Env", "WorkingDir", "User", "ExposedPorts", "Healthcheck")


def image_settings(config_bytes, what):
    """The run settings of an image's configuration: its `config` object's
    Entrypoint, Cmd, Env, WorkingDir, User, ExposedPorts and Healthcheck."""
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
        if "Healthcheck" in settings:
            check_image_healthcheck(settings["Healthcheck"])
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
    take its settings from a file another user planted beside it (a FIFO would
    hold `run` in its open: opened without blocking, read only if regular)."""
    path = image_file(root)
    try:
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        with open(os.open(path, flags), "rb") as f:
            import json  # only for a root that has an image
            st = os.fstat(f.fileno())
            if (st.st_mode & 0o170000, st.st_mode & 0o022) != (0o100000, 0) or st.st_uid not in (0, os.geteuid()):
                raise ContainerError(f"the image configuration {path}", "not a regular file of"
                                     " yours or root's, or writable by others: refused (remove"
                                     " it, or pull again)")
            image = json.loads(f.read(MAX_MANIFEST))
        settings = image["config"]
        if not isinstance(settings, dict):
            raise ValueError("config is not an object")
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ContainerError(f"the image configuration {path}", f"unreadable: {exc}") from None
    return settings


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
