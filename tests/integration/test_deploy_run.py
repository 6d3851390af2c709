"""Deploy, then run for real: dynamic host programs, root filesystem archives
and images, into roots that start empty."""
import os
import subprocess
import tarfile

import pytest

from archives import busybox_rootfs, docker_save, oci_layout, write_tar
from helpers import cli


@pytest.fixture
def empty_root(tmp_path):
    path = tmp_path / "empty"
    (path / "proc").mkdir(parents=True)
    return path


def run_in(root, *args):
    return cli("run", "--root", root, *args)


def test_dynamic_host_programs_run_in_an_empty_root(empty_root):
    assert run_in(empty_root, "ls", "/").returncode == 127  # control: nothing there yet
    result = cli("deploy", "--root", empty_root, "/bin/ls", "/bin/sh")
    assert result.returncode == 0, result.stderr
    listing = run_in(empty_root, "ls", "/")
    assert listing.returncode == 0 and b"bin" in listing.stdout.split()
    assert run_in(empty_root, "sh", "-c", "echo ok").stdout == b"ok\n"


def test_without_deps_the_loader_is_missing(empty_root):
    cli("deploy", "--root", empty_root, "--no-deps", "/bin/ls")
    result = run_in(empty_root, "ls", "/")
    assert result.returncode == 126 and b"ELF interpreter" in result.stderr


def test_origin_relative_library_is_found_in_the_container(tmp_path, empty_root):
    (tmp_path / "lib").mkdir()
    (tmp_path / "bin").mkdir()
    (tmp_path / "l.c").write_text("int mc_answer(void){return 42;}\n")
    (tmp_path / "m.c").write_text("int mc_answer(void);\nint main(void){return mc_answer();}\n")
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", tmp_path / "lib" / "libmcanswer.so",
                    tmp_path / "l.c"], check=True)
    subprocess.run(["gcc", "-o", tmp_path / "bin" / "answer", tmp_path / "m.c", f"-L{tmp_path / 'lib'}",
                    "-lmcanswer", "-Wl,-rpath,$ORIGIN/../lib"], check=True)
    assert subprocess.run([tmp_path / "bin" / "answer"]).returncode == 42
    assert cli("deploy", "--root", empty_root, tmp_path / "bin" / "answer").returncode == 0
    assert run_in(empty_root, "answer").returncode == 42


def test_busybox_rootfs_archive_deploys_and_runs(tmp_path, busybox, empty_root):
    archive = write_tar(tmp_path / "rootfs.tar.gz", busybox_rootfs(busybox), mode="w:gz")
    assert cli("deploy", "--root", empty_root, archive).returncode == 0
    result = run_in(empty_root, "sh", "-c", "echo ok; ls /bin")
    assert result.stdout.split() == [b"ok", b"busybox", b"cat", b"echo", b"ls", b"sh"]


def test_layered_images_deploy_and_run(tmp_path, busybox, empty_root):
    base = busybox_rootfs(busybox) + [("etc", b"", tarfile.DIRTYPE, "", 0o755),
                                      ("etc/motd", b"old\n", tarfile.REGTYPE, "", 0o644)]
    top = [("etc/.wh.motd", b"", tarfile.REGTYPE, "", 0o644),
           ("etc/greeting", b"hello\n", tarfile.REGTYPE, "", 0o644)]
    for image in (docker_save(tmp_path / "image.tar", [base, top]), oci_layout(tmp_path / "oci", [base, top])):
        root = tmp_path / f"root-{image.name}"
        (root / "proc").mkdir(parents=True)
        assert cli("deploy", "--root", root, image).returncode == 0
        assert run_in(root, "sh", "-c", "ls /etc; cat /etc/greeting").stdout == b"greeting\nhello\n"


def test_planted_symlink_in_the_root_does_not_redirect_a_deploy(tmp_path, root, probe):
    somewhere = tmp_path / "somewhere"
    somewhere.mkdir()
    (root / "bin").rename(root / "bin.real")
    (root / "bin").symlink_to(somewhere)
    cli("deploy", "--root", root, probe)
    assert os.listdir(somewhere) == []


def test_hostile_archive_changes_nothing_outside_the_root(tmp_path, empty_root):
    outside = tmp_path / "outside"
    outside.mkdir()
    members = [(f"{outside}/abs", b"x", tarfile.REGTYPE, "", 0o644),
               ("link", b"", tarfile.SYMTYPE, str(outside), 0o777),
               ("dev/sda", b"", tarfile.BLKTYPE, "", 0o600)]
    result = cli("deploy", "--root", empty_root, write_tar(tmp_path / "hostile.tar", members))
    assert result.returncode == 0 and b"skipped" in result.stderr
    assert os.listdir(outside) == []
    assert (empty_root / outside.relative_to("/") / "abs").read_bytes() == b"x"  # inside instead
    assert not (empty_root / "dev" / "sda").exists()
    # A member through the archive's own link to the outside is refused whole.
    through = members[1:2] + [("link/through", b"x", tarfile.REGTYPE, "", 0o644)]
    result = cli("deploy", "--root", empty_root, write_tar(tmp_path / "through.tar", through))
    assert result.returncode == 125 and b"goes through the symlink member /link" in result.stderr
    assert os.listdir(outside) == []


@pytest.fixture(scope="session")
def containerclient(tmp_path_factory):
    """The walkthrough's static hello program, built as the README says."""
    from helpers import REPO, build_static
    return build_static(REPO / "examples" / "containerclient.c",
                        tmp_path_factory.mktemp("hello") / "containerclient")


