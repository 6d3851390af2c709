"""The host side of the network: the bridge, addresses, veths, ports.

Owns: Network (mc0, kept between containers; an address and published ports
owned by the process that lives as long as the container), the shared table
under /run and its sweep (a user's, in its state directory: see usernet),
published-port relays, --outbound's rule, network prune; the names each container
has on the bridge (--name, --network-alias), in the table, which the name
server of names.py answers from. Loaded only by a run with --network bridge
and by `network prune`.
May import: constants, errors, syscalls, procs, spec, names.
"""
import os

from .constants import CLONE_NEWNET
from .errors import ContainerError
from .syscalls import setns
from .procs import alive, process_start
from .spec import BRIDGE, DEFAULT_SUBNET, parse_subnet

NET_STATE_DIR = "/run"
NET_LOCK, NET_STATE = "minicontainer-network.lock", "minicontainer-network.json"
NFT_TABLE = "minicontainer"


class Network:
    """A container's place on the bridge: address, veth, published ports, and
    the shared state (/run/minicontainer-network.json) saying who else is there,
    each address under the (pid, start time) of the process that took it.

    The table's "containers" maps each address to its owner; "names" maps an
    address to {"owner", "names"}: the names it answers to, good only while
    that same owner still holds the address (older copies of minicontainer
    sweep "containers" alone, and keep "names" as they found it)."""

    host_side = True  # links, addresses and rules on the host, for the holder to undo
    keeper_fd = None  # a user's network: the keeper's pidfd, whose user namespace the holder joins
    lock_name, state_name = NET_LOCK, NET_STATE  # the table's files, in its directory

    state_path = NET_STATE_DIR  # the table's directory, for messages

    def open_state_dir(self):
        """The table's directory, opened: /run for root's bridge."""
        return os.open(NET_STATE_DIR, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def __init__(self, subnet, publish=(), outbound=False, names=()):
        self.subnet, self.publish, self.outbound = subnet, tuple(publish), outbound
        self.names = tuple(names)  # lowercase DNS names: --name (if one) and --network-alias
        self.name_server = None
        self.table = (None, {})  # the table's (inode, mtime, size), and its names -> entries
        self.gateway = str(subnet[1])
        self.address = None
        self.listeners = []
        self.veth = None
        self.owner = None  # (pid, start time) of the process that holds the address: see allocate
        self.state_dir = self.forward_fd = None

    # -- shared state, under an exclusive lock -------------------------------

    def locked(self):
        import fcntl
        if self.state_dir is None:
            self.state_dir = self.open_state_dir()
        while True:  # the last run out unlinks the lock: make sure ours is still the file
            try:  # a directory or a symlink planted there: one line, never a traceback
                fd = os.open(self.lock_name, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
                             | os.O_NONBLOCK, 0o600, dir_fd=self.state_dir)
            except OSError as exc:
                raise ContainerError.from_os(f"the network's lock {self.state_path}/{self.lock_name}",
                                             exc) from None
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if os.stat(self.lock_name, dir_fd=self.state_dir).st_ino == os.fstat(fd).st_ino:
                    return fd
            except FileNotFoundError:
                pass
            os.close(fd)

    def load(self):
        import json
        import stat
        try:  # without blocking: a FIFO planted there is no table, never a hang
            fd = os.open(self.state_name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK,
                         dir_fd=self.state_dir)
            with open(fd) as f:
                state = json.load(f) if stat.S_ISREG(os.fstat(fd).st_mode) else {}
        except (OSError, ValueError):
            state = {}
        if not isinstance(state, dict):  # a table edited by hand: no table
            state = {}
        containers = state.get("containers")
        mine = list(self.owner) if self.owner else None
        live = {ip: owner for ip, owner in (containers.items() if isinstance(containers, dict) else ())
                if alive(owner) or owner == mine}
        state["containers"] = live  # the sweep: owners that are gone lose their address
        names = state.get("names")  # an older copy's table, or one edited by hand: its own entries
        state["names"] = {ip: entry for ip, entry in (names.items() if isinstance(names, dict) else ())
                          if isinstance(entry, dict) and live.get(ip) == entry.get("owner")}
        return state

    def save(self, state):
        import json
        tmp = self.state_name + ".tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
                         | os.O_NONBLOCK, 0o600, dir_fd=self.state_dir)
            with open(fd, "w") as f:
                json.dump(state, f)
            os.rename(tmp, self.state_name, src_dir_fd=self.state_dir, dst_dir_fd=self.state_dir)
        except OSError as exc:  # a directory planted at its name
            raise ContainerError.from_os(f"write the network's table {self.state_path}/"
                                         f"{self.state_name}", exc) from None

    # -- before the fork ------------------------------------------------------

    def allocate(self):
        """Take the lowest free address, make sure the bridge is there (and the
        masquerade rule, for --outbound), and bind the published ports.

        All of it belongs to the process that calls this: the one that runs
        the container and lives as long as it (the supervisor, or run -d's
        monitor), never the one that read the options. A `run -d` ends at
        once; an address it owned would be swept as soon as it did, and
        given to the next container while this one still serves on it."""
        self.owner = (os.getpid(), process_start(os.getpid()))
        fd = self.locked()
        try:
            state = self.load()
            if state.get("subnet", str(self.subnet)) != str(self.subnet) and state["containers"]:
                raise ContainerError(f"--subnet {self.subnet}", f"bridge {BRIDGE} already serves"
                                     f" {state['subnet']} for running containers")
            taken = set(state["containers"])
            free = (str(ip) for ip in self.subnet.hosts() if str(ip) not in taken
                    and str(ip) != self.gateway)
            self.address = next(free, None)
            if self.address is None:
                raise ContainerError(f"--subnet {self.subnet}", "no free address left")
            self.listeners = listen_published(self.publish)
            self.prepare(state)
            state["subnet"] = str(self.subnet)
            state["containers"][self.address] = list(self.owner)
            if self.names:
                state["names"][self.address] = {"owner": list(self.owner), "names": list(self.names)}
            self.save(state)
        except BaseException:
            self.close_listeners()
            raise
        finally:
            os.close(fd)

    def prepare(self, state):
        """Under the table's lock, before the address is recorded: the bridge,
        and the masquerade rule for --outbound."""
        self.ensure_bridge(state)
        if self.outbound:
            self.ensure_outbound(state)

    def ensure_bridge(self, state):
        """The bridge, up, with the subnet's first address, and --outbound's
        fence at it: made once, then kept (the state says for which subnet);
        nothing to run when they are."""
        there = os.path.exists(f"/sys/class/net/{BRIDGE}")
        if not (there and state.get("bridge") == str(self.subnet)):
            # Its MAC set, from its address as a container's is: a bridge's own
            # follows its lowest port's, so a container leaving would change it
            # under the others' ARP entries for the gateway (docker sets it too).
            commands = [f"addr flush dev {BRIDGE}" if there else f"link add {BRIDGE} type bridge",
                        f"link set {BRIDGE} address {mac_for(self.gateway)}",
                        f"addr add {self.gateway}/{self.subnet.prefixlen} dev {BRIDGE}",
                        f"link set {BRIDGE} up"]
            ip_batch(f"set up bridge {BRIDGE}", commands)
            state["bridge"] = str(self.subnet)
        tool = firewall_tool()
        wanted = {"tool": tool, "subnet": str(self.subnet)}
        if tool is not None and state.get("fence") != wanted:
            fence(tool, str(self.subnet))
            state["fence"] = wanted

    def ensure_outbound(self, state):
        """IP forwarding and a masquerade rule, through nft or iptables, once."""
        if state.get("outbound"):
            return
        tool = firewall_tool()
        if tool is None:
            raise ContainerError("--outbound", "needs nftables (nft) or iptables to masquerade,"
                                 " and neither is installed")
        forward_before = os.pread(self.forwarding(), 8, 0).decode().strip()
        firewall(tool, "add", str(self.subnet))
        os.pwrite(self.forwarding(), b"1", 0)
        state["outbound"] = {"tool": tool, "ip_forward_before": forward_before}

    def forwarding(self):
        """The host's ip_forward switch, opened once. It is per network namespace,
        fixed at open: the holder opens it only once back in the host's."""
        if self.forward_fd is None:
            self.forward_fd = os.open("/proc/sys/net/ipv4/ip_forward", os.O_RDWR | os.O_CLOEXEC)
        return self.forward_fd

    # -- once PID 1 exists ----------------------------------------------------

    def attach(self, pid1):
        """The veth pair: mcvPID on the bridge, eth0 inside with the address and
        a default route through the bridge; configured from here, by `ip`
        run on the host and then in the container's network namespace."""
        self.veth = f"mcv{pid1}"
        container_ns = os.open(f"/proc/{pid1}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        what = "set up the container's network"
        try:
            # The peer goes to the namespace by our descriptor of it, never by
            # a pid that could be another process's by then.
            ip_batch(what, [f"link add {self.veth} type veth peer name eth0"
                            f" address {mac_for(self.address)} netns /proc/self/fd/{container_ns}",
                            f"link set {self.veth} master {BRIDGE} up"], pass_fd=container_ns)
            # lo up now (PID 1 would, later): the name server binds 127.0.0.11 on it
            ip_batch(what, ["link set lo up", f"addr add {self.address}/{self.subnet.prefixlen} dev eth0",
                            "link set eth0 up", f"route add default via {self.gateway}"],
                     netns=container_ns)
            tool = firewall_tool()
            if tool is not None:
                let_out(tool, self.veth, self.address, self.outbound)
            self.serve_names(container_ns)
        finally:
            os.close(container_ns)

    # -- the name server ----------------------------------------------------------

    def serve_names(self, container_ns):
        """The name server at 127.0.0.11:53 in this run's network namespace (a
        new one each run, under --restart), in a thread of this process.

        As docker's, it listens on ports of its own at 127.0.0.11, and a NAT
        rule of the container's namespace sends port 53 there: bound on 53
        itself, it would take the port from a container that serves DNS, or
        anything else on port 53, on all its addresses (the kernel refuses
        a wildcard bind beside a listening socket). Without nft or iptables,
        it binds 53."""
        from .names import NameServer
        self.stop_names()
        tool = firewall_tool()
        self.name_server = NameServer(container_ns, self.addresses_of, self.upstreams(),
                                      port=0 if tool else 53)
        self.name_server.start()
        if tool:
            try:
                redirect_dns(tool, container_ns, *self.name_server.ports)
            except BaseException:
                self.stop_names()
                raise

    def stop_names(self):
        """End the run's name server: its sockets hold the namespace, and the veth."""
        if self.name_server is not None:
            self.name_server.stop()
            self.name_server = None

    def upstreams(self):
        """Where names not on the bridge are asked: the host's name servers, as
        docker forwards to them, and only with --outbound (without it the
        container reaches nothing beyond the host, its names neither); never
        one on the host's loopback, which the container's namespace has not."""
        if not self.outbound:
            return ()
        servers = [line.split()[1] for line in read_lines("/etc/resolv.conf")
                   if line.startswith("nameserver") and len(line.split()) > 1]
        return tuple(s for s in servers if s.count(".") == 3 and not s.startswith("127."))

    def addresses_of(self, name):
        """The addresses of the live containers on the bridge that carry `name`
        (lowercase): read from the table as its last writer left it (it is
        replaced whole, by rename), each entry's owner checked alive here,
        so a container that has ended answers to nothing even before a sweep."""
        import stat
        try:
            fd = os.open(self.state_name, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK,
                         dir_fd=self.state_dir)
        except OSError:
            return []
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):  # a FIFO planted there: no names, never a hang
                return []
            key = (info.st_ino, info.st_mtime_ns, info.st_size)
            if key != self.table[0]:
                self.table = (key, names_table(fd))
        except (OSError, ValueError, AttributeError, TypeError):  # a table half-written by hand
            return []
        finally:
            os.close(fd)
        return [ip for ip, owner in self.table[1].get(name, ()) if alive(owner)]

    def relay(self):
        """-p: a userspace relay per published port, in threads of the supervisor."""
        import socket

        def connect(port, proto):
            if proto == "udp":  # connected: only the container's port's replies come back
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                try:
                    sock.connect((self.address, port))
                except OSError:
                    sock.close()
                    raise
                return sock
            return socket.create_connection((self.address, port), timeout=5)

        relay_published(self.listeners, self.publish, connect)

    def etc_files(self, hostname):
        """/etc/hosts, /etc/hostname, /etc/resolv.conf for inside, written from this run.
        The one name server is minicontainer's, in the container (docker's
        embedded DNS); with --outbound, the host's search domains and options
        are kept, and ndots:0 added, as docker writes them."""
        hosts = (f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
                 f"{self.address}\t{hostname}\n{self.gateway}\thost.minicontainer.internal\n")
        resolv = ("# minicontainer's name server: the bridge's containers by --name and"
                  " --network-alias;\n# other names from the host's name servers, with --outbound\n"
                  "nameserver 127.0.0.11\n")
        if self.outbound:
            lines = read_lines("/etc/resolv.conf")
            resolv += "".join(f"{line}\n" for line in lines if line.split()[:1] == ["search"])
            options = [word for line in lines if line.split()[:1] == ["options"]
                       for word in line.split()[1:] if not word.startswith("ndots:")]
            resolv += f"options {' '.join(['ndots:0', *options])}\n"
        return (("hosts", hosts), ("hostname", f"{hostname}\n"), ("resolv.conf", resolv))

    # -- at the end -------------------------------------------------------------

    def close_listeners(self):
        for sock in self.listeners:
            sock.close()
        self.listeners = []

    def release(self):
        """Give the address back; the last one out removes the masquerade rule
        and restores IP forwarding. The veth goes with the container's network
        namespace (deleting it here would wait for the kernel's RCU grace
        period on the exit path); the bridge stays. Safe to call twice."""
        self.close_listeners()
        self.stop_names()
        if self.address is None:
            return
        if self.outbound and self.veth is not None and self.host_side:
            tool = firewall_tool()
            try:  # else the next container with that port's name undoes it (let_out)
                if tool is not None:
                    let_out(tool, self.veth, self.address, False)
            except ContainerError:
                pass
        fd = self.locked()
        try:
            state = self.load()
            state["containers"].pop(self.address, None)
            state["names"].pop(self.address, None)
            outbound, failure = None, None
            if not state["containers"]:
                outbound = state.pop("outbound", None)
            self.save(state)
            if outbound:
                os.pwrite(self.forwarding(), outbound["ip_forward_before"].encode(), 0)
                try:
                    firewall(outbound["tool"], "delete", state.get("subnet", str(self.subnet)))
                except ContainerError as exc:
                    failure = exc  # said after the rest is undone
            if failure is not None:
                raise failure
        finally:
            os.close(fd)
            self.address = None


