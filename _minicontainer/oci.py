"""OCI bundles: config.json read into a Spec, and what runc's verbs print.

Owns: ConfigValue (one typed reader for every field, before anything is
made), load_bundle, exec --process files, seccomp profiles, mounts, hooks,
namespaces, rlimits and resources of a bundle, `spec` and `features`.
Loaded only by the OCI verbs.
May import: the package's version, constants, errors, syscalls, spec, cgroups, state.
"""
import os
import sys

from . import __version__
from .constants import (
    CLONE_NEWIPC, CLONE_NEWNET, CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWUTS, CONTAINER_PATH,
    DEFAULT_CAPABILITIES, DEFAULT_HOSTNAME, KERNEL_MOUNTS, MASKED_PATHS, MOUNT_ATTR_OPTIONS,
    MOUNT_PROPAGATION, NAMESPACED_SYSCTLS, OCI_NAMESPACES, PATH_MAX, PER_LINUX, PER_LINUX32,
    PROC_MOUNTS_ALLOWED, READONLY_PATHS, SCMP_ACTIONS, SCMP_OPS, SECCOMP_ARCHES,
    SECCOMP_FLAG_ATTRIBUTES, SUPERBLOCK_FLAGS,
)
from .errors import ContainerError, one_line
from .syscalls import default_seccomp, open_namespace, seccomp_action
from .spec import (
    Limits, Spec, capability_numbers, own_bounding_set, selinux_enabled, sysctl_namespace,
)
from .cgroups import BLKIO_DEVICE_FILES, check_rlimits
from .state import OCI_VERSION

OCI_HOOKS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart",
             "poststop")
OCI_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_+-.")


def check_oci_id(id):
    """A container id as runc takes it: letters, digits, _ + - ., at most 1024."""
    if not id or len(id) > 1024 or not set(id) <= OCI_ID_CHARS or id[0] == ".":
        raise ContainerError(f"container id {id!r}", "expected letters, digits, '_', '+', '-'"
                             " and '.', not starting with '.'")
    return id


UINT16, UINT32, INT64, UINT64 = (0, 2**16 - 1), (0, 2**32 - 1), (-2**63, 2**63 - 1), (0, 2**64 - 1)
# A user or group id: a uid_t, but not (uid_t)-1, which setresuid, setgid and
# setgroups take as "unchanged" or refuse (EINVAL): the kernel has no such id.
ID = (0, 2**32 - 2)


class ConfigValue:
    """One value of a bundle's config.json (or of exec's --process file) and
    where it is in the document ("process.user.uid"), read as the type the
    code needs. null reads as absent, as Go's decoder (and so runc) reads it.
    A wrong type, a NUL or a lone surrogate in a string, a number outside its
    field's range: one ContainerError that names the field. Every field the
    runtime reads goes through here, in `create`, before anything is made."""

    __slots__ = ("value", "path", "source")

    def __init__(self, value, path="", source="config.json"):
        self.value, self.path, self.source = value, path, source

    def bad(self, why):
        return ContainerError(f"{self.source}: {self.path or 'the document'}", why)

    def __getitem__(self, key):
        """A member of an object (absent if the object is)."""
        return ConfigValue(self.object().get(key), f"{self.path}.{key}" if self.path else key,
                           self.source)

    @property
    def absent(self):
        return self.value is None

    def object(self):
        if self.value is None:
            return {}
        if not isinstance(self.value, dict):
            raise self.bad("not an object")
        return self.value

    def members(self):
        """An object's members, as (key, ConfigValue); the keys checked as strings."""
        for key in self.object():
            ConfigValue(key, self.path, self.source).text()
        return [(key, self[key]) for key in self.object()]

    def items(self):
        """An array's elements, each a ConfigValue (an absent array has none)."""
        if self.value is None:
            return []
        if not isinstance(self.value, list):
            raise self.bad("not an array")
        return [ConfigValue(v, f"{self.path}[{i}]", self.source) for i, v in enumerate(self.value)]

    def text(self, default=None, required=False):
        if self.value is None:
            if required:
                raise self.bad("missing")
            return default
        if not isinstance(self.value, str):
            raise self.bad("not a string")
        if "\0" in self.value:
            raise self.bad("a NUL byte in a string")
        try:
            self.value.encode()
        except UnicodeEncodeError:
            raise self.bad("not valid Unicode (a lone surrogate)") from None
        return self.value

    def texts(self):
        """An array of strings (a null in it is no string)."""
        items = self.items()
        for item in items:
            if item.absent:
                raise item.bad("not a string")
        return [item.text() for item in items]

    def integer(self, default=None, limits=INT64):
        if self.value is None:
            return default
        if isinstance(self.value, bool) or not isinstance(self.value, int):
            raise self.bad("not an integer")
        low, high = limits
        if not low <= self.value <= high:
            raise self.bad(f"{self.value} is out of range ({low} to {high})")
        return self.value

    def integers(self, limits=INT64):
        items = self.items()
        for item in items:
            if item.absent:
                raise item.bad("not an integer")
        return [item.integer(limits=limits) for item in items]

    def flag(self, default=False):
        if self.value is None:
            return default
        if not isinstance(self.value, bool):
            raise self.bad("not a boolean")
        return self.value


