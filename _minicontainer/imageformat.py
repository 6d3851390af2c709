"""Image formats that deploy and pull both read.

Owns: media types, platforms (parse_platform, platform_name), layer and tar
opening (open_layer, read_members: every archive read as it decompresses, its
stream bounded and checked to its end), the size cap of a manifest, the
checks of an image configuration's Healthcheck.
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


# ---------------------------------------------------------------------------
# Layers and archives, read as they decompress
# A compressed archive is never spilled into a temporary file: the planner
# reads its headers and the writer its members' bytes straight from the
# decompressor, so the only bytes a deploy writes are those it puts in the
# root (and the planner checks that they fit: rootfs.Plan.take). The
# decompressed stream is bounded too: at most LAYER_RATIO times the
# compressed size, or LAYER_FLOOR, whichever is larger. A stream that is
# corrupt in any way (truncated, a bad checksum, data after its end, a bad
# zstd frame) is refused in one line while it is planned, before anything
# is written: the planner reads every stream to its end.
# ---------------------------------------------------------------------------

LAYER_RATIO = 2048  # deflate cannot pass 1032:1, so this never refuses a gzip layer
LAYER_FLOOR = 1 << 30  # bytes any archive may expand to, however small it is
MAGIC = {"gzip": (b"\x1f\x8b",), "bzip2": (b"BZh",), "xz": (b"\xfd7zXZ\x00",),
         # a zstd frame, or a skippable one (0x184D2A50 to 0x184D2A5F, little-endian)
         "zstd": (b"\x28\xb5\x2f\xfd",) + tuple(bytes([0x50 + i, 0x2a, 0x4d, 0x18]) for i in range(16))}


def compression_of(blob):
    """gzip, bzip2, xz, zstd or None (a plain tar, or not an archive), by the first bytes."""
    head = blob.read(6)
    blob.seek(0)
    return next((kind for kind, magics in MAGIC.items() if head.startswith(magics)), None)


def open_layer(blob, compression, what):
    """A seekable binary file object (a layer blob, an archive) as a tar
    archive: plain, or gzip, bzip2, xz or zstd compressed, told by its first
    bytes, as containerd tells them (a zstd media type must hold zstd). Read
    through Decompressed, never into a temporary file."""
    tarfile = tar_module()
    found = compression_of(blob)
    if compression == "zstd" and found != "zstd":
        raise ContainerError(what, "not a zstd stream, as its media type says; refused")
    stream = Decompressed(blob, found, what) if found else blob
    try:
        return tarfile.open(fileobj=stream, mode="r:")
    except (tarfile.TarError, OSError) as exc:
        raise ContainerError(what, f"not a readable tar archive: {exc}") from None


def read_members(tar, what, room=None):
    """Every member of a tar archive from open_layer; a compressed one is read
    to the end of its stream, so that a truncated stream, a bad checksum or
    data after its end is refused here, while planning, not halfway through
    the writes. With `room`, files whose sizes add up past it are refused as
    their headers are read, before their bytes are."""
    tarfile = tar_module()
    members, size = [], 0
    try:
        for member in tar:  # the headers, one at a time: the data between is skipped
            members.append(member)
            size += member.size if member.isreg() else 0
            if room is not None and size > room:
                raise ContainerError(what, f"its files need {size} bytes or more, and the root's"
                                     f" file system has {room} free; refused")
    except tarfile.TarError as exc:
        raise ContainerError(what, f"not a readable tar archive: {exc}; refused") from None
    if isinstance(tar.fileobj, Decompressed):
        tar.fileobj.finish()
    return members


def decompressor(kind, what):
    """A fresh incremental decompressor, for one gzip member, bzip2 or xz
    stream, or zstd frame."""
    if kind == "gzip":
        import zlib
        return zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip's header and trailer checked
    if kind == "bzip2":
        import bz2
        return bz2.BZ2Decompressor()
    if kind == "xz":
        import lzma
        return lzma.LZMADecompressor(lzma.FORMAT_XZ)
    try:
        import zstandard
    except ImportError:
        raise ContainerError(what, "a zstd layer needs the zstandard package (pip install"
                             " zstandard, or minicontainer[zstd])") from None
    # Its default window limit (128 MiB) bounds the memory a frame may ask for.
    return zstandard.ZstdDecompressor().decompressobj()


def decompress_errors(kind):
    if kind == "gzip":
        import zlib
        return (zlib.error,)
    if kind == "bzip2":
        return (OSError, ValueError)
    if kind == "xz":
        import lzma
        return (lzma.LZMAError,)
    import zstandard
    return (zstandard.ZstdError,)


class Decompressed:
    """A compressed stream as a seekable binary file object, decompressed as
    it is read: forward seeks read on, a backward seek starts again from the
    top (as gzip.GzipFile does). Concatenated members (gzip), streams (bzip2,
    xz) and frames (zstd) are read on, and NUL padding after the last is
    allowed; anything else, and any error of the decompressor, is refused in
    one line, as is a stream that expands past its cap."""

    OUT = 1 << 20  # bytes of output a gzip, bzip2 or xz step makes at most
    # zstd's decompressobj takes no output limit, so it is fed little at a
    # time: a frame's block of 128 KiB takes 4 bytes at least (an RLE block),
    # so a step makes 32 MiB at most.
    ZSTD_IN = 1024

    def __init__(self, blob, kind, what):
        self.blob, self.kind, self.what = blob, kind, what
        self.errors = decompress_errors(kind)
        blob.seek(0, 2)
        self.cap = max(LAYER_FLOOR, LAYER_RATIO * blob.tell())
        self.rewind()

    def rewind(self):
        self.blob.seek(0)
        self.dec = decompressor(self.kind, self.what)
        self.pending, self.at = b"", 0  # input read, not yet given to the decompressor
        self.chunk, self.index = b"", 0  # output made, not yet read
        self.pos = self.made = 0
        self.ended = False

    def refuse(self, why):
        raise ContainerError(self.what, f"{why}; refused")

    def feed(self):
        """One step of the decompressor on the input at hand: its output."""
        dec = self.dec
        if self.kind == "gzip":
            out = dec.decompress(self.pending[self.at:], self.OUT)
            self.pending, self.at = dec.unconsumed_tail, 0
        elif self.kind == "zstd":
            data = memoryview(self.pending)[self.at:self.at + self.ZSTD_IN]
            self.at += len(data)
            out = dec.decompress(data)
        else:
            data = self.pending[self.at:] if dec.needs_input else b""
            if dec.needs_input:
                self.pending, self.at = b"", 0
            out = dec.decompress(data, self.OUT)
        return out

    def step(self):
        """The next piece of the decompressed stream; b"" at its end."""
        while True:
            if self.dec.eof:  # a member, stream or frame ended: another, padding, or the end
                rest = (self.dec.unused_data + self.pending[self.at:]).lstrip(b"\0")
                while not rest:
                    data = self.blob.read(1 << 16)
                    if not data:
                        self.ended = True
                        return b""
                    rest = data.lstrip(b"\0")
                while len(rest) < 6 and (data := self.blob.read(1 << 16)):
                    rest += data
                if not rest.startswith(MAGIC[self.kind]):
                    self.refuse(f"data after the end of its {self.kind} stream")
                self.dec, self.pending, self.at = decompressor(self.kind, self.what), rest, 0
            try:
                out = self.feed()
            except self.errors as exc:
                self.refuse(f"corrupt {self.kind} stream ({exc})")
            if out:
                self.made += len(out)
                if self.made > self.cap:
                    self.refuse(f"its {self.kind} stream expands past {self.cap} bytes (the"
                                f" larger of {LAYER_RATIO} times its size and {LAYER_FLOOR >> 30} GiB)")
                return out
            if self.dec.eof or self.at < len(self.pending) or getattr(self.dec, "needs_input", True) is False:
                continue
            data = self.blob.read(1 << 16)
            if not data:
                self.refuse(f"truncated {self.kind} stream")
            self.pending, self.at = data, 0

    def advance(self, n, keep):
        """Move n bytes on (all of the rest if n is None), keeping them if asked."""
        parts = []
        while n is None or n > 0:
            if self.index >= len(self.chunk):
                if self.ended:
                    break
                self.chunk, self.index = self.step(), 0
                continue
            take = len(self.chunk) - self.index if n is None else min(n, len(self.chunk) - self.index)
            if keep:
                parts.append(self.chunk[self.index:self.index + take])
            self.index += take
            self.pos += take
            if n is not None:
                n -= take
        return b"".join(parts)

    def read(self, n=-1):
        return self.advance(None if n is None or n < 0 else n, True)

    def seek(self, offset, whence=0):
        import io
        if whence not in (0, 1):
            raise io.UnsupportedOperation("a decompressed stream seeks from its start or here")
        target = offset if whence == 0 else self.pos + offset
        if target < self.pos:
            self.rewind()
        self.advance(target - self.pos, False)
        return self.pos

    def finish(self):
        """Read to the end of the stream: every checksum checked, its size bounded."""
        self.advance(None, False)

    def tell(self):
        return self.pos

    def readable(self):
        return True

    def seekable(self):
        return True

    def close(self):
        pass


def check_image_healthcheck(check):
    """An image's Healthcheck as docker writes it: Test a list of strings,
    Interval, Timeout and StartPeriod in nanoseconds and Retries, whole
    numbers from 0 (the image's author chooses them: checked here, once)."""
    if not isinstance(check, dict):
        raise ValueError("Healthcheck is not an object")
    test = check.get("Test")
    if test is not None and not (isinstance(test, list) and len(test) <= 4096 and all(
            isinstance(s, str) and "\0" not in s for s in test)):  # a NUL fails only at exec
        raise ValueError("Healthcheck.Test is not a list of strings (without NUL bytes)")
    for field in ("Interval", "Timeout", "StartPeriod", "Retries"):
        value = check.get(field)
        limit = 2**31 - 1 if field == "Retries" else 366 * 86400 * 10**9
        if value is not None and not (type(value) is int and 0 <= value <= limit):
            raise ValueError(f"Healthcheck.{field} is not a whole number from 0 to {limit}")
    if check.get("Interval") and check["Interval"] < 10**6 or \
            check.get("Timeout") and check["Timeout"] < 10**6:
        raise ValueError("Healthcheck.Interval and Timeout must be at least 1ms")