def test_the_walkthrough_works_verbatim_in_an_empty_directory(tmp_path, containerclient):
    """Someone who installed the tool, not the repository: deploy makes ./newroot."""
    from helpers import CLI
    work = tmp_path / "work"
    work.mkdir()
    (work / "containerclient").write_bytes(containerclient.read_bytes())
    (work / "containerclient").chmod(0o755)
    deployed = subprocess.run([*CLI, "deploy", "./containerclient"], cwd=work, capture_output=True)
    size = (work / "containerclient").stat().st_size
    assert deployed.stdout == f"deployed 1 file ({size} bytes), 0 links, 0 skipped into newroot\n".encode()
    ran = subprocess.run([*CLI, "run", "./containerclient"], cwd=work, capture_output=True)
    assert (ran.returncode, ran.stdout) == (0, b"Hello from the container!\n")
    assert os.listdir(work / "newroot" / "tmp") == []  # no placeholder shows inside
    # run, unlike deploy, makes no root: a missing one stays a clear 125.
    (tmp_path / "elsewhere").mkdir()
    missing = subprocess.run([*CLI, "run", "./containerclient"], cwd=tmp_path / "elsewhere",
                             capture_output=True)
    assert (missing.returncode, missing.stderr) == (
        125, b"minicontainer: root newroot: No such file or directory\n")


def image_tar_with(path, layer_members):
    """The issue's reproduction: a docker save archive of one layer."""
    return docker_save(path, [layer_members], {"architecture": "amd64", "os": "linux", "config": {}})


@pytest.mark.parametrize("whiteout", [".wh...", ".wh..", "sub/.wh..."])
def test_a_whiteout_of_dotdot_leaves_the_directory_around_the_root_alone(tmp_path, whiteout):
    """Issue 21, 1, as filed: `deploy ../evil.tar` in a project directory
    removed the project (the root's parent). Refused in one line; the root the
    deploy made is gone again; the project is as it was."""
    from helpers import CLI
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "NOTES").write_text("keep\n")
    evil = image_tar_with(tmp_path / "evil.tar", [("sub", b"", tarfile.DIRTYPE, "", 0o755),
                                                  (whiteout, b"", tarfile.REGTYPE, "", 0o644)])
    result = subprocess.run([*CLI, "deploy", "../evil.tar"], cwd=proj, capture_output=True, timeout=60)
    assert result.returncode == 125
    assert result.stderr.count(b"\n") == 1 and b"whiteout" in result.stderr, result.stderr
    assert sorted(os.listdir(proj)) == ["NOTES"] and (proj / "NOTES").read_text() == "keep\n"
    # The control: a whiteout of a name the lower layer made removes it, and only it.
    good = docker_save(tmp_path / "good.tar", [[("a", b"1", tarfile.REGTYPE, "", 0o644),
                                                ("b", b"2", tarfile.REGTYPE, "", 0o644)],
                                               [(".wh.a", b"", tarfile.REGTYPE, "", 0o644)]])
    result = subprocess.run([*CLI, "deploy", "../good.tar"], cwd=proj, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert not (proj / "newroot" / "a").exists() and (proj / "newroot" / "b").read_text() == "2"
    assert (proj / "NOTES").read_text() == "keep\n"


@pytest.mark.parametrize("dest", ["oci-archive", "oci"])
def test_skopeos_oci_archive_and_layout_deploy_and_run(tmp_path, busybox, dest):
    """Issue 22: what `skopeo copy` (as podman save --format oci-archive) makes
    from a docker archive, offline; the image's Cmd and Env are what run runs."""
    import shutil
    if shutil.which("skopeo") is None:
        pytest.fail("skopeo is needed: run setup.sh")
    config = {"architecture": "amd64", "os": "linux", "rootfs": {},
              "config": {"Cmd": ["/bin/sh", "-c", "echo $GREETING"], "Env": ["GREETING=from-the-image"]}}
    archive = docker_save(tmp_path / "docker.tar", [busybox_rootfs(busybox)], config)
    image = tmp_path / ("image.oci.tar" if dest == "oci-archive" else "layout")
    copied = subprocess.run(["skopeo", "copy", f"docker-archive:{archive}", f"{dest}:{image}"],
                            capture_output=True, timeout=120)
    assert copied.returncode == 0, copied.stderr
    root = tmp_path / "newroot"
    result = cli("deploy", "--root", root, image)
    assert result.returncode == 0, result.stderr
    ran = run_in(root)
    assert (ran.returncode, ran.stdout) == (0, b"from-the-image\n"), ran.stderr


def test_deploying_the_root_into_itself_is_refused(tmp_path, probe):
    """Issue 22: `deploy ./newroot` copied the root into its own /bin."""
    from helpers import CLI
    work = tmp_path / "work"
    work.mkdir()
    assert subprocess.run([*CLI, "deploy", str(probe)], cwd=work, capture_output=True).returncode == 0
    before = sorted(os.listdir(work / "newroot" / "bin"))
    for source in ("./newroot", ".", "newroot/bin"):
        result = subprocess.run([*CLI, "deploy", source], cwd=work, capture_output=True, timeout=60)
        assert result.returncode == 125, result
        assert result.stderr.count(b"\n") == 1 and b"copy the root into itself" in result.stderr
    assert sorted(os.listdir(work / "newroot" / "bin")) == before == ["probe"]
