"""The library's helper process: it forks the containers a Python caller asks for.

Owns: the helper's loop and, in a child of it for each container, that
container's supervisor, which runs it exactly as the command line's `run`
does (supervise.run_container: the same cgroups, holder, PID 1 and set-up
steps) and tells the caller over the container's own socket when it runs and
how it ended.

Why a process of its own: a caller may have threads, and a fork of a
process with threads, followed by Python in the child, can deadlock on a
lock another thread held at the fork (the import lock, a logging lock, an
allocator's). The library starts the helper with fork and exec (subprocess,
which runs no Python in between), so it begins single-threaded, imports
everything a container's start needs once, and never has a second thread:
every fork it makes is safe. Each container costs the caller one message.

The conversation (all on sockets the caller made; nothing is named on disk):
  caller -> helper  one message a container: its seccomp policy, pickled
                    apart, then the pickled (Spec, network, the caller's pid,
                    which names the cgroups); and four descriptors: the
                    container's socket, then the command's stdin, stdout and
                    stderr.
  helper -> spare   the seccomp program the helper built for that policy,
                    then the request's second part as it came, unread.
  supervisor -> caller, on the container's socket:
                    "started PID" with two pidfds (the supervisor's, PID 1's)
                    once the command has been exec'd; then "exit CODE [OOM]"
                    when it has ended and all is cleaned up; or, instead,
                    "error CODE MESSAGE" (the command line's one line).
The caller signals the supervisor through its pidfd, which passes signals on
with the command line's rules (supervise.forward), or kills PID 1 through its
own. The helper ends when the caller's end of its socket closes (the caller
has exited); each supervisor then gets SUPERVISOR_PDEATH, kills its container
and removes what it made, as after any end: no container outlives its caller.
What the helper trusts: only requests its own uid sends (SCM_CREDENTIALS: a
caller that dropped root keeps the socket); of a request, only its seccomp
policy is read here, the rest passed on unread from one buffer that is
cleared after each, so no spare inherits another container's spec.
May import: constants, errors, syscalls, procs, spec, cgroups, network, state, container,
supervise.
"""
import gc
import os
import signal
import sys

from .constants import (
    EXIT_OWN_FAILURE, SOL_SOCKET, SUPERVISOR_PDEATH, SUPERVISOR_SIGNALS,
)
from .errors import ContainerError
from .syscalls import (
    die_with_parent, last_capability, libseccomp, remember_seccomp_program, seccomp_filter,
    warm_libc,
)
from .procs import in_child, received_fds, report, with_fds
from .supervise import run_container

# What a request may carry: the pickled spec and network, and four descriptors.
REQUEST_MAX = 1 << 20
REQUEST_FDS = 4
# Signals the helper ignores: a terminal's ^C, ^\ and ^Z reach the caller's
# whole process group, the helper included; the caller and its containers
# decide what they mean, the helper must live on.
IGNORED_BY_HELPER = (signal.SIGINT, signal.SIGQUIT, signal.SIGTSTP, signal.SIGTTIN,
                     signal.SIGTTOU, signal.SIGHUP, signal.SIGPIPE)


def receive_into(sock, buffer):
    """One request into `buffer`, the helper's one buffer for every request
    (cleared after each, see main): (its length, descriptors, the sender's
    uid); (0, [], uid) once the caller has gone; a length of None for one
    larger than the buffer. The uid is the kernel's word (SO_PASSCRED): the
    sender's uid as it is now, None if it gave none."""
    import socket
    uid = None
    size, ancillary, flags, _ = sock.recvmsg_into(
        [buffer], sock_cmsg_space(REQUEST_FDS) + socket.CMSG_SPACE(12))
    for level, kind, blob in ancillary:
        if level == SOL_SOCKET and kind == socket.SCM_CREDENTIALS and len(blob) >= 12:
            uid = int.from_bytes(blob[4:8], sys.byteorder)  # struct ucred: pid, uid, gid
    return (None if flags & socket.MSG_TRUNC else size), received_fds(ancillary), uid