def names_table(fd):
    """The table's names, from its open descriptor: name -> [(address, owner)],
    for the entries whose owner also holds the address in "containers"."""
    import json
    with open(os.dup(fd)) as f:
        state = json.load(f)
    containers, names, table = state.get("containers"), state.get("names"), {}
    if not isinstance(containers, dict) or not isinstance(names, dict):
        return table
    # Entry by entry: one that is no (pid, start time) with a list of names is
    # skipped alone, never taking the others' names with it.
    for ip, entry in names.items():
        owner = entry.get("owner") if isinstance(entry, dict) else None
        if (not isinstance(owner, list) or len(owner) != 2 or not all(type(n) is int for n in owner)
                or containers.get(ip) != owner or not isinstance(entry.get("names"), list)):
            continue
        for name in entry["names"]:
            if isinstance(name, str):
                table.setdefault(name, []).append((ip, owner))
    return table


def mac_for(address):
    """eth0's MAC address, made from its IPv4 address as docker makes it
    (02:42 and the address's four bytes). An address is handed to the next
    container as soon as one ends; the host and the other containers may
    still hold the old one's MAC for it in their neighbour tables (and Linux
    ignores a new one for a second after it confirmed the old: arp locktime),
    so a random MAC would leave the newcomer unreachable, its published ports
    silent, for up to half a minute. The same address, the same MAC."""
    return "02:42:" + ":".join(f"{int(byte):02x}" for byte in address.split("."))


