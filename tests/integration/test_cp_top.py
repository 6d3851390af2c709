"""cp and top, for real: docker cp's rules through the CLI against busybox
containers, running and stopped, and the attacks of a hostile container
(symlinks planted and swapped while cp runs, hostile names and archives),
each with its positive control; top's rows only the container's."""
import io
import os
import shutil
import stat
import subprocess
import tarfile

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from helpers import cli, wait_for


@pytest.fixture(autouse=True)
def removed(state_dir):
    """Whatever a test's assertions left running is removed before the leak checks look."""
    yield
    ids = cli("ps", "-a", "-q").stdout.decode().split()
    if ids:
        cli("rm", "-f", *ids)


def detach(root, name, *args, script="sleep 300"):
    """run -d a busybox script; one that says `touch /.ready` has done its
    set-up when this returns."""
    result = cli("run", "--root", root, "-d", "--name", name, *args, "/bin/busybox", "sh", "-c", script)
    assert result.returncode == 0, result.stderr
    if "touch /.ready" in script:
        assert wait_for(lambda: cli("exec", name, "/bin/busybox", "test", "-f", "/.ready")
                        .returncode == 0, 20), "the container's set-up did not finish"
    return result.stdout.decode().strip()


def sh(name, script):
    result = cli("exec", name, "/bin/busybox", "sh", "-c", script)
    assert result.returncode == 0, result.stderr
    return result.stdout.decode()


