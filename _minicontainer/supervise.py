"""Supervision: the supervisor, the holder and PID 1's fork; signals and waits.

Owns: run_container, create_container and exec_container (the one set-up path
behind run, run -d, create and exec), the holder that unshares and forks PID
1, user namespace maps, forwarding signals, waiting, create's exec FIFO, the
terminal.
May import: constants, errors, syscalls, procs, cgroups, state, container.
"""
import _signal
import gc
import os
import signal

from .constants import (
    CLONE_NEWCGROUP, CLONE_NEWNET, CLONE_NEWPID, CLONE_NEWUSER, EXIT_OWN_FAILURE, HELD_GRACE,
    HELD_POLL, HOLDER_DONE, HOLDER_PDEATH, HOLDER_RELEASE, MONITOR_STOP, PATH_MAX, RESTART_FIRST,
    RESTART_MAX, RESTART_RESET, STOP_SIGNALS, SUPERVISOR_PDEATH, SUPERVISOR_SIGNALS,
    TERMINATING_SIGNALS, TIOCGWINSZ, TIOCSWINSZ,
)
from .errors import ContainerError
from .syscalls import die_with_parent, libseccomp, setns, unshare, warm_libc
from .procs import (
    exit_code, fork, in_child, process_start, received_fds, report, write_id_maps,
)
from .cgroups import (
    Cgroup, cgroup_views, join_cgroups, make_cgroups, make_oci_cgroups, raise_rlimit_ceilings,
    remove_cgroups,
)
from .state import CREATED, EXITED, Log, RESTARTING, RUNNING, now_iso, oci_state
from .container import (
    Handles, container_main, exec_way_in, hide_process, join_namespace, make_mounts_private,
    run_hooks,
)