IP_TOOLS = ("/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip")


def ip_batch(what, commands, netns=None, pass_fd=None):
    """Run iproute2's `ip -batch -` on commands, one a line, stopping at the
    first that fails; in the network namespace `netns` (a descriptor) if
    given, with descriptor `pass_fd` open in it. One line of ip's on failure."""
    tool = next((path for path in IP_TOOLS if os.access(path, os.X_OK)), None)
    if tool is None:
        raise ContainerError(what, "needs iproute2's ip (apt install iproute2)")
    run_tool(what, [tool, "-batch", "-"], "".join(f"{c}\n" for c in commands), netns, pass_fd)


def run_tool(what, argv, text, netns=None, pass_fd=None):
    """Run argv with `text` on its stdin, in the network namespace `netns` (a
    descriptor) if given; the first line it says, on failure."""
    tool = argv[0]
    commands_read, commands_write = os.pipe2(os.O_CLOEXEC)
    said_read, said_write = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        try:
            os.dup2(commands_read, 0)
            os.dup2(said_write, 1)
            os.dup2(said_write, 2)
            if pass_fd is not None:
                os.set_inheritable(pass_fd, True)
            if netns is not None:
                setns(netns, CLONE_NEWNET)
            os.execv(tool, argv)
        finally:
            os._exit(127)
    os.close(commands_read)
    os.close(said_write)
    try:
        os.write(commands_write, text.encode())
    finally:
        os.close(commands_write)
    said = b""
    while chunk := os.read(said_read, 4096):
        said += chunk
    os.close(said_read)
    status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    if status != 0:
        why = [line for line in said.decode(errors="replace").splitlines()
               if line and not line.startswith("Command failed")]
        raise ContainerError(what, why[0] if why else f"{os.path.basename(tool)} exited with {status}")


