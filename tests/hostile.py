"""Hostile archives for property-based tests of deploy (issue 21), and the
invariants every deploy of one must hold; used in-process by
tests/unit/test_archive_properties.py and through the real command line by
tests/integration/test_archive_properties.py.

hypothesis makes the member lists an image author could write: names with '.'
and '..' parts, whiteouts (.wh.NAME) and opaque markers (.wh..wh..opq) in every
place, absolute names, symlinks and hard links with hostile targets (up and
out, absolute, at sentinels beside the root), in every order, as a root
filesystem archive, a docker save archive of several layers, an OCI layout or
an OCI archive. Whatever the archive, deploy succeeds or refuses it in one line
with status 125, and:
- nothing outside the root changes: the sentinels in the root's parent (the
  directory that holds the root on the host, another root beside it) and in a
  directory that hostile links name;
- a refused archive leaves the root exactly as it was (every entry, its type,
  mode, owner and contents), or absent if the deploy made it.

corruptions() spoils a valid compressed layer (gzip, zstd, bzip2, xz) as a
broken disk, a cut download or an author would: cut at any offset, bytes
flipped anywhere, bytes after its end; its digest is the spoilt blob's, so
only the decompressor can tell. check_corrupt: a cut or a tail is refused, a
flip is refused or changed nothing that is deployed, and nothing is left in
the temporary directory.
"""
import os
import stat
import tarfile
import tempfile
from pathlib import Path

from hypothesis import strategies as st

from archives import compress, docker_save, oci_archive, oci_layout, write_tar

REG, DIR, SYM, LNK, CHR, FIFO = (tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE,
                                 tarfile.CHRTYPE, tarfile.FIFOTYPE)

# The parts names are made of: names the root already has (a, c, d -> a), '.'
# and '..', whiteouts of each, the opaque marker, and near misses of both.
PARTS = ["a", "b", "c", "d", "f", ".", "..", ".wh.a", ".wh.b", ".wh.d", ".wh.f", ".wh..", ".wh...",
         ".wh.", ".wh..wh..opq", ".wh..wh.plnk", ".wh..wh..opq.x", "...", "x y"]
# Where links point. OUTSIDE is the sentinel directory, swapped in per example.
TARGETS = ["", ".", "..", "/", "../..", "../../..", "/etc/shadow", "/etc", "../parent-note",
           "../../PARENT_NOTE", "../../other-root/bin/f", "a/../../..", "OUTSIDE", "OUTSIDE/keep",
           "/proc/self/root", "d", "d/f", "a/f"]


@st.composite
def names(draw):
    parts = draw(st.lists(st.sampled_from(PARTS), min_size=1, max_size=4))
    lead = draw(st.sampled_from(["", "", "", "/", "./", "../", "//"]))
    tail = draw(st.sampled_from(["", "", "", "/"]))
    return lead + "/".join(parts) + tail


@st.composite
def members(draw):
    name = draw(names())
    kind = draw(st.sampled_from([REG, REG, REG, DIR, DIR, SYM, SYM, LNK, LNK, CHR, FIFO]))
    target = draw(st.one_of(names(), st.sampled_from(TARGETS))) if kind in (SYM, LNK) else ""
    mode = draw(st.sampled_from([0o644, 0o755, 0o000, 0o4755, 0o1777, 0o500]))
    data = draw(st.sampled_from([b"", b"hostile"])) if kind == REG else b""
    return (name, data, kind, target, mode)


layers = st.lists(members(), min_size=1, max_size=8)
images = st.tuples(st.sampled_from(["rootfs", "docker-save", "oci", "oci-archive"]),
                   st.lists(layers, min_size=1, max_size=3))

WHITEOUT_PARTS = ["a", "b", "d", "f", ".", "..", ".wh..", ".wh...", ".wh.", ".wh.a", ".wh.d", ".wh.f",
                  ".wh..wh..opq"]
whiteout_layers = st.lists(st.lists(st.tuples(
    st.lists(st.sampled_from(WHITEOUT_PARTS), min_size=1, max_size=3).map("/".join),
    st.just(b""), st.sampled_from([REG, DIR, CHR]), st.just(""), st.just(0o644)),
    min_size=1, max_size=5), min_size=1, max_size=3)


def listing(path):
    """Every entry at and below path: type, mode, owner, contents or link
    target; None if there is nothing at path."""
    if not os.path.lexists(path):
        return None
    def entry(full):
        st_ = os.lstat(full)
        body = os.readlink(full) if stat.S_ISLNK(st_.st_mode) else \
            open(full, "rb").read() if stat.S_ISREG(st_.st_mode) else None
        return (stat.S_IFMT(st_.st_mode), stat.S_IMODE(st_.st_mode), st_.st_uid, body)

    out = {".": entry(path)}
    for dirpath, dirnames, filenames in os.walk(path):  # nothing, unless a directory
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            out[os.path.relpath(full, path)] = entry(full)
    return out


def make_world(top, with_root, root_name="root"):
    """parent/ holds the root, and sentinels beside it; outside/ is what hostile
    links name. The root has a directory, files and a link of its own."""
    parent, outside = top / "parent", top / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "keep").write_text("outside")
    (parent / "other-root" / "bin").mkdir(parents=True)
    (parent / "other-root" / "bin" / "f").write_text("other")
    (parent / "PARENT_NOTE").write_text("keep")
    (parent / "parent-note").write_text("keep")
    root = parent / root_name
    if with_root:
        (root / "a" / "b").mkdir(parents=True)
        (root / "a" / "f").write_text("mine")
        (root / "c").write_text("mine")
        (root / "d").symlink_to("a")
        (root / "proc").mkdir()
        os.chmod(root / "proc", 0o555)
    return parent, outside, root


