"""The Python library: run() and Popen(), shaped like subprocess's.

Owns: the library's public calls (run, Popen), their options turned into
run's (options.run_spec: the command line's own description of a run), the
caller's side of the helper process (started once, with fork and exec, so
that no thread of the caller's is ever forked), the stdio a container gets
(pipes, /dev/null, the caller's own), communicate, timeouts, signals.
A container started here is set up by the same steps as `minicontainer run`
(helper.supervisor_main calls supervise.run_container), and never outlives
the process that started it.
May import: constants, errors, procs, spec, options, helper.
"""
import os
import signal
import subprocess
import sys
import threading
from typing import IO, Any, Iterable, Mapping, Optional, Sequence, Union

from .constants import DEFAULT_ROOT, DEFAULT_STOP_TIMEOUT, FORWARDED_SIGNALS
from .errors import ContainerError, one_line
from .procs import received_fds, with_fds
from .spec import DEFAULT_SUBNET
from .options import run_spec

PIPE, DEVNULL, STDOUT = subprocess.PIPE, subprocess.DEVNULL, subprocess.STDOUT
# The types of the public calls' arguments.
StrPath = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]
Args = Union[StrPath, Sequence[StrPath]]
File = Union[None, int, IO[Any]]
Strings = Union[str, Iterable[str]]
CompletedProcess = subprocess.CompletedProcess
TimeoutExpired = subprocess.TimeoutExpired
CalledProcessError = subprocess.CalledProcessError


# ---------------------------------------------------------------------------
# The helper process, the caller's side
# ---------------------------------------------------------------------------

# Run by the helper's fresh interpreter: the caller's import path, then the loop.
HELPER_CODE = ("import sys; sys.path[:] = __import__('json').loads(sys.argv[2]);"
               " from _minicontainer.helper import main; main(int(sys.argv[1]))")


