"""run's options checked and turned into a Spec's fields.

Owns: the parsers and checks of run's options (hostname, --user, --cap-add,
-e, -v, --tmpfs, user namespace maps, rootless checks), the image's
Entrypoint/Cmd/Env rules, container names, click's number type; run_spec,
which turns the whole set of run's options into the Spec and the network
(the command line's run and the library's run and Popen both call it).
May import: constants, errors, syscalls, spec, rootfs, cgroups, network, supervise.
"""
import os
import sys

import click

from .constants import (
    BASE_NAMESPACES, CLONE_NEWNET, CLONE_NEWUSER, CLONE_NEWUTS, CONTAINER_PATH,
    DEFAULT_CAPABILITIES, DEFAULT_HOSTNAME, DEFAULT_STOP_TIMEOUT, DEVICES, DEV_LINKS, EXIT_NOT_FOUND,
    HEALTH_DEFAULTS, HEALTH_MAX_SECONDS,
    KERNEL_MOUNTS, MASKED_PATHS, NAME_MAX, OPTIONAL_NAMESPACES, PATH_MAX, READONLY_PATHS,
    READ_ONLY_TMPFS, RESTART_POLICIES, TIOCGWINSZ,
)
from .errors import ContainerError
from .syscalls import default_seccomp
from .spec import (
    DEFAULT_SUBNET, Spec, capability_numbers, dns_name, own_bounding_set, parse_network_alias,
    parse_publish, parse_subnet,
)
from .imageformat import check_image_healthcheck
from .rootfs import check_run_root, read_image_file, read_root_file
from .cgroups import cgroup_mounts, is_number, own_cgroups, parse_limits
from .supervise import mapped, subordinate_range

HOSTNAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")


def check_hostname(name):
    """A hostname the kernel and resolvers accept: RFC 1123 labels of letters,
    digits and inner '-', joined by '.', 64 bytes at most."""
    labels = name.split(".")
    if len(name) > 64 or not all(
            0 < len(label) <= 63 and set(label) <= HOSTNAME_CHARS and label[0] != "-" != label[-1]
            for label in labels):
        raise ContainerError(f"--hostname {name!r}",
                             "not a valid hostname (letters, digits, '-' and '.', 64 at most)")
    return name


def check_preserved_fds(count):
    """--preserve-fds N passes 3..3+N-1 on: each must be open now."""
    for fd in range(3, 3 + count):
        try:
            os.fstat(fd)
        except OSError:
            raise ContainerError(f"--preserve-fds {count}", f"descriptor {fd} is not open") from None
    return count


def user_namespace_maps(userns, uidmap, gidmap):
    """run's user namespace: None (the host's), or (uid map, gid map, groups
    locked). root gets one with --userns private, mapped by --uidmap and
    --gidmap or else by its own /etc/subuid and /etc/subgid ranges. A user
    always gets one: its own ids as root inside, and, where newuidmap and
    newgidmap exist and /etc/subuid and /etc/subgid grant it ranges, those
    ranges as ids 1 and up (podman's way), so that files of other owners in
    the root work."""
    uid, gid = os.geteuid(), os.getegid()
    if uid != 0:
        import shutil
        if userns == "host":
            raise ContainerError("--userns host", "a user's container needs a user namespace"
                                 " of its own to be root in (run as root for the host's)")
        if uidmap or gidmap:
            raise ContainerError("--uidmap" if uidmap else "--gidmap", "only root maps ids;"
                                 " a user's container maps the user's own id and its /etc/subuid"
                                 " and /etc/subgid ranges")
        uid_map, gid_map = [(0, uid, 1)], [(0, gid, 1)]
        if shutil.which("newuidmap") and shutil.which("newgidmap"):
            import pwd
            try:
                name = pwd.getpwuid(uid).pw_name
            except KeyError:
                name = str(uid)
            sub_uids = subordinate_range("/etc/subuid", name, uid)
            sub_gids = subordinate_range("/etc/subgid", name, uid)
            if sub_uids and sub_gids:
                return uid_map + [(1, *sub_uids)], gid_map + [(1, *sub_gids)], False
        return uid_map, gid_map, True
    if userns != "private":
        if uidmap or gidmap:
            raise ContainerError("--uidmap" if uidmap else "--gidmap", "needs --userns private")
        return None
    uid_map, gid_map = [parse_id_map("--uidmap", m) for m in uidmap], [parse_id_map("--gidmap", m) for m in gidmap]
    if not uid_map and not gid_map:
        sub_uids = subordinate_range("/etc/subuid", "root", 0)
        sub_gids = subordinate_range("/etc/subgid", "root", 0)
        if not (sub_uids and sub_gids):
            raise ContainerError("--userns private", "give --uidmap and --gidmap, or a range"
                                 " for root in /etc/subuid and /etc/subgid")
        uid_map, gid_map = [(0, *sub_uids)], [(0, *sub_gids)]
    uid_map, gid_map = uid_map or gid_map, gid_map or uid_map  # one stands for both, as podman's
    for option, mapping in (("--uidmap", uid_map), ("--gidmap", gid_map)):
        if not any(inside == 0 for inside, _, _ in mapping):
            raise ContainerError(option, "must map id 0 inside (the container's root)")
    return uid_map, gid_map, False


