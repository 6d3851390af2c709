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
every fork it makes is safe. Each container costs the caller one message,
which a supervisor forked ahead of it (a spare) reads itself: the helper
only keeps spares ready, and reads no request.

The conversation (all on sockets the caller made; nothing is named on disk):
  caller -> spare   one message a container, on the socket the caller gave
                    the helper, which each waiting spare reads from (the
                    kernel hands a message to one of them): the seccomp
                    policy, pickled apart (the key to the program the helper
                    built ahead for the default policy), then the pickled
                    (Spec, network, the caller's pid, which names the
                    cgroups); and four descriptors: the container's socket,
                    then the command's stdin, stdout and stderr.
  spare -> helper   the spare closes its pipe as it takes a request (or
                    dies): the helper forks the next spare.
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
What a spare trusts: only a request its own uid sent (SCM_CREDENTIALS: a
caller that dropped root keeps the socket), checked before it unpickles
anything, and only parts of the types the library sends (unpacked); it
lets go of the socket as soon as it has its request, so no process of a
container holds it. A waiting spare dies with the helper by SIGKILL (a
stopped one too: none is left holding the socket); a helper that cannot
fork a spare tries again soon (its end would be every container's). The
helper never holds a request, so no spare (nor the PID 1 and --init forked
from it) inherits another container's spec.
May import: constants, errors, syscalls, procs, spec, cgroups, network, state, container,
supervise.
"""
import _signal
import gc
import os
import signal
import sys

from .constants import (
    DEFAULT_CAPABILITIES, EXIT_OWN_FAILURE, SOL_SOCKET, SUPERVISOR_PDEATH, SUPERVISOR_SIGNALS,
)
from .errors import ContainerError
from .syscalls import (
    default_seccomp, die_with_parent, last_capability, libseccomp, prepared_filter,
    remember_seccomp_program, seccomp_filter, warm_libc,
)
from .procs import in_child, received_fds, report
from .spec import Spec, capability_numbers, own_bounding_set
from .supervise import run_container

# What a request may carry: the pickled spec and network, and four descriptors.
REQUEST_MAX = 1 << 20
REQUEST_FDS = 4
# Supervisors waiting for requests: two, so that two callers' threads are
# taken at once (this machine's CPUs are the limit beyond that).
SPARES = 2
# How soon the helper tries again to fork a spare it could not (ms).
SPARE_RETRY_MS = 100
# Signals the helper ignores: a terminal's ^C, ^\ and ^Z reach the caller's
# whole process group, the helper included; the caller and its containers
# decide what they mean, the helper must live on.
IGNORED_BY_HELPER = (signal.SIGINT, signal.SIGQUIT, signal.SIGTSTP, signal.SIGTTIN,
                     signal.SIGTTOU, signal.SIGHUP, signal.SIGPIPE)


def receive(sock):
    """One request: (payload, descriptors, the sender's uid, too large); (b"",
    [], uid, False) once the caller has gone. The uid is the kernel's word
    (SO_PASSCRED): the sender's uid as it is now, None if it gave none."""
    import socket
    uid = None
    data, ancillary, flags, _ = sock.recvmsg(
        REQUEST_MAX, sock_cmsg_space(REQUEST_FDS) + socket.CMSG_SPACE(12))
    for level, kind, blob in ancillary:
        if level == SOL_SOCKET and kind == socket.SCM_CREDENTIALS and len(blob) >= 12:
            uid = int.from_bytes(blob[4:8], sys.byteorder)  # struct ucred: pid, uid, gid
    return data, received_fds(ancillary), uid, bool(flags & socket.MSG_TRUNC)


def sock_cmsg_space(count):
    import socket
    return socket.CMSG_SPACE(count * 4)


def main(fd):
    """The helper: keep SPARES supervisors forked ahead of their requests,
    each waiting on the caller's socket, where the kernel gives each request
    to one of them; fork another as each takes one (or dies), and end when
    the caller's end closes. The helper itself reads no request: nothing of
    one container's reaches the memory the next one's processes are forked
    from. Children are reaped by the kernel (SIGCHLD ignored)."""
    import select
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
                 "warnings", "pickle"):
        __import__(name)
    libseccomp()
    warm_libc()  # libc's functions and ctypes types (SockFprog, a filter's, among them)
    last_capability()  # the kernel's, asked once here: each PID 1 asked again (41 prctl calls)
    programs = prebuilt_programs()
    gc.freeze()
    helper_pid = os.getpid()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)  # set by the caller too, before
    waiting = set()  # each waiting spare's pipe, which it closes as it takes a request
    poller = select.poll()
    poller.register(sock, 0)  # its hang-up only: the requests are the spares' to read
    while True:
        retry = None
        while len(waiting) < SPARES:
            try:
                spare = fork_spare(sock, helper_pid, waiting, programs)
            except OSError:
                # No process (or pipe) to be had now: the caller's cgroup's
                # limit (a service's TasksMax) or the system's (a container's
                # fork bomb reaches it) reached. The helper's end would be
                # every running container's: it tries again in a moment, and
                # requests wait on the socket for a spare meanwhile.
                retry = SPARE_RETRY_MS
                break
            waiting.add(spare)
            poller.register(spare, select.POLLIN)
        try:
            events = poller.poll(retry)
        except InterruptedError:
            continue
        if any(fd == sock.fileno() for fd, _ in events):
            break  # the caller's end closed: it has exited
        for fd, _ in events:
            poller.unregister(fd)
            waiting.discard(fd)
            os.close(fd)
    os._exit(0)


