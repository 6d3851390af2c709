"""Containers on the bridge reach each other by --name and --network-alias,
through the name server minicontainer serves at 127.0.0.11:53 in each bridge
container's own network namespace (docker's embedded DNS); and that name
server, which reads packets from a hostile container in a thread of the
process holding the container's network, stays up and answers only from the
table. The attacks send raw packets from inside a container's network
namespace (a client process that joins it); each is followed by a
well-formed query that must still get the right answer."""
import json
import os
import subprocess
import sys
import time

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from helpers import cli, inspect, wait_for

import dnslib  # a dependency (pyproject.toml): missing, these tests must fail, not skip

# Containers' cgroups are named after them, and other test runs on this host
# may name theirs "web" at the same time: each name here carries this run's pid.
N = str(os.getpid())
WEB, CLIENT_NAME, ALIAS = f"web{N}", f"client{N}", f"db{N}"

# A client inside a container's network namespace (it joins it by PID 1's
# /proc/PID/ns/net): one JSON command a line on stdin, one JSON answer a line.
CLIENT = r"""
import ctypes, json, os, socket, sys, time
fd = os.open(f"/proc/{sys.argv[1]}/ns/net", os.O_RDONLY)
if ctypes.CDLL(None, use_errno=True).setns(fd, 0x40000000) != 0:
    sys.exit(f"setns: {os.strerror(ctypes.get_errno())}")
held = []

def udp(data, wait, to="127.0.0.11"):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(wait)
        s.sendto(data, (to, 53))
        try:
            return s.recv(65535).hex()
        except OSError:
            return None

def tcp(data, wait):
    with socket.create_connection(("127.0.0.11", 53), timeout=wait) as s:
        s.sendall(data)
        got = b""
        try:
            while len(got) < 2 or len(got) < 2 + int.from_bytes(got[:2], "big"):
                chunk = s.recv(65537)
                if not chunk:
                    break
                got += chunk
        except OSError:
            pass
        return got[2:].hex() if len(got) >= 2 else None

for line in sys.stdin:
    c = json.loads(line)
    data = bytes.fromhex(c.get("data", ""))
    try:
        if c["op"] == "udp":
            out = udp(data, c.get("wait", 3), c.get("to", "127.0.0.11"))
        elif c["op"] == "tcp":
            out = tcp(data, c.get("wait", 3))
        elif c["op"] == "flood":
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                for _ in range(c["n"]):
                    try:
                        s.sendto(data, ("127.0.0.11", 53))
                    except OSError:
                        pass
            out = "sent"
        elif c["op"] == "hold":
            for _ in range(c["n"]):
                s = socket.create_connection(("127.0.0.11", 53), timeout=3)
                s.sendall(data)
                held.append(s)
            out = "held"
        elif c["op"] == "tcpflood":  # a stream as fast as it goes, for some seconds; again if closed
            chunk = data or bytes(65536)  # zero-length frames, by default
            sent, end, s = 0, time.monotonic() + c["seconds"], None
            while time.monotonic() < end:
                try:
                    if s is None:
                        s = socket.create_connection(("127.0.0.11", 53), timeout=0.2)
                    sent += s.send(chunk)
                except TimeoutError:
                    pass
                except OSError:
                    if s is not None:
                        s.close()
                    s = None
            if s is not None:
                s.close()
            out = sent
        elif c["op"] == "connflood":  # connections, each closed at once, for some seconds
            made, end = 0, time.monotonic() + c["seconds"]
            while time.monotonic() < end:
                try:
                    socket.create_connection(("127.0.0.11", 53), timeout=0.2).close()
                    made += 1
                except OSError:
                    pass
            out = made
        elif c["op"] == "held_closed":  # how many of the held connections the server closed
            n = 0
            for s in held:
                s.settimeout(0.1)
                try:
                    n += s.recv(1) == b""
                except OSError as e:
                    n += not isinstance(e, TimeoutError)
            out = n
    except OSError as e:
        out = f"error {e}"
    print(json.dumps(out), flush=True)
"""


