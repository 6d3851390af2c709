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
    layer tar per list of members."""
    names = []
    blobs = [write_tar(None, members) for members in layers]
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


def oci_layout(directory, layers, config=None):
    """An OCI image layout directory: oci-layout, index.json, gzip layer blobs."""
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data):
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return f"sha256:{digest}", len(data)

    descriptors = []
    for members in layers:
        digest, size = put(write_tar(None, members, mode="w:gz"))
        descriptors.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
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