def parse_id_map(option, value):
    """CONTAINER_ID:HOST_ID:SIZE, as podman's --uidmap takes it."""
    parts = value.split(":")
    if len(parts) != 3 or not all(p.isascii() and p.isdigit() for p in parts) or int(parts[2]) == 0:
        raise ContainerError(f"{option} {value}", "expected CONTAINER_ID:HOST_ID:SIZE, e.g."
                             " 0:100000:65536")
    inside, outside, count = map(int, parts)
    if inside + count > 1 << 32 or outside + count > 1 << 32:
        raise ContainerError(f"{option} {value}", "past the last id (4294967295)")
    return inside, outside, count


def fit_user_namespace(spec):
    """What a user namespace changes in run's spec: -u must name mapped ids;
    /sys of a network namespace not its own is bound from the host,
    read-only (sysfs cannot be mounted there: runc's rootless spec does the
    same); devpts takes no gid= the namespace does not map."""
    if spec.user and not (mapped(spec.uid_map, spec.user[0]) and mapped(spec.gid_map, spec.user[1])):
        raise ContainerError(f"--user {spec.user[0]}:{spec.user[1]}", "not mapped in the"
                             " container's user namespace (a user's maps only its own id as"
                             " root, unless /etc/subuid and /etc/subgid grant it a range and"
                             " the uidmap package is installed)")
    mounts = []
    for mount in spec.mounts:
        if mount.get("type") == "sysfs" and not spec.namespaces & CLONE_NEWNET:
            mount = {"destination": mount["destination"], "type": "bind", "source": "/sys",
                     "options": ["rbind", "rro", "nosuid", "nodev", "noexec"]}
        elif mount.get("type") == "devpts":
            mount = dict(mount, options=[o for o in mount["options"] if not (
                o.startswith("gid=") and not mapped(spec.gid_map, int(o[4:])))])
        mounts.append(mount)
    spec.mounts = mounts


def check_rootless(spec, network):
    """What a user cannot have is refused, never quietly left out: cgroup
    limits without a cgroup v2 group delegated to the user, and the bridge
    without slirp4netns."""
    needed = spec.limits.controllers()
    if needed:
        v2, own = delegated_cgroup()
        if own is None or not needed <= own:
            where = ("no cgroup v2 group of yours" if v2 is None else
                     f"your cgroup v2 group {v2} is not yours to write" if own is None else
                     f"your cgroup v2 group {v2} has no {', '.join(sorted(needed - own))} controller")
            limits = spec.limits
            asked = [option for option, value in (
                ("--memory", limits.memory), ("--memory-swap", limits.memory_swap),
                ("--pids-limit", limits.pids is not None), ("--cpus", limits.cpus),
                ("--cpu-shares", limits.cpu_shares), ("--stats", limits.stats)) if value]
            raise ContainerError(", ".join(asked), "a user's container needs"
                                 f" a cgroup delegated to it ({where}): run as root, or in a"
                                 " delegated group, e.g. systemd-run --user --scope -p"
                                 " Delegate=yes minicontainer run ...")


def delegated_cgroup():
    """The caller's cgroup v2 directory, and the controllers it may hand to a
    child group there when the caller owns it (systemd's Delegate=yes), else None."""
    with open("/proc/self/mountinfo") as f:
        v2_mount, _ = cgroup_mounts(f.read())
    with open("/proc/self/cgroup") as f:
        own = own_cgroups(f.read())
    if v2_mount is None or "" not in own:
        return None, None
    path = os.path.normpath(os.path.join(v2_mount, own[""].lstrip("/")))
    if not os.access(path, os.W_OK) or not os.access(os.path.join(path, "cgroup.procs"), os.W_OK):
        return path, None
    try:
        with open(os.path.join(path, "cgroup.controllers")) as f:
            return path, set(f.read().split())
    except OSError:
        return path, None


def namespaces_for(**shared):
    """The clone flags for a run, leaving out each namespace the user shares with the host."""
    flags = BASE_NAMESPACES
    for name, flag in OPTIONAL_NAMESPACES.items():
        if shared[name] not in ("host",):
            flags |= flag
    return flags


def parse_security_opts(opts):
    """--security-opt values, docker's syntax; unknown ones are an error, never ignored.

    Returns the protections to turn off. no-new-privileges is always on, so
    asking for it is accepted and changes nothing.
    """
    known = {"systempaths=unconfined": "mask_paths", "seccomp=unconfined": "seccomp",
             "no-new-privileges": None, "no-new-privileges:true": None}
    relaxed = set()
    for opt in opts:
        if opt not in known:
            raise ContainerError(f"--security-opt {opt}", "unknown option (known: "
                                 + ", ".join(sorted(known)) + ")")
        relaxed.add(known[opt])
    return relaxed


