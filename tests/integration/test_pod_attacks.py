"""Attacks, as an outsider, on what a Kubernetes pod reaches through
containerd's runc shim (issue 26): runc's verbs with the ids an engine
chooses, the files an engine names (--pid-file, --process, config.json,
--log) in places another user may write, and the namespaces a pod joins
by path. Each has its positive control: the same call doing its work."""
import json
import os
import subprocess
import threading
import time

import pytest

from helpers import CLI, Bundle, cli, oci, oci_state as state, wait_for


@pytest.fixture(autouse=True)
def delete_every_container():
    """Whatever a test leaves, passing or not: delete --force, as an engine would."""
    yield
    listed = cli("list", "--format", "json").stdout or b"[]"
    for st in json.loads(listed):
        cli("delete", "--force", st["id"])


@pytest.fixture
def bundle(tmp_path, template_root):
    """`minicontainer spec`'s config.json, writable, with the test root as its rootfs."""
    path = tmp_path / "bundle"
    path.mkdir()
    subprocess.run(["cp", "-a", str(template_root), str(path / "rootfs")], check=True)
    assert cli("spec", "--bundle", path).returncode == 0
    made = Bundle(path)
    made.set(lambda c: (c["root"].update(readonly=False), c["process"].update(terminal=False)))
    made.args("/bin/probe", "sleep", 60)
    return made


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def one_line(result):
    err = result.stderr.decode()
    return err.count("\n") == 1 and err.startswith("minicontainer: ") and "Traceback" not in err


# -- ids: runc finds a container by its full id, never by a prefix -------------

def test_runcs_verbs_reach_no_container_by_a_prefix_of_its_id(bundle):
    """ctr's ids are words an engine's user chooses ("web" beside "web2"), and
    an engine deletes --force a container already gone: a prefix must not
    make kill, exec, ps, pause, state or delete reach another container."""
    assert oci("create", "--bundle", bundle.path, "web2").returncode == 0
    assert oci("start", "web2").returncode == 0
    pid1 = state("web2")["pid"]
    for verb in (["state", "web"], ["kill", "web", "KILL"], ["kill", "--all", "web", "9"],
                 ["exec", "web", "/bin/busybox", "true"], ["ps", "web"], ["pause", "web"],
                 ["update", "--memory", "100000000", "web"], ["start", "web"], ["delete", "web"]):
        result = oci(*verb)
        assert result.returncode != 0 and one_line(result), (verb, result)
        assert b"web2" not in result.stderr, (verb, result.stderr)
    # The engine's delete --force of a container already gone: done, nothing touched.
    assert oci("delete", "--force", "web").returncode == 0
    assert oci("delete", "--force", "we").returncode == 0
    assert alive(pid1) and state("web2")["status"] == "running"
    # The control: by its full id, each reaches it.
    assert oci("exec", "web2", "/bin/busybox", "true").returncode == 0
    assert oci("kill", "web2", "KILL").returncode == 0
    assert wait_for(lambda: not alive(pid1), 10)
    assert oci("delete", "--force", "web2").returncode == 0
    assert oci("state", "web2").returncode != 0


# -- files an engine names, in a directory another user may write --------------

@pytest.fixture
def users_directory(tmp_path):
    """A directory of another user's (nobody's), where root is asked to write,
    and a file of root's that the user would have root overwrite."""
    place = tmp_path / "users"
    place.mkdir()
    os.chown(place, 65534, 65534)
    victim = tmp_path / "victim"
    victim.write_text("root's own\n")
    return place, victim


def plant_link(place, name, target):
    """A symlink the other user made (owned by them, in their directory)."""
    link = place / name
    os.symlink(target, link)
    os.lchown(link, 65534, 65534)
    return link


def test_a_pid_file_written_where_another_user_planted_links_touches_no_other_file(
        bundle, users_directory):
    """create's and exec's --pid-file were written through a temporary file of
    a fixed name, opened through symlinks: a user who could write the
    pid file's directory had root truncate and write any file (fs.protected_
    symlinks is off on some hosts). runc opens its temporary O_EXCL."""
    place, victim = users_directory
    for name in ("c.pid", "e.pid"):
        for planted in (f".{name}.tmp", f".{name}"):  # our old name, and runc's
            plant_link(place, planted, victim)
    assert oci("create", "--bundle", bundle.path, "--pid-file", place / "c.pid", "pf").returncode == 0
    assert oci("start", "pf").returncode == 0
    exec_pid = place / "e.pid"
    execd = oci("exec", "-d", "--pid-file", exec_pid, "pf", "/bin/probe", "sleep", "60")
    assert execd.returncode == 0, execd.stderr
    assert victim.read_text() == "root's own\n"
    # The control: both pid files hold the right pids, and nothing else was made.
    assert int((place / "c.pid").read_text()) == state("pf")["pid"]
    ps = json.loads(oci("ps", "--format", "json", "pf").stdout)
    assert int(exec_pid.read_text()) in ps and len(ps) == 2
    assert sorted(p.name for p in place.iterdir()) == sorted(
        ["c.pid", "e.pid", ".c.pid.tmp", ".c.pid", ".e.pid.tmp", ".e.pid"])
    assert not (place / "c.pid").is_symlink()


@pytest.mark.parametrize("where", ["config.json", "--process", "--resources"])
def test_a_fifo_where_a_json_document_is_read_is_refused_not_waited_on(bundle, tmp_path, where):
    """A FIFO (or a device) at config.json, exec's --process file or update's
    --resources file: one line and 125 at once, never an engine's call hung
    for ever; the same document as a file is read (the control)."""
    assert oci("create", "--bundle", bundle.path, "f1").returncode == 0
    assert oci("start", "f1").returncode == 0
    documents = {"config.json": bundle.path / "config.json",
                 "--process": tmp_path / "process.json", "--resources": tmp_path / "resources.json"}
    document = documents[where]
    if where == "--process":
        document.write_text(json.dumps({"args": ["/bin/busybox", "true"], "cwd": "/",
                                        "user": {"uid": 0, "gid": 0}}))
    elif where == "--resources":
        document.write_text(json.dumps({"pids": {"limit": 100}}))
    call = {"config.json": ["create", "--bundle", bundle.path, "f2"],
            "--process": ["exec", "--process", document, "f1"],
            "--resources": ["update", "--resources", document, "f1"]}[where]
    assert oci(*call).returncode == 0  # the control: a file is read
    if where == "config.json":
        assert oci("delete", "--force", "f2").returncode == 0
    for planted in ("fifo", "/dev/zero"):
        document.unlink()
        if planted == "fifo":
            os.mkfifo(document)
        else:
            os.symlink(planted, document)
        started = time.monotonic()
        result = oci(*call)  # helpers: a 60 s timeout, a hang fails
        assert result.returncode == 125 and one_line(result), (planted, result)
        assert b"not a regular file" in result.stderr, result.stderr
        assert time.monotonic() - started < 15
    assert oci("state", "f2").returncode != 0


def test_a_fifo_at_the_log_path_does_not_hang_the_verb(tmp_path):
    """--log is where the engine reads why a call failed; a FIFO there with
    no reader must not hold the verb (runc's open would wait for a reader);
    a file there gets the line (the control)."""
    log = tmp_path / "log"
    result = cli("--log", log, "--log-format", "json", "state", "nothing-here")
    assert result.returncode != 0 and json.loads(log.read_text())["msg"] == result.stderr.decode(
    ).removeprefix("minicontainer: ").strip()
    log.unlink()
    os.mkfifo(log)
    result = cli("--log", log, "state", "nothing-here", timeout=20)
    assert result.returncode != 0 and one_line(result)