def refuse_json_constant(name):
    raise ValueError(f"{name} is not a JSON number")


def read_regular_file(path, source):
    """A file's bytes, opened without blocking and refused unless it is a
    regular file: a FIFO planted at config.json or at exec's --process file
    would hang the engine's call for ever, a device (/dev/zero) never end."""
    import stat
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with open(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ContainerError(source, "not a regular file")
        return f.read()


def read_json_document(path, source):
    """A JSON document from a file, as a ConfigValue that must be an object.
    Bad JSON, bad UTF-8, NaN, numbers too long and nesting too deep are one line."""
    import json
    try:
        if path == "-":
            data = sys.stdin.buffer.read()
        else:
            data = read_regular_file(path, source)
    except OSError as exc:
        raise ContainerError.from_os(f"read {path}", exc) from None
    try:
        value = json.loads(data, parse_constant=refuse_json_constant)
    except RecursionError:
        raise ContainerError(source, "not JSON this runtime reads: nested too deeply") from None
    except ValueError as exc:
        raise ContainerError(source, f"not JSON: {one_line(str(exc))}") from None
    document = ConfigValue(value, "", source)
    if not isinstance(value, dict):
        raise ContainerError(source, "not a JSON object")
    return document


def load_bundle(bundle, id, preserve_fds=0, keyring=True):
    """A bundle's config.json as a Spec, and the parts `create` itself uses
    (linux.cgroupsPath and linux.resources, annotations), every field read
    through ConfigValue: checked in full here, before anything is made."""
    bundle = os.path.abspath(bundle)
    config = read_json_document(os.path.join(bundle, "config.json"), "config.json")
    version = config["ociVersion"].text("")
    if not version.startswith("1."):
        raise ContainerError("config.json: ociVersion", f"{version!r}: this runtime takes 1.x")
    process = config["process"]
    if not process["args"].texts():
        raise ContainerError("config.json: process.args", "missing: nothing to run")
    if not process["args"].texts()[0]:
        raise process["args"].items()[0].bad("empty: no program to run")
    root = config["root"]["path"].text("")
    if not root:
        raise ContainerError("config.json: root.path", "missing")
    root = os.path.join(bundle, root)
    if not os.path.isdir(root):
        raise ContainerError(f"config.json: root.path {root}", "not a directory")
    linux = config["linux"]
    spec = Spec(os.path.realpath(root), (), mounts=oci_mounts(config["mounts"], bundle),
                masked_paths=oci_paths(linux["maskedPaths"]),
                readonly_paths=oci_paths(linux["readonlyPaths"]),
                read_only=config["root"]["readonly"].flag(),
                hostname=config["hostname"].text() or None,
                preserve_fds=preserve_fds, seccomp=oci_seccomp(linux["seccomp"]))
    spec.domainname = config["domainname"].text()
    load_process(spec, process)
    check_rlimits(spec, "config.json: process.rlimits")
    spec.namespaces, spec.ns_paths = oci_namespaces(linux["namespaces"])
    spec.devices = oci_devices(linux["devices"])
    spec.sysctl = oci_sysctls(linux["sysctl"], spec.namespaces | sum(spec.ns_paths))
    spec.hooks = oci_hooks(config["hooks"])
    spec.propagation = oci_propagation(linux["rootfsPropagation"])
    spec.personality = oci_personality(linux["personality"])
    spec.keyring = id if keyring else False
    spec.oci, spec.init = True, False
    spec.uid_map, spec.gid_map = oci_id_map(linux["uidMappings"]), oci_id_map(linux["gidMappings"])
    if spec.namespaces & CLONE_NEWUSER:
        for name, mapping in (("uidMappings", spec.uid_map), ("gidMappings", spec.gid_map)):
            if not any(inside == 0 for inside, _, _ in mapping):
                raise ContainerError(f"config.json: linux.{name}", "a user namespace needs id 0"
                                     " inside mapped (the container's root)")
    elif spec.uid_map or spec.gid_map:
        raise ContainerError(f"config.json: linux.{'uidMappings' if spec.uid_map else 'gidMappings'}",
                             "mappings need a user namespace")
    check_ids_mapped(spec, "config.json: process.user")
    for unsupported in ("intelRdt", "memoryPolicy", "timeOffsets"):
        if linux[unsupported].object():
            raise ContainerError(f"config.json: linux.{unsupported}", "not supported by this runtime")
    if linux["mountLabel"].text() and selinux_enabled():
        raise ContainerError("config.json: linux.mountLabel", "SELinux labels are not supported")
    cgroups_path = linux["cgroupsPath"].text()
    annotations = {key: value.text() or "" for key, value in config["annotations"].members()}
    resources = oci_resources(linux["resources"])
    # Last: the namespaces to join, opened once; the container joins these.
    namespace_fds = open_joined_namespaces(spec)
    try:
        refuse_host_namespace_sysctls(spec, namespace_fds)
    except BaseException:
        for fd in namespace_fds.values():
            os.close(fd)
        raise
    return spec, {"annotations": annotations, "namespace_fds": namespace_fds,
                  "linux": {"cgroupsPath": cgroups_path, "resources": resources}}


def ngroups_max():
    """The kernel's NGROUPS_MAX: setgroups takes no more supplementary groups."""
    try:
        with open("/proc/sys/kernel/ngroups_max") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 65536


def check_ids_mapped(spec, what):
    """In a user namespace, the process's uid, gid and additional gids must be
    ids it maps: setuid, setgid and setgroups refuse any other (EINVAL)."""
    if not spec.namespaces & CLONE_NEWUSER:
        return
    uid, gid, _ = spec.user
    for name, ids, mapping, field in (
            ("uid", (uid,), spec.uid_map, "uidMappings"),
            ("gid", (gid,), spec.gid_map, "gidMappings"),
            ("additionalGids", spec.additional_gids, spec.gid_map, "gidMappings")):
        for id in ids:
            if not any(inside <= id < inside + count for inside, _, count in mapping):
                raise ContainerError(f"{what}.{name} {id}", "not mapped in the container's"
                                     f" user namespace (linux.{field})")


def load_process(spec, process):
    """process (a ConfigValue): args, env, cwd, terminal, user, capabilities,
    rlimits, noNewPrivileges, terminal size, OOM score."""
    import resource
    spec.command = tuple(process["args"].texts())
    spec.env = tuple(oci_env(process["env"]))
    if "/" not in spec.command[0] and not dict(spec.env).get("PATH"):
        # runc's init searches the process's PATH and has no default of its own.
        raise process["env"].bad(f"no PATH to search for {spec.command[0]!r} (process.args[0]"
                                 " is a bare name)")
    spec.workdir = process["cwd"].text() or "/"
    if not spec.workdir.startswith("/"):
        raise process["cwd"].bad(f"{spec.workdir!r}: must be absolute")
    if len(spec.workdir.encode()) >= PATH_MAX:  # chdir would say ENAMETOOLONG, once made
        raise process["cwd"].bad(f"longer than PATH_MAX ({PATH_MAX} bytes)")
    spec.tty = process["terminal"].flag()
    user = process["user"]
    spec.user = (user["uid"].integer(0, ID), user["gid"].integer(0, ID), "/")
    spec.additional_gids = tuple(user["additionalGids"].integers(ID))
    if len(spec.additional_gids) > ngroups_max():
        raise user["additionalGids"].bad(f"{len(spec.additional_gids)} groups, above the"
                                         f" kernel's NGROUPS_MAX {ngroups_max()}")
    spec.umask = user["umask"].integer(None, (0, 0o7777))
    user["username"].text()
    spec.no_new_privs = process["noNewPrivileges"].flag()
    spec.oom_score_adj = process["oomScoreAdj"].integer(None, (-1000, 1000))
    size = process["consoleSize"]
    if size.object():
        spec.winsize = b"".join(size[k].integer(0, UINT16).to_bytes(2, sys.byteorder)
                                for k in ("height", "width")) + bytes(4)
    numbers = capability_numbers()
    bounding = own_bounding_set()
    held = {n for n in numbers.values() if bounding >> n & 1}
    sets = {}
    for name in ("bounding", "effective", "permitted", "inheritable", "ambient"):
        caps = set()
        field = process["capabilities"][name]
        for cap in field.texts():
            number = numbers.get(cap.upper().removeprefix("CAP_"))
            if number is None:
                raise field.bad(f"unknown capability {cap}")
            if number not in held:
                raise field.bad(f"{cap}: this runtime does not hold it itself")
            caps.add(number)
        sets[name] = frozenset(caps)
    spec.caps = sets.pop("bounding")
    spec.cap_sets = sets
    rlimits, seen = [], set()
    what = f"{process.source}: {process['rlimits'].path}"
    for limit in process["rlimits"].items():
        name = limit["type"].text("")
        number = getattr(resource, name, None) if name.startswith("RLIMIT_") else None
        if number is None:
            raise ContainerError(f"{what} {name}", "unknown resource")
        if number in seen:
            raise ContainerError(f"{what} {name}", "given twice")
        seen.add(number)
        soft, hard = limit["soft"].integer(0, UINT64), limit["hard"].integer(0, UINT64)
        if soft > hard:
            raise ContainerError(f"{what} {name}", f"soft {soft} is above hard {hard}")
        rlimits.append((number, soft, hard))
    spec.limits = Limits(rlimits=tuple(rlimits))
    if process["apparmorProfile"].text():
        raise process["apparmorProfile"].bad("AppArmor is not enabled on this host")
    for unsupported in ("scheduler", "ioPriority", "execCPUAffinity"):
        if process[unsupported].object():
            raise process[unsupported].bad("not supported by this runtime")
    if process["selinuxLabel"].text() and selinux_enabled():
        raise process["selinuxLabel"].bad("SELinux labels are not supported")


def oci_env(field):
    """process.env as (name, value) pairs: each NAME=VALUE, as runc insists."""
    env = []
    for item in field.items():
        text = item.text() if not item.absent else None
        name, sep, value = (text or "").partition("=")
        if not sep or not name:
            raise item.bad(f"{text!r}: not NAME=VALUE")
        env.append((name, value))
    return env


def oci_paths(field):
    """linux.maskedPaths or readonlyPaths: absolute paths."""
    paths = field.texts()
    for index, path in enumerate(paths):
        if not path.startswith("/"):
            raise field.items()[index].bad(f"{path}: not an absolute path")
    return paths


def oci_mounts(field, bundle):
    """mounts, in order; a bind's source relative to the bundle. An option is
    one word: a comma in it would smuggle a second one to the file system.
    Inside /proc only proc itself and runc's short list, as runc allows (here
    by name; PID 1 checks again where each destination resolves in the root:
    check_proc_target)."""
    mounts = []
    for mount in field.items():
        destination = mount["destination"].text("")
        if not destination.startswith("/"):
            raise mount["destination"].bad(f"{destination!r}: a mount needs an absolute destination")
        clean = os.path.normpath(destination).replace("//", "/", 1)
        if clean == "/proc" and mount["type"].text() != "proc":
            raise mount["type"].bad(f"{mount['type'].text()!r}: only proc may be mounted on /proc")
        if clean.startswith("/proc/") and clean not in PROC_MOUNTS_ALLOWED:
            raise mount["destination"].bad(f"{destination}: cannot be mounted because it is"
                                           " inside /proc (as runc refuses it)")
        entry = {"destination": destination, "type": mount["type"].text() or "",
                 "source": mount["source"].text() or "", "options": mount["options"].texts()}
        for option, item in zip(entry["options"], mount["options"].items()):
            if "," in option:
                raise item.bad(f"{option!r}: a comma in an option (of the mount on {destination})")
            if option in ("idmap", "ridmap") or option.startswith("tmpcopyup"):
                raise item.bad(f"{option}: not supported (the mount on {destination})")
        if entry["type"] == "bind" or {"bind", "rbind"} & set(entry["options"]):
            entry["source"] = os.path.join(bundle, entry["source"])
        elif entry["type"] in ("", "none"):
            raise mount["type"].bad(f"the mount on {destination} is no bind: it needs a type")
        for key in ("uidMappings", "gidMappings"):
            if mount[key].items():
                raise mount[key].bad("idmapped mounts are not supported")
        mounts.append(entry)
    return mounts


def oci_namespaces(field):
    """linux.namespaces: the flags to make, and {flag: path} to join, each
    path checked now to be a namespace of its type. A type left out is the
    runtime's own, except the mount namespace: a container set up in the
    host's would mount on the host."""
    flags, paths = 0, {}
    for ns in field.items():
        kind = ns["type"].text()
        if kind not in OCI_NAMESPACES:
            raise ContainerError(f"config.json: linux.namespaces {kind}", "not a namespace this"
                                 f" runtime knows ({', '.join(OCI_NAMESPACES)})")
        flag = OCI_NAMESPACES[kind]
        if flag & (flags | sum(paths)):
            raise ContainerError(f"config.json: linux.namespaces {kind}", "given twice")
        path = ns["path"].text()
        if path:
            if kind in ("mount", "user"):
                raise ContainerError(f"config.json: linux.namespaces {kind}",
                                     "joining one by path is not supported")
            os.close(open_namespace(path, flag, f"config.json: {ns.path}.path {path}"))
            paths[flag] = path
        else:
            flags |= flag
    if not flags & CLONE_NEWNS:
        raise ContainerError("config.json: linux.namespaces", "needs a mount namespace: this"
                             " runtime sets up no container in the host's")
    return flags, paths


def open_joined_namespaces(spec):
    """The namespaces a bundle joins by path, {clone flag: descriptor}, each
    opened once and checked to be of its type: what create checks (here and
    in refuse_host_namespace_sysctls) is what the container joins, whatever
    the path names later (join_namespace)."""
    fds = {}
    try:
        for flag, path in spec.ns_paths.items():
            kind = next(k for k, f in OCI_NAMESPACES.items() if f == flag)
            fds[flag] = open_namespace(path, flag, f"config.json: linux.namespaces {kind}"
                                                   f" path {path}")
    except BaseException:
        for fd in fds.values():
            os.close(fd)
        raise
    return fds


def refuse_host_namespace_sysctls(spec, fds):
    """A sysctl of a namespace joined by path is the container's to set
    (podman's default network joins the namespace it made, and sets
    net.ipv4.ping_group_range in it), unless that namespace is the runtime's
    own or the host's first. runc refuses a net.* one in "the host's network
    namespace"; here the IPC and UTS ones too. Checked at create, on the
    descriptors the container joins (open_joined_namespaces)."""
    for key in spec.sysctl:
        flag = sysctl_namespace(str(key))
        path = spec.ns_paths.get(flag)
        if path is None:
            continue
        kind = {CLONE_NEWNET: "net", CLONE_NEWIPC: "ipc", CLONE_NEWUTS: "uts"}[flag]
        joined = os.fstat(fds[flag])
        for host in (f"/proc/self/ns/{kind}", f"/proc/1/ns/{kind}"):
            try:
                st = os.stat(host)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) == (joined.st_dev, joined.st_ino):
                raise ContainerError(f"config.json: linux.sysctl {key}", f"not allowed in the host's {kind}"
                                     f" namespace ({path} is the runtime's own)")