def capability_names(numbers):
    """The names (docker's spelling) of a set of capability numbers."""
    return frozenset(name for name, number in capability_numbers().items() if number in numbers)


def resolve_capabilities(adds, drops):
    """The bounding set for the command: podman's default, then --cap-add/--cap-drop.

    Docker's rules: ALL in --cap-add starts from every capability
    minicontainer holds, ALL in --cap-drop from none, and the named ones are
    then added and dropped. Naming one in both is an error, and so is adding
    one minicontainer itself lacks (as root does CAP_SYS_RESOURCE on some hosts).
    """
    numbers = capability_numbers()

    def parse(values, option):
        names = set()
        for value in values:
            name = value.upper().removeprefix("CAP_")
            if not value.isascii() or (name != "ALL" and name not in numbers):
                raise ContainerError(f"{option} {value}", "unknown capability (see capabilities(7))")
            names.add(name)
        return names

    add, drop = parse(adds, "--cap-add"), parse(drops, "--cap-drop")
    for name in sorted((add & drop) - {"ALL"}):
        raise ContainerError(f"--cap-add {name} and --cap-drop {name}", "contradict each other")
    bounding = own_bounding_set()
    held = {name for name, number in numbers.items() if bounding >> number & 1}
    caps = held if "ALL" in add else set(DEFAULT_CAPABILITIES) & held
    if "ALL" in drop:
        caps = set()
    for name in sorted(add - {"ALL"} - held):
        raise ContainerError(f"--cap-add {name}", "minicontainer does not hold it itself;"
                             " the host withholds it")
    caps = (caps | (add - {"ALL"})) - drop
    return frozenset(numbers[name] for name in caps)


def resolve_user(root, user):
    """--user NAME|UID[:GROUP|GID] as (uid, gid, home), names from the root's own
    /etc/passwd and /etc/group. A uid the root does not list gets the same
    number as its gid and / as its home."""
    name, _, group = user.partition(":")
    if not name or (is_number(name) and int(name) >= 2**32 - 1):
        raise ContainerError(f"--user {user}", "expected NAME or UID, optionally :GROUP or :GID")
    entries = [line.split(":") for line in read_root_file(root, "/etc/passwd").splitlines()]
    entries = [e for e in entries if len(e) >= 7 and is_number(e[2]) and is_number(e[3])]
    if is_number(name):
        uid = int(name)
        entry = next((e for e in entries if int(e[2]) == uid), None)
    else:
        entry = next((e for e in entries if e[0] == name), None)
        if entry is None:
            raise ContainerError(f"--user {user}", f"no user {name!r} in the root's /etc/passwd")
        uid = int(entry[2])
    if is_number(group):
        gid = int(group)
    elif group:
        groups = [line.split(":") for line in read_root_file(root, "/etc/group").splitlines()]
        match = next((g for g in groups if len(g) >= 3 and g[0] == group and is_number(g[2])), None)
        if match is None:
            raise ContainerError(f"--user {user}", f"no group {group!r} in the root's /etc/group")
        gid = int(match[2])
    else:
        gid = int(entry[3]) if entry else uid
    if gid >= 2**32 - 1:
        raise ContainerError(f"--user {user}", "expected NAME or UID, optionally :GROUP or :GID")
    return uid, gid, (entry[5] or "/") if entry else "/"


# The kernel takes no environment string longer than MAX_ARG_STRLEN (32
# pages) and no environment and arguments over a quarter of the stack limit
# (2 MiB at the usual 8 MiB): an env file past these could never be used, and
# read whole (/dev/zero, a pipe that never ends) it would fill memory.
ENV_LINE_MAX = 32 * 4096
ENV_FILE_MAX = 2 * 1024 * 1024


def env_file_lines(path, f):
    """The lines of an open env file, without their newlines, refused past
    the bounds above as soon as a read passes them."""
    total = 0
    while line := f.readline(ENV_LINE_MAX + 1):
        total += len(line)
        if len(line.rstrip("\n")) > ENV_LINE_MAX:
            raise ContainerError(f"--env-file {path}", f"a line is longer than {ENV_LINE_MAX}"
                                 " bytes, more than the kernel takes for an environment string")
        if total > ENV_FILE_MAX:
            raise ContainerError(f"--env-file {path}", f"longer than {ENV_FILE_MAX} bytes, more"
                                 " than the kernel takes for a whole environment")
        yield line.rstrip("\n")


