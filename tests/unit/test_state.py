"""The state of containers, without root: entries, names, ids, statuses and
their moves, the log's records and its cap, signals and docker's durations."""
import os
import signal
import subprocess

import pytest

import minicontainer as mc


@pytest.fixture
def store(tmp_path):
    return mc.Store(str(tmp_path / "state")).ensure()


def me():
    return [os.getpid(), mc.process_start(os.getpid())]


def gone():
    """(pid, start) of a process that has ended."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return [proc.pid, 1]


def test_entries_are_made_found_and_listed(store):
    a = store.create("web", {"monitor": me()})
    b = store.create(None, {"monitor": me()})
    assert len(a.id) == 64 and a.name == "web" and a.status == mc.CREATING
    first, noun = b.name.split("_")
    assert first in mc.NAME_ADJECTIVES and noun in mc.NAME_NOUNS
    assert [c.id for c in store.entries()] == [a.id, b.id]
    assert store.find("web").id == a.id and store.find(a.id).id == a.id
    assert store.find(b.id[:12]).id == b.id
    assert os.stat(a.path()).st_mode & 0o777 == 0o700
    assert os.stat(a.path("state.json")).st_mode & 0o777 == 0o600


def test_a_name_is_unique_while_its_entry_lives(store):
    entry = store.create("web", {})
    with pytest.raises(mc.ContainerError) as exc:
        store.create("web", {})
    assert "the name is in use" in str(exc.value)
    entry.remove()
    assert store.create("web", {}).name == "web"


def test_unknown_and_ambiguous_references(store):
    entries = [store.create(None, {}) for _ in range(20)]
    first = next(c for c in "0123456789abcdef" if sum(e.id.startswith(c) for e in entries) > 1)
    with pytest.raises(mc.ContainerError) as exc:
        store.find(first)
    assert "ambiguous" in str(exc.value)
    with pytest.raises(mc.ContainerError) as exc:
        store.find("zz")
    assert str(exc.value) == "container zz: no such container"
    with pytest.raises(mc.ContainerError):
        store.find("")


def test_the_status_is_told_as_it_truly_is(store):
    entry = store.create("x", {"monitor": me()})
    entry.update(status=mc.RUNNING, pid1=me())
    assert entry.status == mc.RUNNING
    entry.update(monitor=gone())  # the monitor died without writing the end
    assert entry.status == mc.DEAD
    oci = store.create("y", {"monitor": None})
    oci.update(status=mc.RUNNING, pid1=gone())  # no monitor: PID 1 is the judge
    assert oci.status == mc.EXITED


@pytest.mark.parametrize("status, move, allowed", [
    (mc.RUNNING, "rm", False), (mc.RUNNING, "rm -f", True), (mc.EXITED, "rm", True),
    (mc.EXITED, "exec", False), (mc.RUNNING, "exec", True), (mc.CREATED, "start", True),
    (mc.RUNNING, "start", False), (mc.EXITED, "kill", False), (mc.PAUSED, "resume", True),
])
def test_moves_are_checked_in_one_place(store, status, move, allowed):
    entry = store.create("m", {"monitor": me()})
    entry.update(status=status, pid1=me())
    if allowed:
        assert entry.check(move) == status
    else:
        with pytest.raises(mc.ContainerError) as exc:
            entry.check(move)
        assert str(exc.value).startswith(f"{move} m: it is")


def test_an_update_after_removal_writes_nothing(store):
    entry = store.create("r", {})
    entry.remove()
    entry.remove()  # twice: no error
    assert entry.update(status=mc.EXITED) is False
    assert os.listdir(store.path) == [".lock"]


def test_the_log_keeps_its_last_part(tmp_path, monkeypatch):
    monkeypatch.setattr(mc, "LOG_MAX", 1000)
    dropped = []
    log = mc.Log(str(tmp_path), on_drop=dropped.append)
    for i in range(100):
        log.write(ord("1" if i % 2 else "2"), b"line %03d\n" % i)
    old, _ = mc.read_records(str(tmp_path / "container.log.1"))
    new, _ = mc.read_records(str(tmp_path / "container.log"))
    kept = b"".join(data for _, _, data in old + new)
    assert kept.endswith(b"line 099\n") and len(kept) < 1000
    assert dropped and dropped[-1] > 0
    assert {stream for stream, _, _ in old + new} == {b"1", b"2"}


def test_a_record_being_written_is_not_read(tmp_path):
    path = tmp_path / "container.log"
    path.write_bytes(b"1 5 3\nabc" + b"2 6 10\nhalf")
    records, offset = mc.read_records(str(path))
    assert records == [(b"1", 5, b"abc")] and offset == 9


@pytest.mark.parametrize("text, number", [
    ("KILL", signal.SIGKILL), ("SIGTERM", signal.SIGTERM), ("term", signal.SIGTERM), ("9", 9),
    ("USR1", signal.SIGUSR1), ("RTMIN+1", signal.SIGRTMIN + 1)])
def test_signals_by_name_or_number(text, number):
    assert mc.parse_signal(text) == number


@pytest.mark.parametrize("text", ["NOPE", "0", "99", "", "٩", "SIG"])
def test_bad_signals_are_refused(text):
    with pytest.raises(mc.ContainerError):
        mc.parse_signal(text)


@pytest.mark.parametrize("seconds, words", [
    (0.2, "Less than a second"), (1, "1 second"), (59, "59 seconds"), (70, "About a minute"),
    (600, "10 minutes"), (3600, "About an hour"), (7200, "2 hours"), (3 * 86400, "3 days"),
    (21 * 86400, "3 weeks"), (90 * 86400, "3 months"), (800 * 86400, "2 years")])
def test_durations_in_dockers_words(seconds, words):
    assert mc.human_duration(seconds) == words


def test_times_round_trip():
    stamp = mc.now_iso()
    assert stamp.endswith("Z") and abs(mc.parse_iso(stamp) - __import__("time").time()) < 5


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
    assert mc.process_start(proc.pid) is None and not mc.alive(owner)
    proc.wait()