def build(top, kind, layer_lists, outside):
    """The image, in the form asked, with OUTSIDE made the sentinel directory."""
    layer_lists = [[(name, data, type_, target.replace("OUTSIDE", str(outside)), mode)
                    for name, data, type_, target, mode in layer] for layer in layer_lists]
    config = {"config": {"Cmd": ["/bin/sh"]}}
    if kind == "rootfs":
        return write_tar(top / "rootfs.tar", [m for layer in layer_lists for m in layer])
    if kind == "docker-save":
        return docker_save(top / "image.tar", layer_lists, config)
    if kind == "oci":
        return oci_layout(top / "oci", layer_lists, config)
    return oci_archive(top / "image.oci.tar", top / "layout", layer_lists, config)


def check_refusal(code, err):
    """Success, or one line `minicontainer: ...` with 125: no repr, no traceback."""
    assert code in (0, 125), (code, err)
    assert "Traceback" not in err and "internal error" not in err, err
    if code == 125:
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("minicontainer: "), err
        assert "Error(" not in err, err


def check_deploy(deploy, kind, layer_lists, with_root, root_name="root"):
    """Build the world and the image, deploy(parent, root, image) -> (status,
    stderr), and assert the invariants."""
    with tempfile.TemporaryDirectory(prefix="mc-hostile-") as tmp:
        top = Path(tmp)
        parent, outside, root = make_world(top, with_root, root_name)
        image = build(top, kind, layer_lists, outside)
        kept = {root_name, f"{root_name}.image.json"}
        beside = {name: listing(parent / name) for name in os.listdir(parent) if name not in kept}
        outside_before, root_before = listing(outside), listing(root)
        code, err = deploy(parent, root, image)
        check_refusal(code, err)
        assert listing(outside) == outside_before, err
        assert {name: listing(parent / name) for name in os.listdir(parent) if name not in kept} \
            == beside, err
        if code == 125:
            assert listing(root) == root_before, err
            assert not os.path.lexists(parent / f"{root_name}.image.json"), err
        else:
            assert os.path.isdir(root) and not os.path.islink(root), err
        return code, err


GOOD_LAYER = [("bin", b"", DIR, "", 0o755), ("bin/tool", b"#!/bin/sh\necho tool\n" * 40, REG, "", 0o755),
              ("etc", b"", DIR, "", 0o755), ("etc/motd", bytes(range(256)) * 8, REG, "", 0o644),
              ("ln", b"", SYM, "bin/tool", 0o777)]
GOOD_BLOBS = {}


def good_blob(kind):
    if kind not in GOOD_BLOBS:
        GOOD_BLOBS[kind] = compress(kind, write_tar(None, GOOD_LAYER))
    return GOOD_BLOBS[kind]


@st.composite
def corruptions(draw):
    """(compression, form, how, blob): a valid layer spoilt one way."""
    kind = draw(st.sampled_from(["gzip", "zstd", "bzip2", "xz"]))
    form = draw(st.sampled_from(["oci", "docker-save", "rootfs"]))
    blob = good_blob(kind)
    how = draw(st.sampled_from(["cut", "flip", "tail"]))
    if how == "cut":
        bad = blob[:draw(st.integers(0, len(blob) - 1))]
    elif how == "flip":
        bad = bytearray(blob)
        for at in draw(st.lists(st.integers(0, len(blob) - 1), min_size=1, max_size=4)):
            bad[at] ^= draw(st.integers(1, 255))
        bad = bytes(bad)
    else:
        bad = blob + draw(st.binary(min_size=1, max_size=64).filter(lambda b: b.strip(b"\0")))
    return kind, form, how, bad


def check_corrupt(deploy, case, root_name="root"):
    """Deploy a spoilt layer over a root (deploy(parent, root, image) ->
    (status, stderr)) with a temporary directory of its own; assert the
    invariants."""
    kind, form, how, blob = case
    with tempfile.TemporaryDirectory(prefix="mc-corrupt-") as tmp:
        top = Path(tmp)
        parent, outside, root = make_world(top, True, root_name)
        config = {"config": {"Cmd": ["/bin/sh"]}}
        if form == "oci":
            image = oci_layout(top / "oci", [(kind if kind in ("gzip", "zstd") else None, blob)], config)
        elif form == "docker-save":
            image = docker_save(top / "image.tar", [blob], config)
        else:
            image = top / "rootfs.tar"
            image.write_bytes(blob)
        before = listing(root)
        scratch = top / "tmp"
        scratch.mkdir()
        saved = os.environ.get("TMPDIR"), tempfile.tempdir
        os.environ["TMPDIR"], tempfile.tempdir = str(scratch), str(scratch)
        try:
            code, err = deploy(parent, root, image)
        finally:
            tempfile.tempdir = saved[1]
            if saved[0] is None:
                del os.environ["TMPDIR"]
            else:
                os.environ["TMPDIR"] = saved[0]
        check_refusal(code, err)
        assert os.listdir(scratch) == [], err
        if how != "flip":
            assert code == 125, (how, err)
        if code == 125:
            assert listing(root) == before, err
            assert not os.path.lexists(parent / f"{root_name}.image.json"), err
        else:  # a flip the formats cannot see changed nothing that is deployed
            assert (root / "bin" / "tool").read_bytes() == GOOD_LAYER[1][1], err
            assert (root / "etc" / "motd").read_bytes() == GOOD_LAYER[3][1], err
            assert os.readlink(root / "ln") == "bin/tool", err
        return code, err