def oci_id_map(field):
    """linux.uidMappings or gidMappings as (inside, outside, count) triples."""
    mapping = []
    for entry in field.items():
        values = tuple(entry[key].integer(None, UINT32) for key in ("containerID", "hostID", "size"))
        if None in values:
            raise entry.bad("expected containerID, hostID and size")
        mapping.append(values)
    return tuple(mapping)


def oci_devices(field):
    devices = []
    for device in field.items():
        path = device["path"].text("")
        if not path.startswith("/dev/") or ".." in path.split("/"):
            raise ContainerError(f"config.json: linux.devices {path}", "must be below /dev")
        kind = device["type"].text()
        if kind not in ("c", "b", "u", "p"):
            raise ContainerError(f"config.json: linux.devices {path}",
                                 f"type {kind!r}: not c, b, u or p")
        devices.append({"path": path, "type": kind,
                        "major": device["major"].integer(0, UINT32),
                        "minor": device["minor"].integer(0, UINT32),
                        "fileMode": device["fileMode"].integer(0o666, UINT32),
                        "uid": device["uid"].integer(0, UINT32),
                        "gid": device["gid"].integer(0, UINT32)})
    return devices


# A sysctl's name: words of letters, digits, "_" and "-", joined by single
# dots. "/", "..", "=", "+" and "," never: they smuggle a second sysctl
# (CRI-O's CVE-2022-0811) or climb out of /proc/sys.
SYSCTL_WORD = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


