"""Helpers shared by the tests: the CLI, process and mount inspection."""
import contextlib
import fcntl
import json
import os
import select
import shutil
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# The real CLI from this checkout, as a subprocess: the module run as a script.
CLI = [sys.executable, str(REPO / "minicontainer.py")]


def cli(*args, **kwargs):
    """Run minicontainer with args; capture output; never hang a test."""
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("timeout", 60)
    return subprocess.run([*CLI, *map(str, args)], **kwargs)


def inspect(ref):
    """`minicontainer inspect REF`'s one object, for a container that must be there."""
    import json
    result = cli("inspect", ref)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)[0]


# The library behind the same options (tests/library_door.py): the second door.
LIBRARY_DOOR = [sys.executable, str(REPO / "tests" / "library_door.py")]


def library_door(*args, **kwargs):
    """As cli(), but `run` goes through minicontainer.run() in a Python caller."""
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("timeout", 60)
    return subprocess.run([*LIBRARY_DOOR, *map(str, args)], **kwargs)


def build_static(source, out, *flags):
    """Compile a C file statically; the result runs in an otherwise empty root."""
    subprocess.run(["gcc", "-static", "-O2", "-o", str(out), str(source), *flags],
                   check=True, capture_output=True)
    return out


class Ownership:
    """What one test made, so that its leak checks look at nothing else: the
    suite must pass on a machine where other containers, cgroups and mounts
    come and go. The fixture in tests/integration/conftest.py makes one per
    test and records every process the test starts (subprocess.Popen); a
    container's host-side objects are the test's when they are named after
    one of those processes (a foreground run's cgroup, minicontainer-PID-...),
    after a container of the test's state directory or a --name it gave, when
    they lie under the test's directory, or when a live process in them carries
    the test's own environment marker (MINICONTAINER_STATE=its state directory)."""

    def __init__(self, tmp_path, state_dir):
        self.tmp_path, self.state_dir = Path(tmp_path), Path(state_dir)
        self.pids, self.names = set(), set()
        self.marker = f"MINICONTAINER_STATE={state_dir}".encode()
        # Veths there before the test began are another's, even once their
        # container's PID 1 has died and its holder is still removing them.
        self.links_before = set(veths())

    def started(self, pid, args):
        self.pids.add(pid)
        if not isinstance(args, (list, tuple)):
            return
        args = [os.fsdecode(a) if isinstance(a, (bytes, os.PathLike)) else str(a) for a in args]
        for flag, value in zip(args, args[1:]):
            if flag in ("--name", "-n"):
                self.names.add(value)

    def names_in_state(self):
        try:
            return {p.name for p in self.state_dir.iterdir()} | {
                json.loads((p / "state.json").read_text()).get("name", "")
                for p in self.state_dir.iterdir() if (p / "state.json").is_file()}
        except (OSError, ValueError):
            return set()

    def process_is_ours(self, pid):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if self.marker in f.read().split(b"\0"):
                    return True
        except OSError:
            return False
        return pid in self.pids or int(pid) in processes_rooted_under(self.tmp_path)

    def label_is_ours(self, label):
        head = label.split("-", 1)[0]
        return (head.isdigit() and int(head) in self.pids) or label in self.names \
            or label in self.names_in_state()

    def cgroup_is_ours(self, path):
        label = os.path.basename(path)[len("minicontainer-"):]
        try:
            with open(os.path.join(path, "cgroup.procs")) as f:
                procs = f.read().split()
        except OSError:
            procs = []
        return self.label_is_ours(label) or any(self.process_is_ours(p) for p in procs)

    def mount_is_ours(self, mountpoint):
        return mountpoint == str(self.tmp_path) or mountpoint.startswith(str(self.tmp_path) + "/")


# The test that is running now (set by the integration fixture); None outside one.
current = None


def container_cgroups(everyone=False):
    """minicontainer's cgroups on the host, in either version: those of the
    running test (see Ownership), or with everyone=True all of them."""
    found = []
    for top, dirs, _ in os.walk("/sys/fs/cgroup"):
        found += [os.path.join(top, d) for d in dirs if d.startswith("minicontainer-")]
        dirs[:] = [d for d in dirs if not d.startswith("minicontainer-")]
    if current is not None and not everyone:
        found = [g for g in found if current.cgroup_is_ours(g)]
    return sorted(found)


def veths():
    """The containers' host-side veths (mcvPID, PID their PID 1's)."""
    return sorted(name for name in os.listdir("/sys/class/net") if name.startswith("mcv"))


