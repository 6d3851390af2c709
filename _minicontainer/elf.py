"""ELF closures: the host files a dynamically linked program needs, found
as the dynamic loader finds them, for deploy to copy beside it.

Owns: reading an ELF file's loader facts (pyelftools), the host's loader
cache (ldconfig -p), the closure of a program.
May import: errors.
"""
import os

from .errors import ContainerError


class ElfInfo:
    """What the loader reads from an ELF file: class, machine, interpreter, needs, paths."""

    __slots__ = ("elfclass", "machine", "interp", "needed", "rpath", "runpath")


_elf_infos = {}


def elf_info(path):
    """Read an ELF file's loader facts with pyelftools; None if it is not ELF.
    Each file is read once per process: a closure meets the same libraries
    again and again (libc, for every program deployed)."""
    if path not in _elf_infos:
        _elf_infos[path] = read_elf_info(path)
    return _elf_infos[path]


def read_elf_info(path):
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile
    import stat
    info = ElfInfo()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO would hang the deploy
            os.close(fd)
            return None
        with open(fd, "rb") as f:
            if f.read(4) != b"\x7fELF":
                return None
            f.seek(0)
            elf = ELFFile(f)
            info.elfclass, info.machine = elf.elfclass, elf["e_machine"]
            info.interp, info.needed, info.rpath, info.runpath = None, [], [], []
            for seg in elf.iter_segments():
                if seg["p_type"] == "PT_INTERP":
                    info.interp = seg.get_interp_name()
                elif seg["p_type"] == "PT_DYNAMIC":
                    for tag in seg.iter_tags():
                        if tag.entry.d_tag == "DT_NEEDED":
                            info.needed.append(tag.needed)
                        elif tag.entry.d_tag == "DT_RPATH":
                            info.rpath += tag.rpath.split(":")
                        elif tag.entry.d_tag == "DT_RUNPATH":
                            info.runpath += tag.runpath.split(":")
    except (ELFError, OSError, ValueError) as exc:
        raise ContainerError(f"read ELF file {path}", str(exc)) from None
    return info


_loader_cache = None


def loader_cache():
    """The host's loader cache, {soname: [paths]}, from `ldconfig -p` (the host's
    own tool reading its cache; the program being deployed is never run). Read
    once per process, however many programs are deployed."""
    global _loader_cache
    if _loader_cache is None:
        _loader_cache = read_loader_cache()
    return _loader_cache


def read_loader_cache():
    import subprocess
    cache = {}
    for ldconfig in ("/sbin/ldconfig", "/usr/sbin/ldconfig"):
        if os.path.exists(ldconfig):
            out = subprocess.run([ldconfig, "-p"], capture_output=True, text=True).stdout
            for line in out.splitlines():
                name, sep, path = line.strip().partition(" => ")
                if sep:
                    cache.setdefault(name.split(" (")[0], []).append(path)
            break
    return cache


def elf_closure(program, program_dir):
    """The host files a dynamically linked program needs, found the way the
    dynamic loader finds them: PT_INTERP, then each DT_NEEDED by DT_RPATH (the
    object's and its loaders', when it has no DT_RUNPATH), DT_RUNPATH, the
    loader cache and the default paths, with $ORIGIN expanded. Each library
    must match the program's ELF class and machine, as the loader requires.

    Returns (host path, path in the root) pairs: the same path, except for
    libraries found through $ORIGIN, which keep their place relative to the
    program, whose own place in the root is `program_dir`.
    """
    main = elf_info(program)
    if main is None or (main.interp is None and not main.needed):
        return []  # a script or a static program
    found = [(main.interp, main.interp)] if main.interp else []
    cache, seen = None, set()
    queue = [(program, main, [], program_dir)]
    while queue:
        obj, info, inherited, obj_dir = queue.pop(0)
        origin = os.path.dirname(os.path.realpath(obj))

        def expand(dirs):  # (host dir, dir in the root)
            out = []
            for d in filter(None, dirs):
                if "$ORIGIN" in d or "${ORIGIN}" in d:
                    d = d.replace("${ORIGIN}", "$ORIGIN")
                    out.append((os.path.normpath(d.replace("$ORIGIN", origin)),
                                os.path.normpath(d.replace("$ORIGIN", obj_dir))))
                else:
                    out.append((d, d))
            return out

        rpath = [] if info.runpath else expand(info.rpath) + inherited
        for name in info.needed:
            if "/" in name:
                candidates = [(name, name)]
            else:
                if cache is None:
                    cache = loader_cache()
                defaults = (["/lib64", "/usr/lib64"] if main.elfclass == 64 else []) + ["/lib", "/usr/lib"]
                dirs = rpath + expand(info.runpath) + [(d, d) for d in defaults]
                candidates = ([(os.path.join(h, name), os.path.join(r, name)) for h, r in dirs[:-len(defaults)]]
                              + [(c, c) for c in cache.get(name, [])]
                              + [(os.path.join(d, name),) * 2 for d in defaults])
            lib = next((c for c in candidates if same_abi(c[0], main)), None)
            if lib is None:
                raise ContainerError(f"deploy {program}", f"it needs {name}, which is not found"
                                     " (searched its RPATH/RUNPATH, the loader cache and the"
                                     " default paths)")
            if os.path.realpath(lib[0]) not in seen:
                seen.add(os.path.realpath(lib[0]))
                found.append(lib)
                queue.append((lib[0], elf_info(lib[0]), rpath, os.path.dirname(lib[1])))
    return found


def same_abi(path, main):
    """Whether a candidate library is a file the loader would take for this program."""
    if not os.path.isfile(path):
        return False
    info = elf_info(path)
    return info is not None and (info.elfclass, info.machine) == (main.elfclass, main.machine)
