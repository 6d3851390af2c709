"""Containers that outlive a command: the state directory, entries, logs.

Owns: Store (the state directory, checked to be the caller's and 0700 on
every read), entries with their statuses and legal moves, Log (the records of
a detached container's output), the runtime spec's state of an entry
(oci_state), times.
May import: errors, procs.
"""
import os

from .errors import ContainerError
from .procs import alive

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
# "restarting": it ended, and its monitor waits out the back-off of its
# restart policy before it starts it again (docker's word).
CREATING, CREATED, RUNNING, PAUSED, EXITED, DEAD, RESTARTING = (
    "creating", "created", "running", "paused", "exited", "dead", "restarting")
LIVE = (CREATING, CREATED, RUNNING, PAUSED, RESTARTING)  # a monitor (or PID 1) holds it
MOVES = {"start": (CREATED,), "exec": (RUNNING,), "stop": (RUNNING, PAUSED, RESTARTING),
         "kill": (CREATED, RUNNING, PAUSED, RESTARTING), "pause": (RUNNING,), "resume": (PAUSED,),
         "rm": (CREATED, EXITED, DEAD),
         "rm -f": (CREATING, CREATED, RUNNING, PAUSED, RESTARTING, EXITED, DEAD)}
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
        if status in LIVE:
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
                   CREATING: "it is being created", PAUSED: "it is paused",
                   RESTARTING: "it is restarting"}[status]
            hint = (" (stop it first, or rm -f)" if move == "rm" and status in
                    (RUNNING, PAUSED, RESTARTING) else "")
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

    def is_bundles(self, ref):
        """Whether `ref` is exactly the id of a bundle's container (create's)."""
        return any(c.id == ref and c.data.get("bundle") for c in self.entries())

    def named(self, ref):
        """Whether a container has exactly this id or name (no prefix)."""
        return any(ref in (c.id, c.name) for c in self.entries())

    def find(self, ref, verb=None):
        """The container `ref` names: its full id, its name, or a unique id prefix.
        A bundle's container (create's) is found by its full id alone, as runc
        finds them: engines choose ids (ctr's are words, "web" beside "web2")
        and `delete --force` one already gone, so a prefix would delete, kill
        or exec into another container. Given runc's `verb`, a missing one is
        said in runc's words, "VERB REF: container does not exist": engines
        parse them (containerd's shim takes "does not exist" as not found for
        a kill, and as done for a delete)."""
        entries = self.entries()
        for match in ([c for c in entries if c.id == ref], [c for c in entries if c.name == ref],
                      [c for c in entries if ref and c.id.startswith(ref)
                       and not c.data.get("bundle")]):
            if len(match) == 1:
                return match[0]
            if len(match) > 1:
                raise ContainerError(f"container {ref}", f"the id prefix is ambiguous: it matches"
                                     f" {len(match)} containers")
        if verb:
            raise ContainerError(f"{verb} {ref}", "container does not exist")
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
        # Unlocked, not only closed: the lock is the open file's, and a child
        # forked meanwhile by another thread (a monitor's run holder, while its
        # health thread holds the lock) keeps a copy for as long as it lives.
        import fcntl
        try:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        finally:
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
    return {EXITED: "stopped", DEAD: "stopped", RESTARTING: "stopped"}.get(status, status)
