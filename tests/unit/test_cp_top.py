"""Unit tests of cp's rules and top's filter (no root, no container)."""
import subprocess

import pytest
from hypothesis import given, settings, strategies as st

import minicontainer as mc
from _minicontainer import lifecycle, transfer
from _minicontainer.errors import ContainerError


@pytest.mark.parametrize("arg, split", [
    ("c1:/etc/passwd", ("c1", "/etc/passwd")), ("c1:", ("c1", "")), ("/abs:x", (None, "/abs:x")),
    ("./local:name", (None, "./local:name")), ("plain", (None, "plain")), ("-", (None, "-")),
    ("c1:rel/x", ("c1", "rel/x")),
])
def test_a_cp_argument_is_read_as_docker_reads_it(arg, split):
    assert mc.split_cp_arg(arg) == split


@pytest.mark.parametrize("src_dir, contents, dst, kind, result", [
    (False, False, "/d", "dir", ("/d", "f")),          # a file into a directory: its own name
    (False, False, "/d/g", "file", ("/d", "g")),        # onto a file: replaced
    (False, False, "/d/new", None, ("/d", "new")),      # a new name
    (True, False, "/d", "dir", ("/d", "f")),            # a directory into one: inside it
    (True, True, "/d", "dir", ("/d", "")),              # SRC/. : what it holds
    (True, False, "/d/new", None, ("/d", "new")),       # made, with the contents
    (True, True, "/d/new", None, ("/d", "new")),
    (False, False, "/", "dir", ("/", "f")),
])
def test_docker_cp_destination_rules(src_dir, contents, dst, kind, result):
    assert transfer.destination(src_dir, contents, "f", dst, kind, "cp") == result


@pytest.mark.parametrize("src_dir, dst, kind, why", [
    (True, "/d/g", "file", "cannot copy a directory onto the file /d/g"),
    (False, "/d/new/", None, "/d/new/: no such directory"),
])
def test_docker_cp_destination_refusals(src_dir, dst, kind, why):
    with pytest.raises(ContainerError, match=why):
        transfer.destination(src_dir, False, "f", dst, kind, "cp")


@settings(max_examples=300)
@given(st.lists(st.tuples(st.integers(0, 2**20), st.integers(0, 2**31), st.integers(1, 2**16)),
                max_size=4), st.integers(0, 2**32 - 1))
def test_ids_map_in_and_back_out_or_not_at_all(mapping, number):
    host = transfer.to_host(mapping, number)
    if host is None:
        assert not any(inside <= number < inside + count for inside, _, count in mapping)
    elif len({(o, c) for _, o, c in mapping}) == len(mapping):
        assert any(outside <= host < outside + count for _, outside, count in mapping)
    assert transfer.to_host(None, number) == number == transfer.to_container(None, number)


def test_exactly_pads_a_file_that_shrank_and_cuts_one_that_grew(tmp_path):
    import os
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    fd = os.open(path, os.O_RDONLY)
    try:
        assert transfer.Exactly(fd, 5).read(100) + transfer.Exactly(fd, 0).read(10) == b"abc"
        os.lseek(fd, 0, 0)
        reader = transfer.Exactly(fd, 5)
        assert reader.read(100) == b"abc" and reader.read(100) == b"\0\0" and reader.read(1) == b""
        os.lseek(fd, 0, 0)
        assert transfer.Exactly(fd, 2).read(100) == b"ab"
    finally:
        os.close(fd)


PS = """UID        PID  PPID  C STIME TTY          TIME CMD
root         1     0  0 10:00 ?        00:00:01 /sbin/init
root        42     9  0 10:01 ?        00:00:00 sh -c sleep 1 & wait
root         -     -  0 10:01 ?        00:00:00 -
root        43    42  0 10:01 ?        00:00:00 sleep 300
root        44    42  0 10:01 ?        00:00:00 sleep 301
root         -     -  0 10:01 ?        00:00:00 -
"""