def one_line_refusal(result, *words):
    """Exit 125, one line `minicontainer: ...` holding each word, no traceback."""
    err = result.stderr.decode()
    assert result.returncode == 125, (result.returncode, err)
    assert err.startswith("minicontainer: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and "Error(" not in err, err
    for word in words:
        assert word in err, err


def tree(path):
    """Every name below path with its kind and bytes (what a leak check compares)."""
    found = {}
    for top, dirs, files in os.walk(path):
        for name in dirs + files:
            full = os.path.join(top, name)
            if os.path.islink(full):
                found[full] = ("link", os.readlink(full))
            elif os.path.isfile(full):
                with open(full, "rb") as f:
                    found[full] = ("file", f.read())
            else:
                found[full] = ("dir", None)
    return found


@pytest.fixture
def host(tmp_path):
    """A host directory outside the root with a secret: what a container must never reach."""
    path = tmp_path / "host"
    path.mkdir()
    (path / "secret").write_text("host secret\n")
    return path


# -- docker's rules -----------------------------------------------------------

def test_cp_copies_a_file_in_and_out_of_a_running_container(root, tmp_path):
    detach(root, "c1")
    src = tmp_path / "hello.txt"
    src.write_text("hello\n")
    os.chmod(src, 0o640)
    assert cli("cp", src, "c1:/tmp/").returncode == 0  # into a directory: its own name
    assert cli("cp", src, "c1:/tmp/renamed").returncode == 0  # a new name
    assert sh("c1", "cat /tmp/hello.txt /tmp/renamed; stat -c '%a %u:%g' /tmp/hello.txt") \
        == "hello\nhello\n640 0:0\n"
    (tmp_path / "newer").write_text("newer\n")
    assert cli("cp", tmp_path / "newer", "c1:/tmp/renamed").returncode == 0  # a file overwritten
    assert sh("c1", "cat /tmp/renamed") == "newer\n"
    sh("c1", "echo made inside > /tmp/inside; chmod 604 /tmp/inside")
    out = tmp_path / "out"
    out.mkdir()
    assert cli("cp", "c1:/tmp/inside", out).returncode == 0
    assert cli("cp", "c1:tmp/inside", out / "other").returncode == 0  # relative: to the root
    assert (out / "inside").read_text() == "made inside\n" == (out / "other").read_text()
    assert oct(os.stat(out / "inside").st_mode & 0o777) == "0o604"
    assert cli("rm", "-f", "c1").returncode == 0


def test_a_relative_host_destination_is_the_callers_working_directory(root, tmp_path):
    """`cp c1:/f copy` wrote /copy, in the host's root directory: a DEST with
    no directory in it went through the container side's rule ("" is "/").
    Controls: `./copy` (which always worked) and an absolute path."""
    detach(root, "c1")
    sh("c1", "echo inside > /tmp/f")
    work = tmp_path / "work"
    work.mkdir()
    name = f"mc-cp-relative-{os.getpid()}"
    try:
        assert cli("cp", "c1:/tmp/f", name, cwd=work).returncode == 0
        assert cli("cp", "c1:/tmp/f", f"./{name}.dot", cwd=work).returncode == 0
        assert cli("cp", "c1:/tmp", f"{name}.dir", cwd=work).returncode == 0
        assert sorted(os.listdir(work)) == sorted([name, f"{name}.dot", f"{name}.dir"])
        assert (work / name).read_text() == "inside\n" == (work / f"{name}.dir" / "f").read_text()
        assert not os.path.lexists(f"/{name}") and not os.path.lexists(f"/{name}.dir")
    finally:
        for path in (f"/{name}", f"/{name}.dir"):
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.lexists(path):
                os.unlink(path)
    assert cli("rm", "-f", "c1").returncode == 0


def test_cp_of_a_directory_follows_docker_rules(root, tmp_path):
    detach(root, "c1", script="mkdir -p /d/sub; echo a > /d/a; echo b > /d/sub/b; echo f > /f;"
                              " touch /.ready; sleep 300")
    out = tmp_path / "out"
    out.mkdir()
    assert cli("cp", "c1:/d", out / "new").returncode == 0  # missing DEST: made, with the contents
    assert sorted(os.listdir(out / "new")) == ["a", "sub"]
    assert cli("cp", "c1:/d", out / "new").returncode == 0  # existing DEST: the directory inside it
    assert (out / "new" / "d" / "sub" / "b").read_text() == "b\n"
    assert cli("cp", "c1:/d/.", out).returncode == 0  # /. : what it holds
    assert (out / "a").read_text() == "a\n" and (out / "sub" / "b").read_text() == "b\n"
    (out / "file").write_text("x")
    one_line_refusal(cli("cp", "c1:/d", out / "file"), "cannot copy a directory")
    one_line_refusal(cli("cp", "c1:/f/", out), "/f/ in container c1: Not a directory")
    one_line_refusal(cli("cp", "c1:/f", out / "missing" / "x"), "no such directory")
    one_line_refusal(cli("cp", "c1:/f", str(out / "nodir") + "/"), "no such directory")
    # And in: the same rules inside the container.
    assert cli("cp", out / "new", "c1:/in").returncode == 0
    assert cli("cp", str(out / "new") + "/.", "c1:/d").returncode == 0
    assert sh("c1", "ls /in /d | tr '\\n' ' '") == "/d: a d sub  /in: a d sub "
    one_line_refusal(cli("cp", out / "new", "c1:/f"), "cannot copy a directory")
    one_line_refusal(cli("cp", out / "file", "c1:/nodir/"), "c1:/nodir/: no such directory")
    one_line_refusal(cli("cp", out / "file", "c1:/nodir/x"), "Could not find the file /nodir in"
                     " container c1")
    assert cli("rm", "-f", "c1").returncode == 0


@pytest.mark.parametrize("args, words", [
    (("c1:/nope", "."), ("cp c1:/nope .: Could not find the file /nope in container c1",)),
    (("c1:/a", "c1:/b"), ("copying between containers is not supported",)),
    (("/tmp/a", "/tmp/b"), ("must specify at least one container source",)),
    (("c1:/bin", "c2:/"), ("not supported",)),
    (("nosuch:/x", "."), ("container nosuch: no such container",)),
    (("/no/such/file", "c1:/"), ("No such file or directory",)),
])
def test_cp_refuses_in_docker_words_in_one_line(root, tmp_path, args, words):
    detach(root, "c1")
    one_line_refusal(cli("cp", *args, cwd=tmp_path), *words)
    assert cli("rm", "-f", "c1").returncode == 0


def test_cp_works_on_a_stopped_container(root, tmp_path):
    detach(root, "c1", script="echo before > /tmp/left")
    assert cli("wait", "c1").stdout == b"0\n"
    out = tmp_path / "out"
    assert cli("cp", "c1:/tmp/left", out).returncode == 0
    assert out.read_text() == "before\n"
    assert cli("cp", out, "c1:/tmp/back").returncode == 0
    assert (root / "tmp" / "back").read_text() == "before\n"
    assert cli("rm", "c1").returncode == 0


def test_cp_tar_streams_on_stdin_and_stdout(root, tmp_path):
    detach(root, "c1", script="mkdir /d; echo a > /d/a; ln -s a /d/l; touch /.ready; sleep 300")
    result = cli("cp", "c1:/d", "-")
    assert result.returncode == 0, result.stderr
    with tarfile.open(fileobj=io.BytesIO(result.stdout)) as tar:
        assert sorted((m.name, m.type) for m in tar) == [
            ("d", tarfile.DIRTYPE), ("d/a", tarfile.REGTYPE), ("d/l", tarfile.SYMTYPE)]
        assert tar.extractfile("d/a").read() == b"a\n"
    stream = io.BytesIO()
    with tarfile.open(fileobj=stream, mode="w") as tar:
        info = tarfile.TarInfo("sub/new")
        info.size, info.mode, info.uid = 3, 0o600, 1234
        tar.addfile(info, io.BytesIO(b"new"))
    assert cli("cp", "-", "c1:/d", input=stream.getvalue()).returncode == 0
    assert sh("c1", "cat /d/sub/new; stat -c '%a %u' /d/sub/new") == "new600 0\n"
    one_line_refusal(cli("cp", "-", "c1:/d/a", input=stream.getvalue()), "must be a directory")
    one_line_refusal(cli("cp", "-", "c1:/d", input=b"not a tar"), "not a readable tar archive")
    assert cli("rm", "-f", "c1").returncode == 0


@pytest.fixture
def userns_root(template_root):
    """A root whose directories above are searchable by the container's root, host uid 200000."""
    import shutil
    import tempfile
    from pathlib import Path
    place = Path(tempfile.mkdtemp(prefix="minicontainer-cp-"))
    place.chmod(0o755)
    subprocess.run(["cp", "-a", str(template_root), str(place / "root")], check=True)
    yield place / "root"
    shutil.rmtree(place)


def test_cp_keeps_owners_with_a_mapped_through_the_user_namespace(userns_root, tmp_path):
    root = userns_root
    detach(root, "c1", "--userns", "private", "--uidmap", "0:200000:65536")
    src = tmp_path / "owned"
    src.write_text("x")
    os.chown(src, 1000, 1001)
    os.chmod(src, 0o4755)
    assert cli("cp", src, "c1:/tmp/plain").returncode == 0  # the container root's
    assert cli("cp", "-a", src, "c1:/tmp/kept").returncode == 0  # its own, mapped
    # Without -a, the container root's, and the setuid bit, another owner's, dropped.
    assert sh("c1", "stat -c '%u:%g %a' /tmp/plain /tmp/kept") == "0:0 755\n1000:1001 4755\n"
    assert os.stat(root / "tmp" / "plain").st_uid == 200000
    st = os.stat(root / "tmp" / "kept")
    assert (st.st_uid, st.st_gid) == (201000, 201001)
    os.chown(src, 70000, 0)  # beyond the container's map: refused, nothing written
    one_line_refusal(cli("cp", "-a", src, "c1:/tmp/unmapped"), "no id in the container's user namespace")
    assert not (root / "tmp" / "unmapped").exists()
    # Out: the caller's, setuid dropped; with -a, the owners the files have.
    assert cli("cp", "c1:/tmp/kept", tmp_path / "back").returncode == 0
    st = os.stat(tmp_path / "back")
    assert (st.st_uid, st.st_mode & 0o7777) == (0, 0o755)
    assert cli("cp", "-a", "c1:/tmp/kept", tmp_path / "back-a").returncode == 0
    st = os.stat(tmp_path / "back-a")
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (201000, 201001, 0o4755)
    assert cli("rm", "-f", "c1").returncode == 0


def test_cp_reaches_a_running_containers_volume_and_refuses_a_stopped_ones(root, tmp_path):
    volume = tmp_path / "vol"
    volume.mkdir()
    detach(root, "c1", "--read-only", "-v", f"{volume}:/vol")
    (tmp_path / "f").write_text("into the volume\n")
    assert cli("cp", tmp_path / "f", "c1:/vol/x").returncode == 0  # docker copies into the volume
    assert (volume / "x").read_text() == "into the volume\n"
    one_line_refusal(cli("cp", tmp_path / "f", "c1:/x"), "Read-only file system")
    assert cli("stop", "-t", "0", "c1").returncode == 0
    one_line_refusal(cli("cp", tmp_path / "f", "c1:/vol/y"), "in the volume /vol", str(volume))
    assert not (root / "vol" / "y").exists() and not (volume / "y").exists()
    assert cli("rm", "c1").returncode == 0


def test_cp_neither_reads_nor_writes_the_kernels_file_systems(root, tmp_path):
    detach(root, "c1")
    one_line_refusal(cli("cp", "c1:/proc/1/environ", tmp_path / "env"), "kernel's proc")
    (tmp_path / "f").write_text("x")
    one_line_refusal(cli("cp", tmp_path / "f", "c1:/proc/sys/kernel/"), "kernel's proc")
    out = tmp_path / "whole"
    assert cli("cp", "c1:/", out).returncode == 0  # the root: /proc and /sys as empty directories
    assert os.listdir(out / "proc") == [] and os.listdir(out / "sys") == []
    assert (out / "bin" / "busybox").stat().st_size > 0
    assert not [p for p in (out / "dev").iterdir()
                if stat.S_ISCHR(p.lstat().st_mode) or stat.S_ISBLK(p.lstat().st_mode)]
    assert cli("rm", "-f", "c1").returncode == 0


# -- attacks: the container plants links, swaps them, and names things ----------

def test_a_symlink_planted_in_the_container_never_leads_cp_to_the_hosts_files(root, tmp_path, host):
    detach(root, "c1", script=f"echo container-passwd > /etc/passwd; ln -s /etc /link;"
                              f" ln -s {host} /hostlink; ln -s ../../../../../../../../{host} /dotdot;"
                              f" mkdir /d; ln -s /etc/passwd /d/pw; touch /.ready; sleep 300")
    out = tmp_path / "out"
    # Positive control: through the link, the container's own /etc/passwd.
    assert cli("cp", "c1:/link/passwd", out).returncode == 0
    assert out.read_text() == "container-passwd\n"
    with open("/etc/passwd") as f:
        assert "root:" in f.read()  # the host's is another file
    # The host's directory, named by an absolute or a climbing link: not found inside.
    for link in ("/hostlink/secret", "/dotdot/secret", "/../../../../" + str(host) + "/secret"):
        one_line_refusal(cli("cp", f"c1:{link}", tmp_path / "stolen"), "Could not find the file")
        assert not (tmp_path / "stolen").exists()
    # A link copied out is a link, never what it points at on the host.
    assert cli("cp", "c1:/d", tmp_path / "d").returncode == 0
    assert os.readlink(tmp_path / "d" / "pw") == "/etc/passwd"
    # Writes: through the link, into the container's /etc; never the host's.
    (tmp_path / "f").write_text("written\n")
    before = tree(host)
    assert cli("cp", tmp_path / "f", "c1:/link/x").returncode == 0  # positive control
    assert (root / "etc" / "x").read_text() == "written\n" and not os.path.exists("/etc/x")
    for dest in ("c1:/hostlink/secret", "c1:/hostlink/", "c1:/dotdot/new"):
        result = cli("cp", tmp_path / "f", dest)
        assert result.returncode in (0, 125), result.stderr
    assert tree(host) == before
    assert cli("rm", "-f", "c1").returncode == 0


def test_a_symlink_planted_in_a_stopped_container_never_leads_cp_out(root, tmp_path, host):
    detach(root, "c1", script=f"ln -s {host} /hostlink; echo mine > /mine")
    assert cli("wait", "c1").stdout == b"0\n"
    assert cli("cp", "c1:/mine", tmp_path / "mine").returncode == 0  # positive control
    one_line_refusal(cli("cp", "c1:/hostlink/secret", tmp_path / "stolen"), "Could not find")
    (tmp_path / "f").write_text("x")
    before = tree(host)
    cli("cp", tmp_path / "f", "c1:/hostlink/planted")
    assert tree(host) == before and not (host / "planted").exists()
    assert cli("rm", "c1").returncode == 0


def test_a_directory_swapped_for_a_symlink_while_cp_runs_never_leads_out(root, tmp_path, host):
    """The container swaps /race/d between a directory and a symlink to the
    host's directory as fast as it can while cp copies in and out of it."""
    detach(root, "c1", script=f"mkdir -p /race/real; echo inside > /race/real/secret; touch /.ready;"
                              f" while true; do ln -sfn {host} /race/d; ln -sfn real /race/d; done")
    (tmp_path / "f").write_text("from the host\n")
    before = tree(host)
    # At least 40 rounds, and on until the race has gone both ways: how often
    # cp meets the directory depends on the scheduler (4 to 19 of 40 on a
    # quiet host, none in 40 once on a loaded CI machine).
    inside = refused = 0
    for i in range(400):
        if i >= 40 and inside and refused:
            break
        result = cli("cp", f"c1:/race/d/secret", tmp_path / f"got{i}")
        if result.returncode == 0:
            got = (tmp_path / f"got{i}").read_text()
            assert got == "inside\n", got  # the container's file, or nothing: never the host's
            inside += 1
        else:
            one_line_refusal(result, "Could not find the file")
            refused += 1
        result = cli("cp", tmp_path / "f", f"c1:/race/d/in{i}")
        assert result.returncode in (0, 125), result.stderr
    assert inside > 0  # positive control: the race let cp through to the container's file
    assert refused > 0  # and the race was run: cp also met the link to the host's directory
    assert tree(host) == before
    assert cli("rm", "-f", "c1").returncode == 0


NAMES = st.one_of(
    st.sampled_from(["..", "../..", "/../../..", "/./.././", "a/../../..", "\n", "a\nb", "-",
                     "x" * 256, "/x" * 2100, "//", ".", "/.", "a/", " ", "é", "\\", ":"]),
    st.lists(st.sampled_from(["..", ".", "a", "etc", "link", "passwd", "\n", "", "x" * 300]),
             min_size=1, max_size=8).map("/".join),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=40),
)


@pytest.fixture
def names_container(root, host):
    detach(root, "c1", script=f"ln -s /etc /link; ln -s {host} /hostlink; touch /.ready; sleep 300")
    yield root, host
    assert cli("rm", "-f", "c1").returncode == 0


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=NAMES)
def test_hostile_container_paths_are_refused_in_one_line_or_stay_inside(names_container, tmp_path, name):
    """Whatever a container path holds, cp exits 0 or 125 with one line, and
    writes nothing outside the root and the destination asked for."""
    root, host = names_container
    base = tmp_path / f"example{len(os.listdir(tmp_path))}"
    base.mkdir()
    src = base / "f"
    src.write_text("x")
    before, around = tree(host), set(os.listdir(tmp_path))
    for args in (("c1:" + name, base / "out"), (src, "c1:" + name), ("c1:" + name, "-")):
        result = cli("cp", *args)
        err = result.stderr.decode()
        assert result.returncode in (0, 125), err
        assert "Traceback" not in err and "internal error" not in err, err
        if result.returncode:
            assert err.startswith("minicontainer: ") and err.count("\n") == 1, err
    assert tree(host) == before and set(os.listdir(tmp_path)) == around
    assert set(os.listdir(base)) <= {"f", "out"}


