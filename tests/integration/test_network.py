"""Networking for real: traffic only between namespaces these tests make and
loopback. A test subnet keeps clear of anything a user may run."""
import os
import shutil
import socket
import subprocess
import threading
import time

import pytest

from helpers import (
    CLI, cli, container_pids, inspect, kept_network, network_leftovers, wait_for,
)

SUBNET = "10.213.0.0/24"
GATEWAY, FIRST, SECOND = "10.213.0.1", "10.213.0.2", "10.213.0.3"
BRIDGE = ("--network", "bridge", "--subnet", SUBNET)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_once(address, port, reply, ready_timeout=10):
    """A one-shot TCP server on `address` (which may appear only once the bridge does)."""
    result = {}

    def serve():
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        deadline = time.monotonic() + ready_timeout
        while True:
            try:
                sock.bind((address, port))
                break
            except OSError:
                if time.monotonic() > deadline:
                    return
                time.sleep(0.02)
        sock.listen(1)
        sock.settimeout(ready_timeout)
        try:
            conn, peer = sock.accept()
            result["peer"] = peer[0]
            conn.sendall(reply)
            conn.close()
        except OSError:
            pass
        sock.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread, result


RETRY_NC = "for i in $(busybox seq 100); do busybox nc {0} {1} </dev/null && exit 0; busybox sleep 0.05; done; exit 1"


def test_bridge_reaches_a_server_on_the_hosts_bridge_address(run):
    thread, seen = serve_once(GATEWAY, 8081, b"hello from host\n")
    result = run(*BRIDGE, "/bin/busybox", "sh", "-c", RETRY_NC.format(GATEWAY, 8081))
    thread.join(5)
    assert result.stdout == b"hello from host\n" and seen["peer"] == FIRST


def test_bridge_gives_eth0_an_address_and_etc_files(root, run):
    (root / "etc" / "hosts").write_text("the root's own\n")
    result = run(*BRIDGE, "--hostname", "web", "/bin/busybox", "sh", "-c",
                 "ls /sys/class/net; cat /etc/hosts /etc/hostname; busybox ip -o -4 addr show eth0")
    out = result.stdout.decode()
    assert out.split()[:2] == ["eth0", "lo"]
    assert f"{FIRST}\tweb" in out and "web\n" in out and f"inet {FIRST}/24" in out
    assert (root / "etc" / "hosts").read_text() == "the root's own\n"


def test_the_bridges_mac_stays_as_containers_come_and_go(root, start, run):
    """mc0's MAC is set, not its lowest port's (the kernel's default for a
    bridge), so a container that leaves never changes it under the others'
    ARP entries for the gateway. Control: a bridge of this test's own, with
    the kernel's default, does change as its port comes."""
    keeper = start(root, *BRIDGE, "/bin/probe", "sleep", 30)
    keeper.wait_ready()
    before = open("/sys/class/net/mc0/address").read()
    assert run(*BRIDGE, "/bin/probe", "pid").returncode == 0
    assert open("/sys/class/net/mc0/address").read() == before == "02:42:0a:d5:00:01\n"
    name = f"mcmac{os.getpid()}"[:15]
    subprocess.run(["ip", "link", "add", name, "type", "bridge"], check=True)
    try:
        own = open(f"/sys/class/net/{name}/address").read()
        subprocess.run(["ip", "link", "add", f"{name}a", "type", "veth", "peer", "name", f"{name}b"], check=True)
        subprocess.run(["ip", "link", "set", f"{name}a", "address", "00:00:00:00:00:01", "master", name], check=True)
        assert open(f"/sys/class/net/{name}/address").read() != own
    finally:
        subprocess.run(["ip", "link", "del", f"{name}a"], capture_output=True)
        subprocess.run(["ip", "link", "del", name], check=True)