def helper_path():
    """The caller's import path for the helper, which runs in "/": relative
    entries (the "" of `python -c` or of a prompt) made absolute, and the
    directory this very package came from first, so that the helper runs the
    caller's code, never another copy installed elsewhere on the path."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return [here] + [os.path.abspath(entry or os.curdir) for entry in sys.path]


class Helper:
    """The caller's end of the helper process (one a process, started on first use)."""

    lock = threading.Lock()
    current = None
    retired = []  # helpers of this process's earlier uid: their containers run on

    def __init__(self):
        import json
        import socket
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # Each request carries its sender's uid, the kernel's word, from the
        # first on (set here, before any is sent): the helper takes only its own.
        theirs.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        # Of the caller's environment only what finds programs (the id mappers,
        # slirp4netns) and what this interpreter itself may need to start; the
        # import path is the caller's own, given whole (-s -P: nothing else).
        env = {name: os.environ[name] for name in ("PATH", "LD_LIBRARY_PATH", "PYTHONHOME")
               if name in os.environ}
        env.setdefault("PATH", os.defpath)
        try:
            # fork and exec, no Python in between: safe with any threads.
            self.process = subprocess.Popen(
                [sys.executable, "-s", "-P", "-c", HELPER_CODE, str(theirs.fileno()),
                 json.dumps(helper_path())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, env=env, cwd="/")
        except OSError as exc:
            ours.close()
            raise ContainerError.from_os("start the library's helper process", exc) from None
        finally:
            theirs.close()
        self.sock, self.pid, self.uid = ours, os.getpid(), os.getuid()

    @classmethod
    def get(cls, restart=None):
        """This process's helper; a new one after a fork, or if `restart` (the
        one that failed) is still the current one."""
        with cls.lock:
            helper = cls.current
            if helper is None or helper.pid != os.getpid() or helper is restart:
                if helper is not None and helper.pid == os.getpid():
                    helper.close()
                cls.current = helper = cls()
            elif helper.uid != os.getuid():  # the caller changed its uid: one of the new uid's
                cls.retired.append(helper)
                cls.current = helper = cls()
            return helper

    def submit(self, payload, fds):
        self.sock.sendmsg([payload], with_fds(fds))

    def close(self):
        self.sock.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def forget_helper_after_fork():
    """A forked child starts a helper of its own, if it ever needs one: the
    parent's stays the parent's (its children are not the child's)."""
    helper, Helper.current = Helper.current, None
    retired, Helper.retired = Helper.retired, []
    Helper.lock = threading.Lock()
    for helper in ([helper] if helper is not None else []) + retired:
        helper.sock.close()


os.register_at_fork(after_in_child=forget_helper_after_fork)


def request(spec, network):
    """One container's request, read by one of the helper's spare
    supervisors: first, apart, the seccomp policy pickled (its bytes find the
    filter the helper built ahead, for the default one), then the pickled
    (Spec, network, this pid), the spec without the policy: it is sent once,
    and the supervisor takes it from the first part."""
    import pickle
    policy = pickle.dumps((spec.seccomp, spec.no_new_privs), protocol=pickle.HIGHEST_PROTOCOL)
    seccomp, spec.seccomp = spec.seccomp, None
    try:
        body = pickle.dumps((spec, network, os.getpid()), protocol=pickle.HIGHEST_PROTOCOL)
    finally:
        spec.seccomp = seccomp
    return len(policy).to_bytes(4, sys.byteorder) + policy + body


def submit(payload, fds):
    """Hand one container to the helper, starting it (or a new one, if it has
    died) as needed."""
    import errno
    helper = Helper.get()
    try:
        try:
            helper.submit(payload, fds)
        except (BrokenPipeError, ConnectionError):
            Helper.get(restart=helper).submit(payload, fds)
    except OSError as exc:
        if exc.errno != errno.EMSGSIZE:
            raise
        raise ContainerError("run", "the command, its environment and options are too large"
                             f" ({len(payload)} bytes)") from None


# ---------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------

def command_args(args):
    """subprocess's args: a sequence of str, bytes or path-like, or one of them;
    an empty one runs the command the root's image names."""
    if isinstance(args, (str, bytes, os.PathLike)):
        args = [args]
    try:
        argv = [os.fsdecode(a) for a in args]
    except TypeError:
        raise TypeError(f"args must be a str, bytes, path-like or a sequence of them,"
                        f" not {args!r}") from None
    if any("\0" in a for a in argv):  # as subprocess: here, not in PID 1's execve
        raise ValueError("embedded null byte")
    return argv  # empty: the root's image names the command (see pull), as for the CLI


def env_options(env):
    """env=: a mapping or KEY=VALUE strings, added to the container's defaults (-e)."""
    if env is None:
        return ()
    if hasattr(env, "items"):
        items = []
        for key, value in env.items():
            if not isinstance(key, (str, bytes)) or not isinstance(value, (str, bytes)):
                raise TypeError(f"env: keys and values must be str or bytes, not {key!r}: {value!r}")
            key, value = os.fsdecode(key), os.fsdecode(value)
            if "=" in key:
                raise ContainerError(f"env {key!r}", "a variable's name holds no '='")
            items.append(f"{key}={value}")
        return tuple(items)
    items = strings("env", env)
    for item in items:
        if "=" not in item:
            raise ContainerError(f"env {item!r}", "expected KEY=VALUE")
    return items


def strings(name, values):
    """A tuple of str from one str or an iterable of them (volumes, cap_add, ...)."""
    if values is None:
        return ()
    if isinstance(values, (str, bytes, os.PathLike)):
        values = [values]
    try:
        return tuple(os.fsdecode(v) for v in values)
    except TypeError:
        raise TypeError(f"{name} must be a str or an iterable of str, not {values!r}") from None


def volume_option(volume):
    """A volume: "HOST:CONTAINER[:ro]", or (host, container) / (host, container, "ro")."""
    if isinstance(volume, (tuple, list)):
        return ":".join(os.fsdecode(part) for part in volume)
    return os.fsdecode(volume)


def number(name, value, kind, text=False):
    """An int or float option, or None; a size may also be docker's text (64m)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
        if text and isinstance(value, str):
            return value
        expected = "a number" if kind is float else "an int"
        raise TypeError(f"{name} must be {expected}{' or a size such as 64m' if text else ''},"
                        f" not {value!r}")
    return str(value) if text else kind(value)


def describe(args, root, options):
    """Everything a library call asks for, as the command line's run_spec takes it."""
    o = dict(options)
    env = env_options(o.pop("env", None))
    volumes = o.pop("volumes", ())
    if isinstance(volumes, (str, bytes, os.PathLike)):  # one volume, not one per character
        volumes = [volumes]
    spec, network = run_spec(
        os.fspath(root), command_args(args),
        hostname=text_option("hostname", o.pop("hostname", None)), network=text_option("network", o.pop("network", "none")),
        subnet=text_option("subnet", o.pop("subnet", DEFAULT_SUBNET)), publish=strings("publish", o.pop("publish", ())),
        outbound=bool(o.pop("outbound", False)),
        network_alias=strings("network_alias", o.pop("network_alias", ())),
        ipc=text_option("ipc", o.pop("ipc", "private")), uts=text_option("uts", o.pop("uts", "private")),
        cgroupns=text_option("cgroupns", o.pop("cgroupns", "private")), userns=text_option("userns", o.pop("userns", None)),
        uidmap=strings("uidmap", o.pop("uidmap", ())), gidmap=strings("gidmap", o.pop("gidmap", ())),
        init=bool(o.pop("init", False)),
        security_opt=strings("security_opt", o.pop("security_opt", ())),
        cap_add=strings("cap_add", o.pop("cap_add", ())),
        cap_drop=strings("cap_drop", o.pop("cap_drop", ())),
        seccomp=text_option("seccomp", o.pop("seccomp", "default")), user=user_option(o.pop("user", None)),
        memory=number("memory", o.pop("memory", None), int, text=True),
        memory_swap=number("memory_swap", o.pop("memory_swap", None), int, text=True),
        pids_limit=number("pids_limit", o.pop("pids_limit", None), int),
        cpus=number("cpus", o.pop("cpus", None), float),
        cpu_shares=number("cpu_shares", o.pop("cpu_shares", None), int),
        ulimit=strings("ulimits", o.pop("ulimits", ())), env=env,
        env_file=strings("env_file", o.pop("env_file", ())),
        workdir=text_option("workdir", o.pop("workdir", None)), entrypoint=text_option("entrypoint", o.pop("entrypoint", None)),
        volume=tuple(volume_option(v) for v in volumes),
        tmpfs=strings("tmpfs", o.pop("tmpfs", ())), device=strings("device", o.pop("device", ())),
        read_only=bool(o.pop("read_only", False)),
        read_only_tmpfs=bool(o.pop("read_only_tmpfs", True)),
        stop_timeout=number("stop_timeout", o.pop("stop_timeout", DEFAULT_STOP_TIMEOUT), int))
    assert not o, o  # every option is named in the signatures below
    return spec, network


def text_option(name, value):
    """A str option (workdir, hostname, entrypoint, network, ...) or None."""
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"{name} must be a str, not {value!r}")