def oci_sysctls(field, namespaces):
    """linux.sysctl: each one of a namespace the container makes or joins by
    path (one of the host's is refused here, and again by PID 1; a joined one
    that is the runtime's own by refuse_host_namespace_sysctls)."""
    sysctls = {}
    for key, value in field.members():
        text = value.text()
        what = f"config.json: linux.sysctl {key}"
        if not all(word and set(word) <= SYSCTL_WORD for word in key.split(".")):
            raise ContainerError(what, "not a sysctl name (words of letters, digits, '_' and"
                                 " '-', joined by dots)")
        if text is None or any(c in text for c in "\n=+,"):
            raise ContainerError(what, f"value {text!r}: one value, without newline, '=', '+' or ','")
        flag = next((f for f, names in NAMESPACED_SYSCTLS.items()
                     if any(key == n or (n.endswith(".") and key.startswith(n)) for n in names)),
                    None)
        if flag is None or not namespaces & flag:
            raise ContainerError(what, "not in a namespace of the container's own: it would"
                                 " change the host")
        sysctls[key] = text
    return sysctls


def oci_hooks(field):
    hooks = {}
    for kind, entries in field.members():
        if kind not in OCI_HOOKS:
            raise entries.bad("not a hook this runtime knows")
        hooks[kind] = []
        for hook in entries.items():
            path = hook["path"].text("")
            if not path.startswith("/"):
                raise hook["path"].bad("a hook's path must be absolute")
            hooks[kind].append({"path": path, "args": hook["args"].texts() or [path],
                                "env": oci_env_texts(hook["env"]),
                                "timeout": hook["timeout"].integer(None, (1, 2**31 - 1))})
    return hooks