def prebuilt_programs():
    """The seccomp policy nearly every request carries (the default one, for
    the default capabilities this uid holds: run_spec's) and its filter,
    built here once, keyed by the policy's bytes as the caller pickles them
    (library.request). A spare that finds its request's policy here takes
    both as built: built in a freshly forked spare, whose every write copies
    a page, the filter costs about 2 ms. Any other policy the spare builds."""
    import pickle
    numbers, bounding = capability_numbers(), own_bounding_set()
    caps = frozenset(name for name in DEFAULT_CAPABILITIES if bounding >> numbers[name] & 1)
    policy = default_seccomp(caps)
    key = pickle.dumps((policy, True), protocol=pickle.HIGHEST_PROTOCOL)
    return {key: (policy, prepared_filter(seccomp_filter(policy, True).program()))}


def fork_spare(requests, helper_pid, waiting, programs):
    """A supervisor forked ahead of its request, waiting for it on the
    caller's socket: the helper's end of the pipe it closes once it has one."""
    taken, closed = os.pipe2(os.O_CLOEXEC)
    try:
        pid = os.fork()
    except OSError:
        os.close(taken)
        os.close(closed)
        raise
    if pid == 0:
        os.close(taken)
        for fd in waiting:
            os.close(fd)
        in_child(2, spare_main, requests, closed, helper_pid, programs)
    os.close(closed)
    return taken


def spare_main(requests, taken, helper_pid, programs):
    """A spare supervisor: its first steps now, then wait for a request
    (nothing, if the caller has gone), let go of the caller's socket (and
    tell the helper, by closing `taken`), then supervise that container."""
    # The helper's end (the caller's, or a kill) kills a spare still waiting,
    # whose hold on the socket would otherwise keep the caller sending to a
    # helper that is gone (once none holds it, the caller starts a new one):
    # SIGKILL, which ends a stopped one too. To a supervisor, which kills its
    # container and cleans up, it is a word (blocked from the moment it has
    # its request: none is lost).
    _signal.pthread_sigmask(signal.SIG_BLOCK, SUPERVISOR_SIGNALS)
    die_with_parent(helper_pid)
    while True:
        try:
            data, fds, sender, too_large = receive(requests)
            break
        except InterruptedError:
            continue
    # Gone already: the request's socket closes with this spare, and the
    # caller hears that the helper ended.
    die_with_parent(helper_pid, SUPERVISOR_PDEATH)
    # The container's processes, forked from this one, never hold the socket:
    # what is sent on it is unpickled as the helper's uid.
    requests.close()
    os.close(taken)
    if len(fds) != REQUEST_FDS:
        for fd in fds:
            os.close(fd)
        return 0
    # Only now the supervisor's signals: a ^C that reached the process group
    # while this spare waited was the helper's to ignore, not a word for the
    # container it was to supervise. Blocked: none is lost from here on.
    for sig in IGNORED_BY_HELPER + (signal.SIGCHLD,):
        if sig != signal.SIGPIPE:  # ignored, as Python ignores it in the command line's
            _signal.signal(sig, _signal.SIG_DFL)  # signal's would make an enum of the old one
    try:
        if sender != os.getuid():
            # A caller that dropped root keeps this socket: what it sends
            # now is no longer root's to ask (a request is unpickled).
            raise ContainerError("the library's request", f"sent by uid {sender}, and this"
                                 f" helper is uid {os.getuid()}'s (the caller changed its uid)")
        if too_large:
            raise ContainerError("the library's request", f"larger than {REQUEST_MAX} bytes"
                                 " (the command, its environment and options together)")
        spec, network, owner, policy, built = unpacked(data, programs)
        del data
        spec.seccomp = policy
        if built is None and policy is not None and not policy.get("flags"):
            built = prepared_filter(seccomp_filter(policy, spec.no_new_privs).program())
        if built is not None:
            remember_seccomp_program(spec.seccomp, spec.no_new_privs, built)
        return supervisor_main(spec, network, fds, owner, helper_pid)
    except BaseException as exc:
        if not isinstance(exc, ContainerError):
            exc = ContainerError(f"internal error: {exc!r}")
        report(fds[0], f"error {exc.code} {exc}")
        return exc.code


def unpacked(data, programs):
    """A request's (spec, network, owner, seccomp policy, its filter if the
    helper built it), each of the type the library sends, or ContainerError.
    The policy comes once, apart: its bytes find the default one and its
    filter as the helper built them (prebuilt_programs: no_new_privs true);
    any other one is unpickled here (its filter built by the caller of this).
    Its no_new_privs must be the spec's, which PID 1 applies: the filter
    taken is the one built for the policy the spec asks for."""
    import pickle
    head = int.from_bytes(data[:4], sys.byteorder)
    policy = data[4:4 + head]
    try:
        if len(data) < 4 + head:
            raise EOFError("shorter than its policy's length")
        body = pickle.loads(data[4 + head:])
        if policy in programs:
            (seccomp, built), no_new_privs = programs[policy], True
        else:
            (seccomp, no_new_privs), built = pickle.loads(policy), None
    except Exception:  # unpickling may raise any exception at all
        body = seccomp = no_new_privs = None
    if not (type(body) is tuple and len(body) == 3 and type(body[0]) is Spec
            and type(body[2]) is int and (seccomp is None or type(seccomp) is dict)
            and no_new_privs is body[0].no_new_privs):
        raise ContainerError("the library's request", "not one this library sends (a seccomp"
                             " policy, or none, with its spec's no_new_privs; the spec, its"
                             " network and the caller's pid)")
    return body + (seccomp, built)


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
