"""docker's and runc's verbs over the state: stop, kill, wait, rm, inspect.

Owns: run -d's monitor, a container's processes (its PID namespace when it
made one, else its cgroup), kill and kill --all, stop, wait, removal,
pause's freezer, inspect's, ps's and stats' data.
May import: constants, errors, procs, spec, cgroups, state, container, supervise.
"""
import os
import signal

import click

from .constants import (
    CLONE_NEWNET, CLONE_NEWPID, FORWARDED_SIGNALS, HEALTH_LOG, HEALTH_OUTPUT, MAX_FD, MONITOR_STOP,
    SUPERVISOR_SIGNALS,
)
from .errors import ContainerError
from .syscalls import die_with_parent
from .procs import alive, exit_code, fork, in_child, process_start
from .spec import Spec
from .cgroups import Cgroup, cgroup_hierarchies, cgroup_members, remove_cgroups, remove_made_dirs
from .state import (
    CREATED, CREATING, DEAD, EXITED, LIVE, PAUSED, RESTARTING, RUNNING, human_duration, now_iso,
    oci_state, parse_iso,
)
from .container import run_hooks
from .supervise import (
    Detached, ended, exec_container, open_owner, remove_entry, run_container, send, signal_owner,
    wait_gone,
)

def run_detached(spec, network, entry):
    """run -d: fork the monitor, wait for its word that the command runs (or why
    not), print the container's id. The monitor leaves this session and
    terminal and keeps no descriptor of the caller's: it outlives them."""
    notify_read, notify_write = os.pipe2(os.O_CLOEXEC)
    if fork() == 0:
        # The monitor: a session of its own, no terminal; root, host namespaces.
        os.close(notify_read)
        in_child(notify_write, monitor_main, spec, network, entry, notify_write)
    os.close(notify_write)
    word = b""
    while not word.endswith(b"\n") and (data := os.read(notify_read, 4096)):
        word += data  # one line: the monitor's word, however long it lives on
    os.close(notify_read)
    kind, _, rest = word.decode(errors="replace").strip().partition(" ")
    if kind == "started":
        click.echo(entry.id)
        return 0
    if kind == "error":  # the monitor has cleaned up, and removed the entry
        code, _, message = rest.partition(" ")
        raise ContainerError(message, code=int(code))
    entry.remove()  # nothing may be left of a container that never ran
    raise ContainerError(f"run -d {entry.name}", "its monitor ended before the command started")


def monitor_main(spec, network, entry, notify_fd):
    """The monitor of a detached container: run it (as the supervisor does),
    logging its output, and write its end into its entry."""
    os.setsid()
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    keep = sorted({0, 1, 2, notify_fd})
    for low, high in zip(keep, keep[1:] + [MAX_FD]):
        os.closerange(low + 1, high)
    os.chdir("/")
    detach = Detached(entry, notify_fd)
    if spec.healthcheck:
        # Blocked before the thread starts, which inherits the mask: the
        # monitor's signals are for its supervisor's waits, never the checks'.
        signal.pthread_sigmask(signal.SIG_BLOCK, SUPERVISOR_SIGNALS)
        Health(entry, spec.healthcheck).start()
    try:
        run_container(spec, network, entry, detach)
    except ContainerError as exc:
        detach.tell(exc)  # said already, if it happened once the command ran
    return 0


def exec_spec(entry, command=()):
    """The description `exec` runs a process by, and so a health check: the
    container's own (its namespaces, capabilities, seccomp filter, user,
    environment) with another command, and nothing that is PID 1's alone
    (--init, preserved descriptors, hooks, its terminal)."""
    spec = Spec.from_json(entry.data["spec"])
    spec.init, spec.preserve_fds, spec.oci, spec.hooks = False, 0, False, {}
    spec.command = tuple(command)
    spec.tty, spec.winsize, spec.closed_stdio = False, None, ()
    return spec


# ---------------------------------------------------------------------------
# Health checks
# A thread of the monitor runs the container's check every interval while
# it runs: each check is `exec`, the same code (exec_container): a child of
# the monitor, with nothing of the monitor's (its descriptors closed, its
# signals blocked), goes in by the way in and runs the command in every
# namespace and cgroup of the container, with its capabilities, seccomp
# filter and user, non-dumpable until its execve. What the check's command
# leaves behind (its session, inside) is killed after it; a check that
# outlives its timeout is killed with all of its session. The results go into
# the entry (State.Health in inspect, "(healthy)" in ps), under its lock.
# ---------------------------------------------------------------------------

def health_of(data):
    """A container's health as its monitor last wrote it, or, before the
    first record (its health thread writes one as it sees the container
    run, which may be after run -d has returned), starting, as docker's."""
    return data.get("health") or {"Status": "starting", "FailingStreak": 0, "Log": []}