def test_two_containers_reach_each_other(root, start, run):
    listener = start(root, *BRIDGE, "/bin/busybox", "sh", "-c",
                     "echo ready; echo hello neighbour | busybox nc -l -p 7000")
    listener.wait_ready()
    result = run(*BRIDGE, "/bin/busybox", "sh", "-c", RETRY_NC.format(FIRST, 7000))
    assert result.stdout == b"hello neighbour\n"
    assert listener.wait()[0] == 0


def test_published_port_reaches_a_server_in_the_container(root, start):
    port = free_port()
    server = start(root, *BRIDGE, "-p", f"{port}:80", "/bin/busybox", "sh", "-c",
                   "echo ready; echo served | busybox nc -l -p 80")
    server.wait_ready()
    data = b""
    for _ in range(100):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
                data = conn.recv(100)
            if data:
                break
        except OSError:
            pass
        time.sleep(0.05)
    assert data == b"served\n"
    assert server.wait()[0] == 0


def test_none_network_cannot_reach_the_bridge(root, start, run):
    keeper = start(root, *BRIDGE, "/bin/probe", "sleep", 30)  # keeps the bridge up
    keeper.wait_ready()
    thread, seen = serve_once(GATEWAY, 8082, b"x", ready_timeout=2)
    result = run("/bin/probe", "connect", GATEWAY, 8082)
    assert result.stdout.startswith(b"error:") and "peer" not in seen


def test_published_port_in_use_fails_cleanly(root, run):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = run(*BRIDGE, "-p", f"{port}:80", "/bin/probe", "pid")
    assert result.returncode == 125 and b"Address already in use" in result.stderr
    assert network_leftovers() == []


@pytest.mark.parametrize("args, message", [
    (("-p", "8080:80"), b"needs --network bridge"),
    (("--outbound",), b"needs --network bridge"),
    (("--network", "bridge", "--subnet", "10.0.0.0/30"), b"too small"),
    (("--network", "bridge", "-p", "80"), b"expected [HOST_IP:]HOST_PORT:CONTAINER_PORT"),
    (("--network", "bridge", "-p", "8080:80/sctp"), b"unknown protocol 'sctp': expected tcp or udp"),
])
def test_bad_network_options_fail_with_125(run, args, message):
    result = run(*args, "/bin/probe", "pid")
    assert result.returncode == 125 and message in result.stderr
    assert network_leftovers() == []


def nft_table():
    import subprocess
    out = subprocess.run(["nft", "list", "table", "ip", "minicontainer"], capture_output=True, text=True)
    return out.stdout if out.returncode == 0 else ""


def ip_forward():
    with open("/proc/sys/net/ipv4/ip_forward") as f:
        return f.read().strip()


@pytest.fixture
def nft():
    if shutil.which("nft") is None:
        pytest.fail("nft is needed for the --outbound tests: run setup.sh (it installs nftables)")
    return shutil.which("nft")


@pytest.fixture
def far():
    """An address beyond the host: a network namespace of this test's, joined
    to the host by a veth (10.214.0.1 on the host's side, 10.214.0.2 in it),
    reached from the bridge only by the host's forwarding."""
    holder = subprocess.Popen(["unshare", "--net", "sleep", "60"])
    link = f"mcfar{holder.pid}"[:15]
    try:
        assert wait_for(lambda: os.readlink(f"/proc/{holder.pid}/ns/net")
                        != os.readlink("/proc/self/ns/net"), 5)
        subprocess.run(["ip", "link", "add", link, "type", "veth", "peer", "name", "eth0",
                        "netns", str(holder.pid)], check=True)
        subprocess.run(["ip", "addr", "add", "10.214.0.1/24", "dev", link], check=True)
        subprocess.run(["ip", "link", "set", link, "up"], check=True)
        inside = ["nsenter", "-t", str(holder.pid), "-n", "ip"]
        for args in (["addr", "add", "10.214.0.2/24", "dev", "eth0"], ["link", "set", "eth0", "up"],
                     ["link", "set", "lo", "up"]):
            subprocess.run(inside + args, check=True)
        yield "10.214.0.2"
    finally:
        holder.kill()
        holder.wait()
        assert wait_for(lambda: not os.path.exists(f"/sys/class/net/{link}"), 10)