def redirect_dns(tool, netns, udp_port, tcp_port):
    """The container's 127.0.0.11:53 to the name server's ports, by a NAT rule
    of its own network namespace (where only its CAP_NET_ADMIN could touch it)."""
    from .names import ADDRESS
    what = "the name server's rule in the container"
    if os.path.basename(tool) == "nft":
        run_tool(what, [tool, "-f", "-"], (
            "table ip minicontainer_dns {\n chain output {\n"
            "  type nat hook output priority -100; policy accept;\n"
            f"  ip daddr {ADDRESS} udp dport 53 dnat to {ADDRESS}:{udp_port}\n"
            f"  ip daddr {ADDRESS} tcp dport 53 dnat to {ADDRESS}:{tcp_port}\n }}\n}}\n"), netns)
        return
    for proto, port in (("udp", udp_port), ("tcp", tcp_port)):
        run_tool(what, [tool, "-t", "nat", "-A", "OUTPUT", "-d", f"{ADDRESS}/32", "-p", proto,
                        "--dport", "53", "-j", "DNAT", "--to-destination", f"{ADDRESS}:{port}"],
                 "", netns)


def prune_network():
    """Remove the bridge and its state when no container is on it: what
    `minicontainer network prune` does. Returns the containers still there."""
    net = Network(parse_subnet(DEFAULT_SUBNET))
    fd = net.locked()
    try:
        state = net.load()
        if state["containers"]:
            return len(state["containers"])
        outbound = state.get("outbound")  # left by runs killed with their holders
        if outbound:
            os.pwrite(net.forwarding(), outbound["ip_forward_before"].encode(), 0)
            firewall(outbound["tool"], "delete", state.get("subnet", DEFAULT_SUBNET))
        if state.get("fence"):
            try:
                fence(state["fence"]["tool"], state["fence"]["subnet"], "delete")
            except (ContainerError, KeyError, TypeError):
                pass  # gone already
        if os.path.exists(f"/sys/class/net/{BRIDGE}"):
            ip_batch(f"remove bridge {BRIDGE}", [f"link del {BRIDGE}"])
        for name in (NET_STATE, NET_LOCK):
            try:
                os.unlink(name, dir_fd=net.state_dir)
            except FileNotFoundError:
                pass
        return 0
    finally:
        os.close(fd)


