"""Deploy when things go wrong: a refused archive, a deploy killed midway, a
FIFO where a file was expected. The root is left as it was, or with whole
files only; what a killed deploy leaves is swept by the next one."""
import os
import signal
import subprocess
import tarfile
import threading
import time

import pytest

import minicontainer as mc
from _minicontainer import elf, rootfs
from archives import docker_save, write_tar
from helpers import CLI

REG, DIR, SYM = tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE


@pytest.fixture
def root(tmp_path):
    path = tmp_path / "root"
    (path / "etc").mkdir(parents=True)
    (path / "etc" / "kept").write_text("before")
    return path


def deploy(root, *args):
    return mc.main(["deploy", "--root", str(root), *map(str, args)])


def snapshot(root):
    """Every path below the root, with a file's bytes or a link's target."""
    found = {}
    for top, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(top, name)
            if os.path.islink(path):
                found[path] = ("link", os.readlink(path))
            elif os.path.isfile(path):
                found[path] = ("file", open(path, "rb").read())
            else:
                found[path] = ("dir", None)
    return found


@pytest.mark.parametrize("members, why", [
    ([("first", b"1", REG, "", 0o644), ("ln", b"", SYM, "/etc", 0o777), ("ln/passwd", b"x", REG, "", 0o644)],
     "goes through the symlink member /ln"),
    ([("first", b"1", REG, "", 0o644), ("x" * 300, b"x", REG, "", 0o644)], "the name is too long"),
    ([("first", b"1", REG, "", 0o644), ("f", b"x", REG, "", 0o644), ("f", b"", DIR, "", 0o755)],
     "is both a directory and a file"),
    ([("first", b"1", REG, "", 0o644), ("f", b"x", REG, "", 0o644), ("f/g", b"x", REG, "", 0o644)],
     "lies inside the file member /f"),
    ([("first", b"1", REG, "", 0o644), ("etc/kept/under", b"x", REG, "", 0o644)],
     "/etc/kept is a file in the root, where a directory is needed"),
    ([("first", b"1", REG, "", 0o644), ("../../escape", b"x", REG, "", 0o644)], "refused"),
])
def test_a_refused_archive_leaves_the_root_as_it_was(tmp_path, root, capsys, members, why):
    before = snapshot(root)
    archive = write_tar(tmp_path / "bad.tar", members)
    assert deploy(root, archive) == 125
    err = capsys.readouterr().err
    assert why in err and err.count("\n") == 1
    assert snapshot(root) == before
    # Control: the well-formed part of it deploys.
    assert deploy(root, write_tar(tmp_path / "good.tar", members[:1])) == 0
    assert (root / "first").read_bytes() == b"1"


def test_a_refused_image_leaves_the_root_as_it_was(tmp_path, root, capsys):
    good = [("bin", b"", DIR, "", 0o755), ("bin/tool", b"t", REG, "", 0o755)]
    bad = [("lib", b"", SYM, "/usr/lib", 0o777), ("lib/x.so", b"x", REG, "", 0o644)]
    before = snapshot(root)
    assert deploy(root, docker_save(tmp_path / "image.tar", [good, bad])) == 125
    assert "goes through the symlink member /lib" in capsys.readouterr().err
    assert snapshot(root) == before


def staging(root):
    return [name for name in os.listdir(root) if name.startswith(rootfs.STAGING)]


def slow_archive(path, size=256 << 20):
    """A gzipped archive with one big member of zeros: quick to make, slow to unpack."""
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        info = tarfile.TarInfo("big")
        info.size = size
        zeros = open("/dev/zero", "rb")

        class Limited:
            def __init__(self):
                self.left = size

            def read(self, n=-1):
                n = self.left if n < 0 else min(n, self.left)
                self.left -= n
                return zeros.read(n)
        tar.addfile(info, Limited())
    return path


@pytest.fixture(scope="module")
def big_archive(tmp_path_factory):
    return slow_archive(tmp_path_factory.mktemp("big") / "big.tar.gz")


@pytest.mark.parametrize("existing", [False, True])
def test_a_deploy_killed_midway_leaves_no_torn_file(root, big_archive, existing):
    if existing:
        (root / "big").write_text("the old one")
    proc = subprocess.Popen([*CLI, "deploy", "--root", root, big_archive],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # Wait until the member is being written, in the staging directory.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            stage = staging(root)
            if stage and any(os.path.getsize(root / stage[0] / n) > 0
                             for n in os.listdir(root / stage[0])):
                break
            time.sleep(0.01)
        else:
            pytest.fail("the deploy never started writing")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    # The final name holds the old file, or nothing; never a torn new one.
    if existing:
        assert (root / "big").read_text() == "the old one"
    else:
        assert not (root / "big").exists()
    assert len(staging(root)) == 1  # what was being written: swept by the next deploy
    (root / "small").mkdir()
    assert deploy(root, "--to", "/small", "/bin/true") == 0
    assert staging(root) == []


def test_a_live_deploys_staging_is_not_swept(root, big_archive):
    proc = subprocess.Popen([*CLI, "deploy", "--root", root, big_archive],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while not staging(root) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert deploy(root, "--no-deps", "/bin/true") == 0  # a second deploy meanwhile
        assert proc.wait(60) == 0, proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()
    assert (root / "big").stat().st_size == 256 << 20 and (root / "bin" / "true").exists()
    assert staging(root) == []


def test_a_fifo_is_never_read_as_a_program(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    done = threading.Event()
    threading.Thread(target=lambda: (elf.read_elf_info(str(fifo)), done.set()), daemon=True).start()
    assert done.wait(5)  # a blocking open would wait for a writer forever
    assert elf.read_elf_info(str(fifo)) is None


def test_deploy_makes_a_missing_root_with_the_skeleton(tmp_path, capsys):
    root = tmp_path / "newroot"
    assert deploy(root, "--no-deps", "/bin/true") == 0
    assert sorted(os.listdir(root)) == sorted(name for name, _ in rootfs.SKELETON)
    assert stat_mode(root / "tmp") == 0o1777 and stat_mode(root / "proc") == 0o555
    assert "made the root" in capsys.readouterr().err
    # Not its parents: a typo should not build a tree.
    assert deploy(tmp_path / "no" / "such" / "root", "/bin/true") == 125
    assert not (tmp_path / "no").exists()
    # --dry-run makes nothing, and says what it would make.
    assert mc.main(["deploy", "--root", str(tmp_path / "other"), "--dry-run", "/bin/true"]) == 0
    assert "mkdir /proc (the skeleton)" in capsys.readouterr().out
    assert not (tmp_path / "other").exists()


def stat_mode(path):
    return os.stat(path).st_mode & 0o7777
