"""Build tar archives and images for deploy tests: root filesystems, hostile
archives, docker save archives and OCI layouts, all made here from scratch."""
import hashlib
import io
import json
import tarfile


def member(name, data=b"", kind=tarfile.REGTYPE, linkname="", mode=0o644):
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode, info.size = kind, linkname, mode, len(data)
    return info, io.BytesIO(data) if kind == tarfile.REGTYPE else None


def write_tar(path_or_file, members, mode="w"):
    """Write (name, data, kind, linkname, mode) members; return the path or bytes."""
    target = io.BytesIO() if path_or_file is None else None
    with tarfile.open(fileobj=target, mode=mode) if target else tarfile.open(path_or_file, mode) as tar:
        for args in members:
            info, data = member(*args)
            tar.addfile(info, data)
    return target.getvalue() if target else path_or_file


def busybox_rootfs(busybox):
    """The members of a tiny root filesystem: busybox and its applet links."""
    data = open(busybox, "rb").read()
    members = [("bin", b"", tarfile.DIRTYPE, "", 0o755), ("proc", b"", tarfile.DIRTYPE, "", 0o555),
               ("bin/busybox", data, tarfile.REGTYPE, "", 0o755)]
    for applet in ("sh", "ls", "echo", "cat"):
        members.append((f"bin/{applet}", b"", tarfile.SYMTYPE, "busybox", 0o777))
    return members


def docker_save(path, layers, config=None):
    """A `docker save` archive: manifest.json, the image's config.json and one
    layer tar per list of members (or per blob, bytes as they are)."""
    names = []
    blobs = [members if isinstance(members, bytes) else write_tar(None, members) for members in layers]
    if config is not None and "rootfs" in config:  # what skopeo checks: each layer's sha256
        config = dict(config, rootfs={"type": "layers", "diff_ids": [
            f"sha256:{hashlib.sha256(blob).hexdigest()}" for blob in blobs]})
    with tarfile.open(path, "w") as out:
        data = json.dumps(config or {}).encode()
        info = tarfile.TarInfo("config.json")
        info.size = len(data)
        out.addfile(info, io.BytesIO(data))
        for i, blob in enumerate(blobs):
            name = f"layer{i}/layer.tar"
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            out.addfile(info, io.BytesIO(blob))
            names.append(name)
        manifest = json.dumps([{"Config": "config.json", "RepoTags": ["t:1"], "Layers": names}]).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(manifest)
        out.addfile(info, io.BytesIO(manifest))
    return path


LAYER_TYPES = {"gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
               "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
               None: "application/vnd.oci.image.layer.v1.tar"}


def oci_layout(directory, layers, config=None):
    """An OCI image layout directory: oci-layout, index.json, gzip layer blobs
    (or, for a (compression, bytes) pair, that blob as it is)."""
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data):
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return f"sha256:{digest}", len(data)

    descriptors = []
    for members in layers:
        compression, blob = members if isinstance(members, tuple) else \
            ("gzip", write_tar(None, members, mode="w:gz"))
        digest, size = put(blob)
        descriptors.append({"mediaType": LAYER_TYPES.get(compression, LAYER_TYPES[None]),
                            "digest": digest, "size": size})
    config, config_size = put(json.dumps(config or {}).encode())
    manifest, manifest_size = put(json.dumps({
        "schemaVersion": 2, "config": {"digest": config, "size": config_size,
                                       "mediaType": "application/vnd.oci.image.config.v1+json"},
        "layers": descriptors}).encode())
    (directory / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (directory / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest,
         "size": manifest_size}]}))
    return directory


def oci_archive(path, directory, layers, config=None):
    """An OCI archive, as `podman save --format oci-archive` and skopeo's
    oci-archive: make it: a tar of an OCI image layout."""
    oci_layout(directory, layers, config)
    with tarfile.open(path, "w") as out:
        for name in ("oci-layout", "index.json", "blobs"):
            out.add(directory / name, name)
    return path


def compress(kind, pieces):
    """The bytes of `pieces` (bytes, or an iterable of them, read as they come:
    a bomb is never whole in memory) compressed with gzip, bzip2, xz or zstd
    (python's zstandard, with a content checksum as the zstd tool writes)."""
    import bz2
    import lzma
    import zlib
    pieces = [pieces] if isinstance(pieces, bytes) else pieces
    if kind == "zstd":
        import zstandard
        c = zstandard.ZstdCompressor(write_checksum=True).compressobj()
        flush = c.flush
    elif kind == "gzip":
        c = zlib.compressobj(6, zlib.DEFLATED, 31)
        flush = c.flush
    else:
        c = bz2.BZ2Compressor() if kind == "bzip2" else lzma.LZMACompressor()
        flush = c.flush
    return b"".join([*(c.compress(piece) for piece in pieces), flush()])


def zeros(n, chunk=1 << 20):
    """n zero bytes, a chunk at a time."""
    while n > 0:
        yield bytes(min(n, chunk))
        n -= chunk


def big_member(name, size):
    """A tar member's header for `size` bytes of data (that follow it as zeros)."""
    info = tarfile.TarInfo(name)
    info.size = size
    return info.tobuf(tarfile.GNU_FORMAT)


def sparse_member(name, realsize, data=b"x" * 512):
    """An old GNU sparse member: `data` at its end, a hole before it; what
    extracting it writes is `realsize` bytes, what the archive holds is one
    block. tarfile writes no sparse member, so its header is made here."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    header = bytearray(info.tobuf(tarfile.GNU_FORMAT))
    header[156:157] = tarfile.GNUTYPE_SPARSE
    header[386:398] = tarfile.itn(realsize - len(data), 12, tarfile.GNU_FORMAT)  # offset
    header[398:410] = tarfile.itn(len(data), 12, tarfile.GNU_FORMAT)  # numbytes
    header[483:495] = tarfile.itn(realsize, 12, tarfile.GNU_FORMAT)
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header[:512])
    return bytes(header) + data + bytes(-len(data) % 512)


END = bytes(1024)  # a tar archive's end: two zero blocks