def oci_env_texts(field):
    return [f"{name}={value}" for name, value in oci_env(field)]


def oci_propagation(field):
    propagation = field.text()
    if propagation and propagation not in MOUNT_PROPAGATION:
        raise ContainerError(f"config.json: linux.rootfsPropagation {propagation}",
                             f"not one of {', '.join(MOUNT_PROPAGATION)}")
    return propagation or None


def oci_personality(field):
    domain = field["domain"].text()
    field["flags"].texts()
    if domain is None:
        return None
    if domain not in ("LINUX", "LINUX32"):
        raise ContainerError(f"config.json: linux.personality.domain {domain}",
                             "not LINUX or LINUX32")
    return PER_LINUX32 if domain == "LINUX32" else PER_LINUX


def oci_seccomp(field):
    """linux.seccomp, checked here and rebuilt of the fields read; compiled by
    PID 1 (SeccompFilter)."""
    if not field.object():
        return None
    if field["listenerPath"].text():
        raise field["listenerPath"].bad("seccomp user notification is not supported")
    field["listenerMetadata"].text()
    flags = field["flags"].texts()
    for flag in flags:
        if flag not in SECCOMP_FLAG_ATTRIBUTES:
            raise ContainerError(f"config.json: linux.seccomp.flags {flag}", "not supported")
    policy = {"defaultAction": field["defaultAction"].text("SCMP_ACT_ALLOW"),
              "architectures": field["architectures"].texts(), "flags": flags, "syscalls": []}
    errno_ret = field["defaultErrnoRet"].integer(None, UINT32)
    if errno_ret is not None:
        policy["defaultErrnoRet"] = errno_ret
    try:
        seccomp_action(policy["defaultAction"], errno_ret, "defaultAction")
    except ContainerError as exc:
        raise exc.within(f"{field.source}: {field.path}") from None
    for rule in field["syscalls"].items():
        clean = {"names": rule["names"].texts(), "action": rule["action"].text(), "args": []}
        errno_ret = rule["errnoRet"].integer(None, UINT32)
        if errno_ret is not None:
            clean["errnoRet"] = errno_ret
        try:
            seccomp_action(clean["action"], errno_ret, "action")
        except ContainerError as exc:
            raise exc.within(f"{rule.source}: {rule.path}") from None
        for arg in rule["args"].items():
            op = arg["op"].text()
            if op not in SCMP_OPS:
                raise ContainerError(f"config.json: linux.seccomp op {op}",
                                     "not a comparison libseccomp knows")
            clean["args"].append({"index": arg["index"].integer(0, (0, 5)),
                                  "value": arg["value"].integer(0, UINT64),
                                  "valueTwo": arg["valueTwo"].integer(0, UINT64), "op": op})
        policy["syscalls"].append(clean)
    return policy


