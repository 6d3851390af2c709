"""Hostile config.json documents for the property tests: a valid base (the
`spec` verb's own output, with one valid example of every optional part the
runtime reads), and mutations that put a value of every wrong type (and
hostile values of the right type) at every path the runtime reads."""
import copy
import json
import re

from hypothesis import strategies as st

# One valid example of each part `spec` leaves out, so that every field below
# it is there to be mutated. Each is something create accepts.
EXTRAS = {
    ("process", "user", "additionalGids"): [1, 2],
    ("process", "user", "umask"): 0o22,
    ("process", "oomScoreAdj"): 0,
    ("process", "consoleSize"): {"height": 24, "width": 80},
    ("process", "capabilities", "ambient"): [],
    ("process", "capabilities", "inheritable"): [],
    ("hooks",): {"prestart": [{"path": "/bin/true", "args": ["true"], "env": ["A=1"],
                               "timeout": 5}]},
    ("annotations",): {"org.example": "yes"},
    ("domainname",): "example.org",
    ("linux", "sysctl"): {"net.ipv4.ip_forward": "1", "kernel.shmmni": "321"},
    ("linux", "devices"): [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229,
                            "fileMode": 0o666, "uid": 0, "gid": 0}],
    ("linux", "rootfsPropagation"): "rprivate",
    ("linux", "personality"): {"domain": "LINUX", "flags": []},
    ("linux", "cgroupsPath"): "minicontainer-property",
    ("linux", "resources", "pids"): {"limit": 100},
    ("linux", "resources", "memory"): {"limit": 1 << 30},
    ("linux", "resources", "cpu"): {"shares": 1024, "cpus": "0"},
}

# Every path the runtime reads (a list index is an int), and the parents that
# hold them: each is mutated on its own.
READ_PATHS = [
    (), ("ociVersion",), ("hostname",), ("domainname",), ("annotations",),
    ("annotations", "org.example"),
    ("root",), ("root", "path"), ("root", "readonly"),
    ("process",), ("process", "terminal"), ("process", "args"), ("process", "args", 0),
    ("process", "env"), ("process", "env", 0), ("process", "cwd"),
    ("process", "noNewPrivileges"), ("process", "oomScoreAdj"),
    ("process", "apparmorProfile"), ("process", "selinuxLabel"),
    ("process", "consoleSize"), ("process", "consoleSize", "height"),
    ("process", "user"), ("process", "user", "uid"), ("process", "user", "gid"),
    ("process", "user", "umask"), ("process", "user", "additionalGids"),
    ("process", "user", "additionalGids", 0), ("process", "user", "username"),
    ("process", "capabilities"), ("process", "capabilities", "bounding"),
    ("process", "capabilities", "bounding", 0), ("process", "capabilities", "ambient"),
    ("process", "rlimits"), ("process", "rlimits", 0), ("process", "rlimits", 0, "type"),
    ("process", "rlimits", 0, "soft"), ("process", "rlimits", 0, "hard"),
    ("process", "scheduler"), ("process", "ioPriority"),
    ("mounts",), ("mounts", 0), ("mounts", 0, "destination"), ("mounts", 0, "type"),
    ("mounts", 0, "source"), ("mounts", 0, "options"), ("mounts", 0, "options", 0),
    ("hooks",), ("hooks", "prestart"), ("hooks", "prestart", 0),
    ("hooks", "prestart", 0, "path"), ("hooks", "prestart", 0, "args"),
    ("hooks", "prestart", 0, "env"), ("hooks", "prestart", 0, "timeout"),
    ("linux",), ("linux", "namespaces"), ("linux", "namespaces", 0),
    ("linux", "namespaces", 0, "type"), ("linux", "namespaces", 1, "path"),
    ("linux", "uidMappings"), ("linux", "gidMappings"),
    ("linux", "devices"), ("linux", "devices", 0), ("linux", "devices", 0, "path"),
    ("linux", "devices", 0, "type"), ("linux", "devices", 0, "major"),
    ("linux", "devices", 0, "fileMode"),
    ("linux", "sysctl"), ("linux", "sysctl", "net.ipv4.ip_forward"),
    ("linux", "maskedPaths"), ("linux", "maskedPaths", 0), ("linux", "readonlyPaths"),
    ("linux", "readonlyPaths", 0), ("linux", "cgroupsPath"), ("linux", "rootfsPropagation"),
    ("linux", "personality"), ("linux", "personality", "domain"), ("linux", "mountLabel"),
    ("linux", "intelRdt"), ("linux", "seccomp"), ("linux", "seccomp", "defaultAction"),
    ("linux", "seccomp", "defaultErrnoRet"), ("linux", "seccomp", "architectures"),
    ("linux", "seccomp", "flags"), ("linux", "seccomp", "syscalls"),
    ("linux", "seccomp", "syscalls", 0), ("linux", "seccomp", "syscalls", 0, "names"),
    ("linux", "seccomp", "syscalls", 0, "action"), ("linux", "seccomp", "syscalls", 0, "errnoRet"),
    ("linux", "resources"), ("linux", "resources", "memory"),
    ("linux", "resources", "memory", "limit"), ("linux", "resources", "cpu", "shares"),
    ("linux", "resources", "cpu", "cpus"), ("linux", "resources", "pids", "limit"),
    ("linux", "resources", "devices"), ("linux", "resources", "devices", 0),
    ("linux", "resources", "devices", 0, "access"), ("linux", "resources", "unified"),
    ("linux", "resources", "hugepageLimits"), ("linux", "resources", "blockIO"),
]