PING = "busybox ping -c 1 -W 2 {} >/dev/null 2>&1 && echo reached || echo unreached"


def test_a_container_without_outbound_reaches_nothing_beyond_the_host_even_with_net_raw(root, start, run, nft, far):
    """The bridge's containers have a default route (root's), and the host
    forwards and masquerades the subnet while any container has --outbound:
    one without it that sends past the bridge (NET_RAW for a raw socket;
    NET_ADMIN could change its route or address too) is dropped at its own
    port of the bridge, which it cannot rename. Control: the --outbound
    container reaches the far address; the other still reaches the host's
    bridge address and its neighbour."""
    out = start(root, *BRIDGE, "--outbound", "--cap-add", "NET_RAW", "/bin/busybox", "sh", "-c",
                f"echo ready; {PING.format(far)}; busybox sleep 30")
    out.wait_ready()
    assert out.proc.stdout.readline() == b"reached\n"
    sneaky = run(*BRIDGE, "--cap-add", "NET_RAW", "--cap-add", "NET_ADMIN", "/bin/busybox", "sh", "-c",
                 f"{PING.format(far)}; {PING.format(GATEWAY)}; {PING.format(FIRST)}")
    assert sneaky.stdout.decode().split() == ["unreached", "reached", "reached"], sneaky
    again = run(*BRIDGE, "--outbound", "--cap-add", "NET_RAW", "/bin/busybox", "sh", "-c", PING.format(far))
    assert again.stdout.decode().split() == ["reached"], again


def test_outbound_masquerades_while_needed_and_restores_forwarding(root, start, nft):
    before = ip_forward()
    assert nft_table() == ""
    first = start(root, *BRIDGE, "--outbound", "/bin/probe", "sleep", 30)
    first.wait_ready()
    second = start(root, *BRIDGE, "--outbound", "/bin/probe", "sleep", 30)
    second.wait_ready()
    assert f"ip saddr {SUBNET} oifname != \"mc0\" masquerade" in nft_table()
    assert ip_forward() == "1"
    first.proc.terminate()
    code, _, err = first.wait()
    assert code == 143, err
    assert "masquerade" in nft_table()  # the second container still needs it
    second.proc.terminate()
    code, _, err = second.wait()
    assert code == 143, err
    assert nft_table() == "" and ip_forward() == before


def test_outbound_is_undone_after_sigkill(root, start, nft):
    before = ip_forward()
    c = start(root, *BRIDGE, "--outbound", "/bin/probe", "sleep", 30)
    c.wait_ready()
    assert "masquerade" in nft_table()
    c.proc.kill()
    c.proc.wait()
    assert wait_for(lambda: nft_table() == "" and ip_forward() == before, 3.0)


def test_nothing_is_left_after_sigkill(root, start):
    c = start(root, *BRIDGE, "-p", f"{free_port()}:80", "/bin/probe", "sleep", 30)
    c.wait_ready()
    assert network_leftovers()  # the veth and the address
    c.proc.kill()
    c.proc.wait()
    assert wait_for(lambda: network_leftovers() == [] and not container_pids(root), 3.0), \
        network_leftovers()


def state_of_network():
    import json
    try:
        with open("/run/minicontainer-network.json") as f:
            return json.load(f)["containers"]
    except FileNotFoundError:
        return {}


