"""Compressed layers that expand past reason (an outside attacker's findings):
a 9.6 KB zstd layer became 300 MB of temporary file before anything was
checked. Every layer and archive is read as it decompresses, never spilled
to disk; its stream is bounded (imageformat.LAYER_RATIO, LAYER_FLOOR); what
its members write must fit in the root's file system (Plan.take). Each runs
the real command line with no file allowed past FSIZE (RLIMIT_FSIZE): a
temporary file the size of the stream, or a member written before the
refusal, fails it."""
import os
import resource
import subprocess
import tarfile

import pytest

from archives import END, big_member, compress, docker_save, oci_layout, sparse_member, write_tar, zeros
from helpers import CLI
from _minicontainer import imageformat

FSIZE = 64 << 20  # bytes: no file the deploy writes may grow past it
HELLO = write_tar(None, [("hello", b"hi\n", tarfile.REGTYPE, "", 0o644)])  # ends with its zero blocks


def image(tmp_path, form, compression, blob):
    config = {"config": {"Cmd": ["/hello"]}}
    if form == "oci":
        return oci_layout(tmp_path / "oci", [(compression, blob)], config)
    return docker_save(tmp_path / "image.tar", [blob], config)


def deploy_capped(tmp_path, source):
    """deploy into tmp_path/root, no file past FSIZE, a temporary directory of its own:
    (status, stderr, what is left in that directory)."""
    scratch = tmp_path / "scratch"
    scratch.mkdir(exist_ok=True)

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (FSIZE, FSIZE))
    result = subprocess.run([*CLI, "deploy", "--root", str(tmp_path / "root"), str(source)],
                            capture_output=True, timeout=600, preexec_fn=limit,
                            env=dict(os.environ, TMPDIR=str(scratch)))
    return result.returncode, result.stderr.decode(errors="replace"), os.listdir(scratch)


def one_line(err, *words):
    assert err.count("\n") == 1 and err.startswith("minicontainer: "), err
    assert "Error(" not in err and "internal error" not in err, err
    for word in words:
        assert word in err, err


BOMB = imageformat.LAYER_FLOOR + (64 << 20)  # zero bytes: past the floor, far past the ratio


@pytest.fixture(scope="module")
def zstd_bombs():
    pytest.importorskip("zstandard")
    return {"zeros after the end": compress("zstd", [HELLO, *zeros(BOMB)]),
            "one member of zeros": compress("zstd", [big_member("big", BOMB), *zeros(BOMB), END])}


@pytest.mark.parametrize("form", ["oci", "docker-save"])
@pytest.mark.parametrize("shape", ["zeros after the end", "one member of zeros"])
def test_a_zstd_bomb_is_refused_in_one_line_before_it_writes(tmp_path, zstd_bombs, form, shape):
    blob = zstd_bombs[shape]
    assert len(blob) * imageformat.LAYER_RATIO < BOMB  # the ratio an attacker picks
    code, err, left = deploy_capped(tmp_path, image(tmp_path, form, "zstd", blob))
    assert code == 125, err
    one_line(err, "zstd stream expands past")
    assert left == [] and not os.path.lexists(tmp_path / "root")  # the root it made is gone again


def test_a_zstd_layer_streams_into_the_root_without_a_temporary_file(tmp_path):
    """The control, and what failed before: a layer whose stream is 200 MB
    (zero blocks after its end, under the floor) deploys though no file may
    pass 64 MB; the temporary file it went through before could not."""
    pytest.importorskip("zstandard")
    blob = compress("zstd", [HELLO, *zeros(200 << 20)])
    code, err, left = deploy_capped(tmp_path, image(tmp_path, "oci", "zstd", blob))
    assert code == 0, err
    assert (tmp_path / "root" / "hello").read_bytes() == b"hi\n" and left == []


def test_a_gzip_layer_of_endless_zero_blocks_writes_nothing_of_them(tmp_path):
    """gzip too: what its stream holds after the archive's end is read and checked, never written."""
    blob = compress("gzip", [HELLO, *zeros(200 << 20)])
    code, err, left = deploy_capped(tmp_path, image(tmp_path, "oci", "gzip", blob))
    assert code == 0, err
    assert (tmp_path / "root" / "hello").read_bytes() == b"hi\n" and left == []


