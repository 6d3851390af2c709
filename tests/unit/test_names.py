"""Unit tests for the bridge's names: which names are DNS names (--name,
--network-alias), and the name server's answer to any packet, without a
network (its Loop answers through a function)."""
import json
import os

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from _minicontainer import errors, names, procs, spec

import dnslib  # a dependency (pyproject.toml): missing, these tests must fail, not skip


@pytest.mark.parametrize("text, name", [
    ("web", "web"), ("Web", "web"), ("web.", "web"), ("a-b.c1", "a-b.c1"), ("1web", "1web"),
    ("a" * 63, "a" * 63), (".".join(["a" * 63] * 3) + "." + "a" * 61, ".".join(["a" * 63] * 3) + "." + "a" * 61),
    ("my_db", None), ("-web", None), ("web-", None), ("a" * 64, None), ("", None), (".", None),
    ("a..b", None), (".web", None), ("wéb", None), ("web\n", None), ("we b", None), ("*", None),
    (".".join(["a" * 63] * 4), None),  # 255 characters
    ("web..", None), ("web...", None), ("..", None),  # one trailing dot, the root's, and no more
])
def test_dns_names_are_rfc_1123_host_names_in_lowercase(text, name):
    assert spec.dns_name(text) == name


@settings(max_examples=500)
@given(st.text(max_size=300))
@example("a" * 253)
@example("a" * 254)
@example("web..")
def test_a_dns_name_is_short_and_plain(text):
    name = spec.dns_name(text)
    if name is not None:
        assert len(name) <= 253 and name == name.lower() and name.isascii()
        assert all(0 < len(label) <= 63 and label.strip("-") == label for label in name.split("."))
        assert set(name) <= set("abcdefghijklmnopqrstuvwxyz0123456789-.")
        assert text.lower() in (name, name + ".")  # the text as given, its root's dot at most


def test_a_bad_network_alias_is_refused_in_one_line():
    assert spec.parse_network_alias("DB") == "db"
    with pytest.raises(errors.ContainerError) as exc:
        spec.parse_network_alias("my_db")
    assert str(exc.value).startswith("--network-alias my_db: not a DNS name:") and exc.value.code == 125


class Server:
    """The name server's side the loop reads: the table (web and a shared alias) and no upstreams."""
    upstreams = ()

    @staticmethod
    def lookup(name):
        return {"web": ["10.88.0.2"], "db": ["10.88.0.2", "10.88.0.3"]}.get(name, [])


def answers(data, udp=True):
    sent = []
    names.Loop(Server, None, None).query(data, sent.append, udp=udp)
    assert len(sent) <= 1
    return dnslib.DNSRecord.parse(sent[0]) if sent else None


def test_known_names_answer_with_their_addresses_and_the_rest_servfail():
    answer = answers(dnslib.DNSRecord.question("DB.").pack())
    assert sorted(str(rr.rdata) for rr in answer.rr) == ["10.88.0.2", "10.88.0.3"]
    assert answer.header.aa and answer.header.rcode == 0
    assert answers(dnslib.DNSRecord.question("web", "AAAA").pack()).rr == []
    assert answers(dnslib.DNSRecord.question("web", "ANY").pack()).rr[0].rtype == dnslib.QTYPE.A
    assert answers(dnslib.DNSRecord.question("other").pack()).header.rcode == dnslib.RCODE.SERVFAIL


def test_an_answer_too_big_for_udp_is_truncated():
    class Many(Server):
        @staticmethod
        def lookup(name):
            return [f"10.88.0.{i}" for i in range(2, 100)]
    sent = []
    names.Loop(Many, None, None).query(dnslib.DNSRecord.question("web").pack(), sent.append, udp=True)
    answer = dnslib.DNSRecord.parse(sent[0])
    assert answer.header.tc and answer.rr == [] and len(sent[0]) <= 512
    sent.clear()
    names.Loop(Many, None, None).query(dnslib.DNSRecord.question("web").pack(), sent.append, udp=False)
    assert len(dnslib.DNSRecord.parse(sent[0]).rr) == 98  # TCP takes it whole


QUESTION = dnslib.DNSRecord.question("web").pack()


@settings(max_examples=2000, deadline=None)
@given(st.one_of(
    st.binary(max_size=1300),
    st.builds(lambda at, junk: QUESTION[:at] + junk + QUESTION[at:],
              st.integers(0, len(QUESTION)), st.binary(min_size=1, max_size=300)),
    st.builds(lambda at, byte: QUESTION[:at] + bytes([byte]) + QUESTION[at + 1:],
              st.integers(0, len(QUESTION) - 1), st.integers(0, 255))))
@example(QUESTION[:12] + b"\xc0\x0c\x00\x01\x00\x01")
@example(QUESTION[:12] + b"".join(b"\x3f" + b"a" * 63 for _ in range(5)) + b"\x00\x00\x01\x00\x01")
def test_any_packet_gets_no_answer_or_one_from_the_table_never_an_exception(data):
    answer = answers(data)
    if answer is None:
        return
    assert answer.header.qr and answer.header.id == int.from_bytes(data[:2], "big")
    for rr in answer.rr:
        assert rr.rtype == dnslib.QTYPE.A and str(rr.rdata) in ("10.88.0.2", "10.88.0.3")
        assert str(rr.rname).rstrip(".").lower() in ("web", "db")


