"""A user's bridge: the network an ordinary user's --network bridge containers share.

Owns: UserBridge (a container's place on it: its address, veth, names and
published ports, set up by the container's connector) and the keeper, the
process whose user and network namespaces are the user's network (the bridge
mc0 at the subnet's first address, IP forwarding, the masquerade rule, and
slirp4netns, which reaches the outside on the user's behalf), as rootless
podman's pause process and rootless network namespace are.

A user cannot make links on the host, and a veth between two network
namespaces takes CAP_NET_ADMIN over both: so every such container's user
namespace is the keeper's (its holder joins it instead of making its own; the
maps are the same ones a user's container always has), and what it does there
is done from inside that user namespace, by the container's connector. The
table (the addresses, their owners, the names, and the keeper) is the user's,
in the state directory (network.json, network.lock), read and written as
root's is. The keeper ends, and removes the table, once no container is left
on it (it looks every KEEPER_POLL seconds); nothing of it outlives the user's
last container but its exit status.
May import: constants, errors, syscalls, procs, spec, names, network, state.
"""
import os
import sys

from .constants import CLONE_NEWNET, CLONE_NEWUSER, EXIT_OWN_FAILURE, MAX_FD
from .errors import ContainerError
from .syscalls import die_with_parent, setns, unshare
from .procs import alive, fork, process_start, write_id_maps
from .spec import BRIDGE, parse_subnet
from .network import (
    Network, fence, firewall, firewall_tool, ip_batch, let_out, mac_for, relay_published,
)

SLIRP_DNS = "10.0.2.3"  # slirp4netns's name server, reached through the keeper's tap0
KEEPER_POLL = 0.5  # how often the keeper looks whether any container is left
KEEPER = ("import sys; sys.path.insert(0, sys.argv[1]);"
          " from _minicontainer.usernet import keeper_main; sys.exit(keeper_main(sys.argv[2:]))")