# linux.resources: each value's type, as the runtime spec's Go structs have it.
RESOURCE_TYPES = {
    "memory": {"limit": INT64, "reservation": INT64, "swap": INT64, "kernel": INT64,
               "kernelTCP": INT64, "swappiness": UINT64, "disableOOMKiller": bool,
               "useHierarchy": bool, "checkBeforeUpdate": bool},
    "cpu": {"shares": UINT64, "quota": INT64, "burst": UINT64, "period": UINT64,
            "realtimeRuntime": INT64, "realtimePeriod": UINT64, "cpus": str, "mems": str,
            "idle": INT64},
    "pids": {"limit": INT64},
    "blockIO": {"weight": UINT16, "leafWeight": UINT16},
    "network": {"classID": UINT32},
}
# cgroup2 files that move processes or change the tree, not limit it: never
# written from linux.resources.unified (cgroup.procs would pull a host
# process into the container's group, where delete --force kills it).
UNIFIED_REFUSED = ("cgroup.procs", "cgroup.threads", "cgroup.kill", "cgroup.subtree_control",
                   "cgroup.type", "cgroup.freeze", "cgroup.events", "cgroup.controllers")


def oci_resources(field):
    """linux.resources (or update's --resources), checked and rebuilt of the
    fields write_resources reads, so that the kernel is given nothing else."""
    resources = {}
    for section, kinds in RESOURCE_TYPES.items():
        values = {}
        for key, kind in kinds.items():
            value = field[section][key]
            values[key] = (value.flag(None) if kind is bool else value.text() if kind is str
                           else value.integer(None, kind))
        resources[section] = {k: v for k, v in values.items() if v is not None}
    for key in BLKIO_DEVICE_FILES:
        resources["blockIO"][key] = [
            {"major": d["major"].integer(0, INT64), "minor": d["minor"].integer(0, INT64),
             **({"rate": d["rate"].integer(0, UINT64)} if key.startswith("throttle") else
                {"weight": d["weight"].integer(None, UINT16)})}
            for d in field["blockIO"][key].items()]
        for device in resources["blockIO"][key]:
            if device.get("rate", device.get("weight")) is None:
                raise field["blockIO"][key].bad("a device's weight is missing")
    resources["hugepageLimits"] = []
    for limit in field["hugepageLimits"].items():
        size = limit["pageSize"].text("")
        if not size or not set(size) <= set("0123456789KMGTB"):
            raise limit["pageSize"].bad(f"{size!r}: not a page size (2MB, 1GB)")
        resources["hugepageLimits"].append({"pageSize": size,
                                            "limit": limit["limit"].integer(0, UINT64)})
    resources["network"]["priorities"] = [
        {"name": p["name"].text(""), "priority": p["priority"].integer(0, UINT32)}
        for p in field["network"]["priorities"].items()]
    resources["unified"] = {}
    for key, value in field["unified"].members():
        if (not key or key.startswith(".") or "/" in key or key in UNIFIED_REFUSED):
            raise ContainerError(f"{field.source}: {field['unified'].path} {key}",
                                 "not a file of a group's limits")
        resources["unified"][key] = value.text(required=True)
    resources["devices"] = []
    for rule in field["devices"].items():
        kind = rule["type"].text() or "a"
        access = rule["access"].text() or "rwm"
        if kind not in ("a", "b", "c") or not access or not set(access) <= set("rwm"):
            raise rule.bad(f"type {kind!r}, access {access!r}: not a device rule")
        resources["devices"].append({"allow": rule["allow"].flag(), "type": kind,
                                     "major": rule["major"].integer(None, INT64),
                                     "minor": rule["minor"].integer(None, INT64),
                                     "access": access})
    for key in ("rdma",):
        if field[key].object():
            raise field[key].bad("not supported by this runtime")
    return resources