def parse_env(values, files):
    """-e KEY=VALUE, -e KEY (the host's value, if it has one), --env-file FILE
    (the same, one a line; blank lines and # comments skipped), in order."""
    lines = []
    for path in files:
        try:  # bytes as the file has them: an env value need not be UTF-8
            with open(path, encoding=sys.getfilesystemencoding(), errors="surrogateescape") as f:
                lines += [(f"--env-file {path}", line) for line in env_file_lines(path, f)]
        except OSError as exc:
            raise ContainerError.from_os(f"--env-file {path}", exc) from None
    env = []
    for origin, text in lines + [("-e", value) for value in values]:
        if origin != "-e" and (not text.strip() or text.lstrip().startswith("#")):
            continue
        key, sep, value = text.partition("=")
        if not key or "\0" in text or key != key.strip():
            raise ContainerError(f"{origin} {text!r}", "expected KEY=VALUE or KEY")
        if sep:
            env.append((key, value))
        elif key in os.environ:
            env.append((key, os.environ[key]))
    return env


def image_command(image, entrypoint, command):
    """docker's rule: the image's Entrypoint, then COMMAND or else its Cmd;
    --entrypoint replaces the Entrypoint and drops the Cmd."""
    if entrypoint is not None:
        argv = ([entrypoint] if entrypoint else []) + list(command)
    else:
        argv = list(image.get("Entrypoint", [])) + (list(command) or list(image.get("Cmd", [])))
    if not argv:
        raise ContainerError("run", "no command given, and the root has no image that names one"
                             " (see pull)")
    return tuple(argv)


def image_env(image):
    """An image's Env, KEY=VALUE strings, as (key, value) pairs."""
    return [tuple(item.split("=", 1)) if "=" in item else (item, "") for item in image.get("Env", [])]


def run_env(hostname, user, extra):
    """A clean environment for the command, not the host's: PATH, HOME, HOSTNAME
    and TERM; -e and --env-file on top."""
    env = {"PATH": CONTAINER_PATH, "HOME": user[2] if user else "/root", "HOSTNAME": hostname}
    if "TERM" in os.environ:
        env["TERM"] = os.environ["TERM"]
    env.update(extra)
    return list(env.items())


def parse_volume(value):
    """-v HOST:CONTAINER[:ro|rw]: the host path must exist; both absolute.
    Returns the mount, in the OCI format: a bind, nosuid and nodev."""
    parts = value.split(":")
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
        raise ContainerError(f"--volume {value}", "expected HOST:CONTAINER[:ro]")
    src, dst = parts[0], parts[1]
    if not os.path.isabs(src) and not src.startswith("."):
        raise ContainerError(f"--volume {value}", "the host path must be absolute or start with ./")
    dst = check_mount_target("--volume", value, dst)
    if not os.path.exists(src):
        raise ContainerError(f"--volume {value}", f"the host path {src} does not exist")
    read_only = len(parts) == 3 and parts[2] == "ro"
    return {"destination": dst, "type": "bind", "source": os.path.abspath(src),
            "options": ["bind", "nosuid", "nodev"] + (["ro"] if read_only else []),
            "why": f"--volume {dst}"}


# --tmpfs's flags: each word and its opposite; what is not said stays nosuid,
# nodev and noexec.
TMPFS_FLAGS = {"ro": "rw", "rw": "ro", "exec": "noexec", "noexec": "exec", "suid": "nosuid",
               "nosuid": "suid", "dev": "nodev", "nodev": "dev"}
TMPFS_OPTIONS = ("size", "mode", "uid", "gid", "nr_inodes", "nr_blocks")


def parse_tmpfs(value):
    """--tmpfs PATH[:OPTIONS]: docker's options (size=, mode=, uid=, gid=, nr_inodes=,
    ro, exec, suid, dev ...); nosuid, nodev and noexec unless asked otherwise.
    Returns the mount, in the OCI format."""
    target, _, options = value.partition(":")
    target = check_mount_target("--tmpfs", value, target)
    flags, data = ["nosuid", "nodev", "noexec"], []
    for option in filter(None, options.split(",")):
        name, sep, setting = option.partition("=")
        if option in TMPFS_FLAGS:
            flags = [f for f in flags if f not in (option, TMPFS_FLAGS[option])] + [option]
        elif name in TMPFS_OPTIONS and sep and setting:
            data.append(option)
        else:
            raise ContainerError(f"--tmpfs {value}", f"unknown option {option!r}")
    return {"destination": target, "type": "tmpfs", "source": "tmpfs", "options": flags + data,
            "why": f"--tmpfs {target}"}


def run_mounts(volumes, tmpfs, read_only, read_only_tmpfs):
    """run's mounts, in order: the kernel's and /dev's, then -v, --tmpfs, and,
    with --read-only, /tmp and /run as tmpfs where nothing else is mounted."""
    mounts = list(KERNEL_MOUNTS) + [parse_volume(v) for v in volumes] + [parse_tmpfs(t) for t in tmpfs]
    if read_only and read_only_tmpfs:
        taken = {m["destination"] for m in mounts}
        mounts += [{"destination": target, "type": "tmpfs", "source": "tmpfs",
                    "options": ["nosuid", "nodev", f"mode={mode}"]}
                   for target, mode in READ_ONLY_TMPFS if target not in taken]
    return mounts