def network_leftovers(everyone=False):
    """What a container's network leaves on the host only while it runs: its
    veth (mcvPID) and its address in the bridge's state. The bridge (mc0) and
    its state files stay between containers, as docker keeps docker0, until
    `minicontainer network prune`: see kept_network(). Only the running
    test's (see Ownership), unless everyone=True: a veth whose container's
    PID 1 is the test's, an address whose live owner is the test's."""
    links = veths()
    try:
        with open("/run/minicontainer-network.json") as f:
            addresses = json.load(f).get("containers", {})
    except (OSError, ValueError):
        addresses = {}
    if current is not None and not everyone:
        links = [l for l in links if l not in current.links_before and (
                 not l[3:].isdigit() or not os.path.exists(f"/proc/{l[3:]}")
                 or current.process_is_ours(l[3:]))]
        addresses = {ip: owner for ip, owner in addresses.items()
                     if start_time(owner[0]) == owner[1] and current.process_is_ours(owner[0])}
    return links + sorted(addresses)


def kept_network():
    """The bridge and its state files, when they are there."""
    links = ["mc0"] if os.path.exists("/sys/class/net/mc0") else []
    files = sorted(name for name in os.listdir("/run") if name.startswith("minicontainer-network"))
    return links + files


def host_mounts(everyone=False):
    """Mount points on the host: those under the running test's directory
    (see Ownership), or with everyone=True all of them."""
    with open("/proc/self/mountinfo") as f:
        points = sorted(line.split()[4] for line in f)
    if current is not None and not everyone:
        points = [p for p in points if current.mount_is_ours(p)]
    return points


def processes_rooted_under(path):
    """Host pids whose root directory is `path` or a directory below it.

    A container's root shows as "/" in /proc/PID/root's link text once it has
    pivoted, so compare the directory itself (device and inode) instead.
    """
    path = Path(path)
    dirs = {(st.st_dev, st.st_ino) for st in
            (os.stat(p) for p in [path, *path.glob("*"), *path.glob("*/*")] if p.is_dir() and not p.is_symlink())}
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            st = os.stat(f"/proc/{pid}/root")
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in dirs:
            found.append(int(pid))
    return found


def container_pids(path):
    """processes_rooted_under, less minicontainer's own holder: only those in a
    PID namespace below the host's (NSpid lists more than one pid)."""
    found = []
    for pid in processes_rooted_under(path):
        try:
            with open(f"/proc/{pid}/status") as f:
                if any(l.startswith("NSpid:") and len(l.split()) > 2 for l in f):
                    found.append(pid)
        except OSError:
            pass
    return found


def live_monitors(state_dir):
    """The monitors (pid, start time) of containers in a state directory that still run."""
    import json
    live = []
    for entry in Path(state_dir).glob("*/state.json"):
        try:
            monitor = json.loads(entry.read_text()).get("monitor")
        except (OSError, ValueError):
            continue
        if monitor and start_time(monitor[0]) == monitor[1]:
            live.append(monitor[0])
    return live


def process_stat(pid):
    """/proc/PID/stat's fields after the command name (state, ppid, ...),
    or None once the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].decode().split()
    except (OSError, IndexError):
        return None


def process_state(pid):
    """A process's state letter (R, S, T, Z...), or None once it is gone."""
    fields = process_stat(pid)
    return fields[0] if fields else None


def running_children(pid):
    """The pids of `pid`'s children that have not ended (no zombie: this
    VM's init does not reap the orphans it inherits)."""
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()
            and (fields := process_stat(entry)) and fields[1] == str(pid)
            and fields[0] not in ("Z", "X")]


def start_time(pid):
    """A live (not zombie) process's start time, or None."""
    fields = process_stat(pid)
    return None if not fields or fields[0] in ("Z", "X") else int(fields[19])


def parent_of(pid):
    """A process's parent, from its /proc status."""
    with open(f"/proc/{pid}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("PPid:"))


def remove_state(path):
    """Whatever is at a state directory's path, gone: a directory with its
    tree, or a symlink or file itself (shutil.rmtree refuses a symlink, and
    with ignore_errors says nothing: a symlink planted there by a killed
    run then failed every later run of a user at that path)."""
    if os.path.islink(path) or (os.path.lexists(path) and not os.path.isdir(path)):
        os.unlink(path)
    else:
        shutil.rmtree(path, ignore_errors=True)


def wait_for(predicate, timeout):
    """Poll predicate until true or timeout; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.02)


class Container:
    """A container started in the background, for signal and lifetime tests."""

    def __init__(self, root, *args, **kwargs):
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        self.proc = subprocess.Popen([*CLI, "run", "--root", str(root), *map(str, args)], **kwargs)
        self.root = root

    def wait_ready(self):
        line = self.proc.stdout.readline()
        assert line == b"ready\n", (line, self.proc.stderr.read() if self.proc.poll() is not None else "")

    def pid1(self):
        """PID 1's pid on the host."""
        for pid in container_pids(self.root):
            with open(f"/proc/{pid}/status") as f:
                if any(l.startswith("NSpid:") and l.split()[-1] == "1" for l in f):
                    return pid
        raise AssertionError("no PID 1 found")

    def wait(self, timeout=10):
        self.proc.wait(timeout)
        out, err = self.proc.communicate()
        return self.proc.returncode, out, err

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for f in (self.proc.stdout, self.proc.stderr):
            if f:
                f.close()


def read_for(fd, seconds):
    """Whatever fd yields within `seconds` (a terminal's master, say)."""
    out, end = b"", time.monotonic() + seconds
    while time.monotonic() < end:
        ready, _, _ = select.select([fd], [], [], 0.05)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the terminal's other side is gone
                break
            if not chunk:
                break
            out += chunk
    return out


def read_until(fd, marker, timeout=10):
    """Read fd until `marker` shows up (or timeout); return all that was read."""
    out, end = b"", time.monotonic() + timeout
    while marker not in out and time.monotonic() < end:
        out += read_for(fd, 0.1)
    return out


class Terminal:
    """The CLI on a fresh pseudo-terminal as its controlling terminal, as in a shell."""

    def __init__(self, proc, master, slave, saved):
        self.proc, self.master, self.slave, self.saved = proc, master, slave, saved

    def resize(self, rows, columns):
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))

    def settings(self):
        return termios.tcgetattr(self.slave)