def oci_features():
    """`features`: what this runtime supports, in the runtime spec's shape."""
    return {"ociVersionMin": "1.0.0", "ociVersionMax": OCI_VERSION,
            "hooks": list(OCI_HOOKS),
            "mountOptions": sorted(set(MOUNT_ATTR_OPTIONS) | {"r" + o for o in MOUNT_ATTR_OPTIONS}
                                   | set(MOUNT_PROPAGATION) | set(SUPERBLOCK_FLAGS)
                                   | {"bind", "rbind"}),
            "linux": {"namespaces": [n for n in OCI_NAMESPACES if n != "user"],
                      "capabilities": sorted("CAP_" + n for n in capability_numbers()),
                      "cgroup": {"v1": True, "v2": True, "systemd": False, "systemdUser": False},
                      "seccomp": {"enabled": True, "actions": sorted(SCMP_ACTIONS),
                                  "operators": sorted(SCMP_OPS),
                                  "archs": sorted(a for arches in SECCOMP_ARCHES.values()
                                                  for a in arches)},
                      "apparmor": {"enabled": False}, "selinux": {"enabled": selinux_enabled()}},
            "annotations": {"org.opencontainers.runtime-spec.features.runtime": "minicontainer",
                            "org.opencontainers.runtime-spec.features.version": __version__}}