def firewall_tool():
    """nft, else iptables: found in PATH or in the system's sbin directories
    (a user's PATH has none, and a user's network needs them too)."""
    import shutil
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    return shutil.which("nft", path=path) or shutil.which("iptables", path=path)


def fence(tool, subnet, action="add"):
    """--outbound's fence at the bridge (root's on the host, a user's in the
    keeper's network namespace): what a container sends from its port
    (mcvPID, which the container cannot rename: the host's, or the keeper's)
    to anything beyond the subnet is dropped unless let_out put that port in
    the set. A missing default route is no fence: a container given
    NET_ADMIN adds one (or, with NET_RAW, sends its frames to the bridge by
    hand), and the host (or the keeper) forwards what reaches it. It is
    nftables's bridge family, a table of its own, where a frame's port is
    still known; iptables has only the source address, which NET_ADMIN can
    change: a lesser fence. Made anew (a stale one deleted first)."""
    what = "--outbound's fence at the bridge"
    if os.path.basename(tool) == "nft":
        try:
            run_tool(what, [tool, "delete", "table", "bridge", NFT_TABLE], "")
        except ContainerError:
            if action == "delete":
                raise
        if action == "add":
            run_tool(what, [tool, "-f", "-"], (
                f"table bridge {NFT_TABLE} {{\n set outbound {{\n  type ifname\n }}\n chain input {{\n"
                "  type filter hook input priority 0; policy accept;\n"
                f"  iifname != @outbound ip daddr != {subnet} drop\n"
                "  iifname != @outbound ether type ip6 drop\n }\n}\n"))
        return
    rule = ["FORWARD", "-i", BRIDGE, "!", "-o", BRIDGE, "-j", "DROP"]
    while True:  # one, whatever an earlier run left
        try:
            run_tool(what, [tool, "-D", *rule], "")
        except ContainerError:
            break
    if action == "add":
        run_tool(what, [tool, "-A", *rule], "")