def test_a_killed_container_leaves_the_others_network_alone(root, start):
    """Its holder judges who else is alive in the host's /proc, not the container's."""
    first = start(root, *BRIDGE, "/bin/probe", "sleep", 30)
    first.wait_ready()
    second = start(root, *BRIDGE, "/bin/busybox", "sh", "-c",
                   "echo ready; echo still here | busybox nc -l -p 7000")
    second.wait_ready()
    assert set(state_of_network()) == {FIRST, SECOND}
    first.proc.kill()
    first.proc.wait()
    assert wait_for(lambda: FIRST not in state_of_network(), 3.0)
    assert set(state_of_network()) == {SECOND} and os.path.exists("/sys/class/net/mc0")
    # The survivor still answers on its address, and a newcomer gets another one.
    result = start(root, *BRIDGE, "/bin/busybox", "sh", "-c",
                   "busybox ip -o -4 addr show eth0; " + RETRY_NC.format(SECOND, 7000))
    code, out, err = result.wait()
    assert code == 0, err
    assert f"inet {FIRST}/24".encode() in out and b"still here\n" in out
    assert second.wait()[0] == 0


def test_a_run_killed_during_set_up_is_swept_by_the_next(root, run):
    """What a run killed between taking an address and starting leaves (an entry
    whose owner is gone, the lock, the state file) goes with the next run."""
    import json
    dead = __import__("subprocess").Popen(["true"])
    dead.wait()
    with open("/run/minicontainer-network.lock", "w"):
        pass
    with open("/run/minicontainer-network.json", "w") as f:
        json.dump({"subnet": SUBNET, "containers": {FIRST: [dead.pid, 1]}}, f)
    result = run(*BRIDGE, "/bin/busybox", "ip", "-o", "-4", "addr", "show", "eth0")
    assert result.returncode == 0 and f"inet {FIRST}/24".encode() in result.stdout
    assert wait_for(lambda: network_leftovers() == [], 2.0), network_leftovers()  # the veth: soon


def test_the_last_one_out_restores_forwarding_after_sigkill(root, start, nft):
    """The last container to leave undoes --outbound even if it did not ask for
    it, and even when its minicontainer was SIGKILLed (its holder opens the
    host's ip_forward, back in the host's network namespace)."""
    before = ip_forward()
    outbound = start(root, *BRIDGE, "--outbound", "/bin/probe", "sleep", 30)
    outbound.wait_ready()
    plain = start(root, *BRIDGE, "/bin/probe", "sleep", 30)
    plain.wait_ready()
    outbound.proc.terminate()
    assert outbound.wait()[0] == 143
    assert "masquerade" in nft_table() and ip_forward() == "1"
    plain.proc.kill()
    plain.proc.wait()
    assert wait_for(lambda: nft_table() == "" and ip_forward() == before, 3.0), \
        (nft_table(), ip_forward(), plain.proc.stderr.read())


def bridge_address():
    out = subprocess.run(["ip", "-o", "-4", "addr", "show", "dev", "mc0"], capture_output=True, text=True)
    return [line.split()[3] for line in out.stdout.splitlines()]


def test_the_bridge_is_kept_between_containers_until_pruned(root, run, start):
    """As docker keeps docker0: the second container finds the bridge made,
    and runs nothing to make it; `network prune` removes it, but not while
    a container is on it."""
    assert run(*BRIDGE, "/bin/probe", "pid").returncode == 0
    assert wait_for(lambda: network_leftovers() == [], 2.0), network_leftovers()  # the veth: soon
    assert kept_network() == ["mc0", "minicontainer-network.json", "minicontainer-network.lock"]
    assert bridge_address() == [f"{GATEWAY}/24"]
    keeper = start(root, *BRIDGE, "/bin/probe", "sleep", 30)
    keeper.wait_ready()
    refused = cli("network", "prune")
    assert refused.returncode == 125 and refused.stderr == \
        b"minicontainer: network prune: 1 running container still on mc0: kept\n"
    assert "mc0" in kept_network()
    keeper.proc.terminate()
    assert keeper.wait()[0] == 143
    # Another subnet, once no container is on the bridge: the bridge takes it.
    other = run("--network", "bridge", "--subnet", "10.214.0.0/24", "/bin/busybox", "ip", "-o",
                "-4", "route", "show", "default")
    assert other.returncode == 0 and b"default via 10.214.0.1 dev eth0" in other.stdout
    assert bridge_address() == ["10.214.0.1/24"]
    assert wait_for(lambda: network_leftovers() == [], 2.0), network_leftovers()
    pruned = cli("network", "prune")
    assert pruned.returncode == 0 and pruned.stderr == b""
    assert kept_network() == []
    assert run(*BRIDGE, "/bin/probe", "pid").returncode == 0  # made again when needed
    assert "mc0" in kept_network()