@pytest.mark.parametrize("compression", [None, "gzip", "zstd"])
def test_a_huge_sparse_member_is_refused_before_it_writes(tmp_path, compression):
    """A sparse member of 1 PiB is one block in the archive; extracting it
    writes every byte of its holes. Refused while planning: the root's file
    system has not that room. The control: a sparse member of 1 MiB deploys."""
    if compression == "zstd":
        pytest.importorskip("zstandard")

    def layer(size):
        tar = sparse_member("sparse", size) + END
        return compress(compression, tar) if compression else tar

    root = tmp_path / "root"
    root.mkdir()
    (root / "kept").write_text("before")
    code, err, left = deploy_capped(tmp_path, image(tmp_path, "oci", compression, layer(1 << 50)))
    assert code == 125, err
    one_line(err, "its files need 1125899906842624 bytes", "free; refused")
    assert sorted(os.listdir(root)) == ["kept"] and left == []
    (tmp_path / "oci").rename(tmp_path / "big-oci")
    code, err, left = deploy_capped(tmp_path, image(tmp_path, "oci", compression, layer(1 << 20)))
    assert code == 0, err
    data = (root / "sparse").read_bytes()
    assert len(data) == 1 << 20 and data.endswith(b"x" * 512) and not data.rstrip(b"x").strip(b"\0")


def test_a_truncated_gzip_layer_whose_digest_matches_is_refused(tmp_path):
    """The issue's case: the blob is the image's own (its digest matches) but
    cut short. It ended 'interrupted' with 130; now one line, 125, the root as it was."""
    good = compress("gzip", write_tar(None, [("hello", b"hi\n" * 1000, tarfile.REGTYPE, "", 0o644)]))
    root = tmp_path / "root"
    root.mkdir()
    (root / "kept").write_text("before")
    code, err, left = deploy_capped(tmp_path, image(tmp_path, "oci", "gzip", good[:len(good) // 2]))
    assert code == 125, err
    one_line(err, "truncated gzip stream")
    assert os.listdir(root) == ["kept"] and left == []
    (tmp_path / "oci").rename(tmp_path / "cut-oci")
    code, err, left = deploy_capped(tmp_path, image(tmp_path, "oci", "gzip", good))
    assert code == 0, err
    assert (root / "hello").read_bytes() == b"hi\n" * 1000


def test_a_member_larger_than_the_disk_is_refused_at_its_header(tmp_path):
    """A member that says it is 1 PiB is refused when its header is read, not
    after its bytes have been decompressed (here there are only 1 MiB of them:
    reading on would have found the stream cut short instead)."""
    blob = compress("gzip", [big_member("big", 1 << 50), *zeros(1 << 20)])
    code, err, left = deploy_capped(tmp_path, image(tmp_path, "oci", "gzip", blob))
    assert code == 125, err
    one_line(err, "its files need 1125899906842624 bytes or more")
    assert left == [] and not os.path.lexists(tmp_path / "root")


@pytest.mark.parametrize("kind", ["gzip", "bzip2", "xz", "zstd"])
def test_every_compression_is_held_to_the_same_bound(tmp_path, monkeypatch, kind):
    """The bound is one, whatever the compression: here made small (1 MiB,
    100:1) so that bzip2 and xz bombs, slow to make at full size, are made
    in a moment. The control: a stream just under it is read to its end."""
    if kind == "zstd":
        pytest.importorskip("zstandard")
    monkeypatch.setattr(imageformat, "LAYER_FLOOR", 1 << 20)
    monkeypatch.setattr(imageformat, "LAYER_RATIO", 100)

    def members(blob):
        (tmp_path / "blob").write_bytes(blob)
        with open(tmp_path / "blob", "rb") as f:
            tar = imageformat.open_layer(f, None, "deploy layer")
            return [m.name for m in imageformat.read_members(tar, "deploy layer")]

    assert members(compress(kind, [HELLO, *zeros((1 << 20) - len(HELLO))])) == ["hello"]
    with pytest.raises(imageformat.ContainerError) as refused:
        members(compress(kind, [HELLO, *zeros(8 << 20)]))
    assert f"its {kind} stream expands past 1048576 bytes" in str(refused.value)