class Health:
    """The health checks of a detached container, in a thread of its monitor."""

    def __init__(self, entry, check):
        from .state import Container
        # An entry object of its own: the monitor's reloads its own as it writes.
        self.entry = Container(entry.store, entry.id, dict(entry.data))
        self.check = check

    def start(self):
        import threading
        threading.Thread(target=self.loop, daemon=True).start()

    def loop(self):
        """Each run of the container starts "starting"; the first check comes one
        interval after the start, each next one an interval after the last."""
        import time
        run = next_at = started = None
        streak = 0
        while True:
            if not self.entry.reload():
                return  # removed
            pid1 = self.entry.data.get("pid1")
            if self.entry.data.get("status") in (EXITED, DEAD):
                return
            if self.entry.data.get("status") != RUNNING or not pid1:
                time.sleep(0.05)
                continue
            if pid1 != run:  # the first run, or a restart
                run, started, streak = pid1, time.monotonic(), 0
                next_at = started + self.check["interval"]
                self.record(run, "starting", 0, None)
            if time.monotonic() < next_at:
                time.sleep(min(next_at - time.monotonic(), 0.5))
                continue
            result = self.probe(run)
            next_at = time.monotonic() + self.check["interval"]
            if result["ExitCode"] == 0:
                streak, status = 0, "healthy"
            elif time.monotonic() - started < self.check["start_period"]:
                status = None  # failures while it starts do not count
            else:
                streak += 1
                status = "unhealthy" if streak >= self.check["retries"] else None
            self.record(run, status, streak, result)

    def record(self, run, status, streak, result):
        """The results into the entry, if the run is still the one checked."""
        with self.entry.locked():
            if not self.entry.reload() or self.entry.data.get("pid1") != run:
                return
            health = dict(health_of(self.entry.data))
            if status is not None:
                health["Status"] = status
            health["FailingStreak"] = streak
            if result is not None:
                health["Log"] = (list(health.get("Log") or []) + [result])[-HEALTH_LOG:]
            self.entry.data["health"] = health
            self.entry.save()

    def probe(self, run):
        """One check: {Start, End, ExitCode, Output} (its first 4 KiB); ExitCode
        -1 for a check killed at its timeout, as docker writes it."""
        import select
        import time
        begun = now_iso()
        pid_file = self.entry.path("health.pid")
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        monitor = os.getpid()
        child = fork()
        if child == 0:
            # A check: a child of the monitor, host namespaces, root; it is exec.
            in_child(2, check_main, self.entry, self.check["test"], write_end, monitor, pid_file)
        os.close(write_end)
        output, code = b"", None
        deadline = time.monotonic() + self.check["timeout"]
        process = os.pidfd_open(child)
        try:
            while code is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                watched = [fd for fd in (read_end, process) if fd is not None]
                ready = select.select(watched, [], [], min(left, 86400))[0]
                if read_end is not None and read_end in ready:
                    data = os.read(read_end, 65536)
                    output += data[:HEALTH_OUTPUT - len(output)]
                    if not data:  # every writer gone: wait for the check alone
                        os.close(read_end)
                        read_end = None
                        select.select([process], [], [], max(0, deadline - time.monotonic()))
                        ready = [process] if ended(process) else []
                if process in ready:
                    code = exit_code(os.waitpid(child, 0)[1])
            end_session(run, pid_file)  # what the check left, or all of it at its timeout
            if code is None:
                os.kill(child, signal.SIGKILL)
                os.waitpid(child, 0)
                code, output = -1, (f"Health check exceeded timeout"
                                    f" ({self.check['timeout']:g}s)").encode()
            elif read_end is not None:
                os.set_blocking(read_end, False)
                try:
                    while (data := os.read(read_end, 65536)) and len(output) < HEALTH_OUTPUT:
                        output += data[:HEALTH_OUTPUT - len(output)]
                except BlockingIOError:
                    pass
        finally:
            os.close(process)
            if read_end is not None:
                os.close(read_end)
        return {"Start": begun, "End": now_iso(), "ExitCode": code,
                "Output": output.decode(errors="replace")}


def check_main(entry, command, output_fd, monitor, pid_file):
    """A health check's process: nothing of the monitor's but its output pipe
    (on 1 and 2), then exec_container, as `exec` runs a command."""
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(output_fd, 1)
    os.dup2(output_fd, 2)
    os.closerange(3, MAX_FD)
    die_with_parent(monitor)  # a monitor killed takes its check with it
    try:
        return exec_container(entry, exec_spec(entry, command), pid_file=pid_file)
    except ContainerError as exc:
        os.write(2, f"minicontainer: {exc}\n".encode(errors="replace"))
        return exc.code


def end_session(run, pid_file):
    """SIGKILL what is left of a check inside the container: the processes of
    the container's PID namespace in the session of the check's process (exec
    makes it a session leader; the kernel keeps its id while any member lives)."""
    try:
        with open(pid_file) as f:
            leader = int(f.read())
        os.unlink(pid_file)
    except (OSError, ValueError):
        return
    ns = pid_namespace_of(run)
    for _ in range(10):  # members that fork meanwhile are found in the next round
        found = [pid for pid in (pid_namespace_members(ns) if ns else []) if session_of(pid) == leader]
        if not found:
            return
        for pid in found:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def session_of(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[3])
    except (OSError, IndexError, ValueError):
        return None