def base_config(spec_config):
    """The `spec` verb's config.json, with the extras above, running `args`."""
    config = copy.deepcopy(spec_config)
    for path, value in EXTRAS.items():
        place = config
        for key in path[:-1]:
            place = place.setdefault(key, {})
        place[path[-1]] = copy.deepcopy(value)
    return config


def deep(depth, leaf=0):
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


# Values of every wrong type, and hostile values of the right ones.
HOSTILE = st.one_of(
    st.none(), st.booleans(),
    st.integers(), st.sampled_from([-1, -2**63 - 1, 2**31, 2**32, 2**63, 2**64 - 1, 2**64, 10**40]),
    st.floats(allow_nan=False, allow_infinity=False), st.just(1.0),
    st.text(max_size=20),
    st.sampled_from(["", "\0", "a\0b", "/\0", "\ud800", "x" * 5000, "../../..", "/proc/self/fd/0",
                     "a=b", "a,b", "nosuid,mode=777", "1+kernel.core_pattern=|/x", "RLIMIT_NOFILE",
                     "CAP_SYS_ADMIN", "all", "/dev/../etc", "net.ipv4.ip_forward", "LINUX32",
                     "SCMP_ACT_KILL", "/run/fifo"]),
    st.lists(st.one_of(st.none(), st.integers(), st.text(max_size=5), st.just("\0")), max_size=3),
    st.dictionaries(st.text(max_size=5), st.one_of(st.none(), st.integers(), st.text(max_size=5)),
                    max_size=3),
    st.integers(min_value=1, max_value=60).map(deep),
    st.sampled_from([[{}], [[]], {"": None}, {"\0": "x"}, {"type": 5}, [{"type": "RLIMIT_NOFILE"}]]),
)


def set_at(config, path, value):
    """config with `value` at `path` (a parent that is missing is made)."""
    if not path:
        return value
    place = config
    for key in path[:-1]:
        if isinstance(key, int):
            place = place[key]
        else:
            place = place.setdefault(key, {})
    place[path[-1]] = value
    return config


MUTATIONS = st.tuples(st.sampled_from(READ_PATHS), HOSTILE)


def mutate(base, path, value):
    return set_at(copy.deepcopy(base), path, copy.deepcopy(value))


def path_text(path):
    """A path as the runtime names it: process.rlimits[0].soft."""
    text = ""
    for key in path:
        text += f"[{key}]" if isinstance(key, int) else (f".{key}" if text else key)
    return text


def names_the_field(message, path):
    """The message names the field, or a field that holds it (the first two
    names, as process.rlimits for process.rlimits[0].soft), or the document."""
    named = ".".join(re.sub(r"\[\d+\]", "", path_text(path)).split(".")[:2])
    return named in re.sub(r"\[\d+\]", "", message) if named else "config.json" in message