# Where no volume or tmpfs may go: the kernel's own file systems, which
# minicontainer mounts fresh and masks (a mount there could undo a mask), and
# the devices and links it puts in /dev.
KERNEL_PATHS = ("/proc", "/sys")
# /dev/.minicontainer is where --network's /etc files are written before they
# are bound: a node or mount there would fail the run at its set-up.
DEV_PATHS = frozenset([f"/dev/{name}" for name, _, _ in DEVICES]
                      + [f"/dev/{name}" for name, _ in DEV_LINKS]
                      + ["/dev/pts", "/dev/.minicontainer"])


DEVICE_ACCESS = "rwm"


def parse_device(value, mounts=()):
    """--device HOST[:CONTAINER][:PERMISSIONS] (docker's; HOST:PERMISSIONS too)
    as (a linux.devices entry, the devices cgroup rule that allows exactly
    it). HOST must be a character or block device now (followed through the
    host's links, as /dev/disk/by-id's are; stat opens nothing, so a FIFO
    cannot hang it); the node is made from its numbers, so what HOST is later
    does not matter. CONTAINER (HOST's path by default) is a new name below
    /dev: not one of the nodes and links every container gets, nor through
    them or through a mount below /dev (devpts, /dev/shm, a volume)."""
    import stat
    option = f"--device {value}"
    parts = value.split(":")
    if len(parts) > 3 or "\0" in value:
        raise ContainerError(option, "expected HOST[:CONTAINER][:PERMISSIONS]")
    host, container, access = parts[0], parts[0], DEVICE_ACCESS
    if len(parts) == 3:
        container, access = parts[1], parts[2]
    elif len(parts) == 2:  # docker's: a second part that is not a path is the permissions
        if parts[1].startswith("/"):
            container = parts[1]
        else:
            access = parts[1]
    if not access or not set(access) <= set(DEVICE_ACCESS) or len(set(access)) != len(access):
        raise ContainerError(option, f"bad permissions {access!r}: letters of r, w and m, each once")
    if not host.startswith("/"):
        raise ContainerError(option, "the host path must be absolute")
    try:
        st = os.stat(host)
    except OSError as exc:
        raise ContainerError.from_os(option, exc) from None
    if not (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)):
        raise ContainerError(option, f"{host} is not a character or block device")
    if not container.startswith("/"):
        raise ContainerError(option, "the container path must be absolute")
    names = container.split("/")[1:]
    if names[0] != "dev" or len(names) < 2 or any(n in ("", ".", "..") for n in names[1:]):
        raise ContainerError(option, "the container path must be a name below /dev (no '.', '..' or '//')")
    check_container_path("--device", value, container)
    reserved = {name for name, _, _ in DEVICES} | {name for name, _ in DEV_LINKS} | {
        "console", "pts", ".minicontainer"}
    below = [m["destination"] for m in mounts if m["destination"].startswith("/dev/")]
    if names[1] in reserved or any(container == d or container.startswith(d.rstrip("/") + "/")
                                   for d in below):
        raise ContainerError(option, f"{container} is a node, link or mount every container has"
                             " (or one of this run's): choose another name")
    kind = "c" if stat.S_ISCHR(st.st_mode) else "b"
    major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
    device = {"path": container, "type": kind, "major": major, "minor": minor,
              "fileMode": st.st_mode & 0o777, "uid": 0, "gid": 0,
              "hostPath": os.path.realpath(host)}  # for the bind, where no node may be made
    return device, {"allow": True, "type": kind, "major": major, "minor": minor, "access": access}


def check_container_path(option, value, path):
    """An absolute path inside the container, short enough for the kernel."""
    if not path.startswith("/"):
        raise ContainerError(f"{option} {value}", "the container path must be absolute")
    if "\0" in path:  # (an image's WorkingDir can hold one)
        raise ContainerError(option, "the container path holds a NUL byte")
    path = "/" + os.path.normpath(path).lstrip("/")  # POSIX keeps a leading "//"
    data = os.fsencode(path)
    if len(data) >= PATH_MAX or any(len(part) > NAME_MAX for part in data.split(b"/")):
        raise ContainerError(f"{option} {value}", f"the container path is too long (at most"
                             f" {PATH_MAX - 1} bytes, and {NAME_MAX} for a name)")
    return path


def check_mount_target(option, value, path):
    """A volume's or a tmpfs's target: not /, not the kernel's, not minicontainer's devices."""
    path = check_container_path(option, value, path)
    if path == "/":
        raise ContainerError(f"{option} {value}", "the container path must not be /")
    for top in KERNEL_PATHS:
        if path == top or path.startswith(top + "/"):
            raise ContainerError(f"{option} {value}", f"{top} is the kernel's: minicontainer mounts"
                                 " and masks it, and a mount there could undo a mask")
    if any(path == dev or path.startswith(dev + "/") for dev in DEV_PATHS):
        raise ContainerError(f"{option} {value}", f"{path} is one of the devices minicontainer"
                             " puts in /dev")
    return path