# -- services: run -d on the bridge ------------------------------------------
# A detached container's address, published ports and --outbound rule are its
# monitor's, which lives as long as it: `run -d` itself ends at once, and what
# it owned would be swept and handed to the next container.

@pytest.fixture(autouse=True)
def no_services_left(no_leftovers):
    """Detached containers a failed test left running are removed before the
    leak checks look (they would only repeat the failure): in the test's
    own state directory, so after no_leftovers is set up."""
    yield
    ids = cli("ps", "-aq").stdout.decode().split()
    if ids:
        cli("rm", "-f", *ids)


def serve_dir(root, name):
    """/www/NAME/index.html in the root, saying NAME: each service its own page."""
    page = root / "www" / name
    page.mkdir(parents=True, exist_ok=True)
    (page / "index.html").write_text(f"service {name}\n")
    return f"service {name}\n".encode()


def fetch(port):
    """The page on 127.0.0.1:PORT, or None (bounded: never hangs a test)."""
    import urllib.request
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=3) as reply:
            return reply.read()
    except OSError:
        return None


def httpd(root, name, port, *extra):
    """A detached busybox httpd serving /www/NAME on 127.0.0.1:PORT; its id."""
    serve_dir(root, name)
    result = cli("run", "--root", root, "-d", "--name", name, *BRIDGE, "-p", f"{port}:80", *extra,
                 "/bin/busybox", "httpd", "-f", "-p", "80", "-h", f"/www/{name}")
    assert result.returncode == 0, result.stderr
    return result.stdout.decode().strip()


def address_in(name):
    """eth0's address as the container itself sees it."""
    out = cli("exec", name, "/bin/busybox", "ip", "-o", "-4", "addr", "show", "eth0")
    assert out.returncode == 0, out.stderr
    return out.stdout.decode().split()[3].split("/")[0]


def ours():
    """The test subnet's addresses in the bridge's table, whoever owns them."""
    return {ip: owner for ip, owner in state_of_network().items() if ip.startswith("10.213.0.")}


def monitor_of(name):
    return inspect(name)["Monitor"]