def receive(sock):
    """One request: (payload, descriptors); (b"", []) once the caller has gone."""
    data, ancillary, _, _ = sock.recvmsg(2 * REQUEST_MAX, sock_cmsg_space(REQUEST_FDS))
    return data, received_fds(ancillary)


def sock_cmsg_space(count):
    import socket
    return socket.CMSG_SPACE(count * 4)


def main(fd):
    """The helper: read requests until the caller's end closes; hand each to
    the spare, a supervisor forked ahead of time and waiting for its
    request, and fork the next spare while the container starts. So the
    fork of a supervisor (and its first steps) is off a container's path.
    Children are reaped by the kernel (SIGCHLD ignored)."""
    import pickle
    import socket
    gc.disable()
    for sig in IGNORED_BY_HELPER:
        signal.signal(sig, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    sock = socket.socket(fileno=fd)
    # What a container's start imports as it goes (PID 1 may load no module
    # once it is in the root: container.forbid_imports), loaded here, once;
    # warnings is os.get_exec_path's, which finds a command in PATH.
    for name in ("ctypes", "prctl", "resource", "_socket", "select", "stat", "errno", "time",
                 "warnings"):
        __import__(name)
    libseccomp()
    warm_libc()  # libc's functions and ctypes types (SockFprog, a filter's, among them)
    last_capability()  # the kernel's, asked once here: each PID 1 asked again (41 prctl calls)
    gc.freeze()
    helper_pid, own_uid = os.getpid(), os.getuid()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)  # set by the caller too, before
    # Each request is read into this one buffer and passed on from it unread
    # but for its seccomp policy, then the buffer is zeroed: the spare forked
    # next (and the PID 1 and --init it forks in turn, inside the next
    # container) inherits no other container's environment or volumes.
    buffer = bytearray(REQUEST_MAX)
    spare = None
    while True:
        if spare is None:
            spare = fork_spare(sock, helper_pid)
        try:
            size, fds, sender = receive_into(sock, buffer)
        except InterruptedError:
            continue
        if size == 0 or len(fds) != REQUEST_FDS:
            for fd in fds:
                os.close(fd)
            if size == 0:
                break
            buffer[:] = bytes(REQUEST_MAX)
            continue
        try:
            if sender != own_uid:
                # A caller that dropped root keeps this socket: what it sends
                # now is no longer root's to ask (a request is unpickled).
                raise ContainerError("the library's request", f"sent by uid {sender}, and this"
                                     f" helper is uid {own_uid}'s (the caller changed its uid)")
            if size is None:
                raise ContainerError("the library's request", f"larger than {REQUEST_MAX} bytes"
                                     " (the command, its environment and options together)")
            head = int.from_bytes(buffer[:4], sys.byteorder)
            seccomp, no_new_privs = pickle.loads(buffer[4:4 + head])
            program = None
            if seccomp is not None and not seccomp.get("flags"):
                # built here, once a policy; the spare, forked before, is handed it
                program = seccomp_filter(seccomp, no_new_privs).program()
        except ContainerError as exc:
            report(fds[0], f"error {exc.code} {exc}")
        except Exception as exc:  # a bug of the library's: told, never a traceback
            report(fds[0], f"error {EXIT_OWN_FAILURE} internal error: {exc!r}")
        else:
            try:
                send_fds(spare, [pickle.dumps(program), memoryview(buffer)[4 + head:size]], fds)
            except OSError as exc:  # the spare died: this request's caller hears it
                report(fds[0], f"error {EXIT_OWN_FAILURE} the library's helper lost a"
                               f" supervisor: {exc.strerror}")
            spare.close()
            spare = None
        buffer[:size or REQUEST_MAX] = bytes(size or REQUEST_MAX)
        for fd in fds:
            os.close(fd)
    os._exit(0)


def send_fds(sock, parts, fds):
    """The program (pickled) and the request, as one message: its first 4 bytes
    say where the request begins."""
    head = len(parts[0]).to_bytes(4, sys.byteorder)
    sock.sendmsg([head, *parts], with_fds(fds))