def hostile_tar(members):
    stream = io.BytesIO()
    with tarfile.open(fileobj=stream, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, target in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = target or ""
            info.mode = 0o4755
            if kind == tarfile.CHRTYPE:
                info.devmajor, info.devminor = 1, 1  # /dev/mem
            data = b"payload" if kind == tarfile.REGTYPE else b""
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return stream.getvalue()


MEMBER_NAMES = st.one_of(st.sampled_from(["../escape", "/abs", "a/../../escape", "ok", "d/ok",
                                          "hostlink/planted", "link/planted", "a\nb", "x" * 300,
                                          "nul\0name", "."]),
                         st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20))
MEMBERS = st.lists(st.tuples(MEMBER_NAMES, st.sampled_from([tarfile.REGTYPE, tarfile.DIRTYPE,
                                                             tarfile.SYMTYPE, tarfile.LNKTYPE,
                                                             tarfile.CHRTYPE, tarfile.FIFOTYPE]),
                             st.sampled_from([None, "/etc/passwd", "../../../../etc/passwd", "ok",
                                              "/hostlink/secret"])),
                   min_size=1, max_size=6)


@pytest.fixture
def drop_container(root, host):
    detach(root, "c1", script=f"mkdir /drop; ln -s /etc /drop/link; ln -s {host} /drop/hostlink;"
                              f" touch /.ready; sleep 300")
    yield root, host
    assert cli("rm", "-f", "c1").returncode == 0