@contextlib.contextmanager
def on_terminal(root, *args, rows=24, columns=80):
    """Run `minicontainer run --root ROOT ARGS...` on a pty; the terminal's settings
    are saved before it starts; the process is killed and the pty closed after."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    saved = termios.tcgetattr(slave)
    proc = subprocess.Popen([*CLI, "run", "--root", str(root), *map(str, args)], stdin=slave,
                            stdout=slave, stderr=slave, start_new_session=True,
                            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
    try:
        yield Terminal(proc, master, slave, saved)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
        os.close(slave)


def run_to_files(argv, **kwargs):
    """subprocess.run with stdin /dev/null and the output captured in files, as
    engines give a runtime: a created container keeps its stdout and stderr,
    so pipes would never reach their end."""
    import tempfile
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        result = subprocess.run([str(arg) for arg in argv], stdin=subprocess.DEVNULL, stdout=out,
                                stderr=err, timeout=60, **kwargs)
        out.seek(0)
        err.seek(0)
        result.stdout, result.stderr = out.read(), err.read()
    return result


# -- OCI bundles, for the runtime's tests ------------------------------------

class Bundle:
    def __init__(self, path):
        self.path = path

    @property
    def config(self):
        return json.loads((self.path / "config.json").read_text())

    def set(self, change):
        config = self.config
        change(config)
        (self.path / "config.json").write_text(json.dumps(config))

    def args(self, *args):
        def change(config):
            config["process"]["args"] = [str(arg) for arg in args]
            config["process"]["terminal"] = False
        self.set(change)


def spec_bundle(tmp_path, template_root):
    """A bundle in tmp_path/bundle: `minicontainer spec`'s config.json, and a
    copy of the test root as its rootfs."""
    path = tmp_path / "bundle"
    path.mkdir()
    subprocess.run(["cp", "-a", str(template_root), str(path / "rootfs")], check=True)
    assert cli("spec", "--bundle", path).returncode == 0
    return Bundle(path)


def delete_every_listed_container():
    """delete --force of every container `list` shows, as an engine would."""
    listed = cli("list", "--format", "json").stdout or b"[]"
    for st in json.loads(listed):
        cli("delete", "--force", st["id"])


def oci(*args, **kwargs):
    """The CLI. `create` and `exec --detach` leave the container's process
    holding their stdout and stderr, as engines expect: they go to files here,
    not to pipes read to their end (which would wait for the process)."""
    detached = "exec" in args and ("-d" in args or "--detach" in args)
    if "create" not in args and not detached:
        return cli(*map(str, args), **kwargs)
    return run_to_files([*CLI, *args], **kwargs)


def oci_state(id):
    result = oci("state", id)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# A shell script for busybox sh in a container run with --init and
# CAP_SYS_PTRACE: it reads the --init's memory (PID 1) whole and prints, for
# each of two tokens, how many times it is there. Each token is given as two
# halves ($1$2, $3$4) joined in the shell, so the command line holds neither.
INIT_MEMORY_SCAN = ("for token in \"$1$2\" \"$3$4\"; do n=0\n"
                    " while read range perms rest; do\n"
                    "  case $perms in r*) ;; *) continue;; esac\n"
                    "  lo=$((0x${range%-*})); hi=$((0x${range#*-}))\n"
                    "  c=$(dd if=/proc/1/mem bs=4096 skip=$((lo/4096)) count=$(((hi-lo)/4096))"
                    " 2>/dev/null | grep -ac \"$token\")\n"
                    "  n=$((n+c))\n"
                    " done < /proc/1/maps; echo $n; done")