class UserBridge(Network):
    """--network bridge for an ordinary user: an address on the user's own
    bridge, in the keeper's network namespace; the container reaches the
    user's other bridge containers there, by address and by name (a name
    server in its namespace, as root's), and the outside only with
    --outbound (a default route through the bridge, and the keeper's
    slirp4netns beyond it). The host's loopback stays out of reach. -p goes
    through the relays of the supervisor, whose connections to the
    container the connector makes (a process of minicontainer's that joins
    the keeper's user namespace and the container's network namespace, never
    its mount namespace) and hands back."""

    host_side = False  # nothing of the host's to undo: no links, no addresses, no rules
    lock_name, state_name = "network.lock", "network.json"

    def __init__(self, subnet, publish=(), outbound=False, names=()):
        from .state import Store
        super().__init__(subnet, publish, outbound, names)
        # The caller's state directory ($XDG_RUNTIME_DIR's, MINICONTAINER_STATE), found
        # where the options are read: the library's helper, whose supervisor sets the
        # network up, has neither variable, and would keep a second table and keeper.
        self.state_path = Store().path
        self.maps = None  # (uid_map, gid_map, groups_locked): the container's, the keeper's too
        self.connector = self.connector_sock = None

    def open_state_dir(self):
        """The user's state directory, made if missing and checked as every verb
        checks it (the user's alone: another user could otherwise forge the table)."""
        from .state import Store
        store = Store(self.state_path).ensure()
        fd = store.open()
        if fd is None:
            raise ContainerError("--network bridge", "the state directory was removed while it was made")
        return fd

    def allocate(self):
        """The address (and the keeper, if none runs), under the table's lock;
        then the connector, forked now, while this process has no thread."""
        import shutil
        import socket
        if shutil.which("slirp4netns") is None:
            raise ContainerError("--network bridge", "a user's container needs slirp4netns"
                                 " for it (apt install slirp4netns), or root")
        if not os.access("/dev/net/tun", os.R_OK | os.W_OK):
            raise ContainerError("--network bridge", "slirp4netns needs /dev/net/tun, which"
                                 " you cannot open here (distributions make it mode 0666)")
        try:
            super().allocate()
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        except BaseException:
            self.release()
            raise
        supervisor = os.getpid()
        self.connector = fork()
        if self.connector == 0:
            # The connector: the supervisor's child, soon in the keeper's user
            # namespace and the container's network namespace. It keeps its
            # socket, the keeper's pidfd and the table's directory (the name
            # server reads the table), nothing else of the caller's.
            ours.close()
            self.close_listeners()
            keep = sorted({theirs.fileno(), self.keeper_fd, self.state_dir} - {None})
            for low, high in zip([2] + keep, keep + [MAX_FD]):
                os.closerange(low + 1, high)
            code = 0
            try:
                die_with_parent(supervisor)
                connector_main(theirs, self)
            except BaseException as exc:
                try:
                    theirs.send(f"error {exc}".encode())
                except OSError:
                    pass
                code = EXIT_OWN_FAILURE
            finally:
                os._exit(code)
        theirs.close()
        self.connector_sock = ours

    def prepare(self, state):
        """The keeper, under the table's lock: the one the table names, if it
        still runs (by its pidfd, checked to be that process) and serves this
        subnet with these maps; else a new one. A keeper with no container
        left that serves another subnet or other maps is ended first (it
        would end by itself within KEEPER_POLL); one with containers makes
        this one refused."""
        maps = [[list(m) for m in self.maps[0]], [list(m) for m in self.maps[1]],
                bool(self.maps[2])]
        keeper, owner = state.get("keeper"), keeper_owner(state)
        fd = None
        if alive(owner):  # two ints, so a pid to open
            try:
                fd = os.pidfd_open(owner[0])
            except OSError:
                fd = None
            if fd is not None and process_start(owner[0]) != owner[1]:
                os.close(fd)
                fd = None
        if fd is not None and (keeper.get("maps") != maps or
                               keeper.get("subnet") != str(self.subnet)):
            if state["containers"]:  # (another subnet with containers: refused before)
                os.close(fd)
                raise ContainerError("--network bridge", "the user's network was made with other"
                                     " id maps (were /etc/subuid or /etc/subgid changed?): stop"
                                     " its containers first")
            import signal
            signal.pidfd_send_signal(fd, signal.SIGKILL)
            os.close(fd)
            fd = None
        if fd is not None:
            self.keeper_fd = fd
            return
        pid, start, self.keeper_fd = start_keeper(self)
        state["keeper"] = {"owner": [pid, start], "maps": maps, "subnet": str(self.subnet)}

    def upstreams(self):
        """slirp4netns's name server, with --outbound (queries leave from the
        container's own namespace, by its default route)."""
        return (SLIRP_DNS,) if self.outbound else ()

    def attach(self, pid1):
        """The connector plugs PID 1's namespace into the bridge and answers."""
        self.veth = f"mcv{pid1}"
        self.connector_sock.send(f"pid {pid1}".encode())
        answer = self.connector_sock.recv(4096).decode(errors="replace")
        if answer != "ok":
            what = "set up the container's network"
            raise ContainerError(what, answer.removeprefix("error ").removeprefix(f"{what}: ")
                                 or "the connector ended")

    def relay(self):
        import threading
        lock = threading.Lock()

        def connect(port, proto):
            """A socket connected to the container's port, made by the connector."""
            import socket
            with lock:
                self.connector_sock.send(proto[0].encode() + port.to_bytes(2, "big"))
                message, fds, _, _ = socket.recv_fds(self.connector_sock, 64, 1)
            if not fds:
                raise ConnectionRefusedError(message.decode(errors="replace"))
            return socket.socket(fileno=fds[0])

        relay_published(self.listeners, self.publish, connect)

    def etc_files(self, hostname):
        """As root's, but for the host's name: the gateway is the keeper's, not the host."""
        return tuple((name, "".join(line for line in text.splitlines(True)
                                    if "host.minicontainer.internal" not in line))
                     for name, text in super().etc_files(hostname))

    def close_listeners(self):
        """The ports' sockets and the connector's are the supervisor's alone."""
        super().close_listeners()
        if self.connector_sock is not None:
            self.connector_sock.close()
            self.connector_sock = None

    def release(self):
        """The address back to the table (the keeper ends when it sees none
        left); the connector ends with its socket. Safe to call twice. A
        table left with no container and no keeper (one that could not
        start) is removed here: nothing of the network stays."""
        try:
            super().release()
        finally:
            if self.connector is not None:
                os.waitpid(self.connector, 0)
                self.connector = None
            if self.keeper_fd is not None:
                os.close(self.keeper_fd)
                self.keeper_fd = None
            if self.state_dir is not None:
                fd = self.locked()
                try:
                    state = self.load()
                    if not state["containers"] and not alive(keeper_owner(state)):
                        remove_table(self)
                finally:
                    os.close(fd)