NAME_CHARS = HOSTNAME_CHARS | {"_", "."}


def hostname_for(name):
    """The hostname a container gets from its --name ('_' becomes '-'), where the
    name makes one; minicontainer's default otherwise (a name like a..b)."""
    if name is not None:
        candidate = name.replace("_", "-")
        try:
            return check_hostname(candidate)
        except ContainerError:
            pass
    return DEFAULT_HOSTNAME


def check_container_name(name):
    """--name: docker's rule for container names."""
    if not (0 < len(name) <= 63 and set(name) <= NAME_CHARS and name[0] not in "_.-"):
        raise ContainerError(f"--name {name!r}", "expected letters, digits, '_', '.' and '-',"
                             " 63 at most, starting with a letter or digit")
    return name


def terminal_size(detach=False):
    """-t: the host terminal's size, to start the container's terminal with
    (24 by 80 for a detached container started from no terminal)."""
    import fcntl
    if not os.isatty(0):
        if detach:
            return (24).to_bytes(2, sys.byteorder) + (80).to_bytes(2, sys.byteorder) + bytes(4)
        raise ContainerError("-t", "the input is not a terminal (drop -t, or run from one)")
    return fcntl.ioctl(0, TIOCGWINSZ, bytes(8))


SHARE = click.Choice(["private", "host"])


class Number(click.ParamType):
    """An integer or a decimal number in ASCII digits: click's own types, like
    int() and float(), also take "６４" or "١٢"."""

    def __init__(self, kind=int, minimum=None):
        self.kind, self.minimum = kind, minimum
        self.name = "integer" if kind is int else "number"

    def convert(self, value, param, ctx):
        import re
        if isinstance(value, (int, float)):
            return value
        pattern = r"[+-]?\d+" if self.kind is int else r"[+-]?(\d+\.?\d*|\.\d+)"
        if not re.fullmatch(pattern, value.strip(), re.ASCII):
            self.fail(f"{value!r} is not {'an integer' if self.kind is int else 'a number'}",
                      param, ctx)
        number = self.kind(value)
        if self.minimum is not None and number < self.minimum:
            self.fail(f"{value} is below the minimum, {self.minimum}", param, ctx)
        return number


# run's options that take one of a few words (click's Choice on the command
# line; the library's caller may pass anything). A value outside them is
# refused, never read as the nearest one: `seccomp != "default"` once meant
# no filter, for None, True, "Default" or a profile's path alike.
CHOICES = {"network": ("none", "host", "bridge", "private"), "ipc": ("private", "host"),
           "uts": ("private", "host"), "cgroupns": ("private", "host"),
           "userns": (None, "private", "host"), "seccomp": ("default", "unconfined")}


MAX_STOP_TIMEOUT = 2**31 - 1  # seconds: sigtimedwait takes at most 2**63 ns from now


def check_choices(**given):
    """Each of run's word options one of its words; --stop-timeout a whole number, 0 or more."""
    for name, value in given.items():
        option = "--" + name.replace("_", "-")
        if name == "stop_timeout":
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ContainerError(f"{option} {value!r}", "expected a whole number of seconds, 0 or more")
            if value > MAX_STOP_TIMEOUT:  # the supervisor's wait for it takes no more
                raise ContainerError(f"{option} {value!r}", f"above the largest, {MAX_STOP_TIMEOUT}"
                                     " seconds (68 years)")
        elif not any(value is word if word is None else type(value) is str and value == word
                     for word in CHOICES[name]):
            raise ContainerError(f"{option} {value!r}", "expected one of "
                                 + ", ".join(w for w in CHOICES[name] if w is not None))


def parse_restart(text):
    """--restart no|on-failure[:N]|always|unless-stopped, as docker takes it:
    (policy, maximum retries), 0 for no maximum (on-failure's only)."""
    if not isinstance(text, str):
        raise ContainerError(f"--restart {text!r}", "expected no, on-failure[:N], always or"
                             " unless-stopped")
    name, colon, count = text.partition(":")
    if name not in RESTART_POLICIES:
        raise ContainerError(f"--restart {text}", "not a restart policy (no, on-failure[:N],"
                             " always or unless-stopped)")
    if colon and name != "on-failure":
        raise ContainerError(f"--restart {text}", "only on-failure takes a maximum retry count")
    if colon and not (count.isascii() and count.isdigit() and int(count) <= 2**31 - 1):
        raise ContainerError(f"--restart {text}", "the maximum retry count must be a whole"
                             " number, 0 or more")
    return name, int(count) if colon else 0


def check_restart(policy, rm, detach):
    """A restart policy is kept by run -d's monitor, and keeps the container:
    refused with --rm (docker's words) and without -d."""
    if policy[0] == "no":
        return None
    if rm:
        raise ContainerError("Conflicting options", "--restart and --rm")
    if not detach:
        raise ContainerError(f"--restart {policy[0]}", "needs -d: the monitor of a detached"
                             " container restarts it (a run in the foreground ends with its"
                             " command)")
    return policy