class Client:
    """Raw DNS from inside the network namespace of the container whose PID 1 is pid1."""

    def __init__(self, pid1):
        self.process = subprocess.Popen([sys.executable, "-c", CLIENT, str(pid1)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(self, **command):
        if "data" in command:
            command["data"] = command["data"].hex()
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        assert line, "the client ended"
        return json.loads(line)

    def query(self, name, qtype="A", op="udp", wait=3):
        """The parsed answer to a well-formed query, or None."""
        packet = dnslib.DNSRecord.question(name, qtype).pack()
        if op == "tcp":
            packet = len(packet).to_bytes(2, "big") + packet
        answer = self.ask(op=op, data=packet, wait=wait)
        return None if answer is None else dnslib.DNSRecord.parse(bytes.fromhex(answer))

    def close(self):
        self.process.stdin.close()
        self.process.wait(10)


def addresses(answer):
    return sorted(str(rr.rdata) for rr in answer.rr if rr.rtype == dnslib.QTYPE.A)


def started(root, *args):
    """run -d a container that sleeps; its id."""
    result = cli("run", "--root", root, "-d", *args, "/bin/busybox", "sleep", "1000")
    assert result.returncode == 0, result.stderr
    return result.stdout.decode().strip()


def inside(root, *script, network=("--network", "bridge")):
    """Run a shell script in a new container; (exit code, output)."""
    result = cli("run", "--root", root, *network, "/bin/busybox", "sh", "-c", "; ".join(script))
    return result.returncode, result.stdout.decode() + result.stderr.decode()


@pytest.fixture
def web(root):
    """A named container on the bridge serving /www over HTTP on 8080, with an alias; its address."""
    (root / "www").mkdir()
    (root / "www" / "index.html").write_text("served by web\n")
    result = cli("run", "--root", root, "-d", "--name", WEB, "--network", "bridge",
                 "--network-alias", f"Www{N}.Example", "--network-alias", ALIAS, "/bin/busybox",
                 "httpd", "-f", "-p", "8080", "-h", "/www")
    assert result.returncode == 0, result.stderr
    yield inspect(WEB)["NetworkSettings"]["IPAddress"]
    cli("rm", "-f", WEB)


@pytest.fixture
def client(root, web):
    """A second container on the bridge (named `client`), and a raw client in its network namespace."""
    started(root, "--name", CLIENT_NAME, "--network", "bridge")
    raw = Client(inspect(CLIENT_NAME)["State"]["Pid"])
    yield raw
    raw.close()
    cli("rm", "-f", CLIENT_NAME)


# -- by name ------------------------------------------------------------------

def test_containers_on_the_bridge_reach_each_other_by_name_and_alias(root, web):
    code, out = inside(root, "cat /etc/resolv.conf", f"busybox nslookup {WEB}",
                       f"busybox nslookup WWW{N}.example.", f"busybox wget -qO- http://{WEB}:8080/",
                       f"busybox wget -qO- http://{ALIAS}:8080/")
    assert code == 0, out
    assert "nameserver 127.0.0.11\n" in out
    assert out.count(f"Address: {web}\n") == 2, out
    assert out.count("served by web\n") == 2, out
    assert cli("rm", "-f", WEB).returncode == 0
    # Gone with its container: not even a sweep is needed.
    code, out = inside(root, f"busybox nslookup {WEB}", f"busybox nslookup {ALIAS}")
    assert code != 0 and web not in out.replace("10.88.0.1", ""), out
    assert "SERVFAIL" in out, out


def test_both_doors_serve_names_and_take_aliases(root, web, door):
    """The library's run (through tests/library_door.py) takes --network-alias as
    network_alias, and its container resolves the bridge's names and its own alias."""
    result = door("run", "--root", root, "--network", "bridge", "--network-alias", f"self{N}",
                  "/bin/busybox", "sh", "-c", f"busybox nslookup {WEB}; busybox nslookup self{N};"
                  " busybox hostname -i")
    out = result.stdout.decode()
    assert result.returncode == 0, out + result.stderr.decode()
    own = out.split()[-1]
    assert f"Address: {web}\n" in out and f"Address: {own}\n" in out and own != web, out


def test_a_container_off_the_bridge_resolves_nothing_and_is_not_resolved(root, web):
    started(root, "--name", f"lonely{N}")  # named, not on the bridge
    try:
        code, out = inside(root, f"busybox nslookup {WEB}", network=("--network", "none"))
        assert code != 0 and web not in out, out
        code, out = inside(root, f"busybox nslookup lonely{N}")
        assert code != 0 and "SERVFAIL" in out, out
        code, out = inside(root, f"busybox nslookup {WEB}")  # control: on the bridge, it resolves
        assert code == 0 and f"Address: {web}\n" in out, out
    finally:
        cli("rm", "-f", f"lonely{N}")


def test_a_name_that_is_no_dns_name_is_not_registered(root, web):
    started(root, "--name", f"my_db{N}", "--network", "bridge")
    try:
        with open("/run/minicontainer-network.json") as f:
            table = json.load(f)["names"]
        ours = (WEB, ALIAS, f"www{N}.example", f"my_db{N}")
        assert sorted(n for entry in table.values() for n in entry["names"] if n in ours) == \
            sorted([WEB, ALIAS, f"www{N}.example"])
        code, out = inside(root, f"busybox nslookup my_db{N}")
        assert code != 0, out
    finally:
        cli("rm", "-f", f"my_db{N}")


def test_several_containers_with_one_alias_all_answer(root, web, client):
    started(root, "--name", f"second{N}", "--network", "bridge", "--network-alias", ALIAS)
    try:
        second = inspect(f"second{N}")["NetworkSettings"]["IPAddress"]
        assert addresses(client.query(ALIAS)) == sorted([web, second])
        assert addresses(client.query(f"second{N}")) == [second]
    finally:
        cli("rm", "-f", f"second{N}")
    assert addresses(client.query(ALIAS)) == [web]


def test_a_restarted_container_keeps_resolving(root):
    (root / "svc.sh").write_text("#!/bin/busybox sh\n"
                                 "[ -e /run.once ] || { : > /run.once; exit 3; }\n"
                                 f"busybox nslookup again{N} > /resolved 2>&1\n"
                                 "exec busybox httpd -f -p 8080 -h /\n")
    (root / "svc.sh").chmod(0o755)
    result = cli("run", "--root", root, "-d", "--name", f"again{N}", "--restart", "on-failure",
                 "--network", "bridge", "/bin/busybox", "sh", "/svc.sh")
    assert result.returncode == 0, result.stderr
    try:
        assert wait_for(lambda: inspect(f"again{N}")["RestartCount"] == 1
                        and inspect(f"again{N}")["State"]["Status"] == "running", 30)
        address = inspect(f"again{N}")["NetworkSettings"]["IPAddress"]
        code, out = inside(root, f"busybox nslookup again{N}",
                           f"busybox wget -qO- http://again{N}:8080/svc.sh")
        assert code == 0 and f"Address: {address}\n" in out and "httpd" in out, out
        # Its own second run's name server answers it too (a new network namespace each run).
        assert wait_for(lambda: (root / "resolved").exists()
                        and f"Address: {address}" in (root / "resolved").read_text(), 10)
    finally:
        cli("rm", "-f", f"again{N}")


def test_a_container_serves_port_53_itself_beside_its_name_server(root, web):
    """The name server listens on ports of its own, and a NAT rule in the
    container sends 127.0.0.11:53 there: port 53 on every address stays the
    container's (busybox httpd binds 0.0.0.0:53, which a listener at
    127.0.0.11:53 would refuse it)."""
    result = cli("run", "--root", root, "-d", "--name", f"dns{N}", "--network", "bridge",
                 "/bin/busybox", "httpd", "-f", "-p", "53", "-h", "/www")
    assert result.returncode == 0, result.stderr
    try:
        code, out = inside(root, f"busybox wget -qO- http://dns{N}:53/index.html",
                           f"busybox nslookup {WEB}")
        assert code == 0 and "served by web\n" in out and f"Address: {web}\n" in out, out
        assert inspect(f"dns{N}")["State"]["Status"] == "running"
    finally:
        cli("rm", "-f", f"dns{N}")


def test_udp_and_tcp_both_answer(client, web):
    assert addresses(client.query(WEB, op="tcp")) == [web]
    answer = client.query(WEB, qtype="AAAA")
    assert answer.header.rcode == 0 and answer.rr == []  # no IPv6 on the bridge: no such record
    answer = client.query(WEB.upper() + ".")
    assert addresses(answer) == [web] and answer.header.id != 0


# -- the name server under attack ----------------------------------------------

def answered_right(client, web):
    """The positive control after each attack: a well-formed query, over UDP
    and TCP, answered with the right address."""
    return (wait_for(lambda: (a := client.query(WEB, wait=1)) is not None and addresses(a) == [web], 5)
            and addresses(client.query(WEB, op="tcp")) == [web])


def rcode(answer_hex):
    return dnslib.DNSRecord.parse(bytes.fromhex(answer_hex)).header.rcode


def header(qdcount=1, flags=0x0100, ident=0x1234):
    return ident.to_bytes(2, "big") + flags.to_bytes(2, "big") + qdcount.to_bytes(2, "big") + bytes(6)


@pytest.mark.parametrize("packet", [
    b"", b"\x12", bytes(11),                                # shorter than a header: dropped
    header(),                                               # a question announced, none there
    header(qdcount=40000) + b"\x03web\x00\x00\x01\x00\x01",  # more questions than bytes
    header() + b"\x03web",                                  # a name that never ends
    header() + b"\xc0\x0c\x00\x01\x00\x01",                 # a pointer to itself: a loop
    header() + b"\xc0\x10\x00\x01\x00\x01",                 # a pointer forward
    header() + b"\x03web\xc0\x0c\x00\x01\x00\x01",          # a pointer back into its own name
    header() + b"\x02..\x00\x00\x01\x00\x01",                # the name ".."
    header() + b"\x04web.\x00\x00\x01\x00\x01",              # "web." as one label
    header() + b"\x04web\x00\x00\x00\x01\x00\x01",           # a NUL byte in a label
    header() + b"\x3fweb" + bytes(60) + b"\x00\x00\x01\x00\x01",
    header() + b"".join(b"\x3f" + b"a" * 63 for _ in range(5)) + b"\x00\x00\x01\x00\x01",  # 320 bytes
    header() + b"\x03\xff\xfe\xfd\x00\x00\x01\x00\x01",      # no UTF-8 at all
    header(flags=0x8100) + b"\x03web\x00\x00\x01\x00\x01",   # an answer, not a question
    header(flags=0x2900) + b"\x03web\x00\x00\x01\x00\x01",   # an UPDATE
    header() + b"\x03web\x00\x00\x01\x00\x01" + b"\x00" * 3000,  # huge
    bytes(65000),
], ids=lambda p: p[:24].hex() or "empty")
def test_malformed_packets_get_no_answer_or_an_error_and_the_next_query_its_answer(client, web, packet):
    out = client.ask(op="udp", data=packet, wait=1)
    # Never an address: at most an error (FORMERR, NOTIMP) or the name's absence.
    assert out is None or rcode(out) != 0 or not dnslib.DNSRecord.parse(bytes.fromhex(out)).rr, out
    if packet[:2] == b"\x12\x34" and 12 <= len(packet) <= 1232 and not packet[2] & 0x80:
        assert out is not None and rcode(out) in (1, 4), out  # FORMERR or NOTIMP, never silence
    # The same over TCP, framed.
    if len(packet) < 65535:
        out = client.ask(op="tcp", data=len(packet).to_bytes(2, "big") + packet, wait=1)
        assert out is None or not out or rcode(out) != 0 or not \
            dnslib.DNSRecord.parse(bytes.fromhex(out)).rr, out
    assert answered_right(client, web)


def test_a_flood_is_dropped_and_the_name_server_answers_after_it(client, web):
    packet = dnslib.DNSRecord.question(WEB).pack()
    began = time.monotonic()
    assert client.ask(op="flood", data=packet, n=30000) == "sent"
    assert answered_right(client, web)
    assert time.monotonic() - began < 30


def holder(pid1):
    """The process holding the network of the container whose PID 1 is pid1: the
    one of its ancestors outside the container's network namespace with a thread in it."""
    netns, pid = os.readlink(f"/proc/{pid1}/ns/net"), pid1
    while pid > 1:
        pid = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
        if os.readlink(f"/proc/{pid}/ns/net") != netns and any(os.readlink(f"/proc/{pid}/task/{t}/ns/net") == netns for t in os.listdir(f"/proc/{pid}/task")):
            return pid
    raise AssertionError(f"no process holds the network of {pid1}")


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


QUERIES = b"".join(len(q).to_bytes(2, "big") + q for q in [dnslib.DNSRecord.question(WEB).pack()] * 1500)


@pytest.mark.parametrize("flood", [
    {"op": "tcpflood", "seconds": 3},                          # zero-length frames, megabytes of them
    {"op": "tcpflood", "seconds": 3, "data": QUERIES},   # well-formed queries, pipelined
    {"op": "connflood", "seconds": 3},                         # connections, each closed at once
], ids=["empty-frames", "pipelined-queries", "connections"])
def test_a_tcp_flood_is_bounded_as_a_udp_flood_is(root, client, web, flood):
    """A container that writes to the name server's TCP port as fast as it can
    (or connects to it as fast as it can) costs the root process holding its
    network no more than a UDP flood does (its other threads, the port relays,
    go on), and leaves no backlog: the next query is answered at once."""
    holder_pid = holder(inspect(CLIENT_NAME)["State"]["Pid"])
    flooder = Client(inspect(CLIENT_NAME)["State"]["Pid"])
    try:
        before = cpu_seconds(holder_pid)
        sent = flooder.ask(**flood)
        answer = client.query(WEB, wait=1)  # at once: nothing left over to answer first
        used = cpu_seconds(holder_pid) - before
    finally:
        flooder.close()
    assert isinstance(sent, int) and sent > 0, sent
    assert answer is not None and addresses(answer) == [web]
    assert used < 1.5, f"{used:.1f} s of CPU for a 3-second flood"
    assert answered_right(client, web)


def test_names_of_other_containers_are_not_answered(root, client, web):
    started(root, "--name", f"elsewhere{N}")  # a container off the bridge
    try:
        for name in (f"elsewhere{N}", f"{CLIENT_NAME}.{WEB}", f"{WEB}.{CLIENT_NAME}", WEB[:-1],
                     "*", f"{WEB}.{ALIAS}", f"{WEB}-", f"x{WEB}"):
            answer = client.query(name)
            assert answer.header.rcode == 2 and answer.rr == [], (name, answer)  # SERVFAIL
    finally:
        cli("rm", "-f", f"elsewhere{N}")
    assert answered_right(client, web)


def test_half_open_tcp_connections_are_closed_and_never_block_the_others(client, web):
    # 40 connections that send nothing, and 40 that send half a length prefix or
    # half a query: more than the name server keeps at once.
    assert client.ask(op="hold", data=b"", n=40) == "held"
    assert client.ask(op="hold", data=b"\x00", n=20) == "held"
    assert client.ask(op="hold", data=b"\x00\x40\x12\x34", n=20) == "held"
    assert answered_right(client, web)
    assert wait_for(lambda: client.ask(op="held_closed") == 80, 20)


def test_the_name_server_is_reached_only_from_its_own_container(root, client, web):
    # From the client's namespace to web's address, port 53: nothing listens there.
    out = client.ask(op="udp", data=dnslib.DNSRecord.question(WEB).pack(), wait=1, to=web)
    assert out is None
    # From the host's namespace: no name server of ours at 127.0.0.11 (control: in the
    # container's own namespace, above, it answers).
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(1)
        try:
            s.sendto(dnslib.DNSRecord.question(WEB).pack(), ("127.0.0.11", 53))
            got = s.recv(65535)
        except OSError:
            got = None
    assert got is None or not dnslib.DNSRecord.parse(got).rr
    assert answered_right(client, web)


QUESTION = dnslib.DNSRecord.question(WEB).pack()


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(packet=st.one_of(
    st.binary(max_size=600),
    st.builds(lambda at, junk: QUESTION[:at] + junk + QUESTION[at:],
              st.integers(0, len(QUESTION)), st.binary(min_size=1, max_size=40)),
    st.builds(lambda at, byte: QUESTION[:at] + bytes([byte]) + QUESTION[at + 1:],
              st.integers(0, len(QUESTION) - 1), st.integers(0, 255))))
def test_garbage_packets_never_stop_the_name_server(client, web, packet):
    out = client.ask(op="udp", data=packet, wait=0.5)
    if out is not None:
        answer = dnslib.DNSRecord.parse(bytes.fromhex(out))
        assert all(str(rr.rdata) == web for rr in answer.rr if rr.rtype == dnslib.QTYPE.A), answer
    assert addresses(client.query(WEB)) == [web]


# -- the option -------------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["--network-alias", "db"], "minicontainer: --network-alias db: needs --network bridge\n"),
    (["--network", "bridge", "--network-alias", "my_db"], "minicontainer: --network-alias my_db:"
     " not a DNS name: at most 253 characters, labels of 1 to 63 letters, digits and hyphens,"
     " not starting or ending with a hyphen\n"),
    (["--network", "bridge", "--network-alias", "a" * 64], None),
    (["--network", "bridge", "--network-alias", "-db"], None),
    (["--network", "bridge", "--network-alias", "db..x"], None),
    (["--network", "bridge", "--network-alias", "db.."], None),  # one trailing dot, the root's
    (["--network", "bridge", "--network-alias", "."], None),
    (["--network", "bridge", "--network-alias", ".".join(["a" * 63] * 3 + ["a" * 62])], None),  # 254
])
def test_a_bad_network_alias_is_refused_in_one_line(root, args, message):
    result = cli("run", "--root", root, *args, "/bin/busybox", "true")
    assert result.returncode == 125 and result.stdout == b""
    err = result.stderr.decode()
    assert err.count("\n") == 1 and err.startswith("minicontainer: --network-alias"), err
    if message is not None:
        assert err == message
    assert not os.path.exists(root / "www")  # nothing ran