def let_out(tool, veth, address, outbound):
    """A container's port let past the fence with --outbound, else not (an
    entry left by an ended container with the same port's name, or address,
    undone)."""
    what = "the container's --outbound rule"
    if os.path.basename(tool) == "nft":
        element = f"element bridge {NFT_TABLE} outbound {{ \"{veth}\" }}\n"
        run_tool(what, [tool, "-f", "-"], f"add {element}" + ("" if outbound else f"delete {element}"))
        return
    rule = ["FORWARD", "-i", BRIDGE, "-s", address, "-j", "ACCEPT"]
    while True:
        try:
            run_tool(what, [tool, "-D", *rule], "")
        except ContainerError:
            break
    if outbound:
        run_tool(what, [tool, "-I", *rule], "")


def firewall(tool, action, subnet):
    """Add or delete minicontainer's masquerade rule for the bridge's subnet."""
    import subprocess
    if os.path.basename(tool) == "nft":
        commands = ([[tool, "add", "table", "ip", NFT_TABLE],
                     [tool, "add", "chain", "ip", NFT_TABLE, "postrouting",
                      "{ type nat hook postrouting priority 100 ; }"],
                     [tool, "add", "rule", "ip", NFT_TABLE, "postrouting", "ip", "saddr", subnet,
                      "oifname", "!=", BRIDGE, "masquerade"]]
                    if action == "add" else [[tool, "delete", "table", "ip", NFT_TABLE]])
    else:
        flag = "-A" if action == "add" else "-D"
        commands = [[tool, "-t", "nat", flag, "POSTROUTING", "-s", subnet, "!", "-o", BRIDGE,
                     "-j", "MASQUERADE"]]
    for command in commands:
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise ContainerError(" ".join(command), result.stderr.strip() or "failed")


def read_lines(path):
    try:
        with open(path) as f:
            return [line.strip() for line in f]
    except OSError:
        return []