def parse_signal(text):
    """A signal by name (KILL, SIGKILL, kill) or number (9), as docker and runc take it."""
    name = text.strip().upper()
    if name.isascii() and name.isdigit():
        number = int(name)
    else:
        name = name.removeprefix("SIG")
        if name.startswith("RTMIN") or name.startswith("RTMAX"):
            base, _, offset = name.partition("+") if "+" in name else name.partition("-")
            sign = -1 if "-" in name else 1
            number = (signal.SIGRTMIN if base == "RTMIN" else signal.SIGRTMAX) + sign * int(offset or 0)
        else:
            number = getattr(signal, "SIG" + name, None) if name.isalnum() else None
    if not isinstance(number, int) or number not in signal.valid_signals():
        raise ContainerError(f"signal {text}", "not a signal (a name like TERM or KILL, or a number)")
    return number


def end_restarts(entry):
    """stop, kill and rm -f end a container's restart policy for good (docker's
    "manually stopped"): the mark is set under the entry's lock, and the
    entry's data is then what it was at that moment, so the PID 1 it names is
    the last the monitor started; a PID 1 the monitor starts after the mark,
    it kills itself (supervise.Runs.record_start)."""
    if (entry.data.get("spec") or {}).get("restart"):
        entry.update(stopped_by_user=True)


def kill_container(entry, sig):
    """Send `sig` to a container: through its monitor for the signals a
    supervisor passes on (so that minicontainer's PID 1 rule applies and the
    end is told right), else to its PID 1. Any signal ends a restart policy,
    as docker's kill does; a container waiting to restart just stops."""
    end_restarts(entry)
    monitor = entry.data.get("monitor")
    if entry.data.get("status") == RESTARTING and alive(monitor):
        signal_owner(monitor, MONITOR_STOP)  # it ends its back-off, and so the container
    elif sig in FORWARDED_SIGNALS and alive(monitor):
        signal_owner(monitor, sig)
    elif not signal_owner(entry.data.get("pid1"), sig):
        raise ContainerError(f"kill {entry.name}", "it is not running")


def stop_container(entry, timeout):
    """SIGTERM (through the monitor), then SIGKILL after `timeout` seconds; wait
    until the monitor has written the end. A container already ended is done."""
    if entry.status not in (RUNNING, PAUSED, CREATED, RESTARTING):
        return
    end_restarts(entry)
    monitor, pid1 = entry.data.get("monitor"), entry.data.get("pid1")
    if not (alive(monitor) and signal_owner(monitor, MONITOR_STOP)):
        signal_owner(pid1, signal.SIGTERM)
    owner = monitor if alive(monitor) else pid1
    if not wait_gone(owner, timeout):
        if entry.reload():
            pid1 = entry.data.get("pid1")  # a restart may have come before the mark
        signal_owner(pid1, signal.SIGKILL)
        wait_gone(owner, 10)


def wait_container(entry):
    """Wait for a container to end; return its exit code (None if nobody knows it).
    A waiter holds the entry's waiters lock, so a --rm container's monitor
    removes the entry only once every waiter has read how it ended."""
    import fcntl
    import time
    try:
        fd = os.open(entry.path("waiters"), os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except FileNotFoundError:
        raise ContainerError(f"wait {entry.name}", "no such container") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        # Under a restart policy, each end counts (docker's wait returns when
        # the container stops running, restarting or not): an end is a new
        # `finished` time with the status "restarting".
        first = entry.data.get("finished")
        poll = 0.1 if (entry.data.get("spec") or {}).get("restart") else 1
        while entry.reload() and (entry.status in (CREATING, CREATED, RUNNING, PAUSED) or
                                  entry.status == RESTARTING and entry.data.get("finished") == first):
            wait_gone(entry.data.get("monitor") or entry.data.get("pid1"), poll)
            time.sleep(0.01)  # the monitor's last write comes just before it ends
        if entry.status == DEAD:
            raise ContainerError(f"wait {entry.name}", "its monitor died without saying how"
                                 " it ended")
        return entry.data.get("exit_code")
    finally:
        os.close(fd)


def wait_healthy(entry):
    """wait --condition healthy: until the container's check says healthy; a
    container that ends first, or turns unhealthy, fails the wait."""
    import time
    if not (entry.data.get("spec") or {}).get("healthcheck"):
        raise ContainerError(f"wait {entry.name}", "it has no health check")
    while entry.reload():
        health = health_of(entry.data).get("Status")
        if entry.status not in LIVE:
            raise ContainerError(f"wait {entry.name}", "it ended before it was healthy")
        if entry.status == RUNNING and health == "healthy":
            return
        if entry.status == RUNNING and health == "unhealthy":
            raise ContainerError(f"wait {entry.name}", "it is unhealthy")
        time.sleep(0.1)
    raise ContainerError(f"wait {entry.name}", "no such container")


def remove_container(entry, force):
    """rm: a running container only with force (SIGKILL, then its end); the
    entry, and what a dead one's monitor could not clean (its cgroups)."""
    status = entry.check("rm -f" if force else "rm")
    if status in (RUNNING, PAUSED, CREATED, CREATING, RESTARTING):
        end_restarts(entry)
        signal_owner(entry.data.get("pid1"), signal.SIGKILL)
        if entry.data.get("status") == RESTARTING:
            signal_owner(entry.data.get("monitor"), MONITOR_STOP)  # its back-off ends
        wait_gone(entry.data.get("monitor") or entry.data.get("pid1"), 10)
    if status == DEAD:
        remove_cgroups(recorded_cgroups(entry))
    remove_entry(entry)


def recorded_cgroups(entry):
    """The cgroups an entry records, opened for removal (those already gone
    skipped), each with the directories its creation made (a bundle's: see
    Cgroup.made; an entry without the record made only its groups)."""
    groups = []
    made = entry.data.get("cgroups_made")
    for version, path in entry.data.get("cgroups") or ():
        group = Cgroup(version, path, ())
        if isinstance(made, dict):  # the group and its parents only, whatever the file says
            group.made = tuple(d for d in made.get(path) or () if isinstance(d, str)
                               and (d == path or path.startswith(d.rstrip("/") + "/")))
        try:
            group.parent_fd = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY
                                      | os.O_CLOEXEC)
            group.fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            groups.append(group)
        except OSError:
            if group.parent_fd is not None:
                os.close(group.parent_fd)
            remove_made_dirs([d for d in group.made or () if d != path])  # the group is gone
    return groups


