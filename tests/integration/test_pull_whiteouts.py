"""pull of an image whose layer whites out '.' or '..' (issue 21, 1): pull
applies the layers into a new directory beside the root, so `..` of it is the
directory that holds the root, its image files and other roots. Refused while
the layer is planned; nothing beside the root is touched and a root that was
there stays as it was."""
import os

import pytest

import registry_fixture as rf
from helpers import cli

pytestmark = pytest.mark.skipif(
    not (rf.have_program("docker-registry") and rf.have_program("skopeo")),
    reason="docker-registry and skopeo (setup.sh installs them) serve and push the test images")


def tree(path):
    """Each entry below path: its mode and bytes or link target."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            found[os.path.relpath(full, path)] = (st.st_mode, os.readlink(full) if os.path.islink(full)
                                                  else open(full, "rb").read() if os.path.isfile(full)
                                                  else None)
    return found


@pytest.mark.parametrize("name", [".wh...", ".wh..", "etc/.wh...", "etc/.wh.."])
def test_a_pulled_whiteout_of_dot_or_dotdot_touches_nothing(tmp_path, registry, name):
    work = tmp_path / "work"
    work.mkdir()
    (work / "NOTES").write_text("keep")
    (work / "other-root").mkdir()
    (work / "other-root" / "f").write_text("keep")
    good = rf.make_oci_layout(tmp_path / "good", [rf.busybox_rootfs()])
    rf.push(good, registry, "test/good:1")
    evil = rf.make_oci_layout(tmp_path / "evil", [rf.busybox_rootfs(), {name: b""}])
    rf.push(evil, registry, "test/evil:1")
    pulled = cli("pull", "--root", work / "root", "--cache", tmp_path / "cache",
                 f"{registry.hostport}/test/good:1")
    assert pulled.returncode == 0, pulled.stderr  # the control
    before = tree(work)
    refused = cli("pull", "--root", work / "root", "--cache", tmp_path / "cache",
                  f"{registry.hostport}/test/evil:1")
    err = refused.stderr.decode()
    assert refused.returncode == 125 and len(err.splitlines()) == 1 and "whiteout" in err, err
    assert tree(work) == before  # the root, its image file, NOTES and the other root