def default_config():
    """`spec`: runc's default config.json, with minicontainer's default
    capabilities, masks and seccomp policy."""
    caps = [f"CAP_{name}" for name in DEFAULT_CAPABILITIES]
    return {
        "ociVersion": OCI_VERSION,
        "process": {"terminal": True, "user": {"uid": 0, "gid": 0}, "args": ["sh"],
                    "env": [f"PATH={CONTAINER_PATH}", "TERM=xterm"], "cwd": "/",
                    "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
                    "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
                    "noNewPrivileges": True},
        "root": {"path": "rootfs", "readonly": True},
        "hostname": DEFAULT_HOSTNAME,
        "mounts": [{k: v for k, v in m.items()} for m in KERNEL_MOUNTS[:4]] + [
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}],
        "linux": {"resources": {"devices": [{"allow": False, "access": "rwm"}]},
                  "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount",
                                                       "cgroup")],
                  "maskedPaths": list(MASKED_PATHS), "readonlyPaths": list(READONLY_PATHS),
                  "seccomp": default_seccomp(DEFAULT_CAPABILITIES)},
    }


def load_exec_process(spec, path):
    """runc exec --process FILE: the process JSON as engines write it, read
    and checked as a bundle's process is."""
    process = read_json_document(path, f"--process {path}")
    if not process["args"].texts():
        raise ContainerError(f"--process {path}", "needs args")
    load_process(spec, process)
    check_ids_mapped(spec, f"--process {path}: user")
    check_rlimits(spec, f"--process {path}: rlimits")
