"""Image formats that deploy and pull both read.

Owns: media types, platforms (parse_platform, platform_name), layer and tar
opening (open_layer, open_tar), the size cap of a manifest.
May import: errors.
"""
import os
import sys

from .errors import ContainerError

def tar_module():
    """The standard library's tarfile, or its backport (backports.tarfile, a
    dependency before 3.12) where this Python's has no extraction filters:
    they came in 3.11.4, and Debian 12's python3 is 3.11.2."""
    import tarfile
    if hasattr(tarfile, "data_filter"):
        return tarfile
    try:
        from backports import tarfile
    except ImportError:
        raise ContainerError("deploy", f"Python {sys.version.split()[0]}'s tarfile has no data"
                             " filter and backports.tarfile is not installed: pip install"
                             " backports.tarfile") from None
    return tarfile


def open_tar(path, fileobj=None, what=None):
    tarfile = tar_module()
    try:
        return tarfile.open(path, "r:*", fileobj=fileobj)
    except (tarfile.TarError, OSError) as exc:
        raise ContainerError(what or f"deploy {path}", f"not a readable tar archive: {exc}") from None
INDEX_TYPES = ("application/vnd.oci.image.index.v1+json",
               "application/vnd.docker.distribution.manifest.list.v2+json")
MANIFEST_TYPES = ("application/vnd.oci.image.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v2+json")
MACHINE_PLATFORMS = {"x86_64": ("amd64", None), "aarch64": ("arm64", "v8"), "armv7l": ("arm", "v7"),
                     "armv6l": ("arm", "v6"), "i686": ("386", None), "ppc64le": ("ppc64le", None),
                     "s390x": ("s390x", None), "riscv64": ("riscv64", None)}
MAX_MANIFEST = 4 << 20  # bytes: a manifest or a config larger than this is refused


def parse_platform(text):
    """--platform OS/ARCH[/VARIANT], or the host's."""
    if text is None:
        arch, variant = MACHINE_PLATFORMS.get(os.uname().machine, (os.uname().machine, None))
        return ("linux", arch, variant)
    parts = text.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise ContainerError(f"--platform {text}", "expected OS/ARCH or OS/ARCH/VARIANT, e.g. linux/arm64")
    return (parts[0], parts[1], parts[2] if len(parts) == 3 else None)


def platform_name(platform):
    return "/".join(p for p in platform if p)


def open_layer(blob, compression, what):
    """A layer blob as a tar archive: gzip read as it is; zstd decompressed
    into a temporary file first (zstandard is imported only for one)."""
    if compression == "zstd":
        import tempfile
        try:
            import zstandard
        except ImportError:
            raise ContainerError(what, "a zstd layer needs the zstandard package (pip install"
                                 " zstandard, or minicontainer[zstd])") from None
        plain = tempfile.TemporaryFile()
        try:
            zstandard.ZstdDecompressor().copy_stream(blob, plain)
        except zstandard.ZstdError as exc:
            raise ContainerError(what, f"not a zstd stream: {exc}") from None
        blob.close()
        plain.seek(0)
        blob = plain
    return open_tar(None, blob, what)