def test_an_archive_on_stdin_lands_in_the_container(drop_container):
    root, _ = drop_container
    # Positive controls: a plain archive lands; one through the container's link, in its /etc.
    assert cli("cp", "-", "c1:/drop", input=hostile_tar([("ok", tarfile.REGTYPE, None)])).returncode == 0
    assert (root / "drop" / "ok").read_bytes() == b"payload"
    assert cli("cp", "-", "c1:/drop",
               input=hostile_tar([("link/planted", tarfile.REGTYPE, None)])).returncode == 0
    assert (root / "etc" / "planted").exists() and not os.path.exists("/etc/planted")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(members=MEMBERS)
def test_hostile_archives_on_stdin_stay_inside_the_root(drop_container, tmp_path, members):
    root, host = drop_container
    before, around = tree(host), set(os.listdir(tmp_path))
    result = cli("cp", "-", "c1:/drop", input=hostile_tar(members))
    err = result.stderr.decode()
    assert result.returncode in (0, 125), err
    assert "Traceback" not in err and "internal error" not in err, err
    if result.returncode:
        assert err.startswith("minicontainer: ") and err.count("\n") == 1, err
    assert tree(host) == before and set(os.listdir(tmp_path)) == around
    assert not os.path.exists("/abs") and not os.path.exists("/etc/planted")
    for path in tree(root):  # no device node or FIFO made; no file of the host's linked in
        st_ = os.lstat(path)
        assert not (stat.S_ISCHR(st_.st_mode) or stat.S_ISBLK(st_.st_mode)
                    or stat.S_ISFIFO(st_.st_mode)) or path.startswith(str(root / "dev")), path
        if stat.S_ISREG(st_.st_mode) and st_.st_nlink > 1:
            assert st_.st_ino != os.stat("/etc/passwd").st_ino, path