def holder_main(spec, handles, supervisor_pid, status_fd):
    """Child of the supervisor, host PID namespace, root: unshare, fork PID 1, hold.

    PID 1 unshares the cgroup namespace itself, once it is in its groups.
    """
    _signal.pthread_sigmask(signal.SIG_BLOCK, (HOLDER_PDEATH, HOLDER_RELEASE))  # no enums made
    die_with_parent(supervisor_pid, HOLDER_PDEATH)
    take_stdio(handles)
    host_ns = None
    if handles.network is not None:
        handles.network.close_listeners()  # the supervisor serves the published ports
    if handles.network is not None and handles.network.host_side:
        host_ns = tuple(os.open(f"/proc/self/ns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
                        for ns in ("net", "pid"))
    raise_rlimit_ceilings(spec)  # while the holder has the host's privilege
    enter_user_namespace(spec, handles)
    for flag in spec.ns_paths:  # a bundle's namespaces to join, as create checked them
        if flag != CLONE_NEWCGROUP:  # joined by PID 1, once in its cgroups
            join_namespace(spec, handles, flag)
    unshare(spec.namespaces & ~(CLONE_NEWCGROUP | CLONE_NEWUSER))
    make_mounts_private()
    if CLONE_NEWPID in spec.ns_paths:
        # PID 1 is born in sight of the processes already in the namespace it
        # joins: hidden from its first moment. Alone in a new one, it hides
        # itself, after the steps that need it open to its supervisor (a
        # user's slirp4netns joins it) and its /proc its own (oom_score_adj).
        hide_process("minicontainer init")
    holder_pid = os.getpid()
    pid = fork()
    if pid == 0:
        # Container PID 1: new PID, mount, UTS, IPC, network namespaces; root.
        in_child(handles.report_fd, container_main, spec, holder_pid, handles)
    report(handles.report_fd, f"pid {pid}")
    os.close(handles.report_fd)
    if handles.tty_sock is not None:
        handles.tty_sock.close()
    code = hold(pid, handles, host_ns, release=spec.oci)
    if os.getppid() == supervisor_pid and not spec.oci:
        os.write(status_fd, bytes([code]))
        os.kill(supervisor_pid, HOLDER_DONE)
    return code


def hold(pid1, handles, host_ns, release=False):
    """Wait for PID 1. If the supervisor dies first, kill PID 1, and with it the
    whole PID namespace: this holds even if the command cleared its own
    parent-death signal, since the holder is out of the container's reach.
    Then remove the cgroups and the network the supervisor can no longer
    remove (back in the host's network namespace for that). A created
    container's holder (release) goes once `create` says PID 1 is ready: PID
    1 then belongs to the engine that called `create` (its child reaper)."""
    orphaned = False
    while True:
        info = signal.sigwaitinfo((signal.SIGCHLD, HOLDER_PDEATH, HOLDER_RELEASE))
        if info.si_signo == HOLDER_RELEASE and release:
            return 0
        if info.si_signo == HOLDER_PDEATH:
            orphaned = True
            os.kill(pid1, signal.SIGKILL)
        done, status = os.waitpid(pid1, os.WNOHANG)
        if done:
            if orphaned:
                clean_up_orphaned(handles, host_ns, exit_code(status))
            return exit_code(status)


def enter_user_namespace(spec, handles):
    """A user namespace first, so that the holder's other namespaces belong to
    it; the supervisor writes its id maps from outside, then says so. A
    user's container on the user's bridge joins the keeper's instead, mapped
    already with the same maps (see usernet), through the keeper's pidfd."""
    if not spec.namespaces & CLONE_NEWUSER:
        return
    if handles.network is not None and handles.network.keeper_fd is not None:
        try:  # (a table edited to name a process not the user's keeper: not the user's to join)
            setns(handles.network.keeper_fd, CLONE_NEWUSER)
        except ContainerError as exc:
            raise exc.within("--network bridge: join the keeper's user namespace") from None
        return
    unshare(CLONE_NEWUSER)
    report(handles.report_fd, "userns")
    word = os.read(handles.map_fd, 1)
    os.close(handles.map_fd)
    handles.map_fd = None
    if word != b"m":
        raise ContainerError("user namespace", "the supervisor could not write its id maps")


class IdMaps:
    """The holder's wait for its user namespace's id maps: a pipe, whose word
    the supervisor writes once it has written the maps from outside."""

    def __init__(self, spec, joined=False):
        self.spec, self.holder = spec, None
        self.read_fd = self.write_fd = None
        if spec.namespaces & CLONE_NEWUSER and not joined:
            self.read_fd, self.write_fd = os.pipe2(os.O_CLOEXEC)

    def holder_side(self):
        """In the holder: its end (or None), the supervisor's closed."""
        if self.write_fd is not None:
            os.close(self.write_fd)
        return self.read_fd

    def forked(self, holder):
        self.holder = holder
        if self.read_fd is not None:
            os.close(self.read_fd)
            self.read_fd = None

    def write(self):
        """The holder has made its user namespace: the maps, then the word."""
        try:
            write_id_maps(self.holder, self.spec)
            os.write(self.write_fd, b"m")
        finally:
            self.close()

    def close(self):
        for fd in (self.read_fd, self.write_fd):
            if fd is not None:
                os.close(fd)
        self.read_fd = self.write_fd = None


def subordinate_range(path, user, id):
    """The first range /etc/subuid or /etc/subgid grants a user (by name or
    number): (start, count), or None."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.strip().split(":")
        if len(fields) == 3 and fields[0] in (user, str(id)) and all(x.isdigit() for x in fields[1:]):
            if int(fields[2]) > 0:
                return int(fields[1]), int(fields[2])
    return None


def mapped(mapping, id):
    """Whether an id inside a user namespace has a host id under its map."""
    return any(inside <= id < inside + count for inside, _, count in mapping)


def take_stdio(handles):
    """-d: the container's stdin is /dev/null, its stdout and stderr the pipes
    to the monitor's log; the holder passes them on to PID 1."""
    if handles.stdio is None:
        return
    for fd, source in enumerate(handles.stdio):
        os.dup2(source, fd)
    for source in set(handles.stdio):
        os.close(source)
    handles.stdio = None


def clean_up_orphaned(handles, host_ns, code):
    """The supervisor is gone: remove its cgroups and network state here, write
    the end into the state entry, and say on stderr (still the user's, or the
    log) what could not be undone. The network work happens back in the
    host's network namespace, and with children in the host's PID namespace:
    the container's is dead, and forks into it fail."""
    try:
        remove_cgroups(handles.groups)
        if handles.network is not None and handles.network.host_side:
            setns(host_ns[0], CLONE_NEWNET)
            setns(host_ns[1], CLONE_NEWPID)
            handles.network.release()
    except Exception as exc:  # the supervisor would have printed it; no one else will
        report(2, f"minicontainer: warning: cleaning up after minicontainer was killed: {exc!r}")
    if handles.entry is not None:
        record_end(handles.entry, code, "its monitor was killed")


def read_reports(fd, on_pid=None, until=None, on_userns=None, on_quiet=None):
    """Read the report socket to its end: (PID 1's host pid, or None; error, or None).

    on_pid(pid) runs as soon as the pid arrives, while PID 1 is still being
    set up (it configures --network bridge); an error it raises is reported
    like a set-up error, and takes precedence over PID 1's own. With until,
    reading stops at that word (a created container's "ready"). on_quiet(pid)
    runs whenever the socket has been quiet for HELD_POLL seconds (exec: a
    process the container stopped before its execve must not hold it).
    """
    import _socket
    import select
    sock = _socket.socket(fileno=fd)
    pid = error = own_error = None
    reached = until is None
    try:
        while True:
            if on_quiet is not None and not select.select([sock], [], [], HELD_POLL)[0]:
                on_quiet(pid)
                continue
            data, ancillary, _, _ = sock.recvmsg(4096, 64)
            if not data:
                break
            fds = received_fds(ancillary)
            kind, _, rest = data.decode(errors="replace").strip().partition(" ")
            if kind == until and error is None and own_error is None:
                reached = True
                break
            if kind == "userns" and on_userns is not None:
                try:
                    on_userns()
                except ContainerError as exc:
                    own_error = exc
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
            elif kind == "elf" and error is None and fds:
                code, err, message = rest.split(" ", 2)
                error = ContainerError(message, explain_elf(fds.pop(0), int(err)), code=int(code))
            for unused in fds:
                os.close(unused)
    finally:
        sock.close()
    if not reached and error is None and own_error is None:
        # The end before the word: PID 1 was killed during its set-up (by the
        # OOM killer under a memory limit too low for it, say), with no word.
        error = ContainerError("set-up", "the container's process was killed before it was"
                               " ready (a limit too low for its set-up, such as"
                               " linux.resources.memory.limit?)")
    return pid, own_error or error


def explain_elf(fd, err):
    """Why the container's ELF file would not run (err: exec's ENOENT or ENOEXEC).

    Read here, on the host, where the ELF library is, from the descriptor PID
    1 opened inside the root: a regular file only, and its headers only.
    """
    import stat
    fallback = ("its ELF interpreter or a file it needs is missing in the container" if err == 2
                else "exec format error: not a program this machine can run")
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return fallback
        from elftools.elf.elffile import ELFFile
        with open(fd, "rb", closefd=False) as f:
            elf = ELFFile(f)
            if err != 2:
                return (f"exec format error: built for {elf.get_machine_arch()},"
                        f" this machine is {os.uname().machine}")
            for segment in elf.iter_segments():
                if segment["p_type"] == "PT_INTERP" and segment["p_filesz"] <= PATH_MAX:
                    return (f"its ELF interpreter {segment.get_interp_name()} is missing in the"
                            " container (deploy it, or build the program statically)")
    except Exception:  # a damaged file: say less
        pass
    finally:
        os.close(fd)
    return fallback


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


def forward(sig, pid1, pidfd, own_init=False):
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
    how = "caught" if own_init else signal_disposition(pid1, sig)
    if how == "caught":
        send(pidfd, sig)
    elif how == "default" and sig in TERMINATING_SIGNALS:
        send(pidfd, signal.SIGKILL)
        return sig
    return None


def supervise(spec, holder, report_fd, status_fd, tty_sock, on_pid=None, on_started=None,
              detach=None, forward_all=False, on_userns=None):
    """Parent, host namespaces, root: wait for the container and return its exit code.

    The holder reports the status (HOLDER_DONE, then the status pipe) as soon
    as PID 1 is reaped; if instead the holder itself ends first, its own exit
    status stands in, and a holder that was killed takes PID 1 with it. After
    a stop signal (SIGTERM, SIGINT, SIGHUP, SIGQUIT), a command still running
    when --stop-timeout runs out gets SIGKILL, as `docker stop` does; after
    `minicontainer stop`'s word, the timeout is the stop command's.
    on_started(pid1, error) hears once whether the command runs. For `exec`
    (forward_all: its process is not a PID 1), `holder` is its way in, and
    pid1 the process; once told to end, exec ends when that process has,
    even if a tracer in the container holds its exit status (see held_status).
    """
    import time

    def told_to_end_early(pid):
        """exec, before its process runs: the container can stop it (SIGSTOP)
        and so hold this wait. A terminating signal ends it and its way in."""
        if not signal.sigpending() & TERMINATING_SIGNALS:
            return
        if pid is not None:
            try:
                process = os.pidfd_open(pid)
            except OSError:  # gone already
                process = None
            if process is not None:
                send(process, signal.SIGKILL)
                os.close(process)
        os.kill(holder, signal.SIGKILL)

    def caller_gone_early(pid):
        """A library container whose caller ended while it was being set up
        (a set-up that waits on something) ends now: its holder, and with it
        PID 1, are killed; the clean-up below runs as ever."""
        if SUPERVISOR_PDEATH in signal.sigpending():
            os.kill(holder, signal.SIGKILL)

    pid1, error = read_reports(report_fd, on_pid, on_userns=on_userns,
                               on_quiet=told_to_end_early if forward_all else caller_gone_early)
    if forward_all and pid1 is None:  # exec: the process itself, whose pid the fork gave
        pid1 = holder
    if on_started is not None:
        on_started(pid1, error)
    pidfd = open_pid(pid1)
    terminal = None
    if tty_sock is not None and error is None:
        master = receive_terminal(tty_sock)
        if master is not None:
            terminal = detach.terminal(master) if detach is not None else Terminal(master)
    applied = code = deadline = None
    told_to_end = False  # exec: a terminating signal came, so look for a held status
    try:
        while code is None:
            done, status = os.waitpid(holder, os.WNOHANG)
            if done:
                if os.WIFSIGNALED(status) and pidfd is not None:
                    send(pidfd, signal.SIGKILL)  # the holder was killed: its container goes too
                code = exit_code(status)
                break
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            if told_to_end:
                wait = HELD_POLL if wait is None else min(wait, HELD_POLL)
            info = signal.sigtimedwait(SUPERVISOR_SIGNALS, wait) \
                if wait is not None else signal.sigwaitinfo(SUPERVISOR_SIGNALS)
            if info is None and told_to_end and (deadline is None or time.monotonic() < deadline):
                code = held_status(pid1, pidfd, holder)
            elif info is None:  # --stop-timeout ran out
                send(pidfd, signal.SIGKILL)
                deadline = None
            elif info.si_signo == HOLDER_DONE:
                code = os.read(status_fd, 1)[0]
            elif info.si_signo == SUPERVISOR_PDEATH and pidfd is not None:
                send(pidfd, signal.SIGKILL)  # the library's caller is gone: so is its container
            elif info.si_signo == signal.SIGWINCH and terminal is not None:
                terminal.resize()
            elif info.si_signo == MONITOR_STOP and pidfd is not None:
                applied = forward(signal.SIGTERM, pid1, pidfd, spec.init or forward_all) or applied
            elif info.si_signo != signal.SIGCHLD and pidfd is not None:
                applied = forward(info.si_signo, pid1, pidfd, spec.init or forward_all) or applied
                if info.si_signo in STOP_SIGNALS and deadline is None:
                    deadline = time.monotonic() + spec.stop_timeout
                told_to_end = forward_all and (told_to_end or info.si_signo in TERMINATING_SIGNALS)
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


def held_status(pid, pidfd, way_in):
    """exec's process has ended but its way in has not reaped it: a tracer in
    the container holds its exit status (a ptraced zombie is reaped by its
    parent only once the tracer has waited for it or let it go), and would
    hold exec for ever. Its status, from the zombie's /proc stat (field 52,
    shown to whoever may trace it: us), or None while it still runs. The way
    in, stuck on it, is killed; the zombie goes to the host's reaper. (It can
    hold it only after the execve: before, the process is non-dumpable.)"""
    import select
    import time
    if pidfd is None or not select.select([pidfd], [], [], 0)[0]:
        return None
    deadline = time.monotonic() + HELD_GRACE  # the way in reaps it in a moment, if it can
    while time.monotonic() < deadline:
        done, status = os.waitpid(way_in, os.WNOHANG)
        if done:  # reaped after all: the way in's status is the process's
            return exit_code(status)
        time.sleep(0.02)
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        status = int(fields[49]) if fields[0] == b"Z" else None
    except (OSError, IndexError, ValueError):
        status = None
    os.kill(way_in, signal.SIGKILL)
    os.waitpid(way_in, 0)
    return exit_code(status) if status is not None else 128 + signal.SIGKILL


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

    def resize(self):
        """Pass the host terminal's size on; the kernel sends SIGWINCH inside."""
        import fcntl
        fcntl.ioctl(self.master, TIOCSWINSZ, fcntl.ioctl(0, TIOCGWINSZ, bytes(8)))

    def close(self):
        import termios
        self.output.join(timeout=2)  # the last output, up to the master's EIO
        termios.tcsetattr(0, termios.TCSADRAIN, self.saved)
        os.close(self.master)


def receive_terminal(sock):
    """The pty master PID 1 (or, under --init, the command) sent, if it did."""
    import socket
    try:
        _, fds, _, _ = socket.recv_fds(sock, 16, 1, socket.MSG_DONTWAIT)
    except BlockingIOError:
        return None
    return fds[0] if fds else None


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


def run_container(spec, network=None, entry=None, detach=None, owner=None):
    """Start the container; return its exit code and the post-mortem of its cgroups.

    Parent side, host namespaces, root: the supervisor, or with -d the
    monitor. The cgroups are made before each fork and removed after the
    holder is gone, whatever happened in between. With a state entry, the
    start and (after the clean-up) the end are written to it. `owner`: the
    pid of the process the container is for, when it is not this one (the
    library's caller). Under a restart policy (-d only), the monitor starts
    it again through the same steps (start_once), keeping its network (its
    address, its published ports) and its log, until the policy or a stop
    says no (Runs).
    """
    import time
    _signal.pthread_sigmask(signal.SIG_BLOCK, SUPERVISOR_SIGNALS)  # signal's makes enums of the old
    # No cyclic GC from here on, in this process and the forked ones: a
    # collection in a child walks every object it inherited and so copies the
    # pages they sit on. These processes are short-lived and make no cycles.
    gc.disable()
    gc.freeze()
    warm_libc()  # the holder's and PID 1's (mount, ...): looked up once, before the forks
    supervisor_pid = os.getpid()
    # The cgroups' name: the container's, or the pid of the process that asked
    # for it (this one, or the library's caller), so one can tell whose it is.
    label = entry.name if entry is not None else \
        f"{owner or supervisor_pid}-{os.urandom(3).hex()}"
    runs = Runs(spec.restart if detach is not None and entry is not None else None)
    groups = make_cgroups(spec.limits, f"minicontainer-{label}")
    if entry is not None:
        entry.update(monitor=[supervisor_pid, process_start(supervisor_pid)],
                     cgroups=[[g.version, g.path] for g in groups])
    found, code = {}, EXIT_OWN_FAILURE
    try:
        if network is not None:
            network.allocate()
            spec.etc_files = network.etc_files(spec.hostname)
        while True:
            begun = time.monotonic()
            try:
                code = start_once(spec, network, groups, entry, detach, runs)
            except ContainerError as exc:
                code = exc.code
                if not runs.ran or runs.name == "no":
                    raise
                # A restart that could not start counts as a run that failed.
                detach.log.write(ord("2"), f"minicontainer: {exc}\n".encode())
            if not runs.again(code, time.monotonic() - begun, entry):
                break
            for error in remove_cgroups(groups, post_mortem_too=True)[1]:
                detach.log.write(ord("2"), f"minicontainer: warning: {error}\n".encode())
            groups = []
            if not runs.back_off(entry, code):
                break
            groups = make_cgroups(spec.limits, f"minicontainer-{label}")
            entry.update(cgroups=[[g.version, g.path] for g in groups])
    except ContainerError as exc:
        code = exc.code
        raise
    finally:
        found, errors = remove_cgroups(groups, post_mortem_too=True)
        found["cleanup_errors"] = errors
        try:
            if network is not None:
                network.release()
        finally:
            if detach is not None:
                detach.finish(errors)
            if entry is not None and runs.ran:
                record_end(entry, code)
            elif entry is not None:  # it never ran: it leaves nothing, its name is free again
                entry.remove()
    return code, found


def start_once(spec, network, groups, entry, detach, runs):
    """One run of the container in its cgroups: fork the holder, supervise,
    return the exit code. The network is allocated already; PID 1's end of it
    is attached here, and the ports' relay started on the first run."""
    supervisor_pid = os.getpid()
    go_read = go_write = None
    maps = IdMaps(spec, joined=network is not None and network.keeper_fd is not None)
    stdio = detach.stdio() if detach is not None and not spec.tty else None
    try:
        if network is not None:
            go_read, go_write = os.pipe2(os.O_CLOEXEC)
        read_fd, write_fd = report_channel()
        status_read, status_write = os.pipe2(os.O_CLOEXEC)
        tty_ours = tty_theirs = None
        if spec.tty:
            import socket
            tty_ours, tty_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        holder = fork()
        if holder == 0:
            # Namespace holder: host PID namespace, soon its own mount namespace, root.
            os.close(read_fd)
            os.close(status_read)
            if tty_ours is not None:
                tty_ours.close()
            if go_write is not None:
                os.close(go_write)
            if detach is not None and detach.notify_fd is not None:
                os.close(detach.notify_fd)  # run -d hears the monitor, not the holder
            handles = Handles(write_fd, groups, tty_theirs, go_read, network, stdio, entry)
            handles.map_fd = maps.holder_side()
            in_child(write_fd, holder_main, spec, handles, supervisor_pid, status_write)
        maps.forked(holder)
        runs.holder = holder
        os.close(write_fd)
        os.close(status_write)
        if tty_theirs is not None:
            tty_theirs.close()
        if detach is not None:
            detach.started_holder()

        def connect(pid1):
            """Configure --network bridge for PID 1, then let it go on."""
            nonlocal go_write
            try:
                network.attach(pid1)
                if not runs.ran:  # the relays connect to the address, which stays
                    network.relay()
                os.write(go_write, b"g\n")
            finally:
                os.close(go_write)  # without the word, PID 1 gives up
                go_write = None

        def started(pid1, error):
            """The command runs (or could not start): the entry, and -d's caller, hear it."""
            if error is None:
                runs.ran = True
                if entry is not None:
                    runs.record_start(entry, pid1, {} if network is None else
                                      {"IPAddress": network.address, "Gateway": network.gateway})
                if detach is not None:
                    detach.tell(None, pid1)  # a failure is told only once all is cleaned up

        try:
            return supervise(spec, holder, read_fd, status_read, tty_ours,
                             connect if network is not None else None, started, detach,
                             on_userns=maps.write)
        finally:
            os.close(status_read)
            if tty_ours is not None:
                tty_ours.close()
    finally:
        maps.close()
        if network is not None:  # this run's name server holds its namespace: it goes with it
            network.stop_names()
        if go_read is not None:
            os.close(go_read)
        if go_write is not None:  # PID 1 never asked for it
            os.close(go_write)


class Runs:
    """A container's runs under its restart policy, docker's rules: after an
    end, `no` stops there; `on-failure[:N]` starts it again after a non-zero
    exit, at most N times (0: no maximum); `always` and `unless-stopped`
    after any end. Never once a user has stopped it (stop, kill, rm -f: the
    entry's `stopped_by_user`, read and written under the entry's lock, so
    that of a verb and a restart one comes first, whole). Each restart comes
    after a back-off that starts at 100 ms and doubles up to a minute, and
    starts over once a run has lasted 10 seconds."""

    def __init__(self, policy=None):
        self.name, self.max = policy or ("no", 0)
        self.count, self.delay, self.ran = 0, 0.0, False
        self.holder = None  # the last run's, reaped before the next one

    def again(self, code, lasted, entry):
        """Whether the run that ended with `code` after `lasted` seconds is to
        be followed by another; the back-off is computed here."""
        if not self.ran or self.name == "no":
            return False
        if self.name == "on-failure" and (code == 0 or self.max and self.count >= self.max):
            return False
        if stopped_by_user(entry):
            return False
        self.delay = RESTART_FIRST if lasted >= RESTART_RESET or not self.delay \
            else min(self.delay * 2, RESTART_MAX)
        return True

    def back_off(self, entry, code):
        """Say the container is restarting (with the end that made it so), and
        wait out the back-off; False if a stop came meanwhile. A stop signal
        (the verbs' MONITOR_STOP, or the monitor's own SIGTERM) ends the wait."""
        import time
        try:  # it tears the last run's mount namespace down as it goes: a moment
            os.waitpid(self.holder, 0)
        except ChildProcessError:
            pass
        with entry.locked():
            if not entry.reload() or entry.data.get("stopped_by_user"):
                return False
            entry.data.update(status=RESTARTING, exit_code=code, finished=now_iso(), pid1=None)
            entry.save()
        deadline = time.monotonic() + self.delay
        while (left := deadline - time.monotonic()) > 0:
            info = signal.sigtimedwait(SUPERVISOR_SIGNALS, left)
            if info is not None and info.si_signo in STOP_SIGNALS | {MONITOR_STOP,
                                                                     SUPERVISOR_PDEATH}:
                return False
        self.count += 1
        with entry.locked():  # counted as it is tried, whether or not it starts
            if not entry.reload() or entry.data.get("stopped_by_user"):
                return False
            entry.data["restart_count"] = self.count
            entry.save()
        return True

    def record_start(self, entry, pid1, network):
        """The run has begun: its PID 1 into the entry, unless a user stopped the
        container meanwhile (a verb that came between the check before the
        fork and now): then this PID 1 goes at once."""
        owner = [pid1, process_start(pid1)]
        with entry.locked():
            if not entry.reload():
                return
            if entry.data.get("stopped_by_user") and self.count:
                signal_owner(owner, signal.SIGKILL)
            entry.data.update(status=RUNNING, pid1=owner, started=now_iso(), network=network,
                              restart_count=self.count)
            entry.save()


def stopped_by_user(entry):
    """Whether stop, kill or rm -f has ended the container's restart policy."""
    with entry.locked():
        return not entry.reload() or bool(entry.data.get("stopped_by_user"))


def remove_entry(entry):
    """Remove an entry once no `wait` is still reading it (they hold the waiters
    lock shared while they wait)."""
    import fcntl
    try:
        fd = os.open(entry.path("waiters"), os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except FileNotFoundError:
        return  # removed meanwhile
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        entry.remove()
    finally:
        os.close(fd)


def exec_container(entry, spec, detached=False, keep_stdio=False, pid_file=None,
                   console_socket=None):
    """Run one more process in a running container (exec): its exit code, or 0
    as soon as it runs with -d. Parent side, on the host: like the supervisor
    of a run, with the way in (exec_way_in) in the holder's place; the
    process is no PID 1, so signals are passed on as they are. For an engine
    (keep_stdio), a detached process keeps this stdio and becomes its reaper's."""
    signal.pthread_sigmask(signal.SIG_BLOCK, SUPERVISOR_SIGNALS)
    gc.disable()
    gc.freeze()
    not_running = ContainerError(f"exec {entry.name}", "it is not running (it exited)")
    pidfd = open_owner(entry.data.get("pid1"))
    if pidfd is None:
        raise not_running
    groups = []
    try:
        try:
            return exec_through(entry, spec, pidfd, groups, detached, keep_stdio, pid_file,
                                console_socket)
        except ContainerError:
            # Racing the container's end, any step may fail (setns: ESRCH, a fork
            # into a PID namespace whose init is gone: ENOMEM, its cgroup
            # removed); PID 1's pidfd is the truth: if it has ended, that is why.
            if ended(pidfd):
                raise not_running from None
            raise
    finally:
        os.close(pidfd)
        for group in groups:
            os.close(group.fd)


def ended(pidfd, timeout=0):
    """Has the process behind `pidfd` ended (it polls readable then)?"""
    import select
    return bool(select.select([pidfd], [], [], timeout)[0])


def exec_through(entry, spec, pidfd, groups, detached, keep_stdio, pid_file, console_socket):
    """exec_container's body, once it holds PID 1's pidfd; the groups it opens
    are added to `groups`, for the caller to close."""
    for version, path in entry.data.get("cgroups") or ():
        group = Cgroup(version, path, ())
        try:
            group.fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise ContainerError.from_os(f"open cgroup {path}", exc) from None
        groups.append(group)
    preload(spec)
    read_fd, write_fd = report_channel()
    tty_ours = tty_theirs = None
    if spec.tty and console_socket:
        tty_theirs = connect_console(console_socket)
    elif spec.tty:
        import socket
        tty_ours, tty_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    rootless = os.geteuid() != 0
    supervisor_pid = os.getpid()
    child = fork()
    if child == 0:
        # The way in (exec_way_in): host PID namespace, out of the container's
        # sight; root, or a user. It forks the exec'd process inside.
        os.close(read_fd)
        if tty_ours is not None:
            tty_ours.close()
        if detached and not keep_stdio:
            null = os.open("/dev/null", os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            os.close(null)
        in_child(write_fd, exec_way_in, spec, Handles(write_fd, groups, tty_theirs), pidfd,
                 supervisor_pid, detached, rootless)
    os.close(write_fd)
    if tty_theirs is not None:
        tty_theirs.close()
    if detached:  # it runs on its own: its reaper's once we are gone
        process, error = read_reports(read_fd)
        os.waitpid(child, 0)  # the way in, gone once the process runs
        if error is not None:
            raise error
        if pid_file:
            write_pid_file(pid_file, process)
        return 0

    def started(process, error):
        if pid_file and error is None:
            write_pid_file(pid_file, process)

    try:
        return supervise(spec, child, read_fd, None, tty_ours, on_started=started,
                         forward_all=True)
    finally:
        if tty_ours is not None:
            tty_ours.close()


def report_channel():
    """The report socket (read end, write end): lines, and a descriptor to
    explain a failed exec."""
    import _socket
    ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
    return ours.detach(), theirs.detach()


def preload(spec):
    """Import now what the set-up steps import as they go, and load libseccomp:
    a process that joins a container's mount namespace may load no module
    there (forbid_imports)."""
    for name in ("prctl", "resource", "_socket", "select") + (("socket",) if spec.tty else ()):
        __import__(name)
    warm_libc()
    if spec.seccomp is not None:
        libseccomp()


def open_owner(owner):
    """A pidfd of the process (pid, start time), or None if that process is gone:
    opened first, then checked, so a recycled pid is never taken for it."""
    if not owner:
        return None
    try:
        pidfd = os.pidfd_open(owner[0])
    except OSError:
        return None
    if process_start(owner[0]) != owner[1]:
        os.close(pidfd)
        return None
    return pidfd


def signal_owner(owner, sig):
    """Send `sig` to the process (pid, start time); False if it is gone."""
    pidfd = open_owner(owner)
    if pidfd is None:
        return False
    try:
        send(pidfd, sig)
    finally:
        os.close(pidfd)
    return True


def wait_gone(owner, timeout=None):
    """Wait until the process (pid, start time) has ended; False on timeout."""
    import select
    pidfd = open_owner(owner)
    if pidfd is None:
        return True
    try:
        return bool(select.select([pidfd], [], [], timeout)[0])
    finally:
        os.close(pidfd)


def create_container(spec, entry, config, pid_file=None, console_socket=None):
    """OCI create: set the container up to the last step before its program,
    and leave PID 1 waiting there (on the entry's exec FIFO) for `start`, a
    child of the caller's reaper (conmon, containerd's shim). Nothing of
    minicontainer's stays: the state is in the entry, the clean-up is
    `delete`'s. Parent side, host namespaces, root."""
    import json
    signal.pthread_sigmask(signal.SIG_BLOCK, SUPERVISOR_SIGNALS + (HOLDER_RELEASE,))
    gc.disable()
    gc.freeze()
    linux = config.get("linux") or {}
    groups = make_oci_cgroups(linux.get("cgroupsPath"), linux.get("resources"), entry.id,
                              spec.devices)
    views, links = cgroup_views(groups)
    entry.update(cgroups=[[g.version, g.path] for g in groups],
                 cgroups_made={g.path: list(g.made) for g in groups})
    fifo = entry.path("exec.fifo")
    holder = pid1 = None
    closing = list((config.get("namespace_fds") or {}).values())  # the holder's to join
    maps = IdMaps(spec)
    try:
        os.mkfifo(fifo, 0o600)
        # Opened for reading and writing, so that neither end waits: PID 1 keeps
        # it and reads; `start` writes the byte that lets it go.
        exec_fifo = os.open(fifo, os.O_RDWR | os.O_CLOEXEC)
        closing.append(exec_fifo)
        preload(spec)
        read_fd, write_fd = report_channel()
        closing.append(read_fd)
        go_read, go_write = os.pipe2(os.O_CLOEXEC)
        console = connect_console(console_socket) if console_socket else None
        supervisor_pid = os.getpid()
        holder = fork()
        if holder == 0:
            # Namespace holder: host PID namespace; it goes once PID 1 is ready.
            os.close(read_fd)
            os.close(go_write)
            handles = Handles(write_fd, groups, console, go_read, entry=entry)
            handles.ns_fds = config.get("namespace_fds") or {}
            handles.exec_fifo, handles.cgroup_views, handles.cgroup_links = exec_fifo, views, links
            handles.map_fd = maps.holder_side()
            in_child(write_fd, holder_main, spec, handles, supervisor_pid, None)
        maps.forked(holder)
        for fd in (write_fd, go_read):
            os.close(fd)
        if console is not None:
            console.close()

        def go(pid):
            """PID 1 exists: the createRuntime hooks, then PID 1's go-ahead, with the
            state its own hooks will be given."""
            nonlocal pid1
            pid1 = pid
            try:
                join_cgroups(groups, pid)  # before anything of the command runs
                state = json.dumps(oci_state(entry, "created", pid)).encode()
                run_hooks(spec.hooks, "createRuntime", state)
                os.write(go_write, b"g" + state + b"\n")
            finally:
                os.close(go_write)

        pid1, error = read_reports(read_fd, go, until="ready", on_userns=maps.write)
        closing.remove(read_fd)
        if error is not None:
            raise error
        if pid_file:
            write_pid_file(pid_file, pid1)
        entry.update(status=CREATED, pid1=[pid1, process_start(pid1)])
    except BaseException:
        if pid1 is not None:
            signal_owner([pid1, process_start(pid1)], signal.SIGKILL)
        remove_cgroups(groups)
        try:
            os.unlink(fifo)
        except FileNotFoundError:
            pass
        raise
    finally:
        maps.close()
        for fd in closing:
            os.close(fd)
        if holder is not None:
            try:
                os.kill(holder, HOLDER_RELEASE)
            except ProcessLookupError:
                pass
            os.waitpid(holder, 0)
    return 0


def connect_console(path):
    """--console-socket: connect to the engine's socket, on the host, for PID 1
    to send its terminal's master through."""
    import socket
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError as exc:
        sock.close()
        raise ContainerError.from_os(f"--console-socket {path}", exc) from None
    return sock


def write_pid_file(path, pid):
    """--pid-file: the host pid, written whole (a temporary file, then a rename).
    The temporary file is new (O_EXCL, never through a symlink) and its name
    unguessable: in a directory another user may write, a link planted at a
    fixed name would have had root truncate and write the file it points to
    (runc's is O_EXCL too)."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.urandom(8).hex()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o644)
        try:
            with open(fd, "w", closefd=False) as f:
                f.write(str(pid))
        finally:
            os.close(fd)
        try:
            os.rename(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as exc:
        raise ContainerError.from_os(f"--pid-file {path}", exc) from None


def record_end(entry, code, why=None):
    """Write how the container ended into its entry, after the clean-up; with
    --rm, then remove the entry, once its waiters have read the end. Nothing
    to do if someone removed it already."""
    fields = {"status": EXITED, "exit_code": code, "finished": now_iso()}
    if why:
        fields["end"] = why
    if entry.update(**fields) and entry.data.get("rm"):
        remove_entry(entry)


class Detached:
    """What the monitor of a detached container adds to a supervisor: the pipes
    of the container's output into its log, the word to the `run -d` waiting
    for the start, and the terminal's output (-t) into the log too."""

    def __init__(self, entry, notify_fd):
        self.entry, self.notify_fd = entry, notify_fd
        self.log = Log(entry.path(), on_drop=lambda n: entry.update(log_dropped=n))
        self.readers, self.pipes = [], []

    def stdio(self):
        """(stdin, stdout, stderr) for the holder to pass on: /dev/null and two pipes."""
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        self.pipes = [(out_r, out_w, ord("1")), (err_r, err_w, ord("2"))]
        self.null = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
        return self.null, out_w, err_w

    def started_holder(self):
        """After the fork: read the pipes into the log, in threads of the monitor."""
        import threading
        if self.pipes:
            os.close(self.null)
        for read_end, write_end, stream in self.pipes:
            os.close(write_end)
            self.readers.append(threading.Thread(target=self.log.pump, args=(read_end, stream),
                                                 daemon=True))
            self.readers[-1].start()

    def terminal(self, master):
        """-dt: the terminal's output goes to the log as stdout; nothing types into it."""
        import threading
        self.readers.append(threading.Thread(target=self.log.pump, args=(master, ord("1")),
                                             daemon=True))
        self.readers[-1].start()
        return DetachedTerminal()

    def tell(self, error, pid1=None):
        """Tell the waiting `run -d` that the command runs, or why it does not."""
        if self.notify_fd is None:
            return
        word = "started" if error is None else f"error {error.code} {error}"
        report(self.notify_fd, word)
        os.close(self.notify_fd)
        self.notify_fd = None

    def finish(self, errors):
        """The last output into the log, and any clean-up error after it."""
        for reader in self.readers:
            reader.join(timeout=2)
        for error in errors:
            self.log.write(ord("2"), f"minicontainer: warning: {error}\n".encode())


class DetachedTerminal:
    """A detached container's terminal: the monitor has no terminal to resize from."""

    def resize(self):
        pass

    def close(self):
        pass