def test_detached_services_get_their_own_addresses_and_keep_their_ports(root):
    """Three services started at once, and a foreground container beside them,
    get four addresses; each address is its monitor's in the bridge's table;
    each service's published port answers with its own page while the others
    start and stop; once all have ended, the table holds none of them."""
    ports = {name: free_port() for name in ("a", "b", "c", "d")}
    # As the reproduction: one `run -d` after the other (each has ended
    # before the next starts), then one more at the same time as a foreground run.
    httpd(root, "a", ports["a"])
    httpd(root, "b", ports["b"])
    serve_dir(root, "c")
    third = subprocess.Popen(
        [*CLI, "run", "--root", str(root), "-d", "--name", "c", *BRIDGE, "-p", f"{ports['c']}:80",
         "/bin/busybox", "httpd", "-f", "-p", "80", "-h", "/www/c"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    foreground = cli("run", "--root", root, *BRIDGE, "/bin/busybox", "ip", "-o", "-4", "addr",
                     "show", "eth0")
    assert third.communicate(timeout=60)[1] == b"" and third.returncode == 0
    assert foreground.returncode == 0, foreground.stderr
    addresses = {name: address_in(name) for name in ("a", "b", "c")}
    assert len(set(addresses.values())) == 3, addresses
    # The foreground run may have ended before c took an address (then c may
    # take its address), never before a and b did.
    assert foreground.stdout.decode().split()[3].split("/")[0] not in (addresses["a"], addresses["b"])
    for name, address in addresses.items():
        assert ours().get(address) == monitor_of(name)  # the monitor's, not `run -d`'s
        assert inspect(name)["NetworkSettings"]["IPAddress"] == address
        hosts = cli("exec", name, "/bin/busybox", "cat", "/etc/hosts").stdout.decode()
        assert f"{address}\t{name}\n" in hosts  # its own address under its name
    refused = cli("network", "prune")  # the bridge is not pulled from under them
    assert refused.returncode == 125 and b"3 running containers still on mc0" in refused.stderr
    for name in ("a", "b", "c"):
        assert wait_for(lambda: fetch(ports[name]), 10) == f"service {name}\n".encode()
    # b stops: a and c answer still; d takes b's address and serves its own page.
    assert cli("stop", "-t", "2", "b").returncode == 0
    assert fetch(ports["b"]) is None and addresses["b"] not in ours()
    assert fetch(ports["a"]) == b"service a\n" and fetch(ports["c"]) == b"service c\n"
    httpd(root, "d", ports["d"])
    assert address_in("d") == addresses["b"]
    assert wait_for(lambda: fetch(ports["d"]), 10) == b"service d\n"
    # Short foreground containers come and go beside them: the services keep answering.
    for _ in range(3):
        passing = cli("run", "--root", root, *BRIDGE, "/bin/busybox", "ip", "-o", "-4", "addr",
                      "show", "eth0")
        assert passing.returncode == 0, passing.stderr
        assert passing.stdout.decode().split()[3].split("/")[0] not in ours()
        for name in ("a", "c", "d"):
            assert fetch(ports[name]) == f"service {name}\n".encode(), name
    assert cli("rm", "-f", "a", "c", "d").returncode == 0
    assert cli("rm", "b").returncode == 0
    assert all(fetch(port) is None for port in ports.values())
    assert wait_for(lambda: not ours() and network_leftovers() == [], 3.0), \
        (ours(), network_leftovers())


def holder_of(monitor_pid):
    """The monitor's child that holds the container's namespaces."""
    with open(f"/proc/{monitor_pid}/task/{monitor_pid}/children") as f:
        return [int(pid) for pid in f.read().split()]


def end_by_exit(root, name):
    (root / "www" / name / "stop").write_text("")


def end_by_sigkill_of_monitor(root, name):
    os.kill(monitor_of(name)[0], 9)


def end_by_sigkill_of_monitor_and_holder(root, name):
    """Nothing of minicontainer's is left to clean up: the next run's sweep
    frees the address (its owner, by pid and start time, is gone)."""
    monitor = monitor_of(name)[0]
    holders = holder_of(monitor)
    os.kill(monitor, 9)
    for pid in holders:
        os.kill(pid, 9)


ENDINGS = {
    "exit": end_by_exit,
    "stop": lambda root, name: cli("stop", "-t", "2", name),
    "kill": lambda root, name: cli("kill", name),
    "rm -f": lambda root, name: cli("rm", "-f", name),
    "SIGKILL of its monitor": end_by_sigkill_of_monitor,
    "SIGKILL of its monitor and holder": end_by_sigkill_of_monitor_and_holder,
}


@pytest.mark.parametrize("ending", list(ENDINGS))
def test_a_services_address_and_port_are_freed_however_it_ends(root, ending):
    """While it runs, the address is its monitor's and its port answers; once
    it has ended (by itself, stop, kill, rm -f, or SIGKILL of minicontainer's
    own processes), its address and port are free, its neighbour still
    serves, and the next container gets the freed address."""
    neighbour_port, port = free_port(), free_port()
    httpd(root, "neighbour", neighbour_port)
    serve_dir(root, "svc")
    started = cli("run", "--root", root, "-d", "--name", "svc", *BRIDGE, "-p", f"{port}:80",
                  "/bin/busybox", "sh", "-c", "busybox httpd -p 80 -h /www/svc;"
                  " while [ ! -e /www/svc/stop ]; do busybox sleep 0.05; done")
    assert started.returncode == 0, started.stderr
    assert wait_for(lambda: fetch(port), 10) == b"service svc\n"
    address = address_in("svc")
    assert ours()[address] == monitor_of("svc")
    ENDINGS[ending](root, "svc")
    if ending != "rm -f":  # rm -f waits for the end, then removes the entry
        gone = lambda: inspect("svc")["State"]["Status"] in ("exited", "dead")  # noqa: E731
        assert wait_for(gone, 10), inspect("svc")["State"]
        assert inspect("svc")["NetworkSettings"]["IPAddress"] == ""
    assert wait_for(lambda: fetch(port) is None, 5)
    if ending != "SIGKILL of its monitor and holder":  # the holder frees it
        assert wait_for(lambda: address not in ours(), 5), ours()
    assert fetch(neighbour_port) == b"service neighbour\n"
    after = cli("run", "--root", root, *BRIDGE, "/bin/busybox", "ip", "-o", "-4", "addr",
                "show", "eth0")
    assert after.returncode == 0 and f"inet {address}/24".encode() in after.stdout, after
    assert list(ours()) == [address_in("neighbour")]
    assert fetch(neighbour_port) == b"service neighbour\n"
    assert cli("rm", "-f", "neighbour").returncode == 0
    assert ending == "rm -f" or cli("rm", "svc").returncode == 0
    assert wait_for(lambda: not ours() and network_leftovers() == [], 3.0), \
        (ours(), network_leftovers())


def test_a_detached_containers_outbound_rule_outlives_run_d(root, start, nft):
    """--outbound's masquerade rule and IP forwarding are the monitor's too: a
    foreground container that comes and goes beside a detached one leaves
    them in place; the detached one's end removes them."""
    before = ip_forward()
    started = cli("run", "--root", root, "-d", "--name", "out", *BRIDGE, "--outbound",
                  "/bin/busybox", "sleep", "60")
    assert started.returncode == 0, started.stderr
    assert "masquerade" in nft_table() and ip_forward() == "1"
    passing = cli("run", "--root", root, *BRIDGE, "/bin/probe", "pid")
    assert passing.returncode == 0, passing.stderr
    assert "masquerade" in nft_table() and ip_forward() == "1"
    assert cli("stop", "-t", "1", "out").returncode == 0
    assert nft_table() == "" and ip_forward() == before
    assert cli("rm", "out").returncode == 0


# -- UDP: -p HOST:CONTAINER/udp ------------------------------------------------

def free_udp_and_tcp_port():
    """A port free on 127.0.0.1 for both protocols."""
    while True:
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue


def udp_ask(port, data=b"ping", timeout=2):
    """One datagram to 127.0.0.1:PORT and the reply, or None (refused, or no reply)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.connect(("127.0.0.1", port))
        try:
            s.send(data)
            return s.recv(65535)
        except OSError:
            return None


def tcp_ask(port):
    """What a TCP connection to 127.0.0.1:PORT is told, or None."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
            return conn.recv(100)
    except OSError:
        return None


def serve_both(root, name, *publish):
    """A detached probe answering UDP and TCP on its port 53, published as asked."""
    result = cli("run", "--root", root, "-d", "--name", name, *BRIDGE, *publish,
                 "/bin/probe", "serve", "53")
    assert result.returncode == 0, result.stderr
    assert wait_for(lambda: b"ready" in cli("logs", name).stdout, 10)


@pytest.mark.parametrize("protocols", [("udp",), ("tcp",), ("tcp", "udp")])
def test_a_udp_port_is_published_apart_from_tcp(root, protocols):
    """The container serves its port 53 over both protocols; only what -p
    publishes answers on the host: a UDP echo through /udp (the positive
    control of the TCP-only run), TCP through /tcp or no suffix (the
    positive control of the UDP-only run), both when the port is given twice."""
    port = free_udp_and_tcp_port()
    publish = [arg for proto in protocols
               for arg in ("-p", f"{port}:53" if proto == "tcp" and len(protocols) == 1 else f"{port}:53/{proto}")]
    serve_both(root, "dns", *publish)
    ports = cli("ps").stdout.decode()
    for proto in protocols:
        assert f"127.0.0.1:{port}->53/{proto}" in ports, ports
    assert inspect("dns")["HostConfig"]["Ports"] == [f"127.0.0.1:{port}->53/{p}" for p in protocols]
    if "udp" in protocols:
        assert wait_for(lambda: udp_ask(port, b"ping"), 10) == b"udp ping"
        # Two clients at once: each gets its own replies, large datagrams whole.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a, \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b:
            for s in (a, b):
                s.settimeout(3)
                s.connect(("127.0.0.1", port))
            a.send(b"from a")
            b.send(b"b" * 60000)
            assert a.recv(65535) == b"udp from a" and b.recv(65535) == b"udp " + b"b" * 60000
    else:
        assert wait_for(lambda: tcp_ask(port), 10) == b"tcp\n"  # it serves: now ask UDP
        assert udp_ask(port) is None
    if "tcp" in protocols:
        assert wait_for(lambda: tcp_ask(port), 10) == b"tcp\n"
    else:
        assert tcp_ask(port) is None
    assert cli("rm", "-f", "dns").returncode == 0
    assert udp_ask(port, timeout=0.5) is None and tcp_ask(port) is None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again:
        again.bind(("127.0.0.1", port))  # the port is free again
    assert wait_for(lambda: network_leftovers() == [], 3.0), network_leftovers()


def test_a_udp_port_is_freed_when_the_monitor_is_killed(root):
    """SIGKILL of the monitor that relays the port: the port answers no more
    and can be bound again; the holder frees the address; no rule, link or
    process is left (the relay is a socket of the monitor's, not a rule)."""
    port = free_udp_and_tcp_port()
    serve_both(root, "dns", "-p", f"{port}:53/udp")
    assert wait_for(lambda: udp_ask(port), 10) == b"udp ping"
    monitor = monitor_of("dns")[0]
    os.kill(monitor, 9)
    assert wait_for(lambda: inspect("dns")["State"]["Status"] in ("exited", "dead"), 10)
    assert udp_ask(port, timeout=0.5) is None

    def bindable():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("127.0.0.1", port))
                return True
            except OSError:
                return False
    assert wait_for(bindable, 5)
    assert cli("rm", "dns").returncode == 0
    assert wait_for(lambda: not ours() and network_leftovers() == [], 3.0), (ours(), network_leftovers())


def test_a_udp_port_taken_fails_the_run_at_once(root, run):
    """Another socket on the UDP port: the run says so and starts nothing; the
    same number free for TCP does not matter (and the TCP publish of it works)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        refused = run(*BRIDGE, "-p", f"{port}:53/udp", "/bin/probe", "pid")
        assert refused.returncode == 125
        assert refused.stderr.decode().splitlines() == [
            f"minicontainer: --publish 127.0.0.1:{port}/udp: Address already in use"]
        with socket.socket() as probe_tcp:
            try:
                probe_tcp.bind(("127.0.0.1", port))
            except OSError:
                pytest.skip("the TCP port of that number is taken too")
        assert run(*BRIDGE, "-p", f"{port}:53", "/bin/probe", "pid").returncode == 0
    assert wait_for(lambda: network_leftovers() == [], 3.0), network_leftovers()