def user_option(user):
    """user=: a name or uid, optionally with a group ("1000:1000", "nobody")."""
    if user is None or isinstance(user, str):
        return user
    if isinstance(user, int) and not isinstance(user, bool):
        return str(user)
    raise TypeError(f"user must be a str (NAME or UID[:GROUP]) or an int, not {user!r}")


# ---------------------------------------------------------------------------
# Popen
# ---------------------------------------------------------------------------

def check_stream_options(text_mode, encoding, errors, bufsize):
    """What the pipes' file objects will be made with, checked before the
    container starts (io.open and TextIOWrapper would refuse them only after,
    and leave a container running that no handle reaches)."""
    import codecs
    import operator
    operator.index(bufsize)
    if text_mode and encoding is not None:
        codecs.lookup(encoding)
    if text_mode and errors is not None:
        codecs.lookup_error(errors)


class Popen:
    """A container running beside the caller, as subprocess.Popen is a process.

    Popen(args, *, root="newroot", stdin=None, stdout=None, stderr=None,
          text=False, encoding=None, errors=None, bufsize=-1, **options)

    The command runs as PID 1 of a new container on `root`, isolated as
    `minicontainer run` isolates it (the same set-up steps), with the same
    options (see run()). stdin, stdout and stderr take PIPE, DEVNULL, an
    open file or descriptor, or None (the caller's own); stderr also STDOUT.
    The constructor returns once the command has been exec'd; a command
    that cannot start raises ContainerError (.code 126, or 127 if it is not
    found), as subprocess raises for a missing program.

    pid is PID 1's pid on the host. returncode is the command's exit status
    once it has ended: its code, or 128+N after signal N, as the command line
    reports it. send_signal, terminate and kill signal the container as
    `minicontainer run` passes signals on: a terminating signal its PID 1
    does not handle ends it (PID 1 of a namespace would ignore it), and
    kill ends it and every process in it. As a context manager, the pipes
    are closed and the container waited for on exit; if the block raised,
    the container is killed first. A container never outlives the Python
    process that started it.
    """

    def __init__(self, args: Args, *, root: StrPath = DEFAULT_ROOT, stdin: File = None,
                 stdout: File = None, stderr: File = None, text: bool = False,
                 encoding: Optional[str] = None, errors: Optional[str] = None,
                 bufsize: int = -1, universal_newlines: Optional[bool] = None,
                 env: Union[None, Mapping[str, str], Iterable[str]] = None,
                 workdir: Optional[str] = None, user: Union[None, str, int] = None,
                 network: str = "none", memory: Union[None, int, str] = None,
                 memory_swap: Union[None, int, str] = None, cpus: Optional[float] = None,
                 cpu_shares: Optional[int] = None, pids_limit: Optional[int] = None,
                 ulimits: Strings = (), read_only: bool = False, read_only_tmpfs: bool = True,
                 volumes: Iterable[Union[str, Sequence[StrPath]]] = (), tmpfs: Strings = (),
                 hostname: Optional[str] = None, cap_add: Strings = (), cap_drop: Strings = (),
                 seccomp: str = "default", security_opt: Strings = (), init: bool = False,
                 entrypoint: Optional[str] = None, ipc: str = "private", uts: str = "private",
                 cgroupns: str = "private", userns: Optional[str] = None, uidmap: Strings = (),
                 gidmap: Strings = (), publish: Strings = (), outbound: bool = False,
                 subnet: str = DEFAULT_SUBNET, stop_timeout: int = DEFAULT_STOP_TIMEOUT,
                 env_file: Strings = (), device: Strings = (),
                 network_alias: Strings = ()) -> None:
        import socket
        self.args = args
        self.returncode = self.pid = None
        self.stdin = self.stdout = self.stderr = None
        self.text_mode = bool(text or encoding or errors or universal_newlines)
        self.encoding, self.errors = encoding, errors
        self._lock, self._fds_lock = threading.Lock(), threading.Lock()
        self._owner = os.getpid()  # a forked child's copy is not the container's handle
        check_stream_options(self.text_mode, encoding, errors, bufsize)
        self._control = self._supervisor = self._pid1 = None
        try:
            spec, network = describe(args, root, dict(
                env=env, workdir=workdir, user=user, network=network, memory=memory,
                memory_swap=memory_swap, cpus=cpus, cpu_shares=cpu_shares, pids_limit=pids_limit,
                ulimits=ulimits, read_only=read_only, read_only_tmpfs=read_only_tmpfs,
                volumes=volumes, tmpfs=tmpfs, hostname=hostname, cap_add=cap_add, cap_drop=cap_drop,
                seccomp=seccomp, security_opt=security_opt, init=init, entrypoint=entrypoint,
                ipc=ipc, uts=uts, cgroupns=cgroupns, userns=userns, uidmap=uidmap, gidmap=gidmap,
                publish=publish, outbound=outbound, subnet=subnet, stop_timeout=stop_timeout,
                env_file=env_file, device=device, network_alias=network_alias))
        except ContainerError as exc:  # the caller's values in it: one line, as the CLI prints it
            exc.what, exc.why = one_line(exc.what), exc.why and one_line(exc.why)
            raise
        payload = request(spec, network)
        to_close = []
        try:
            try:
                ours, control = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                self._control = ours
                to_close.append(control)
                child_in, parent_in = self._stdio(stdin, 0, to_close, reading=True)
                child_out, parent_out = self._stdio(stdout, 1, to_close)
                if stderr == STDOUT:
                    child_err, parent_err = child_out, None
                else:
                    child_err, parent_err = self._stdio(stderr, 2, to_close)
                submit(payload, [control.fileno(), child_in, child_out, child_err])
            finally:
                for item in to_close:
                    item.close() if hasattr(item, "close") else os.close(item)
            self._wrap(parent_in, parent_out, parent_err, bufsize)
            self._wait_started()
        except BaseException:
            # A failure, or a ^C, at any moment from here: the request may
            # have been sent (a ^C just after sendmsg returned, or while the
            # pipes were wrapped), so the container is abandoned, never left
            # running unheard; unsent, its socket's other end is closed
            # above, and the thread that hears it ends at once.
            wrapped = {stream.fileno() for stream in (self.stdin, self.stdout, self.stderr)
                       if stream is not None}
            self._close_pipes()
            for fd in self._parent_ends:
                if fd not in wrapped:
                    os.close(fd)
            self._abandon()
            raise

    _parent_ends = ()
    _peeked = ()  # the pidfds of a "started" peeked at, until they are the handle's

    def _stdio(self, choice, number, to_close, reading=False):
        """(the descriptor the container gets, the caller's end of a pipe or None)."""
        if choice is None:
            try:
                os.fstat(number)
                return number, None
            except OSError:  # the caller has it closed: the container gets /dev/null
                choice = DEVNULL
        if choice == PIPE:
            read_end, write_end = os.pipe2(os.O_CLOEXEC)
            child, parent = (read_end, write_end) if reading else (write_end, read_end)
            to_close.append(child)
            self._parent_ends = (*self._parent_ends, parent)
            return child, parent
        if choice == DEVNULL:
            null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
            to_close.append(null)
            return null, None
        if isinstance(choice, int) and not isinstance(choice, bool) and choice >= 0:
            return choice, None
        if hasattr(choice, "fileno"):
            return choice.fileno(), None
        raise TypeError(f"{('stdin', 'stdout', 'stderr')[number]} must be PIPE, DEVNULL, a file,"
                        f" a descriptor or None, not {choice!r}")

    def _wrap(self, parent_in, parent_out, parent_err, bufsize):
        """The caller's ends of the pipes as file objects, text ones in text mode."""
        import io
        if self.text_mode and self.encoding is None:
            import locale
            self.encoding = locale.getpreferredencoding(False)
        if parent_in is not None:
            self.stdin = io.open(parent_in, "wb", bufsize)
            if self.text_mode:
                self.stdin = io.TextIOWrapper(self.stdin, write_through=True,
                                              line_buffering=bufsize == 1,
                                              encoding=self.encoding, errors=self.errors)
        for name, fd in (("stdout", parent_out), ("stderr", parent_err)):
            if fd is not None:
                stream = io.open(fd, "rb", bufsize)
                if self.text_mode:
                    stream = io.TextIOWrapper(stream, encoding=self.encoding, errors=self.errors)
                setattr(self, name, stream)

    def _message(self, timeout=None, peek=False):
        """The supervisor's next word: (words, descriptors); None on a timeout.
        Peeked, it stays the next word (the descriptors are copies)."""
        import select
        import socket
        if self._control is None:  # its end was told already (an error): the same again
            return "", []
        if timeout is not None:
            ready, _, _ = select.select([self._control], [], [], max(0.0, timeout))
            if not ready:
                return None
        data, ancillary, _, _ = self._control.recvmsg(
            8192, socket.CMSG_SPACE(8), socket.MSG_CMSG_CLOEXEC | (socket.MSG_PEEK if peek else 0))
        fds = received_fds(ancillary)
        if peek:
            self._peeked = fds  # closed by _abandon if a ^C comes before they are taken
        return data.decode(errors="replace").rstrip("\n"), fds

    def _wait_started(self):
        # "started" is peeked, and taken off the socket only once its pidfds
        # are this handle's: a ^C at any moment between leaves it there for
        # finish_abandoned, or this handle's PID 1 to kill (_abandon).
        message = self._message(peek=True)
        words, fds = message
        kind, _, rest = words.partition(" ")
        if kind == "started" and len(fds) >= 1:
            self.pid = int(rest)
            self._supervisor = fds[0]
            self._pid1 = fds[1] if len(fds) > 1 else None
            self._peeked = fds[2:]
            for fd in self._message()[1]:  # the same word again: its copies of the pidfds
                os.close(fd)
            for fd in self._peeked:  # more than two: none of them is kept
                os.close(fd)
            self._peeked = ()
            return
        self._peeked = ()
        for fd in fds:
            os.close(fd)
        self._ended(words)
        raise AssertionError("unreachable")  # _ended raises for anything but "exit"

    def _abandon(self):
        """The constructor failed (a ^C, say) once the container was asked
        for: it is killed, as soon as it runs if it does not yet, by a thread
        that hears the supervisor's last words; none is left running that no
        handle reaches."""
        if self._pid1 is not None and self.returncode is None:
            try:
                signal.pidfd_send_signal(self._pid1, signal.SIGKILL)
            except OSError:
                pass
        control, self._control = self._control, None
        with self._fds_lock:
            fds, self._peeked = set(self._peeked), ()
            for name in ("_supervisor", "_pid1"):
                if getattr(self, name) is not None:
                    fds.add(getattr(self, name))
                    setattr(self, name, None)
            for fd in fds:
                os.close(fd)
        if control is not None:
            threading.Thread(target=finish_abandoned, args=(control,), daemon=True).start()

    def _ended(self, words):
        """The supervisor's last word: set returncode, or raise its error."""
        kind, _, rest = words.partition(" ")
        if kind == "exit":
            self.returncode = int(rest.split()[0])
            self._close_control()
            if self.pid is None:  # ended before it was told to have started
                raise ContainerError("run", "the container ended before its command started")
            return
        self._close_control()
        if kind == "error":
            code, _, message = rest.partition(" ")
            raise error_from_line(message, int(code))
        # No word at all: its supervisor died (a supervisor the helper's end
        # reaches says so), or the helper did before one took the request.
        raise ContainerError("run", "the container's supervisor, or the library's helper process,"
                             " ended (killed?) before the container did")

    def _close_control(self):
        with self._fds_lock:  # never while a signal goes through one of them
            for name in ("_supervisor", "_pid1"):
                fd = getattr(self, name)
                if fd is not None:
                    os.close(fd)
                    setattr(self, name, None)
        if self._control is not None:
            self._control.close()
            self._control = None

    def poll(self) -> Optional[int]:
        """The returncode if the container has ended, else None."""
        return self.wait(timeout=0, raising=False)

    def wait(self, timeout: Optional[float] = None, raising: bool = True) -> Optional[int]:
        """Wait until the command has ended and the container is gone; its
        returncode. TimeoutExpired if `timeout` seconds pass first."""
        import time
        if self.returncode is not None:
            return self.returncode
        if self._owner != os.getpid():  # its end is one message: the parent's, not the child's
            raise ContainerError("wait", f"the container is process {self._owner}'s: a forked"
                                 " child's copy of its Popen does not wait for it")
        deadline = None if endless(timeout) else time.monotonic() + timeout
        # One thread reads the supervisor's word; another waits its turn, no
        # longer than its own timeout (poll does not wait at all), as subprocess's.
        if not self._lock.acquire(timeout=-1 if deadline is None else max(0.0, timeout)):
            if raising:
                raise TimeoutExpired(self.args, timeout)
            return None
        try:
            while self.returncode is None:
                left = None if deadline is None else deadline - time.monotonic()
                # Peeked: the last word stays on the socket until _ended has
                # taken it and closed the socket, so a ^C between loses nothing.
                message = self._message(left, peek=True)
                if message is None:
                    if raising:
                        raise TimeoutExpired(self.args, timeout)
                    return None
                words, fds = message
                self._peeked = ()
                for fd in fds:
                    os.close(fd)
                self._ended(words)
            return self.returncode
        finally:
            self._lock.release()

    def send_signal(self, sig: int) -> None:
        """Signal the container as `minicontainer run` passes a signal on."""
        sig = signal.Signals(sig)
        with self._fds_lock:  # not the waiters' lock: a thread may kill what another waits for
            if self.returncode is not None or self._supervisor is None:
                return
            target = self._supervisor
            if sig in (signal.SIGKILL, signal.SIGSTOP, signal.SIGCONT) or sig not in FORWARDED:
                target = self._pid1
            if target is None:
                return
            try:
                signal.pidfd_send_signal(target, sig)
            except ProcessLookupError:
                pass

    def terminate(self) -> None:
        """SIGTERM: the command ends (at once, if its PID 1 does not handle it)."""
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL to PID 1: the container and every process in it end."""
        self.send_signal(signal.SIGKILL)

    def communicate(self, input: Union[None, bytes, str] = None,
                    timeout: Optional[float] = None) -> tuple[Any, Any]:
        """Send input, read stdout and stderr to their end, wait: (stdout, stderr)."""
        import selectors
        import time
        deadline = None if endless(timeout) else time.monotonic() + timeout
        if not hasattr(self, "_chunks"):  # the first call (a later one goes on after a timeout)
            self._chunks = {}
            self._input = memoryview(self._encode(input)) if input is not None else b""
            self._input_offset = 0
            if self.stdin is not None and not self._input:
                self._close_stdin()
        with selectors.DefaultSelector() as selector:
            if self.stdin is not None and not self.stdin.closed:
                selector.register(self.stdin.fileno(), selectors.EVENT_WRITE, "in")
            for name in ("stdout", "stderr"):
                stream = getattr(self, name)
                if stream is not None and not stream.closed:
                    self._chunks.setdefault(name, [])
                    selector.register(stream.fileno(), selectors.EVENT_READ, name)
            while selector.get_map():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutExpired(self.args, timeout, *self._captured())
                for key, _ in selector.select(left):
                    if key.data == "in":
                        chunk = self._input[self._input_offset:self._input_offset + 65536]
                        try:
                            self._input_offset += os.write(key.fd, chunk)
                        except BrokenPipeError:
                            self._input_offset = len(self._input)
                        if self._input_offset >= len(self._input):
                            selector.unregister(key.fd)
                            self._close_stdin()
                    else:
                        data = os.read(key.fd, 65536)
                        if not data:
                            selector.unregister(key.fd)
                            getattr(self, key.data).close()
                        else:
                            self._chunks[key.data].append(data)
        try:
            self.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
        except TimeoutExpired:
            raise TimeoutExpired(self.args, timeout, *self._captured()) from None
        return self._captured()

    def _encode(self, data):
        if self.text_mode:
            if not isinstance(data, str):
                raise TypeError(f"input must be str in text mode, not {type(data).__name__}")
            return data.encode(self.encoding, self.errors or "strict")
        return bytes(data)

    def _captured(self):
        """What communicate has read so far: (stdout, stderr), decoded in text mode."""
        chunks = getattr(self, "_chunks", {})
        out = [b"".join(chunks[n]) if n in chunks else None for n in ("stdout", "stderr")]
        if self.text_mode:
            out = [None if d is None else
                   d.decode(self.encoding, self.errors or "strict")
                   .replace("\r\n", "\n").replace("\r", "\n") for d in out]
        return tuple(out)

    def _close_stdin(self):
        try:
            self.stdin.close()
        except BrokenPipeError:
            pass

    def _close_pipes(self):
        for stream in (self.stdin, self.stdout, self.stderr):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass

    def __enter__(self) -> "Popen":
        return self

    def __exit__(self, kind, value, traceback):
        try:
            if kind is not None and self.returncode is None:
                self.kill()
            self._close_pipes()
        finally:
            self.wait()

    def __del__(self):
        # A container no handle reaches any more is not left running; a forked
        # child's copy of the handle, dropped, is not the caller's (its _owner).
        if getattr(self, "returncode", 0) is None and getattr(self, "_pid1", None) is not None \
                and getattr(self, "_owner", None) == os.getpid():
            try:
                signal.pidfd_send_signal(self._pid1, signal.SIGKILL)
            except OSError:
                pass
        if getattr(self, "_control", None) is not None:
            self._close_control()

    def __repr__(self):
        return f"<minicontainer.Popen: returncode: {self.returncode} args: {self.args!r}>"


def endless(timeout):
    """No timeout, or an infinite one, which subprocess waits out as it does
    None (a clock's time that far ahead overflows)."""
    return timeout is None or timeout == float("inf")


def finish_abandoned(control):
    """An abandoned container's conversation to its end: PID 1 killed once it
    is told to run (its pidfd is the second descriptor of "started")."""
    import socket
    with control:
        while True:
            try:
                data, ancillary, _, _ = control.recvmsg(8192, socket.CMSG_SPACE(8),
                                                        socket.MSG_CMSG_CLOEXEC)
            except OSError:
                return
            fds = received_fds(ancillary)
            if len(fds) > 1:
                try:
                    signal.pidfd_send_signal(fds[1], signal.SIGKILL)
                except OSError:
                    pass
            for fd in fds:
                os.close(fd)
            if not data or not data.startswith(b"started"):
                return


FORWARDED = frozenset(FORWARDED_SIGNALS)  # what a supervisor passes on (the rest go to PID 1)


def error_from_line(message, code):
    """The supervisor's one line, back as the ContainerError it was."""
    what, sep, why = message.partition(": ")
    return ContainerError(what, why if sep else None, code=code)


# ---------------------------------------------------------------------------
# run
# ---------------------------------------------------------------------------

def run(args: Args, *, root: StrPath = DEFAULT_ROOT, stdin: File = None,
        input: Union[None, bytes, str] = None, stdout: File = None, stderr: File = None,
        capture_output: bool = False, text: bool = False, encoding: Optional[str] = None,
        errors: Optional[str] = None, timeout: Optional[float] = None, check: bool = False,
        **options: Any) -> "subprocess.CompletedProcess[Any]":
    """Run args in a new container on `root` and wait for it, as subprocess.run.

    Returns a subprocess.CompletedProcess: args, returncode (the command's
    exit status; 128+N if signal N ended it, as the command line reports
    it), and stdout and stderr if captured. The container is isolated as
    `minicontainer run` isolates it, by the same set-up steps.

    subprocess's arguments: stdin, input, stdout, stderr, capture_output,
    text, encoding, errors, timeout (the container, and every process in
    it, is killed, then subprocess.TimeoutExpired is raised with what was
    captured), check (subprocess.CalledProcessError for a non-zero status).

    The container's, named as the command line's long options: root,
    env (a mapping or KEY=VALUE strings, added to the container's defaults
    as -e), env_file, workdir, user, hostname, network ("none", "host",
    "bridge"), publish, outbound, subnet, network_alias, memory (bytes, or a size such as
    "64m"), memory_swap, cpus, cpu_shares, pids_limit, ulimits
    ("nofile=1024:2048", ...), read_only, read_only_tmpfs, volumes
    ("HOST:CONTAINER[:ro]" or tuples), tmpfs, device, cap_add, cap_drop, seccomp
    ("default" or "unconfined"), security_opt, init, entrypoint, ipc, uts,
    cgroupns, userns, uidmap, gidmap, stop_timeout.

    minicontainer's own failures (a bad option, a root that is not one, a
    command that is not found) raise minicontainer.ContainerError, whose
    str is the command line's one line and whose .code its exit status.
    Safe to call from many threads at once; an ordinary user's call runs
    rootless, as the command line does.
    """
    if input is not None:
        if stdin is not None:
            raise ValueError("stdin and input arguments may not both be used.")
        stdin = PIPE
    if capture_output:
        if stdout is not None or stderr is not None:
            raise ValueError("stdout and stderr arguments may not be used with capture_output.")
        stdout = stderr = PIPE
    with Popen(args, root=root, stdin=stdin, stdout=stdout, stderr=stderr, text=text,
               encoding=encoding, errors=errors, **options) as process:
        try:
            out, err = process.communicate(input, timeout=timeout)
        except TimeoutExpired:
            process.kill()
            out, err = process.communicate()
            raise TimeoutExpired(process.args, timeout, output=out, stderr=err) from None
        except BaseException:
            process.kill()
            raise
        code = process.returncode
    if check and code:
        raise CalledProcessError(code, process.args, output=out, stderr=err)
    return CompletedProcess(process.args, code, out, err)