def describe_status(entry):
    """The STATUS column of ps, in docker's words."""
    import time
    status, now = entry.status, time.time()
    if status == RUNNING:
        health = health_of(entry.data).get("Status")
        health = {"starting": " (health: starting)", "healthy": " (healthy)",
                  "unhealthy": " (unhealthy)"}.get(health, "") if entry.data.get("spec", {}).get(
                      "healthcheck") else ""
        return f"Up {human_duration(now - (parse_iso(entry.data.get('started')) or now))}{health}"
    if status == EXITED:
        finished = parse_iso(entry.data.get("finished"))
        code = entry.data.get("exit_code")
        ago = f" {human_duration(now - finished)} ago" if finished else ""
        return f"Exited ({'?' if code is None else code}){ago}"
    if status == RESTARTING:  # docker's words: the end that made it restart, and when
        finished = parse_iso(entry.data.get("finished")) or now
        return f"Restarting ({entry.data.get('exit_code')}) {human_duration(now - finished)} ago"
    return {CREATED: "Created", CREATING: "Created", PAUSED: "Paused", DEAD: "Dead"}[status]


def container_summary(entry):
    """ps --format json's fields."""
    status = entry.status
    return {"Id": entry.id, "Name": entry.name, "Command": entry.data.get("command"),
            "Status": status,
            "ExitCode": entry.data.get("exit_code") if status in (EXITED, RESTARTING) else None,
            "Pid": entry.data["pid1"][0] if status == RUNNING and entry.data.get("pid1") else 0,
            "Created": entry.data.get("created"), "Ports": ", ".join(entry.data.get("ports") or [])}


def inspect_data(entry):
    """inspect's JSON: docker's shape where it has one, and everything the entry holds."""
    status, data = entry.status, entry.data
    spec = data.get("spec") or {}
    return {
        "Id": entry.id, "Name": entry.name, "Created": data.get("created"),
        "Path": (data.get("command") or [""])[0], "Args": (data.get("command") or [])[1:],
        # docker's: a restarting container counts as running, with no pid.
        "State": {"Status": status, "Running": status in (RUNNING, RESTARTING),
                  "Paused": status == PAUSED, "Restarting": status == RESTARTING,
                  "Dead": status == DEAD,
                  "Pid": data["pid1"][0] if status in (RUNNING, PAUSED) and data.get("pid1") else 0,
                  "ExitCode": data.get("exit_code") if status in (EXITED, RESTARTING) else None,
                  "StartedAt": data.get("started"), "FinishedAt": data.get("finished"),
                  "Error": data.get("end", ""),
                  **({"Health": health_of(data)} if spec.get("healthcheck") else {})},
        "Root": data.get("root"), "Bundle": data.get("bundle"),
        "Config": {"Hostname": spec.get("hostname"), "Env": [f"{k}={v}" for k, v in spec.get("env") or ()],
                   "Cmd": data.get("command"), "WorkingDir": spec.get("workdir"),
                   "Tty": bool(spec.get("tty"))},
        "RestartCount": data.get("restart_count", 0),
        "HostConfig": {"AutoRemove": bool(data.get("rm")), "Ports": data.get("ports") or [],
                       "RestartPolicy": {"Name": (spec.get("restart") or ["no"])[0],
                                         "MaximumRetryCount": (spec.get("restart") or ["no", 0])[1]}},
        # docker's: the bridge address while the container runs, "" without
        # one or once it has ended (the address is then the next container's).
        "NetworkSettings": {key: (data.get("network") or {}).get(key, "")
                            if status in (RUNNING, PAUSED) else "" for key in ("IPAddress", "Gateway")},
        "LogPath": entry.path("container.log") if data.get("detached") else "",
        "Monitor": data.get("monitor"), "Cgroups": data.get("cgroups") or [],
        "Spec": spec,
    }


