"""Processes: who is alive, guarded forks, exit codes, the report channel.

Owns: process_start and alive (a process is its pid and its start time, so a
recycled pid is never taken for ours), owner_of, fork and in_child (a forked
child only ever ends in exec or os._exit), exit_code (128+N for signal N),
report (a word up the set-up's socket), write_id_maps (a user namespace's
id maps, written from outside).
May import: constants, errors.
"""
import os
import sys

from .constants import EXIT_OWN_FAILURE, SCM_RIGHTS, SOL_SOCKET
from .errors import ContainerError

def owner_of(tag):
    """The (pid, start time) that a name's "PID.START[...]" part gives, or None:
    how deploys and pulls mark what they leave while they run (see alive)."""
    try:
        pid, start = tag.split(".")[:2]
        return int(pid), int(start)
    except ValueError:
        return None


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


def alive(owner):
    """Whether (pid, start time) is still the same running process. Anything
    else (a table edited by hand: a pid written as "1", a number, null) is
    no process, and so never one to join or signal."""
    return (isinstance(owner, (list, tuple)) and len(owner) == 2
            and all(type(n) is int for n in owner) and process_start(owner[0]) == owner[1])


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


def with_fds(fds):
    """sendmsg's ancillary data that passes descriptors `fds` (SCM_RIGHTS)."""
    return [(SOL_SOCKET, SCM_RIGHTS, b"".join(f.to_bytes(4, sys.byteorder) for f in fds))]


def received_fds(ancillary):
    """The descriptors recvmsg's ancillary data brought (SCM_RIGHTS), in order."""
    return [int.from_bytes(blob[i:i + 4], sys.byteorder)
            for level, kind, blob in ancillary if (level, kind) == (SOL_SOCKET, SCM_RIGHTS)
            for i in range(0, len(blob) - 3, 4)]


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
                sock.sendmsg([data], with_fds(fds))
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


def fork():
    """os.fork, with Python's buffers flushed first so no output is written
    twice; a fork refused (a pids limit reached: the cgroup's, a service's
    TasksMax, the system's) is one line, not an internal error."""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        return os.fork()
    except OSError as exc:
        raise ContainerError.from_os("fork", exc) from None


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