# -- top --------------------------------------------------------------------

def test_top_shows_the_containers_processes_and_no_host_process(root, tmp_path):
    detach(root, "c1", script="/bin/busybox sleep 301 & /bin/busybox sleep 302")
    host_sleep = subprocess.Popen(["sleep", "303"])
    try:
        assert wait_for(lambda: len(cli("top", "c1").stdout.splitlines()) == 3, 10)  # both sleeps
        result = cli("top", "c1")
        assert result.returncode == 0, result.stderr
        lines = result.stdout.decode().splitlines()
        assert lines[0].split() == ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
        assert lines[0].startswith("UID                 PID                 PPID")  # docker's widths
        rows = [line.split(None, 7) for line in lines[1:]]
        commands = sorted(row[7] for row in rows)
        assert commands == ["/bin/busybox sh -c /bin/busybox sleep 301 & /bin/busybox sleep 302",
                            "/bin/busybox sleep 301"] or commands == [
                            "/bin/busybox sleep 301", "/bin/busybox sleep 302"], commands
        pids = {int(row[1]) for row in rows}
        assert host_sleep.pid not in pids and os.getpid() not in pids
        listed = cli("ps", "c1").stdout.decode().split()[1:]  # the host pids of its processes
        assert pids == {int(p) for p in listed}
        custom = cli("top", "c1", "-o", "pid,comm")
        assert custom.returncode == 0, custom.stderr
        assert custom.stdout.decode().splitlines()[0].split() == ["PID", "COMMAND"]
        assert {int(line.split()[0]) for line in custom.stdout.decode().splitlines()[1:]} == pids
        one_line_refusal(cli("top", "c1", "-o", "user=PID"), "not allowed")
        one_line_refusal(cli("top", "c1", "-o", "comm"), "Couldn't find PID field in ps output")
        one_line_refusal(cli("top", "c1", "--no-such-option"), "top c1: ps")
    finally:
        host_sleep.kill()
        host_sleep.wait()
    assert cli("stop", "-t", "0", "c1").returncode == 0
    one_line_refusal(cli("top", "c1"), "top c1: it is not running")
    assert cli("rm", "c1").returncode == 0