# -- forwarding, against a name server of the test's on 127.0.0.1 -------------------

@pytest.fixture
def upstream(monkeypatch):
    """A fake upstream name server: mode[0] says how it answers ("right", "forged
    first", "silent"); it records the ids it was asked with."""
    import socket
    import threading
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    monkeypatch.setattr(names, "UPSTREAM_PORT", sock.getsockname()[1])
    monkeypatch.setattr(names, "FORWARD_TIMEOUT", 0.3)
    mode, asked = ["right"], []

    def serve():
        while True:
            try:
                data, peer = sock.recvfrom(65535)
            except OSError:
                return
            query = dnslib.DNSRecord.parse(data)
            asked.append(query.header.id)
            if mode[0] == "silent":
                continue
            answer = query.reply()
            answer.add_answer(dnslib.RR(query.q.qname, rdata=dnslib.A("192.0.2.7")))
            if mode[0] == "forged first":  # a wrong id, then a wrong question: neither taken
                forged = dnslib.DNSRecord.parse(answer.pack())
                forged.header.id ^= 1
                sock.sendto(forged.pack(), peer)
                other = dnslib.DNSRecord.question("evil.example").reply()
                other.header.id = query.header.id
                other.add_answer(dnslib.RR("evil.example", rdata=dnslib.A("203.0.113.66")))
                sock.sendto(other.pack(), peer)
            sock.sendto(answer.pack(), peer)

    threading.Thread(target=serve, daemon=True).start()
    server = names.NameServer(None, Server.lookup, upstreams=("127.0.0.1",), port=0)
    server.start()
    yield server, mode, asked
    server.stop()
    sock.close()


def ask(server, name, ident=0x4242, wait=5.0):
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(wait)
        query = dnslib.DNSRecord.question(name)
        query.header.id = ident
        s.sendto(query.pack(), (names.ADDRESS, server.ports[0]))
        return dnslib.DNSRecord.parse(s.recv(65535))


@pytest.mark.parametrize("how", ["right", "forged first"])
def test_a_forwarded_name_gets_the_upstreams_answer_under_the_clients_id(upstream, how):
    server, mode, asked = upstream
    mode[0] = how
    answer = ask(server, "example.org")
    assert answer.header.id == 0x4242 and [str(rr.rdata) for rr in answer.rr] == ["192.0.2.7"]
    assert asked and 0x4242 not in asked  # asked under an id of its own
    assert [str(rr.rdata) for rr in ask(server, "web").rr] == ["10.88.0.2"]  # never forwarded
    assert len(asked) == 1


def test_a_silent_upstream_gives_servfail_soon(upstream):
    import time
    server, mode, asked = upstream
    mode[0] = "silent"
    began = time.monotonic()
    assert ask(server, "example.org").header.rcode == dnslib.RCODE.SERVFAIL
    assert time.monotonic() - began < 3 and len(asked) == 2  # one try each of two, then no more


def test_forwarded_queries_in_flight_are_bounded(upstream):
    import socket
    server, mode, asked = upstream
    mode[0] = "silent"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        for i in range(names.FORWARD_MAX + 36):
            s.sendto(dnslib.DNSRecord.question(f"n{i}.example").pack(), (names.ADDRESS, server.ports[0]))
        answers = [dnslib.DNSRecord.parse(s.recv(65535)) for _ in range(36)]  # at once: no room
    assert all(a.header.rcode == dnslib.RCODE.SERVFAIL for a in answers)
    assert len(asked) <= names.FORWARD_MAX * 2
    assert [str(rr.rdata) for rr in ask(server, "web").rr] == ["10.88.0.2"]  # still answering


# -- the table the name server answers from ----------------------------------------

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                 max_size=3), max_leaves=8)


def table_of(tmp_path, state):
    from _minicontainer import network
    net = network.Network(network.parse_subnet(network.DEFAULT_SUBNET), names=["mine"])
    net.state_dir = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    (tmp_path / network.NET_STATE).write_text(json.dumps(state))
    return net.load(), net.addresses_of


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(names=JSON, entry=JSON)
@example(names=None, entry={"owner": [1, 2], "names": 5})
@example(names=[], entry={"owner": "x", "names": ["web"]})
def test_a_table_edited_by_hand_never_hides_the_good_entries(tmp_path_factory, names, entry):
    """The shared table is root's, but an older copy of minicontainer or a hand
    may leave anything in it: a bad "names", or a bad entry beside good ones,
    neither raises nor takes the good entries' names with it."""
    me = [os.getpid(), procs.process_start(os.getpid())]
    good = {"owner": me, "names": ["web"]}
    tmp_path = tmp_path_factory.mktemp("table")
    containers = {"10.88.0.2": me, "10.88.0.3": me}
    # "names" itself anything: the sweep keeps going (no names then, the addresses kept)
    state, lookup = table_of(tmp_path, {"containers": containers, "names": names})
    assert state["containers"] == containers and isinstance(state["names"], dict)
    lookup("web")
    os.close(lookup.__self__.state_dir)
    # one entry anything, beside a good one: the good one still answers
    state, lookup = table_of(tmp_path, {"containers": containers,
                                        "names": {"10.88.0.2": good, "10.88.0.3": entry}})
    assert state["names"]["10.88.0.2"] == good
    assert "10.88.0.2" in lookup("web")
    os.close(lookup.__self__.state_dir)