def fork_spare(requests, helper_pid):
    """A supervisor forked ahead of its request: the helper's end of its socket."""
    import socket
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    if os.fork() == 0:
        requests.close()
        ours.close()
        in_child(2, spare_main, theirs, helper_pid)
    theirs.close()
    return ours


def spare_main(conn, helper_pid):
    """A spare supervisor: its first steps now, then wait for its request
    (nothing, if the helper has ended), then supervise that container."""
    import pickle
    signal.pthread_sigmask(signal.SIG_BLOCK, SUPERVISOR_SIGNALS)
    # The helper's end (the caller's) is a word to the supervisor, which kills
    # its container and cleans up; a spare still waiting sees its socket close.
    die_with_parent(helper_pid, SUPERVISOR_PDEATH)
    data, fds = receive(conn)
    conn.close()
    if not data or len(fds) != REQUEST_FDS:
        return 0
    # Only now the supervisor's signals: a ^C that reached the process group
    # while this spare waited was the helper's to ignore, not a word for the
    # container it was to supervise. Blocked: none is lost from here on.
    for sig in IGNORED_BY_HELPER + (signal.SIGCHLD,):
        if sig != signal.SIGPIPE:  # ignored, as Python ignores it in the command line's
            signal.signal(sig, signal.SIG_DFL)
    head = int.from_bytes(data[:4], sys.byteorder)
    program = pickle.loads(data[4:4 + head])
    spec, network, owner = pickle.loads(data[4 + head:])
    if program is not None:
        remember_seccomp_program(spec.seccomp, spec.no_new_privs, program)
    try:
        return supervisor_main(spec, network, fds, owner, helper_pid)
    except BaseException as exc:
        if not isinstance(exc, ContainerError):
            exc = ContainerError(f"internal error: {exc!r}")
        report(fds[0], f"error {exc.code} {exc}")
        return exc.code


class Caller:
    """What the supervisor of a library container adds to run_container (as
    the monitor's Detached does for run -d): the caller's word on its socket.
    Its stdio is already the command's (the supervisor's 0, 1 and 2)."""

    def __init__(self, control):
        self.notify_fd = control  # the holder closes it: only the supervisor speaks

    def stdio(self):
        return None

    def started_holder(self):
        pass

    def terminal(self, master):
        raise ContainerError("tty", "the library gives no terminal")

    def tell(self, error, pid1=None):
        """The command runs: its pid, the supervisor's pidfd and PID 1's."""
        if error is not None or pid1 is None:
            return
        fds = [os.pidfd_open(os.getpid())]
        try:
            fds.append(os.pidfd_open(pid1))
        except OSError:  # ended already: the caller learns how from "exit"
            pass
        try:
            report(self.notify_fd, f"started {pid1}", fds=fds)
        finally:
            for fd in fds:
                os.close(fd)

    def finish(self, errors):
        self.errors = errors


def supervisor_main(spec, network, fds, owner, helper_pid):
    """A container's supervisor: the caller's stdio as its own (so the holder
    and PID 1 inherit it), then run_container, as the command line's run."""
    control = fds[0]
    for target, source in enumerate(fds[1:]):
        os.dup2(source, target, inheritable=True)
    for source in set(fds[1:]):
        if source > 2:
            os.close(source)
    caller = Caller(control)
    try:
        code, found = run_container(spec, network, None, caller, owner)
    except ContainerError as exc:
        report(control, f"error {exc.code} {exc}")
        return exc.code
    if os.getppid() != helper_pid:  # ended for SUPERVISOR_PDEATH: say so, not a status of its own
        report(control, f"error {EXIT_OWN_FAILURE} the library's helper process ended (killed?)"
                        " before the container did")
        return EXIT_OWN_FAILURE
    oom = found.get("oom_kills") or 0
    report(control, f"exit {code} {oom}")
    return 0


if __name__ == "__main__":  # started by the library: python -c ... main(FD)
    main(int(sys.argv[1]))
