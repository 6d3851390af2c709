"""Property-based tests of deploy against hostile archives and images (issue 21).

hypothesis makes the member lists an image author could write: names with '.'
and '..' parts, whiteouts (.wh.NAME) and opaque markers (.wh..wh..opq) in every
place, absolute names, symlinks and hard links with hostile targets, in every
order, as a root filesystem archive, a docker save archive of several layers or
an OCI layout. Whatever the archive, deploy either succeeds or refuses it in one
line with status 125, and:
- nothing outside the root changes (sentinels in the root's parent directory,
  the directory that holds the root on the host, and in a directory that
  hostile links name);
- a refused archive leaves the root exactly as it was (every entry, its type,
  mode, owner and contents), or absent if the deploy made it.
The deploy runs in-process (no root needed); tests/integration has a smaller
property test through the real command line.
"""
import contextlib
import io
import os
import stat
import tarfile
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings, strategies as st

import minicontainer as mc
from archives import docker_save, oci_layout, write_tar

REG, DIR, SYM, LNK, CHR, FIFO = (tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE,
                                 tarfile.CHRTYPE, tarfile.FIFOTYPE)

# The parts names are made of: ordinary names (some the root already has), '.'
# and '..', whiteouts of each, the opaque marker, and near misses.
PARTS = ["a", "b", "c", "d", "f", ".", "..", ".wh.a", ".wh.b", ".wh.f", ".wh..", ".wh...", ".wh.",
         ".wh..wh..opq", ".wh..wh.plnk", ".wh..wh..opq.x", "...", ".wh.a/..", "x y"]


@st.composite
def names(draw):
    parts = draw(st.lists(st.sampled_from(PARTS), min_size=1, max_size=4))
    lead = draw(st.sampled_from(["", "", "", "/", "./", "../", "//"]))
    tail = draw(st.sampled_from(["", "", "", "/"]))
    return lead + "/".join(parts) + tail


@st.composite
def link_targets(draw):
    """Where a symlink or a hard link points: inside, up and out, absolute, at
    the sentinels, at nothing."""
    return draw(st.one_of(
        names(),
        st.sampled_from(["", ".", "..", "/", "../..", "../../..", "/etc/shadow", "/etc", "../parent-note",
                         "../../PARENT_NOTE", "a/../../..", "OUTSIDE", "OUTSIDE/keep", "/proc/self/root"])))


@st.composite
def members(draw):
    name = draw(names())
    kind = draw(st.sampled_from([REG, REG, REG, DIR, DIR, SYM, SYM, LNK, LNK, CHR, FIFO]))
    target = draw(link_targets()) if kind in (SYM, LNK) else ""
    mode = draw(st.sampled_from([0o644, 0o755, 0o000, 0o4755, 0o1777, 0o500]))
    data = draw(st.sampled_from([b"", b"hostile"])) if kind == REG else b""
    return (name, data, kind, target, mode)


layers = st.lists(members(), min_size=1, max_size=8)
images = st.tuples(st.sampled_from(["rootfs", "docker-save", "oci"]),
                   st.lists(layers, min_size=1, max_size=3))


def listing(path):
    """Every entry at and below path: type, mode, owner, contents or link target."""
    out = {}
    if not os.path.lexists(path):
        return None
    for dirpath, dirnames, filenames in os.walk(path):
        for name in ["."] if dirpath == str(path) else []:
            st_ = os.lstat(dirpath)
            out[name] = (stat.S_IFMT(st_.st_mode), stat.S_IMODE(st_.st_mode), st_.st_uid, None)
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            st_ = os.lstat(full)
            body = os.readlink(full) if stat.S_ISLNK(st_.st_mode) else \
                open(full, "rb").read() if stat.S_ISREG(st_.st_mode) else None
            out[os.path.relpath(full, path)] = (stat.S_IFMT(st_.st_mode), stat.S_IMODE(st_.st_mode),
                                                st_.st_uid, body)
    return out


def make_world(top, with_root):
    """parent/ holds the root and sentinels beside it; outside/ is what hostile
    links name. The root has a directory, files and a link of its own."""
    parent, outside = top / "parent", top / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "keep").write_text("outside")
    (parent / "other-root" / "bin").mkdir(parents=True)
    (parent / "other-root" / "bin" / "f").write_text("other")
    (parent / "PARENT_NOTE").write_text("keep")
    (parent / "parent-note").write_text("keep")
    root = parent / "root"
    if with_root:
        (root / "a" / "b").mkdir(parents=True)
        (root / "a" / "f").write_text("mine")
        (root / "c").write_text("mine")
        (root / "d").symlink_to("a")
        (root / "proc").mkdir()
        os.chmod(root / "proc", 0o555)
    return parent, outside, root


def build(top, kind, layer_lists):
    if kind == "rootfs":
        return write_tar(top / "rootfs.tar", [m for layer in layer_lists for m in layer])
    if kind == "docker-save":
        return docker_save(top / "image.tar", layer_lists, {"config": {"Cmd": ["/bin/sh"]}})
    return oci_layout(top / "oci", layer_lists, {"config": {"Cmd": ["/bin/sh"]}})


def deploy_in_process(root, image):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = mc.main(["deploy", "--root", str(root), str(image)])
    return code, err.getvalue()


def check_refusal(code, err):
    assert code in (0, 125), (code, err)
    assert "Traceback" not in err and "internal error" not in err, err
    if code == 125:
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("minicontainer: "), err
        assert "Error(" not in err and "Error:" not in err.split(":", 1)[0], err


def check_deploy(image_kind, layer_lists, with_root):
    with tempfile.TemporaryDirectory(prefix="mc-prop-") as tmp:
        top = Path(tmp)
        parent, outside, root = make_world(top, with_root)
        # The strategies name the outside directory OUTSIDE, before it exists.
        layer_lists = [[(name, data, kind, target.replace("OUTSIDE", str(outside)), mode)
                        for name, data, kind, target, mode in layer] for layer in layer_lists]
        image = build(top, image_kind, layer_lists)
        beside = {name: listing(parent / name) for name in os.listdir(parent) if name != "root"}
        outside_before, root_before = listing(outside), listing(root)
        code, err = deploy_in_process(root, image)
        check_refusal(code, err)
        assert listing(outside) == outside_before, err
        now = {name: listing(parent / name) for name in os.listdir(parent)
               if name not in ("root", "root.image.json")}
        assert now == beside, err
        if code == 125:
            assert listing(root) == root_before, err
            assert os.path.exists(parent / "root.image.json") is False
        else:
            assert os.path.isdir(root) and not os.path.islink(root)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(image=images, with_root=st.booleans())
def test_no_archive_reaches_outside_the_root_and_a_refusal_changes_nothing(image, with_root):
    kind, layer_lists = image
    check_deploy(kind, layer_lists, with_root)


WHITEOUT_PARTS = ["a", "b", "f", ".", "..", ".wh..", ".wh...", ".wh.", ".wh.a", ".wh.f", ".wh..wh..opq"]


@settings(max_examples=300, deadline=None)
@given(layer_lists=st.lists(st.lists(st.tuples(
    st.lists(st.sampled_from(WHITEOUT_PARTS), min_size=1, max_size=3).map("/".join),
    st.just(b""), st.sampled_from([REG, DIR, CHR]), st.just(""), st.just(0o644)),
    min_size=1, max_size=5), min_size=1, max_size=3))
def test_whiteouts_and_opaque_markers_anywhere_stay_inside(layer_lists):
    """Whiteouts alone, denser: every '.'/'..' combination, in every layer."""
    check_deploy("docker-save", layer_lists, True)