def print_table(rows):
    """Rows of strings as left-aligned columns three spaces apart, as docker and runc print."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("   ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def container_root_fd(entry):
    """The root as the container's PID 1 sees it (its mount namespace: --rm's
    overlay, volumes), opened through /proc/PID/root and checked to be that
    process's; for reading its /etc/passwd inside it."""
    pid1 = entry.data.get("pid1")
    try:
        fd = os.open(f"/proc/{pid1[0]}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except (OSError, TypeError):
        raise ContainerError(f"exec {entry.name}", "it is not running (it exited)") from None
    if not alive(pid1):
        os.close(fd)
        raise ContainerError(f"exec {entry.name}", "it is not running (it exited)")
    return fd


def is_signal(text):
    try:
        parse_signal(text)
        return True
    except ContainerError:
        return False


def kill_every_process(entry, sig, strict=True):
    """kill --all: every process of the container and nothing else. Those of
    the PID namespace it made; else (it shares the host's or joined a pod's
    by path, where other processes live) those of its cgroup, frozen while
    they are signalled so that none forks past the list, or all at once by
    cgroup.kill for SIGKILL where cgroup v2 has it: runc's and crun's way.
    With neither (strict: refused, as runc refuses; delete: PID 1 alone)."""
    if owns_pid_namespace(entry):
        ns = pid_namespace_of(entry.data.get("pid1"))
        if ns is not None:
            signal_members(pid_namespace_members(ns),
                           lambda pids: pid_namespace_members(ns, pids), sig)
        return
    group = process_group(entry)
    if group is None:
        if strict:
            raise ContainerError(f"kill --all {entry.name}", "it shares a PID namespace and has"
                                 " no cgroup of its own: its processes cannot be told from others")
        signal_owner(entry.data.get("pid1"), sig)
        return
    version, path = group
    if sig == signal.SIGKILL and version == 2 and os.path.exists(os.path.join(path, "cgroup.kill")):
        try:  # the kernel kills the whole subtree, forks in flight too (5.14+)
            with open(os.path.join(path, "cgroup.kill"), "w") as f:
                f.write("1")
            return
        except OSError as exc:
            raise ContainerError.from_os(f"kill --all {entry.name}: write {path}/cgroup.kill",
                                         exc) from None
    was_frozen = None
    try:
        try:
            was_frozen = freeze_group(version, path, True)
        except ContainerError:
            pass  # not frozen in time (a task in D state): signalled all the same, as runc does
        signal_members(cgroup_members(path), lambda pids: cgroup_members(path), sig)
    finally:
        # A paused container stays paused, unless killed: frozen tasks die only thawed.
        if was_frozen is not True or sig == signal.SIGKILL:
            freeze_group(version, path, False)


def container_processes(entry):
    """ps ID: the host pids of a container's processes, PID 1 first, found as
    kill --all finds them (PID 1 alone where nothing else tells them apart)."""
    pid1 = entry.data.get("pid1")
    if not alive(pid1):
        return []
    if owns_pid_namespace(entry):
        ns = pid_namespace_of(pid1)
        found = pid_namespace_members(ns) if ns is not None else []
    else:
        group = process_group(entry)
        found = cgroup_members(group[1]) if group is not None else [pid1[0]]
    return sorted(set(found), key=lambda pid: (pid != pid1[0], pid))


def owns_pid_namespace(entry):
    """Whether the container made its PID namespace (run's always do): then
    every process in it is the container's."""
    spec = entry.data.get("spec") or {}
    namespaces = spec.get("namespaces")
    return namespaces is None or (bool(namespaces & CLONE_NEWPID)
                                  and str(CLONE_NEWPID) not in (spec.get("ns_paths") or {}))


def pid_namespace_of(owner):
    """The PID namespace (its link text) of the process (pid, start time), or None if gone."""
    pidfd = open_owner(owner)
    if pidfd is None:
        return None
    try:
        return os.readlink(f"/proc/{owner[0]}/ns/pid")
    except OSError:
        return None
    finally:
        os.close(pidfd)  # held while reading: the pid was not recycled under the readlink


def pid_namespace_members(ns, pids=None):
    """The pids (of `pids`, or of every process) whose PID namespace is `ns`."""
    found = []
    for name in pids if pids is not None else filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.readlink(f"/proc/{name}/ns/pid") == ns:
                found.append(int(name))
        except OSError:
            pass
    return found


def process_group(entry):
    """The cgroup whose processes are the container's, as (version, path):
    cgroup v2's where it has one (its freezer and cgroup.kill need no
    controller), else v1's freezer, else any v1 hierarchy; None without one."""
    groups = [(version, path) for version, path in entry.data.get("cgroups") or ()
              if os.path.isdir(path)]
    for version, path in sorted(groups, key=lambda g: (g[0] != 2, not os.path.exists(
            os.path.join(g[1], "freezer.state")))):
        return version, path
    return None


def signal_members(pids, still_members, sig):
    """Signal each of `pids` through a pidfd opened first, and only those that
    still_members(pids) lists afterwards: a pid recycled since it was listed
    is never signalled."""
    pidfds = {}
    try:
        for pid in pids:
            try:
                pidfds[pid] = os.pidfd_open(pid)
            except OSError:
                pass  # gone already
        for pid in still_members([str(pid) for pid in pidfds]):
            if pid in pidfds:
                send(pidfds[pid], sig)
    finally:
        for fd in pidfds.values():
            os.close(fd)


def delete_container(entry):
    """Kill what is left of a container, remove its cgroups and its entry, then
    run its poststop hooks (their failure is only warned about)."""
    import json
    kill_every_process(entry, signal.SIGKILL, strict=False)
    wait_gone(entry.data.get("monitor") or entry.data.get("pid1"), 10)
    remove_cgroups(recorded_cgroups(entry))
    spec = Spec.from_json(entry.data["spec"]) if entry.data.get("spec") else None
    state = json.dumps(oci_state(entry, "stopped")).encode()
    remove_entry(entry)
    if spec is not None:
        run_hooks(spec.hooks, "poststop", state, fail=False)


def cgroup_controllers_of(version, path):
    """The controllers of a group's hierarchy, from the host's mountinfo."""
    if version == 2:
        return frozenset()
    with open("/proc/self/mountinfo") as f:
        v1, _ = cgroup_hierarchies(f.read())
    return next((names for mount, names in v1 if path.startswith(mount.rstrip("/") + "/")),
                frozenset())


def freeze(entry, frozen):
    """Freeze or thaw through the container's freezer group (v1 freezer.state,
    or v2 cgroup.freeze), wait until the kernel says it is done, and record it."""
    verb = "pause" if frozen else "resume"
    entry.check(verb)
    for version, path in entry.data.get("cgroups") or ():
        try:
            was = freeze_group(version, path, frozen)
        except ContainerError as exc:
            raise exc.within(f"{verb} {entry.name}") from None
        if was is not None:
            entry.update(status=PAUSED if frozen else RUNNING)
            return
    raise ContainerError(f"{'pause' if frozen else 'resume'} {entry.name}",
                         "it has no freezer cgroup (containers of run have none)")


def freeze_group(version, path, frozen):
    """Freeze or thaw one group and wait until the kernel says it is done.
    Returns whether it was frozen before, or None where it has no freezer."""
    import time
    name, value = (("freezer.state", "FROZEN" if frozen else "THAWED") if version == 1
                   else ("cgroup.freeze", "1" if frozen else "0"))
    target = os.path.join(path, name)
    try:
        with open(target) as f:
            before = f.read().strip() in ("FROZEN", "1")
    except OSError:
        return None
    try:
        with open(target, "w") as f:
            f.write(value)
        for _ in range(500):
            if version == 1:
                with open(target) as f:
                    done = f.read().strip() == value
            else:  # cgroup.freeze says what was asked; cgroup.events says when it is so
                with open(os.path.join(path, "cgroup.events")) as f:
                    done = f"frozen {value}" in f.read().splitlines()
            if done:
                return before
            time.sleep(0.002)
    except OSError as exc:
        raise ContainerError.from_os(f"write {value} to {target}", exc) from None
    raise ContainerError(f"{'freeze' if frozen else 'thaw'} cgroup {path}",
                         "the freezer did not settle")


def container_top(entry, ps_args):
    """top: docker top's table, (titles, rows): the host's ps run with
    `ps_args` (-ef by default), and of its rows only those of the container's
    processes. A process is the container's if it was so before ps ran and
    is still the same process (pid and start time), and still the
    container's, after: a pid that ended and was taken by a host process
    while ps ran, or a process that left the cgroup, is never shown."""
    import subprocess
    if entry.status not in (RUNNING, PAUSED):
        raise ContainerError(f"top {entry.name}", "it is not running")
    check_ps_args(ps_args)
    before = {pid: process_start(pid) for pid in container_processes(entry)}
    try:
        done = subprocess.run(["ps", *(ps_args or ["-ef"])], capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ContainerError(f"top {entry.name}", f"ps: {exc}") from None
    if done.returncode != 0:
        why = done.stderr.decode(errors="replace").strip().splitlines()
        raise ContainerError(f"top {entry.name}", f"ps {' '.join(ps_args)}: "
                             f"{why[0] if why else f'exit status {done.returncode}'}")
    after = {pid: process_start(pid) for pid in container_processes(entry)}
    ours = {pid for pid, start in before.items() if start is not None and after.get(pid) == start}
    return parse_ps_output(done.stdout.decode(errors="replace"), ours, entry.name)


def check_ps_args(args):
    """docker's rule: a ps option may not rename a column to PID (`-o user=PID`),
    which would make another column be taken for the pids."""
    import re
    for key, value in re.findall(r"\s+([^\s]*)=\s*(PID[^\s]*)", " " + " ".join(args)):
        if key != "pid":
            raise ContainerError(f"top: ps option {key}={value}", "not allowed (it would name"
                                 " another column PID)")


def parse_ps_output(text, pids, name):
    """docker's parsing of ps's table: the titles, then the rows whose PID is
    one of `pids` (a thread's row, with '-' for PID, goes with its process's)."""
    lines = text.split("\n")
    titles = lines[0].split()
    if "PID" not in titles:
        raise ContainerError(f"top {name}", "Couldn't find PID field in ps output")
    index, rows, keep = titles.index("PID"), [], False
    for line in lines[1:]:
        fields = line.split()
        if not fields:
            continue
        if len(fields) <= index:
            raise ContainerError(f"top {name}", f"unexpected ps output line: {line}")
        if fields[index] == "-":
            if keep:
                rows.append(row_of(fields, titles))
            continue
        try:
            pid = int(fields[index])
        except ValueError:
            raise ContainerError(f"top {name}", f"Unexpected pid '{fields[index]}'") from None
        keep = pid in pids
        if keep:
            rows.append(row_of(fields, titles))
    return titles, rows


def row_of(fields, titles):
    """A row with its last column (CMD) holding the rest of the line, spaces and all."""
    return fields[:len(titles) - 1] + [" ".join(fields[len(titles) - 1:])]


def print_tabbed(rows):
    """Rows as docker's CLI prints top's (Go's tabwriter: cells at least 20
    wide, 3 spaces of padding; the last cell as it is)."""
    widths = [max(20, max(len(row[i]) for row in rows if len(row) > i + 1) + 3)
              for i in range(max(len(row) for row in rows) - 1)]
    for row in rows:
        click.echo("".join(cell.ljust(width) for cell, width in zip(row, widths))
                   + (row[-1] if len(row) > len(widths) else ""))


# ---------------------------------------------------------------------------
# stats: what a container uses, read from its cgroups where run made them
# (v2's, then each v1 hierarchy's), else from /proc of its processes (a run
# with no limit, or a user's, has no cgroup: see make_cgroups); its network
# bytes from its network namespace's /proc/PID/net/dev.
# ---------------------------------------------------------------------------

def container_usage(entry):
    """One reading of a running container: {cpu_ns, memory, memory_limit,
    pids, net_rx, net_tx, blk_read, blk_write}, None where it has no figure;
    None for a container that does not run."""
    pid1 = entry.data.get("pid1")
    if entry.status not in (RUNNING, PAUSED) or not pid1:
        return None
    pidfd = open_owner(pid1)  # held while reading: the pid is not another process's meanwhile
    if pidfd is None:
        return None
    try:
        usage = dict.fromkeys(("cpu_ns", "memory", "memory_limit", "pids", "net_rx", "net_tx",
                               "blk_read", "blk_write"))
        for version, path in entry.data.get("cgroups") or ():
            cgroup_usage(usage, version, path)
        if None in (usage["cpu_ns"], usage["memory"], usage["pids"], usage["blk_read"]):
            process_usage(usage, container_processes(entry))
        if usage["memory_limit"] is None or usage["memory_limit"] > host_memory():
            usage["memory_limit"] = host_memory()  # docker's: no limit shows the host's memory
        spec = entry.data.get("spec") or {}
        if (spec.get("namespaces") or 0) & CLONE_NEWNET:  # the host's own traffic is not the container's
            usage["net_rx"], usage["net_tx"] = network_bytes(pid1[0])
        return usage
    finally:
        os.close(pidfd)


def cgroup_usage(usage, version, path):
    """What one of the container's groups says, where nothing said it before."""
    group = Cgroup(version, path, ())
    try:
        group.fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        def read(name):
            return number_in(group.read(name))
        if version == 2:
            usec = group.field("cpu.stat", "usage_usec")
            cpu = None if usec is None else usec * 1000
            memory, limit = read("memory.current"), read("memory.max")
            inactive = group.field("memory.stat", "inactive_file")
        else:
            cpu = read("cpuacct.usage")
            memory, limit = read("memory.usage_in_bytes"), read("memory.limit_in_bytes")
            inactive = group.field("memory.stat", "total_inactive_file")
        # docker's usage leaves out the page cache the kernel would drop first
        found = {"cpu_ns": cpu, "memory": None if memory is None else max(0, memory - (inactive or 0)),
                 "memory_limit": limit, "pids": read("pids.current")}
        for key, value in found.items():
            if usage[key] is None:
                usage[key] = value
        if usage["blk_read"] is None:
            usage["blk_read"], usage["blk_write"] = block_bytes(group)
    finally:
        os.close(group.fd)


def number_in(text):
    """A cgroup file's one number, or None ("max", absent, anything else)."""
    text = (text or "").strip()
    return int(text) if text.isascii() and text.isdigit() else None


def block_bytes(group):
    """Bytes read and written: v2's io.stat, v1's blkio; (None, None) without either."""
    read = write = None
    if group.version == 2:
        for line in (group.read("io.stat") or "").splitlines():
            fields = dict(f.partition("=")[::2] for f in line.split()[1:])
            read = (read or 0) + (number_in(fields.get("rbytes")) or 0)
            write = (write or 0) + (number_in(fields.get("wbytes")) or 0)
    else:
        for line in (group.read("blkio.throttle.io_service_bytes") or "").splitlines():
            fields = line.split()
            if len(fields) == 3 and fields[1] in ("Read", "Write"):
                if fields[1] == "Read":
                    read = (read or 0) + (number_in(fields[2]) or 0)
                else:
                    write = (write or 0) + (number_in(fields[2]) or 0)
    return read, write


def process_usage(usage, pids):
    """The figures no group gave, summed over the container's processes from
    /proc: CPU time (theirs and their reaped children's), resident memory,
    tasks (threads, as pids.current counts them), storage bytes."""
    cpu = memory = tasks = read = write = 0
    tick = os.sysconf("SC_CLK_TCK")
    page = os.sysconf("SC_PAGE_SIZE")
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                # comm is the container's to choose, ")" and spaces too: split after its last ")"
                fields = f.read().rsplit(b")", 1)[1].split()
            with open(f"/proc/{pid}/statm", "rb") as f:
                resident = int(f.read().split()[1])
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        cpu += sum(int(v) for v in fields[11:15]) * 1_000_000_000 // tick
        tasks += int(fields[17])
        memory += resident * page
        try:
            with open(f"/proc/{pid}/io", "rb") as f:
                io = dict(line.split(b": ", 1) for line in f.read().splitlines())
            read += int(io.get(b"read_bytes", 0))
            write += int(io.get(b"write_bytes", 0))
        except (OSError, ValueError):
            pass  # not ours to read (a user's non-dumpable process)
    for key, value in (("cpu_ns", cpu), ("memory", memory), ("pids", tasks)):
        if usage[key] is None:
            usage[key] = value
    if usage["blk_read"] is None:
        usage["blk_read"], usage["blk_write"] = read, write


def network_bytes(pid):
    """Bytes received and sent by the interfaces of the process's network
    namespace but lo (docker's NET I/O), from /proc/PID/net/dev."""
    rx = tx = 0
    try:
        with open(f"/proc/{pid}/net/dev", "rb") as f:
            lines = f.read().splitlines()[2:]
    except OSError:
        return 0, 0
    for line in lines:
        name, _, counters = line.partition(b":")  # a name holds no ":" (dev_valid_name)
        fields = counters.split()
        if name.strip() == b"lo" or len(fields) < 9:
            continue
        try:
            rx, tx = rx + int(fields[0]), tx + int(fields[8])
        except ValueError:
            continue
    return rx, tx


def host_memory():
    """The host's memory in bytes (MemTotal)."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


def human_decimal(size):
    """docker's units.HumanSizeWithPrecision(size, 3): 0B, 648B, 1.05kB, 12.3MB."""
    units = ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")
    size, i = float(size), 0
    while size >= 1000 and i < len(units) - 1:
        size, i = size / 1000, i + 1
    return f"{size:.3g}{units[i]}"


def human_binary(size):
    """docker's units.BytesSize: 0B, 1.5MiB, 64MiB, 7.764GiB."""
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB")
    size, i = float(size), 0
    while size >= 1024 and i < len(units) - 1:
        size, i = size / 1024, i + 1
    return f"{size:.4g}{units[i]}"


def stats_row(entry, ref, before, after, seconds):
    """docker stats' fields of one container from two readings `seconds`
    apart (CPU % is the CPU time between them over the wall time: 100% is one
    CPU, as docker counts); zeros for a container that does not run."""
    if after is None:
        cpu = mem_percent = 0.0
        after = dict.fromkeys(("memory", "memory_limit", "pids", "net_rx", "net_tx", "blk_read",
                               "blk_write"), 0)
    else:
        used = (after["cpu_ns"] or 0) - ((before or {}).get("cpu_ns") or 0)
        cpu = max(0.0, used / 1e9 / seconds * 100) if before and seconds > 0 else 0.0
        mem_percent = (after["memory"] or 0) / after["memory_limit"] * 100 if after["memory_limit"] else 0.0
    return {"BlockIO": f"{human_decimal(after['blk_read'] or 0)} / {human_decimal(after['blk_write'] or 0)}",
            "CPUPerc": f"{cpu:.2f}%", "Container": ref, "ID": entry.id[:12],
            "MemPerc": f"{mem_percent:.2f}%",
            "MemUsage": f"{human_binary(after['memory'] or 0)} / {human_binary(after['memory_limit'] or 0)}",
            "Name": entry.name,
            "NetIO": f"{human_decimal(after['net_rx'] or 0)} / {human_decimal(after['net_tx'] or 0)}",
            "PIDs": str(after["pids"] or 0)}


STATS_COLUMNS = (("CONTAINER ID", "ID"), ("NAME", "Name"), ("CPU %", "CPUPerc"),
                 ("MEM USAGE / LIMIT", "MemUsage"), ("MEM %", "MemPerc"), ("NET I/O", "NetIO"),
                 ("BLOCK I/O", "BlockIO"), ("PIDS", "PIDs"))
