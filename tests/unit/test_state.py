"""The state of containers, without root: entries, names, ids, statuses and
their moves, the log's records and its cap, signals and docker's durations."""
import os
import signal
import subprocess

import pytest
from hypothesis import given, settings, strategies as st

import minicontainer as mc
from _minicontainer import errors, lifecycle, procs, state as mc_state


@pytest.fixture
def store(tmp_path):
    return mc_state.Store(str(tmp_path / "state")).ensure()


def me():
    return [os.getpid(), procs.process_start(os.getpid())]


def gone():
    """(pid, start) of a process that has ended."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return [proc.pid, 1]


def test_entries_are_made_found_and_listed(store):
    a = store.create("web", {"monitor": me()})
    b = store.create(None, {"monitor": me()})
    assert len(a.id) == 64 and a.name == "web" and a.status == mc_state.CREATING
    first, noun = b.name.split("_")
    assert first in mc_state.NAME_ADJECTIVES and noun in mc_state.NAME_NOUNS
    assert [c.id for c in store.entries()] == [a.id, b.id]
    assert store.find("web").id == a.id and store.find(a.id).id == a.id
    assert store.find(b.id[:12]).id == b.id
    assert os.stat(a.path()).st_mode & 0o777 == 0o700
    assert os.stat(a.path("state.json")).st_mode & 0o777 == 0o600


def test_a_bundles_container_is_found_by_its_full_id_alone(store):
    """runc finds a container by its id, never a prefix: an engine's `delete
    --force web` of one already gone must not delete "web2" (nor `kill`,
    `exec`, `state` reach it); run's containers keep docker's prefixes."""
    bundled = store.create(None, {"bundle": "/b"}, id="web2")
    docker = store.create(None, {"monitor": me()})
    assert store.find("web2").id == bundled.id
    assert store.find(docker.id[:12]).id == docker.id  # the control: docker's prefix
    for ref in ("web", "w", "web2"[:3]):
        with pytest.raises(errors.ContainerError) as exc:
            store.find(ref)
        assert str(exc.value) == f"container {ref}: no such container"


OCI_IDS = st.text("ab9KILTwe-_", min_size=1, max_size=5)  # as check_oci_id takes


@settings(max_examples=150, deadline=None)
@given(ids=st.lists(OCI_IDS, min_size=1, max_size=5, unique=True), ref=OCI_IDS)
def test_a_ref_finds_the_bundles_container_of_that_id_or_none(tmp_path_factory, ids, ref):
    """The class of the prefix attack: among any ids an engine chose, a runc
    verb's ref reaches the container of exactly that id, or none, and
    is_bundles says so (kill's ID SIGNAL form hangs on it)."""
    store = mc_state.Store(str(tmp_path_factory.mktemp("state") / "s")).ensure()
    for id in ids:
        store.create(None, {"bundle": "/b"}, id=id)
    assert store.is_bundles(ref) == (ref in ids)
    if ref in ids:
        assert store.find(ref).id == ref
    else:
        with pytest.raises(errors.ContainerError):
            store.find(ref)


def test_a_name_is_unique_while_its_entry_lives(store):
    entry = store.create("web", {})
    with pytest.raises(errors.ContainerError) as exc:
        store.create("web", {})
    assert "the name is in use" in str(exc.value)
    entry.remove()
    assert store.create("web", {}).name == "web"


def test_unknown_and_ambiguous_references(store):
    entries = [store.create(None, {}) for _ in range(20)]
    first = next(c for c in "0123456789abcdef" if sum(e.id.startswith(c) for e in entries) > 1)
    with pytest.raises(errors.ContainerError) as exc:
        store.find(first)
    assert "ambiguous" in str(exc.value)
    with pytest.raises(errors.ContainerError) as exc:
        store.find("zz")
    assert str(exc.value) == "container zz: no such container"
    with pytest.raises(errors.ContainerError):
        store.find("")


def test_a_missing_container_in_runcs_words_for_runcs_verbs(store):
    """Engines parse runc's words: containerd's shim takes "does not exist" as
    not found (kill) or done (delete); docker's verbs keep docker's words."""
    for verb in ("kill", "delete", "state", "start", "pause", "resume", "ps", "exec", "update"):
        with pytest.raises(errors.ContainerError) as exc:
            store.find("gone", verb)
        assert str(exc.value) == f"{verb} gone: container does not exist"
    made = store.create("web", {})
    assert store.find("web", "kill").id == made.id  # the control: one that exists is found


def test_the_status_is_told_as_it_truly_is(store):
    entry = store.create("x", {"monitor": me()})
    entry.update(status=mc_state.RUNNING, pid1=me())
    assert entry.status == mc_state.RUNNING
    entry.update(monitor=gone())  # the monitor died without writing the end
    assert entry.status == mc_state.DEAD
    oci = store.create("y", {"monitor": None})
    oci.update(status=mc_state.RUNNING, pid1=gone())  # no monitor: PID 1 is the judge
    assert oci.status == mc_state.EXITED


@pytest.mark.parametrize("status, move, allowed", [
    (mc_state.RUNNING, "rm", False), (mc_state.RUNNING, "rm -f", True), (mc_state.EXITED, "rm", True),
    (mc_state.EXITED, "exec", False), (mc_state.RUNNING, "exec", True), (mc_state.CREATED, "start", True),
    (mc_state.RUNNING, "start", False), (mc_state.EXITED, "kill", False), (mc_state.PAUSED, "resume", True),
])
def test_moves_are_checked_in_one_place(store, status, move, allowed):
    entry = store.create("m", {"monitor": me()})
    entry.update(status=status, pid1=me())
    if allowed:
        assert entry.check(move) == status
    else:
        with pytest.raises(errors.ContainerError) as exc:
            entry.check(move)
        assert str(exc.value).startswith(f"{move} m: it is")


def test_an_update_after_removal_writes_nothing(store):
    entry = store.create("r", {})
    entry.remove()
    entry.remove()  # twice: no error
    assert entry.update(status=mc_state.EXITED) is False
    assert os.listdir(store.path) == [".lock"]


def test_the_log_keeps_its_last_part(tmp_path, monkeypatch):
    monkeypatch.setattr(mc_state, "LOG_MAX", 1000)
    dropped = []
    log = mc_state.Log(str(tmp_path), on_drop=dropped.append)
    for i in range(100):
        log.write(ord("1" if i % 2 else "2"), b"line %03d\n" % i)
    old, _ = mc_state.read_records(str(tmp_path / "container.log.1"))
    new, _ = mc_state.read_records(str(tmp_path / "container.log"))
    kept = b"".join(data for _, _, data in old + new)
    assert kept.endswith(b"line 099\n") and len(kept) < 1000
    assert dropped and dropped[-1] > 0
    assert {stream for stream, _, _ in old + new} == {b"1", b"2"}


def test_a_record_being_written_is_not_read(tmp_path):
    path = tmp_path / "container.log"
    path.write_bytes(b"1 5 3\nabc" + b"2 6 10\nhalf")
    records, offset = mc_state.read_records(str(path))
    assert records == [(b"1", 5, b"abc")] and offset == 9


@pytest.mark.parametrize("text, number", [
    ("KILL", signal.SIGKILL), ("SIGTERM", signal.SIGTERM), ("term", signal.SIGTERM), ("9", 9),
    ("USR1", signal.SIGUSR1), ("RTMIN+1", signal.SIGRTMIN + 1)])
def test_signals_by_name_or_number(text, number):
    assert lifecycle.parse_signal(text) == number


@pytest.mark.parametrize("text", ["NOPE", "0", "99", "", "٩", "SIG"])
def test_bad_signals_are_refused(text):
    with pytest.raises(errors.ContainerError):
        lifecycle.parse_signal(text)


@pytest.mark.parametrize("seconds, words", [
    (0.2, "Less than a second"), (1, "1 second"), (59, "59 seconds"), (70, "About a minute"),
    (600, "10 minutes"), (3600, "About an hour"), (7200, "2 hours"), (3 * 86400, "3 days"),
    (21 * 86400, "3 weeks"), (90 * 86400, "3 months"), (800 * 86400, "2 years")])
def test_durations_in_dockers_words(seconds, words):
    assert mc_state.human_duration(seconds) == words


def test_times_round_trip():
    stamp = mc_state.now_iso()
    assert stamp.endswith("Z") and abs(mc_state.parse_iso(stamp) - __import__("time").time()) < 5


def test_a_zombie_is_no_longer_alive():
    proc = subprocess.Popen(["true"])
    owner = [proc.pid, None]
    import time
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # exited, not yet reaped: a zombie
        with open(f"/proc/{proc.pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                break
        time.sleep(0.01)
    assert procs.process_start(proc.pid) is None and not procs.alive(owner)
    proc.wait()


# -- a state directory that is not the caller's own --------------------------
# Without XDG_RUNTIME_DIR a user's state is /tmp/minicontainer-UID, which any
# other user may make first. Every verb must refuse such a directory before
# it reads a thing from it (here: one that is the caller's but open to
# others, a symlink, a file; the other owner's, as root, in test_rootless).

def forge(state, victim):
    """A directory with a forged entry `web` whose monitor and PID 1 are the
    victim's own unrelated process, as another user would make it."""
    entry = state / ("f" * 64)
    entry.mkdir(parents=True)
    owner = [victim.pid, victim.start]
    (entry / "state.json").write_text(__import__("json").dumps({
        "id": "f" * 64, "name": "web", "status": mc_state.RUNNING, "created": mc_state.now_iso(),
        "monitor": owner, "pid1": owner, "detached": True, "spec": {}, "command": ["x"]}))
    (entry / "container.log").write_bytes(b"garbage that is no record\n")


class Victim:
    """A process of the caller's that has nothing to do with any container:
    a sleep, as PID 1 of a PID namespace of its own, so that even a verb that
    signals every process of the namespace a forged entry names cannot reach
    beyond it (today's delete --force and rm -f would signal every process
    of the host's)."""

    def __init__(self):
        import time
        self.holder = subprocess.Popen(["unshare", "--user", "--map-root-user", "--pid", "--fork",
                                        "--mount-proc", "sleep", "60"],
                                       stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        self.pid = None
        while self.pid is None and time.monotonic() < deadline:
            try:
                with open(f"/proc/{self.holder.pid}/task/{self.holder.pid}/children") as f:
                    children = f.read().split()
            except OSError:
                children = []
            if children and open(f"/proc/{children[0]}/comm").read().strip() == "sleep":
                self.pid = int(children[0])
            else:
                time.sleep(0.01)
        assert self.pid, "no sleep in a PID namespace of its own (unshare -Urpf)"
        assert os.readlink(f"/proc/{self.pid}/ns/pid") != os.readlink("/proc/self/ns/pid")
        self.start = procs.process_start(self.pid)

    def alive(self):
        return procs.alive([self.pid, self.start])

    def end(self):
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
        self.holder.wait(timeout=10)


@pytest.fixture
def victim():
    proc = Victim()
    yield proc
    proc.end()


def cli(state, *args):
    return subprocess.run([__import__("sys").executable, mc.__file__, "--root", str(state), *args],
                          capture_output=True, timeout=30, stdin=subprocess.DEVNULL)


VERBS = [("ps",), ("ps", "-a"), ("inspect", "web"), ("logs", "web"), ("stop", "-t", "1", "web"),
         ("kill", "web"), ("rm", "-f", "web"), ("wait", "web"), ("exec", "web", "/bin/true"),
         ("state", "web"), ("list",), ("delete", "--force", "web"), ("start", "web"),
         ("kill", "web", "KILL"), ("pause", "web"), ("resume", "web"), ("stop", "web", "web")]


@pytest.mark.parametrize("args", VERBS, ids=" ".join)
def test_every_verb_refuses_a_state_directory_others_may_enter(tmp_path, victim, args):
    state = tmp_path / "state"
    forge(state, victim)
    state.chmod(0o755)
    result = cli(state, *args)
    err = result.stderr.decode()
    assert result.returncode == 125 and err.count("\n") == 1, err
    assert err == (f"minicontainer: state directory {state}: its mode is 0755 (others may enter it):"
                   f" remove it (rm -rf {state}) and try again, or choose another with --root DIR"
                   f" or {mc_state.STATE_ENV}\n")
    assert victim.alive() and os.path.exists(state / ("f" * 64) / "state.json")


def test_the_callers_own_directory_is_read_as_before(tmp_path, victim):
    """The control: the same forged entry, in a 0700 directory of the caller's
    (only the caller could have written it), is read and acted upon."""
    state = tmp_path / "state"
    forge(state, victim)
    state.chmod(0o700)
    assert b"web" in cli(state, "ps").stdout
    assert cli(state, "kill", "web").returncode == 0  # SIGKILL: the one a namespace's PID 1 cannot ignore
    import time
    deadline = time.monotonic() + 10
    while victim.alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not victim.alive()


@pytest.mark.parametrize("make, why", [
    (lambda p, good: p.symlink_to(good), "a symlink"),
    (lambda p, good: p.write_text(""), "not a directory"),
    (lambda p, good: p.mkdir(0o777) or p.chmod(0o777), "its mode is 0777"),
    (lambda p, good: p.mkdir(0o700) or p.chmod(0o710), "its mode is 0710"),
])
def test_a_symlink_a_file_or_an_open_directory_is_refused_when_read_or_made(tmp_path, make, why):
    good = mc_state.Store(str(tmp_path / "good")).ensure()
    good.create("web", {})
    path = tmp_path / "state"
    make(path, good.path)
    for use in (lambda s: s.entries(), lambda s: s.find("web"), lambda s: s.ensure(),
                lambda s: s.create("x", {})):
        with pytest.raises(errors.ContainerError) as caught:
            use(mc_state.Store(str(path)))
        assert str(caught.value).startswith(f"state directory {path}: {why}")
        assert caught.value.code == 125 and "\n" not in str(caught.value)


def test_another_users_directory_says_whose_it_is(tmp_path, monkeypatch):
    store = mc_state.Store(str(tmp_path / "state")).ensure()
    store.create("web", {})
    owner = os.geteuid()
    monkeypatch.setattr(mc.os, "geteuid", lambda: owner + 4242)
    with pytest.raises(errors.ContainerError) as caught:
        store.find("web")
    import pwd
    try:
        name = f" ({pwd.getpwuid(owner).pw_name})"
    except KeyError:
        name = ""
    assert str(caught.value).startswith(
        f"state directory {store.path}: not owned by the current user (uid {owner + 4242}):"
        f" it is uid {owner}'s{name}: have it removed")


def test_a_missing_directory_has_no_containers(tmp_path):
    store = mc_state.Store(str(tmp_path / "none"))
    assert store.entries() == [] and not store.named("web")
    with pytest.raises(errors.ContainerError) as caught:
        store.find("web")
    assert str(caught.value) == "container web: no such container"
    assert not os.path.exists(store.path)  # a read makes nothing


def test_entries_and_their_files_are_not_read_through_symlinks(tmp_path):
    store = mc_state.Store(str(tmp_path / "state")).ensure()
    real = store.create("real", {})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "state.json").write_text('{"name": "linked", "status": "exited"}')
    os.symlink(elsewhere, os.path.join(store.path, "a" * 64))
    inner = store.create("inner", {})
    os.unlink(inner.path("state.json"))
    os.symlink(elsewhere / "state.json", inner.path("state.json"))
    assert [c.name for c in store.entries()] == ["real"]
    os.mkfifo(real.path("container.log"))  # a FIFO where a file belongs: no hang
    assert mc_state.read_records(real.path("container.log")) == ([], 0)


def test_a_lock_is_released_even_if_a_forked_child_kept_its_descriptor(tmp_path):
    """The monitor has threads: its main thread forks each run's holder (which
    lives as long as the run) while the health-check thread may hold the
    entry's lock, and the holder then has the lock's descriptor. flock belongs
    to the open file, so closing the lock's own copy left it held by the
    holder: every later lock (the monitor's record of the start, stop, kill,
    rm -f) waited for the run's end. Released by LOCK_UN, it is free at once;
    the positive control: it is held while the context lasts."""
    import fcntl
    path = str(tmp_path / "lock")

    def free():
        fd = os.open(path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
        finally:
            os.close(fd)

    read_end, write_end = os.pipe()
    with mc_state.flock_file(path):
        child = os.fork()
        if child == 0:  # the holder: it keeps every descriptor it was born with
            os.close(write_end)
            os.read(read_end, 1)
            os._exit(0)
        assert not free()  # the positive control
    try:
        assert free(), "the lock stayed held by the forked child's copy of its descriptor"
    finally:
        os.close(write_end)
        os.close(read_end)
        os.waitpid(child, 0)