def test_a_wide_and_deep_tree_copies_out_whole(root, tmp_path):
    """A directory of 3,000 entries, and one 300 deep: one descriptor a level."""
    detach(root, "c1", script="mkdir /wide && cd /wide && /bin/busybox seq 3000 | /bin/busybox xargs"
                              " /bin/busybox touch && cd / && p=/deep && for i in $(/bin/busybox seq 300);"
                              " do p=$p/d; done && mkdir -p $p && echo bottom > $p/f && sleep 300")
    for _ in range(100):  # the script has made both when /deep's file is there
        if cli("exec", "c1", "/bin/busybox", "test", "-f", "/deep" + "/d" * 300 + "/f").returncode == 0:
            break
    else:
        pytest.fail("the container did not make its tree")
    result = cli("cp", "c1:/", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert len(os.listdir(tmp_path / "out" / "wide")) == 3000
    assert (tmp_path / "out" / "deep" / ("d/" * 300) / "f").read_text() == "bottom\n"


def test_a_users_setuid_file_copied_in_never_becomes_a_setuid_root_file(root, tmp_path):
    """The container root is the host's root here: without -a, a setuid bit
    that was uid 1000's is dropped with its owner. Control: -a keeps both."""
    detach(root, "c1")
    src = tmp_path / "tool"
    src.write_bytes(b"#!/bin/sh\n")
    os.chown(src, 1000, 1000)
    os.chmod(src, 0o6755)
    assert cli("cp", src, "c1:/bin/tool").returncode == 0
    st_ = os.stat(root / "bin" / "tool")
    assert (st_.st_uid, st_.st_mode & 0o7777) == (0, 0o755)
    assert cli("cp", "-a", src, "c1:/bin/kept").returncode == 0
    st_ = os.stat(root / "bin" / "kept")
    assert (st_.st_uid, st_.st_mode & 0o7777) == (1000, 0o6755)
    os.chown(src, 0, 0)  # root's own setuid file stays root's, as docker copies it
    os.chmod(src, 0o4755)
    assert cli("cp", src, "c1:/bin/roots").returncode == 0
    assert os.stat(root / "bin" / "roots").st_mode & 0o7777 == 0o4755


def test_cp_sees_a_rm_containers_overlay_and_follows_a_link_only_with_L(root, tmp_path):
    """--rm: the container's writes are in an overlay, and so are cp's (the
    root's directory is left as it was); -L copies what a link names."""
    result = cli("run", "--root", root, "-d", "--rm", "--name", "c1", "/bin/busybox", "sh", "-c",
                 "echo target > /t; ln -s /t /l; sleep 300")
    assert result.returncode == 0, result.stderr
    assert wait_for(lambda: cli("exec", "c1", "/bin/busybox", "test", "-L", "/l").returncode == 0, 10)
    (tmp_path / "f").write_text("in the overlay\n")
    assert cli("cp", tmp_path / "f", "c1:/f").returncode == 0
    assert sh("c1", "cat /f") == "in the overlay\n" and not (root / "f").exists()
    assert cli("cp", "c1:/l", tmp_path / "link").returncode == 0
    assert os.readlink(tmp_path / "link") == "/t"  # without -L: the link itself
    assert cli("cp", "-L", "c1:/l", tmp_path / "followed").returncode == 0
    assert (tmp_path / "followed").read_text() == "target\n" and not (tmp_path / "followed").is_symlink()
    assert cli("rm", "-f", "c1").returncode == 0