def test_ps_rows_are_the_containers_only_threads_with_their_process():
    titles, rows = lifecycle.parse_ps_output(PS, {42, 44}, "c1")
    assert titles == ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    assert [row[1] for row in rows] == ["42", "-", "44", "-"]
    assert rows[0][-1] == "sh -c sleep 1 & wait"  # the command whole, spaces and all


def test_ps_output_without_a_pid_column_is_refused_as_docker_does():
    with pytest.raises(ContainerError, match="Couldn't find PID field in ps output"):
        lifecycle.parse_ps_output("COMMAND\nsleep\n", {1}, "c1")
    with pytest.raises(ContainerError, match="Unexpected pid 'x'"):
        lifecycle.parse_ps_output("PID CMD\nx sleep\n", {1}, "c1")


@pytest.mark.parametrize("args", [["-o", "user=PID"], ["-o", "pid,comm=PIDX"], ["-eo", "uid,args= PID"]])
def test_a_ps_option_that_names_another_column_pid_is_refused(args):
    with pytest.raises(ContainerError, match="not allowed"):
        lifecycle.check_ps_args(args)
    lifecycle.check_ps_args(["-o", "pid=PID,comm"])  # control: pid itself may be so named


def test_top_drops_a_pid_that_ended_or_left_while_ps_ran(monkeypatch):
    """43 ended and its pid went to a host process during ps (its start time
    changed); 45 left the cgroup; 44 stayed: only 42's and 44's rows."""
    class Entry:
        name, status = "c1", lifecycle.RUNNING
    listings = iter([[42, 43, 44, 45], [42, 43, 44]])
    starts = {42: [100, 100], 43: [200, 999], 44: [300, 300], 45: [400, 400]}
    monkeypatch.setattr(lifecycle, "container_processes", lambda entry: next(listings))
    monkeypatch.setattr(lifecycle, "process_start", lambda pid: starts[pid].pop(0))
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(
        a, 0, PS.encode() + b"root 45 1 0 10:01 ? 00:00:00 x\n", b""))
    titles, rows = lifecycle.container_top(Entry(), [])
    assert [row[1] for row in rows] == ["42", "-", "44", "-"]


def test_top_of_a_container_not_running_says_so():
    class Entry:
        name, status = "c1", lifecycle.EXITED
    with pytest.raises(ContainerError, match="top c1: it is not running"):
        lifecycle.container_top(Entry(), [])


def test_top_prints_columns_as_dockers_tabwriter(capsys):
    lifecycle.print_tabbed([["UID", "PID", "CMD"], ["root", "123456789012345678901", "sleep 1"]])
    assert capsys.readouterr().out.splitlines() == [
        "UID                 PID                     CMD",
        "root                123456789012345678901   sleep 1"]


@pytest.mark.parametrize("into", [False, True])
def test_cp_in_never_makes_the_destination_directory_the_container_removed(tmp_path, into):
    """cp checks the destination's directory exists, then writes into it; a
    container that removes it in between (CI met this: a directory swapped for
    a link, caught in the moment between unlink and symlink) must not get a
    new directory made at its name, as deploy's Writer makes missing parents.
    Control (into=False): the Writer alone makes it."""
    import os
    from _minicontainer.rootfs import Op, Plan
    root = tmp_path / "root"
    (root / "race" / "d").mkdir(parents=True)
    rootfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        plan = Plan(rootfd)
        (tmp_path / "f").write_bytes(b"x")
        plan.add(Op("file", "/race/d/f", str(tmp_path / "f"), (0o644, os.geteuid(), os.getegid(), 0, 1)))
        opened = os.open(root / "race" / "d", os.O_RDONLY | os.O_DIRECTORY) if into else None
        (root / "race" / "d").rmdir()  # the container's move, after cp's check
        try:
            transfer.write_plan(rootfd, plan, "cp f c1:/race/d/f",
                                into=("/race/d", opened) if into else None)
        except ContainerError:
            pass
        finally:
            plan.close()
        assert (root / "race" / "d").exists() is not into
    finally:
        os.close(rootfd)
