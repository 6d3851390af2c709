"""Unit tests for deploy: real files in a temporary root, no root needed."""
import os
import stat

import pytest

import minicontainer as mc
from _minicontainer import rootfs


@pytest.fixture
def root(tmp_path):
    path = tmp_path / "root"
    for d in ("bin", "etc", "proc"):
        (path / d).mkdir(parents=True)
    return path


@pytest.fixture
def host(tmp_path):
    """A directory that stands for the host outside the root."""
    path = tmp_path / "host"
    path.mkdir()
    return path


def make(path, text="x", mode=0o755):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


def deploy(root, *args):
    return mc.main(["deploy", "--root", str(root), *map(str, args)])


def test_file_goes_to_bin_with_its_mode(root, host, capsys):
    make(host / "app", "hello", 0o750)
    assert deploy(root, host / "app") == 0
    assert (root / "bin" / "app").read_text() == "hello"
    assert stat.S_IMODE((root / "bin" / "app").stat().st_mode) == 0o750
    assert "deployed 1 file (5 bytes), 0 links, 0 skipped" in capsys.readouterr().out


def test_directory_contents_merge_into_bin(root, host):
    make(root / "bin" / "old")
    make(host / "tree" / "a")
    make(host / "tree" / "sub" / "b")
    (host / "tree" / "ln").symlink_to("a")
    assert deploy(root, host / "tree") == 0
    assert sorted(os.listdir(root / "bin")) == ["a", "ln", "old", "sub"]
    assert (root / "bin" / "sub" / "b").exists()
    assert os.readlink(root / "bin" / "ln") == "a"


def test_to_picks_another_directory_and_creates_it(root, host):
    make(host / "app")
    assert deploy(root, "--to", "/opt/tools", host / "app") == 0
    assert (root / "opt" / "tools" / "app").exists()


def test_replacing_a_file_keeps_no_temporary(root, host):
    make(root / "bin" / "app", "old")
    make(host / "app", "new")
    assert deploy(root, host / "app") == 0
    assert os.listdir(root / "bin") == ["app"]
    assert (root / "bin" / "app").read_text() == "new"


@pytest.mark.parametrize("target", ["/etc", "../../../../../../etc", "HOST"])
def test_planted_symlink_cannot_redirect_a_host_write(root, host, target):
    """bin -> /etc in the root resolves to the root's etc, never the host's."""
    target = str(host) if target == "HOST" else target
    (root / "bin").rmdir()
    (root / "bin").symlink_to(target)
    make(host / "passwd", "host file")
    src = make(host / "src" / "passwd", "evil")
    before = sorted(os.listdir(host))
    code = deploy(root, src)
    assert (host / "passwd").read_text() == "host file"
    assert sorted(os.listdir(host)) == before
    if code == 0:  # it landed inside the root, where the link points there
        landed = [p for p in root.rglob("passwd")]
        assert landed and all(str(p).startswith(str(root)) for p in landed)


def test_planted_file_symlink_is_replaced_not_followed(root, host):
    victim = make(host / "victim", "keep")
    (root / "bin" / "app").symlink_to(victim)
    assert deploy(root, make(host / "src" / "app", "new")) == 0
    assert victim.read_text() == "keep"
    assert not (root / "bin" / "app").is_symlink()


def test_missing_path_fails_before_anything_is_copied(root, host, capsys):
    good = make(host / "good")
    assert deploy(root, good, host / "missing") == 125
    err = capsys.readouterr().err
    assert err == f"minicontainer: deploy {host / 'missing'}: No such file or directory\n"
    assert not (root / "bin" / "good").exists()


def test_unreadable_file_fails_before_anything_is_copied(root, host, capsys, monkeypatch):
    make(host / "tree" / "good")
    bad = make(host / "tree" / "zbad")
    monkeypatch.setattr(rootfs, "readable", lambda path, st: str(path) != str(bad))
    assert deploy(root, host / "tree") == 125
    assert "Permission denied" in capsys.readouterr().err
    assert not (root / "bin" / "good").exists()


def test_failed_copy_leaves_no_half_written_file(root, host, monkeypatch, capsys):
    make(host / "app")

    def broken(op, out):
        os.write(out, b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(rootfs.Writer, "fill", staticmethod(broken))
    assert deploy(root, host / "app") == 125
    assert "No space left on device" in capsys.readouterr().err
    assert os.listdir(root / "bin") == []


def test_special_files_are_skipped_with_a_warning(root, host, capsys):
    make(host / "tree" / "a")
    os.mkfifo(host / "tree" / "fifo")
    assert deploy(root, host / "tree") == 0
    out = capsys.readouterr()
    assert "warning: skipped" in out.err and "fifo" in out.err
    assert os.listdir(root / "bin") == ["a"]


def test_deploy_refuses_a_root_that_is_a_symlink(tmp_path, root, host, capsys):
    (tmp_path / "link").symlink_to(root)
    assert deploy(tmp_path / "link", make(host / "app")) == 125
    assert "is a symlink" in capsys.readouterr().err