# What a refusal must never show: Python's reprs and tracebacks.
REPR = re.compile(r"Traceback|[A-Z][A-Za-z]*(Error|Exception)\(|internal error")


def dumps(config):
    """JSON text of a config, which may hold lone surrogates (as \\ud800)."""
    return json.dumps(config)


# The process's fields whose values reached PID 1 and came back as a Python
# repr (KeyError('PATH'), OSError(22), ValueError): user ids at and past the
# edges, groups past the kernel's NGROUPS_MAX, environments with and without
# PATH, bare and odd program names, working directories of every kind.
IDS = st.one_of(st.integers(0, 3), st.integers(0, 2**32 + 1),
                st.sampled_from([65534, 2**31 - 1, 2**31, 2**32 - 2, 2**32 - 1, 2**32, -1, 2**64]),
                st.none(), st.text(max_size=2), st.booleans())
PROCESS_FIELDS = st.fixed_dictionaries({}, optional={
    "uid": IDS, "gid": IDS,
    "additionalGids": st.one_of(st.lists(IDS, max_size=4), IDS,
                                st.sampled_from([65535, 65536, 65537, 70000]).map(
                                    lambda n: list(range(n)))),
    "env": st.one_of(st.none(), st.lists(st.one_of(
        st.sampled_from(["PATH=/bin", "PATH=", "PATH=/usr/bin:/bin", "PATH=:", "A=b", "=x",
                         "NOEQ", "PATH=/nonexistent", "HOME=/"]),
        st.text(max_size=8)), max_size=4)),
    "args": st.one_of(st.none(), st.lists(st.one_of(
        st.sampled_from(["sh", "busybox", "/bin/busybox", "true", "", ".", "/", "..", "./probe",
                         "probe", "/bin/probe", "/bin", "/dev/null", "/bin/nonexistent"]),
        st.text(max_size=6)), min_size=1, max_size=2).map(
            lambda args: args + ["true"] if args[0].endswith("busybox") else args)),
    "cwd": st.one_of(st.none(), st.integers(), st.text(max_size=8), st.sampled_from(
        ["/", "/tmp", "relative", "", "/nonexistent/dir", "/dev/null", "/proc", "/bin/probe",
         "/" + "a" * 300, "/" + "a/" * 300, "/" + "a/" * 2048, "/..", "/proc/self/fd/0"])),
})


# The same fields with values of the right types only (what gets past the
# reader's type checks, to PID 1), for the real create and start.
ID_VALUES = st.one_of(st.integers(0, 3), st.sampled_from([1000, 65534, 2**31, 2**32 - 2, 2**32 - 1]))
PROCESS_VALUES = st.fixed_dictionaries({}, optional={
    "uid": ID_VALUES, "gid": ID_VALUES,
    "additionalGids": st.one_of(st.lists(ID_VALUES, max_size=3), st.sampled_from(
        [65536, 65537, 70000]).map(lambda n: list(range(n)))),
    "env": st.lists(st.sampled_from(["PATH=/bin", "PATH=", "PATH=/nonexistent", "A=b", "HOME=/"]),
                    max_size=3),
    "args": st.sampled_from([["sh", "-c", "true"], ["busybox", "true"], ["/bin/busybox", "true"],
                             ["probe", "exit", "0"], ["/bin/probe", "exit", "0"], ["./probe", "exit", "0"],
                             ["/bin"], ["/dev/null"], ["/bin/nonexistent"], ["true"], ["."]]),
    "cwd": st.sampled_from(["/", "/tmp", "/nonexistent/dir", "/dev/null", "/proc", "/bin/probe",
                            "/" + "a" * 300, "/" + "a/" * 300, "/" + "a/" * 2048, "/..",
                            "/proc/self/fd/0"]),
})


def with_process(base, fields):
    """base with the generated process fields put in (user ids under user)."""
    config = copy.deepcopy(base)
    for key, value in fields.items():
        place = config["process"]["user"] if key in ("uid", "gid", "additionalGids") else config["process"]
        place[key] = copy.deepcopy(value)
    return config