def parse_duration(option, text):
    """A duration as docker takes one (Go's: 30s, 1m30s, 500ms, 2h; 0 for the
    default): seconds, or None for 0."""
    import re
    if not isinstance(text, str) or not re.fullmatch(r"0|((\d+(\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h))+",
                                                     text):
        raise ContainerError(f"{option} {text}", "not a duration (a number and a unit, such as"
                             " 30s, 1m30s or 500ms)")
    scale = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
    seconds = sum(float(number) * scale[unit] for number, _, unit in
                  re.findall(r"(\d+(\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)", text))
    if seconds and seconds < 1e-3:
        raise ContainerError(f"{option} {text}", "at least 1ms (or 0 for the default)")
    if seconds > HEALTH_MAX_SECONDS:
        raise ContainerError(f"{option} {text}", "too long (at most a year)")
    return seconds or None


def health_check(image_check, cmd=None, interval=None, timeout=None, retries=None,
                 start_period=None, none=False):
    """--health-* over the image's Healthcheck, docker's way (each option given
    replaces the image's field; --no-healthcheck, or the image's ["NONE"],
    none): {"test": argv, "interval", "timeout", "start_period" (seconds),
    "retries"}, or None for no check. CMD-SHELL runs /bin/sh -c, as docker's."""
    given = {"interval": interval, "timeout": timeout, "start_period": start_period,
             "retries": retries}
    if none and (cmd or any(v is not None for v in given.values())):
        raise ContainerError("--no-healthcheck", "conflicts with --health-* options")
    if none:
        return None
    check = dict(HEALTH_DEFAULTS)
    test = None
    if image_check is not None:
        try:
            check_image_healthcheck(image_check)
        except ValueError as exc:
            raise ContainerError("the image's configuration", str(exc)) from None
        test = image_check.get("Test") or None
        for key, field in (("interval", "Interval"), ("timeout", "Timeout"),
                           ("start_period", "StartPeriod")):
            if image_check.get(field):
                check[key] = image_check[field] / 1e9
        if image_check.get("Retries"):
            check["retries"] = image_check["Retries"]
    if cmd:
        test = ["CMD-SHELL", cmd]
    for key in ("interval", "timeout", "start_period"):
        option = "--health-" + key.replace("_", "-")
        value = parse_duration(option, given[key]) if given[key] is not None else None
        if value is not None:
            check[key] = value
    if retries is not None:
        if not (isinstance(retries, str) and retries.isascii() and retries.isdigit()
                and int(retries) <= 2**31 - 1):
            raise ContainerError(f"--health-retries {retries}", "expected a whole number, 0 or"
                                 " more (0: the default, 3)")
        check["retries"] = int(retries) or HEALTH_DEFAULTS["retries"]
    if not test or test[0] == "NONE":
        if any(v is not None for v in given.values()):
            raise ContainerError("--health-" + next(k for k, v in given.items() if v is not None)
                                 .replace("_", "-"), "needs a health check to tune (--health-cmd,"
                                 " or the image's)")
        return None
    if test[0] == "CMD-SHELL" and len(test) == 2:
        check["test"] = ["/bin/sh", "-c", test[1]]
    elif test[0] == "CMD" and len(test) > 1 and test[1]:
        check["test"] = list(test[1:])
    else:
        raise ContainerError("the image's Healthcheck", "its Test is neither [\"CMD\", ...],"
                             " [\"CMD-SHELL\", command] nor [\"NONE\"]")
    return check