def listen_published(publish):
    """-p's sockets on the host, bound before the container starts, so that a
    port already taken fails the run at once: a listening TCP socket, or a UDP
    socket, for each. Not SO_REUSEADDR for UDP: there it would let a second
    socket bind the same port beside ours (and take its datagrams)."""
    import socket
    listeners = []
    try:
        for host_ip, host_port, _, proto in publish:
            kind = socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM
            sock = socket.socket(socket.AF_INET, kind | socket.SOCK_CLOEXEC)
            listeners.append(sock)
            if proto == "tcp":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host_ip, host_port))
            except OSError as exc:
                raise ContainerError.from_os(f"--publish {host_ip}:{host_port}/{proto}", exc) from None
            if proto == "tcp":
                sock.listen(64)
    except BaseException:
        for sock in listeners:
            sock.close()
        raise
    return listeners


def relay_published(listeners, publish, connect):
    """-p: a userspace relay per published port, in threads of the supervisor;
    connect(port, proto) makes each connection (or UDP flow) to the container's port."""
    import threading
    for sock, (_, _, port, proto) in zip(listeners, publish):
        loop = datagram_loop if proto == "udp" else accept_loop
        threading.Thread(target=loop, args=(sock, port, connect), daemon=True).start()


def accept_loop(listener, port, connect):
    """Accept connections on a published port and relay each to the container."""
    import threading
    while True:
        try:
            client, _ = listener.accept()
        except OSError:  # closed at the end of the run
            return
        try:
            upstream = connect(port, "tcp")
        except OSError:
            client.close()
            continue
        upstream.settimeout(None)
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=relay_bytes, args=(a, b), daemon=True).start()


def relay_bytes(src, dst):
    """Copy one direction of a relayed connection; half-close when it ends."""
    import socket
    try:
        while data := src.recv(65536):
            dst.sendall(data)
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass


# A UDP flow (one client address's datagrams and the container's replies) is
# forgotten after this long without traffic: docker-proxy's conntrack timeout.
UDP_FLOW_IDLE = 90.0
# At most this many flows a published port: a sender that varies its source
# address (or spoofs it) makes the oldest go, never the relay's descriptors run out.
UDP_FLOWS_MAX = 256


def datagram_loop(listener, port, connect):
    """Relay a published UDP port, as docker-proxy does: each client address
    gets a socket connected to the container's port (so the container sees
    one peer a client, and its replies go back to that client from the
    published port); a flow idle for UDP_FLOW_IDLE goes. One thread a port,
    woken at least once a second to see whether the run has closed the port."""
    import selectors
    import time
    flows = {}  # client address -> [upstream socket, last used]
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)

    def forget(client):
        upstream, _ = flows.pop(client)
        selector.unregister(upstream)
        upstream.close()

    try:
        while listener.fileno() != -1:
            try:
                ready = selector.select(timeout=1.0)
            except (OSError, ValueError, KeyError):  # the port closed under us
                return
            now = time.monotonic()
            for key, _ in ready:
                if key.fileobj is listener:
                    try:
                        data, client = listener.recvfrom(65535)
                    except OSError:  # closed at the end of the run
                        return
                    flow = flows.get(client)
                    if flow is None:
                        if len(flows) >= UDP_FLOWS_MAX:
                            forget(min(flows, key=lambda c: flows[c][1]))
                        try:
                            upstream = connect(port, "udp")
                        except OSError:
                            continue
                        upstream.setblocking(False)
                        flow = flows[client] = [upstream, now]
                        try:
                            selector.register(upstream, selectors.EVENT_READ, client)
                        except (KeyError, ValueError):  # the port's number, closed and reused
                            return
                    flow[1] = now
                    try:
                        flow[0].send(data)
                    except OSError:  # refused by the container (nothing listens): dropped
                        pass
                else:
                    try:
                        data = key.fileobj.recv(65535)
                        listener.sendto(data, key.data)
                    except OSError:
                        continue
                    if key.data in flows:
                        flows[key.data][1] = now
            for client in [c for c, (_, used) in flows.items() if now - used > UDP_FLOW_IDLE]:
                forget(client)
    finally:
        for upstream, _ in flows.values():
            upstream.close()
        selector.close()