def keeper_owner(state):
    """The (pid, start time) the table names as its keeper, as written, or None."""
    keeper = state.get("keeper")
    return keeper.get("owner") if isinstance(keeper, dict) else None


def start_keeper(net):
    """A new keeper, started as a fresh interpreter in a session of its own
    (nothing of this process's: no descriptor, no memory, no terminal), its
    user namespace mapped from here as a container's is. (pid, start, pidfd)."""
    import subprocess
    report_read, report_write = os.pipe2(os.O_CLOEXEC)
    go_read, go_write = os.pipe2(os.O_CLOEXEC)
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        keeper = subprocess.Popen(
            [sys.executable, "-I", "-c", KEEPER, package, net.state_path, str(net.subnet),
             str(go_read), str(report_write)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            pass_fds=(go_read, report_write), start_new_session=True, cwd="/",
            # what finds its tools and runs its interpreter, nothing else of this
            # process's environment (the command line's, the library caller's)
            env={k: os.environ[k] for k in ("PATH", "LD_LIBRARY_PATH", "PYTHONHOME")
                 if k in os.environ})
    except OSError as exc:
        raise ContainerError.from_os("start the user's network", exc) from None
    finally:
        os.close(go_read)
        os.close(report_write)
    pidfd = None
    try:
        pidfd = os.pidfd_open(keeper.pid)
        start = process_start(keeper.pid)
        words = read_words(report_read)
        if next(words, None) == "userns":
            maps = type("Maps", (), {})()
            maps.uid_map, maps.gid_map, maps.groups_locked = net.maps
            write_id_maps(keeper.pid, maps)
            os.write(go_write, b"m")
        word = next(words, "error it ended before its network was up")
        if word != "ready":
            raise ContainerError("start the user's network", word.removeprefix("error "))
    except BaseException:
        keeper.kill()
        keeper.wait()
        if pidfd is not None:
            os.close(pidfd)
        raise
    finally:
        os.close(report_read)
        os.close(go_write)
    keeper.returncode = 0  # not ours to wait for: it outlives this process
    return keeper.pid, start, pidfd


def read_words(fd):
    """The keeper's words, a line each, until its end closes."""
    pending = b""
    while True:
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            yield line.decode(errors="replace")
        chunk = os.read(fd, 4096)
        if not chunk:
            return
        pending += chunk


def keeper_main(argv):
    """The keeper: a user namespace (mapped by the container that started
    it), slirp4netns's child forked before it, then the network namespace
    with the bridge; then it watches the table until no container is left."""
    import signal
    state_path, subnet = argv[0], parse_subnet(argv[1])
    go_fd, report_fd = int(argv[2]), int(argv[3])
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    ready_read, ready_write = os.pipe2(os.O_CLOEXEC)
    exit_read, exit_write = os.pipe2(os.O_CLOEXEC)
    start_read, start_write = os.pipe2(os.O_CLOEXEC)
    keeper = os.getpid()
    slirp = os.fork()
    if slirp == 0:
        # In the host's user and network namespaces, as a user's slirp4netns
        # always is: it joins the keeper's namespaces itself, once told.
        try:
            for fd in (ready_read, exit_write, start_write, go_fd, report_fd):
                os.close(fd)
            if os.read(start_read, 1) == b"s":
                os.set_inheritable(ready_write, True)
                os.set_inheritable(exit_read, True)
                os.execvp("slirp4netns", [
                    "slirp4netns", "--configure", "--mtu=65520", "--disable-host-loopback",
                    "--enable-sandbox", "--enable-seccomp", f"--ready-fd={ready_write}",
                    f"--exit-fd={exit_read}", str(keeper), "tap0"])
        finally:
            os._exit(EXIT_OWN_FAILURE)
    for fd in (ready_write, exit_read, start_read):
        os.close(fd)
    try:
        unshare(CLONE_NEWUSER)
        say(report_fd, "userns")
        if os.read(go_fd, 1) != b"m":
            return EXIT_OWN_FAILURE
        os.close(go_fd)
        unshare(CLONE_NEWNET)
        gateway = str(subnet[1])
        ip_batch("the user's network", ["link set lo up", f"link add {BRIDGE} type bridge",
                                        f"link set {BRIDGE} address {mac_for(gateway)}",
                                        f"addr add {gateway}/{subnet.prefixlen} dev {BRIDGE}",
                                        f"link set {BRIDGE} up"])
        with open("/proc/sys/net/ipv4/ip_forward", "w") as f:
            f.write("1")
        masquerade(str(subnet))
        os.write(start_write, b"s")
        os.close(start_write)
        if os.read(ready_read, 1) != b"1":
            raise ContainerError("slirp4netns", "it ended before the user's network was up")
        os.close(ready_read)
    except (ContainerError, OSError) as exc:
        say(report_fd, f"error {exc}")
        return EXIT_OWN_FAILURE
    say(report_fd, "ready")
    os.close(report_fd)
    watch(state_path, subnet)
    os.close(exit_write)  # slirp4netns ends
    os.waitpid(slirp, 0)
    return 0


def say(fd, word):
    """One line to the container that started the keeper."""
    os.write(fd, word.replace("\n", " ").encode(errors="replace") + b"\n")


def watch(state_path, subnet):
    """Until the table has no container (or names another keeper): then remove
    it, under its lock, so that a container that comes next starts anew."""
    import time
    from .state import Store
    table = UserBridge(subnet)
    me = [os.getpid(), process_start(os.getpid())]
    while True:
        time.sleep(KEEPER_POLL)
        try:
            if table.state_dir is None:
                table.state_dir = Store(state_path).open()
                if table.state_dir is None:
                    return
            fd = table.locked()
        except (ContainerError, OSError):
            return
        try:
            state = table.load()
            if keeper_owner(state) == me and state["containers"]:
                continue
            if keeper_owner(state) == me:
                remove_table(table)
            return
        finally:
            os.close(fd)


def remove_table(table):
    """The table and its lock (held by the caller: see Network.locked, whose
    loop makes sure the lock it takes is still the file)."""
    for name in (table.state_name, table.lock_name):
        try:
            os.unlink(name, dir_fd=table.state_dir)
        except OSError:  # gone, or a directory planted there (what failed is said already)
            pass


def masquerade(subnet):
    """The bridge's traffic out through tap0 (slirp4netns), masqueraded; and
    only from the ports of containers run with --outbound (network.fence)."""
    tool = firewall_tool()
    if tool is None:
        raise ContainerError("the user's network", "needs nftables (nft) or iptables to"
                             " masquerade, and neither is installed")
    firewall(tool, "add", subnet)
    fence(tool, subnet)


def connector_main(sock, net):
    """The connector (see UserBridge): it waits for PID 1's pid, joins the
    keeper's user and network namespaces, makes the veth pair there with its
    peer in PID 1's network namespace (by a descriptor of it, opened while
    PID 1's pidfd shows it alive), lets its port out or not (--outbound),
    joins that namespace, configures eth0 (a
    default route only with --outbound), starts the container's name server
    in a thread, and then answers each request (b"t" or b"u", then the port
    number) with a TCP or UDP socket connected to that port of the
    container's, until its socket closes."""
    import select
    import socket
    word = sock.recv(64).decode()
    if not word.startswith("pid "):
        return
    pid1 = int(word[4:])
    pidfd = os.pidfd_open(pid1)
    setns(net.keeper_fd, CLONE_NEWUSER | CLONE_NEWNET)
    container_ns = os.open(f"/proc/{pid1}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    if select.select([pidfd], [], [], 0)[0]:
        raise ContainerError("set up the container's network", "its process ended")
    what = "set up the container's network"
    ip_batch(what, [f"link add mcv{pid1} type veth peer name eth0 address {mac_for(net.address)}"
                    f" netns /proc/self/fd/{container_ns}",
                    f"link set mcv{pid1} master {BRIDGE} up"], pass_fd=container_ns)
    let_out(firewall_tool(), f"mcv{pid1}", net.address, net.outbound)
    setns(container_ns, CLONE_NEWNET)
    ip_batch(what, ["link set lo up", f"addr add {net.address}/{net.subnet.prefixlen} dev eth0",
                    "link set eth0 up"]
             + ([f"route add default via {net.gateway}"] if net.outbound else []))
    net.serve_names(container_ns)
    sock.send(b"ok")
    while (request := sock.recv(3)):
        port = int.from_bytes(request[1:], "big")
        try:
            if request[:1] == b"u":
                upstream = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                upstream.connect((net.address, port))
            else:
                upstream = socket.create_connection((net.address, port), timeout=5)
        except OSError as exc:
            sock.send(f"{exc.strerror}".encode())
            continue
        socket.send_fds(sock, [b"c"], [upstream.fileno()])
        upstream.close()