def run_spec(root, command, *, hostname=None, network="none", subnet=DEFAULT_SUBNET, publish=(),
             outbound=False, ipc="private", uts="private", cgroupns="private", userns=None,
             uidmap=(), gidmap=(), init=False, preserve_fds=0, security_opt=(), cap_add=(),
             cap_drop=(), seccomp="default", user=None, memory=None, memory_swap=None,
             pids_limit=None, cpus=None, cpu_shares=None, ulimit=(), stats=False, env=(),
             env_file=(), workdir=None, entrypoint=None, volume=(), tmpfs=(), read_only=False,
             read_only_tmpfs=True, rm=False, detach=False, tty=False,
             stop_timeout=DEFAULT_STOP_TIMEOUT, name=None, closed_stdio=(), device=(),
             restart="no", health=None, network_alias=()):
    """run's options, each checked, as (Spec, network or None): the one place
    where a run is described, whichever door it comes through (the command
    line's run, run -d, the library's run and Popen). Nothing is made yet."""
    check_choices(network=network, ipc=ipc, uts=uts, cgroupns=cgroupns, userns=userns,
                  seccomp=seccomp, stop_timeout=stop_timeout)
    restart = check_restart(parse_restart(restart), rm, detach)
    given = [key for key, value in (health or {}).items() if value is not None and key != "none"]
    if given and not detach:
        raise ContainerError(f"--health-{given[0].replace('_', '-')}", "needs -d: the monitor of"
                             " a detached container runs the checks")
    if hostname is not None and uts == "host":
        raise ContainerError("--hostname", "cannot name the container with --uts host")
    root = check_run_root(root)
    image = read_image_file(root) or {}
    command = image_command(image, entrypoint, command)
    workdir = workdir or image.get("WorkingDir") or "/"
    workdir = check_container_path("--workdir", workdir, workdir)
    if user is None:
        user = image.get("User")
    if not command[0]:
        raise ContainerError("exec ''", "not found in the container (an empty command name)",
                             code=EXIT_NOT_FOUND)
    relaxed = parse_security_opts(security_opt)
    bridge = network in ("bridge", "private")
    if (publish or outbound or network_alias) and not bridge:
        raise ContainerError("--publish" if publish else "--outbound" if outbound else
                             f"--network-alias {network_alias[0]}", "needs --network bridge")
    aliases = [parse_network_alias(alias) for alias in network_alias]
    net = None
    if bridge:  # the network's machinery is loaded only for a container that has one
        if os.geteuid() == 0:
            from .network import Network
        else:  # a user makes no links on the host: the user's own bridge, in the
            # keeper's namespaces (usernet), with slirp4netns beyond it
            from .usernet import UserBridge as Network
        # The name server answers for --name only where it is a DNS name (docker's
        # "my_app" is a container name, no host name): the aliases always are.
        names = [n for n in [dns_name(name) if name is not None else None, *aliases] if n]
        net = Network(parse_subnet(subnet), [parse_publish(p) for p in publish], outbound,
                      names=list(dict.fromkeys(names)))
    if restart and net is not None and not net.host_side:
        # The connector serves one PID 1's namespace, and is made before the
        # monitor has threads: not yet for a second run.
        raise ContainerError(f"--restart {restart[0]}", "not supported for a user's container"
                             " with --network bridge (its connector serves one run): run it as"
                             " root, or without a restart policy")
    if name is not None:
        check_container_name(name)
    if hostname is None:
        hostname = hostname_for(name)
    caps = resolve_capabilities(cap_add, cap_drop)
    mounts = run_mounts(volume, tmpfs, read_only, read_only_tmpfs)
    devices = [parse_device(d, mounts) for d in device]
    namespaces = namespaces_for(network=network, ipc=ipc, uts=uts, cgroupns=cgroupns)
    maps = user_namespace_maps(userns, uidmap, gidmap)
    if maps is not None:
        namespaces |= CLONE_NEWUSER
    user = resolve_user(root, user) if user is not None else None
    env = run_env(hostname if namespaces & CLONE_NEWUTS else os.uname().nodename, user,
                  image_env(image) + parse_env(env, env_file))
    # An image's Entrypoint, Cmd and Env (or an --env-file) can hold a NUL byte,
    # which execve cannot take: refused here, not as an internal error in PID 1.
    if any("\0" in arg for arg in command) or any("\0" in k + v for k, v in env):
        raise ContainerError("run", "the command or its environment holds a NUL byte (the"
                             " image's Entrypoint, Cmd or Env)")
    spec = Spec(root, command, workdir=workdir,
                hostname=check_hostname(hostname), namespaces=namespaces,
                init=init, preserve_fds=check_preserved_fds(preserve_fds),
                masked_paths=MASKED_PATHS if "mask_paths" not in relaxed else (),
                readonly_paths=READONLY_PATHS if "mask_paths" not in relaxed else (),
                caps=caps, user=user,
                seccomp=default_seccomp(capability_names(caps))
                if seccomp == "default" and "seccomp" not in relaxed else None,
                limits=parse_limits(memory, memory_swap, pids_limit, cpus, cpu_shares, stats, ulimit),
                env=env,
                mounts=mounts, devices=[d for d, _ in devices],
                read_only=read_only, rm=rm, tty=tty,
                winsize=terminal_size(detach) if tty else None, stop_timeout=stop_timeout,
                closed_stdio=closed_stdio)
    if devices and os.geteuid() == 0:
        # The devices cgroup: nothing but the standard nodes, terminals and these
        # (a user has no devices cgroup: the bind of a node the user can open is all).
        spec.limits.devices = [{"allow": False, "access": "rwm"}] + [
            # PID 1 makes the node under the rule, so "m" until it has (seal_devices);
            # in a user namespace it binds the host's node instead and needs none
            dict(rule, access=rule["access"] + "m", drop="m")
            if "m" not in rule["access"] and maps is None else rule for _, rule in devices]
    spec.restart = restart
    spec.healthcheck = health_check(image.get("Healthcheck"), **(health or {}))
    if maps is not None:
        spec.uid_map, spec.gid_map, spec.groups_locked = maps
        fit_user_namespace(spec)
        if net is not None and not net.host_side:  # the keeper's user namespace has them too
            net.maps = maps
    if os.geteuid() != 0:
        check_rootless(spec, net)
    return spec, net
