"""The bridge's name server: containers reach each other by name, as on docker's
user-defined networks (its embedded DNS at 127.0.0.11).

Owns: NameServer, a responder at 127.0.0.11 (UDP and TCP) bound in one
container's network namespace and served by a thread of the process that holds
the container's address (the supervisor, or run -d's monitor); its answers (A
records of the live containers on the bridge that carry the name, from the
shared table), and forwarding every other name to the host's name servers
(with --outbound). Every packet comes from the container and is hostile: it is
parsed and built by dnslib (loaded only here, and this module only by a run
with --network bridge), one packet at a time, everything caught; sizes, rates,
connections and forwarded queries are bounded.
May import: constants, errors, syscalls, procs.
"""
import os
import selectors
import socket
import threading
import time

from .constants import CLONE_NEWNET
from .errors import ContainerError
from .syscalls import setns

ADDRESS = "127.0.0.11"  # docker's: the same inside every container, in its own namespace
TTL = 600  # docker's, for its own answers
MAX_QUERY = 1232  # a query is a header, a name of at most 255 bytes and an OPT record
UDP_ANSWER = 512  # without EDNS (RFC 1035), and at most EDNS_ANSWER with it
EDNS_ANSWER = 1232  # the DNS flag day's safe size
QUERIES_PER_SECOND = 1000  # a flood beyond it is dropped: the holder's other threads go on
BATCH = 32  # datagrams read a round, so TCP and the upstream's answers are never starved
TCP_MAX = 16  # connections at once; the oldest goes for a new one
TCP_IDLE = 5.0  # a connection that sends no whole query for this long is closed
FORWARD_MAX = 64  # forwarded queries in flight; beyond, SERVFAIL at once
FORWARD_TIMEOUT = 2.0  # a name server's time to answer, before the next one is tried
FORWARD_TRIES = 3
UPSTREAM_PORT = 53


class NameServer:
    """The responder of one run of a container: start() binds 127.0.0.11:53 in
    the network namespace `netns` (a descriptor) from a thread that stays
    there, stop() ends it and closes its sockets (they hold the namespace, and
    with it the veth). lookup(name) gives the addresses of a name (lowercase,
    no trailing dot) on the bridge; upstreams, the name servers to forward to;
    port, 53 or 0 for ports the kernel picks (then ports says which: UDP's, TCP's)."""

    def __init__(self, netns, lookup, upstreams=(), port=53):
        self.netns, self.lookup, self.upstreams = netns, lookup, tuple(upstreams)
        self.port, self.ports = port, None
        self.thread = self.error = None
        self.ready = threading.Event()
        self.wake_read, self.wake_write = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)

    def start(self):
        try:  # here, not in the thread: a missing parser fails the run in one line
            import dnslib  # noqa: F401
        except ImportError:
            raise ContainerError("--network bridge", "the name server needs dnslib, which is not"
                                 " installed (pip install 'dnslib>=0.9.24,<0.10')") from None
        self.thread = threading.Thread(target=self.serve, name="names", daemon=True)
        self.thread.start()
        self.ready.wait()
        if self.error is not None:
            self.stop()
            raise ContainerError.from_os(f"the name server at {ADDRESS}:53", self.error)

    def stop(self):
        if self.wake_write is not None:
            try:
                os.write(self.wake_write, b"x")
            except OSError:
                pass
            if self.thread is not None:
                self.thread.join(10)
            os.close(self.wake_write)
            os.close(self.wake_read)
            self.wake_write = self.wake_read = None

    # -- the thread, in the container's network namespace --------------------

    def serve(self):
        sockets = []
        try:
            try:
                # This thread alone moves: every socket it makes (the two it
                # listens on, and those it forwards from) is the container's,
                # reached by nothing outside it, and reaching only what the
                # container itself can reach (never the host's loopback).
                if self.netns is not None:  # None: this process's own (the unit tests')
                    setns(self.netns, CLONE_NEWNET)
                udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                                    | socket.SOCK_NONBLOCK)
                sockets.append(udp)
                udp.bind((ADDRESS, self.port))
                tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_CLOEXEC
                                    | socket.SOCK_NONBLOCK)
                sockets.append(tcp)
                tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                tcp.bind((ADDRESS, self.port))
                tcp.listen(TCP_MAX)
                self.ports = (udp.getsockname()[1], tcp.getsockname()[1])
            except Exception as exc:  # told to start(), which raises it
                self.error = exc if isinstance(exc, OSError) else OSError(str(exc))
                return
            finally:
                self.ready.set()
            try:
                Loop(self, udp, tcp).run()
            except Exception:  # never a traceback on the container's terminal: it stops answering
                pass
        finally:
            for sock in sockets:
                sock.close()


class Loop:
    """One thread's selector over the responder's sockets, its TCP clients and
    its forwarded queries. Nothing here blocks."""

    def __init__(self, server, udp, tcp):
        self.server, self.udp, self.tcp = server, udp, tcp
        self.selector = selectors.DefaultSelector()
        self.clients = {}  # TCP socket -> [bytes read, bytes to send, last activity]
        self.forwarded = {}  # upstream socket -> Forward
        self.tokens, self.refilled = float(QUERIES_PER_SECOND), time.monotonic()
        self.paused = None  # when UDP is read again, while a flood has used up the tokens

    def run(self):
        self.selector.register(self.server.wake_read, selectors.EVENT_READ, "wake")
        self.selector.register(self.udp, selectors.EVENT_READ, "udp")
        self.selector.register(self.tcp, selectors.EVENT_READ, "tcp")
        try:
            while True:
                now = time.monotonic()
                if self.paused is not None and now >= self.paused:
                    self.paused = None
                    self.selector.register(self.udp, selectors.EVENT_READ, "udp")
                    self.selector.register(self.tcp, selectors.EVENT_READ, "tcp")
                wait = 1.0 if self.paused is None else max(0.0, self.paused - now)
                for key, events in self.selector.select(timeout=wait):
                    if key.data == "wake":
                        return
                    try:
                        self.ready(key, events)
                    except Exception:  # one packet's, or one client's, trouble: never the loop's
                        if key.data not in ("udp", "tcp"):
                            self.drop(key.fileobj)
                self.expire(time.monotonic())
        finally:
            for sock in list(self.clients) + list(self.forwarded):
                self.drop(sock)
            self.selector.close()

    def ready(self, key, events):
        if key.data == "udp":
            for _ in range(BATCH):
                if self.paused is not None:
                    return
                try:
                    data, client = self.udp.recvfrom(65535)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError:  # an ICMP error of an earlier answer's: go on
                    continue
                if self.allowed():
                    self.query(data, lambda answer, c=client: self.udp.sendto(answer, c), udp=True)
        elif key.data == "tcp":
            if self.paused is None and self.allowed():  # a connection costs a token, as a query
                self.accept()
        elif key.data == "client":
            self.client(key.fileobj, events)
        elif key.data == "forward":
            self.answer_forwarded(key.fileobj)

    def allowed(self):
        """The token bucket: at most QUERIES_PER_SECOND (and TCP connections), on
        average. Out of tokens, UDP and the TCP listener are left unread until
        they are back, and the kernel drops the rest of a flood for free."""
        now = time.monotonic()
        self.tokens = min(QUERIES_PER_SECOND, self.tokens + (now - self.refilled) * QUERIES_PER_SECOND)
        self.refilled = now
        if self.tokens < 1:
            if self.paused is None:
                self.selector.unregister(self.udp)
                self.selector.unregister(self.tcp)
                self.paused = now + 0.05
            return False
        self.tokens -= 1
        return True

    # -- a query --------------------------------------------------------------

    def query(self, data, send, udp):
        """Answer one query, or forward it; a packet that is no query gets
        FORMERR if it has a header to answer to, else nothing."""
        from dnslib import DNSError, DNSHeader, DNSRecord, OPCODE, QTYPE, RCODE
        if len(data) < 12 or len(data) > MAX_QUERY:
            return
        try:
            request = DNSRecord.parse(data)
        except (DNSError, Exception):
            if data[2] & 0x80:  # a response's header: never answered (no loops between servers)
                return
            header = DNSHeader(id=int.from_bytes(data[:2], "big"), qr=1, rcode=RCODE.FORMERR)
            send(DNSRecord(header).pack())
            return
        if request.header.qr:
            return
        reply = request.reply(ra=int(bool(self.server.upstreams)), aa=1)
        if request.header.opcode != OPCODE.QUERY:
            reply.header.rcode = RCODE.NOTIMP
            return send(self.fit(reply, request, udp))
        if len(request.questions) != 1 or request.rr or request.auth:
            reply.header.rcode = RCODE.FORMERR
            return send(self.fit(reply, request, udp))
        question = request.q
        name = dns_text(question.qname.label)
        if name is None:  # no name any container has, nor one to forward: nor to echo back
            header = DNSHeader(id=request.header.id, qr=1, rd=request.header.rd, rcode=RCODE.FORMERR)
            return send(DNSRecord(header).pack())
        addresses = self.server.lookup(name) if question.qclass in (1, 255) else []
        if addresses:
            from dnslib import A, RR
            if question.qtype in (QTYPE.A, QTYPE.ANY):
                for address in addresses:
                    reply.add_answer(RR(question.qname, QTYPE.A, rdata=A(address), ttl=TTL))
            return send(self.fit(reply, request, udp))  # AAAA and the rest: no such record
        self.forward(request, send, udp)

    def fit(self, reply, request, udp):
        """The answer's bytes, truncated (TC) to what a UDP client takes."""
        data = reply.pack()
        if udp:
            limit = UDP_ANSWER
            if any(rr.rtype == 41 for rr in request.ar):  # OPT: the client's EDNS size
                limit = max(UDP_ANSWER, min(EDNS_ANSWER, next(rr.rclass for rr in request.ar
                                                              if rr.rtype == 41)))
            if len(data) > limit:
                short = reply.truncate()
                short.add_question(request.q)
                data = short.pack()
        return data

    def forward(self, request, send, udp):
        """An unknown name, to the host's name servers; SERVFAIL without any, or
        with FORWARD_MAX already in flight."""
        from dnslib import RCODE
        if not self.server.upstreams or len(self.forwarded) >= FORWARD_MAX:
            reply = request.reply(ra=0, aa=0)
            reply.header.rcode = RCODE.SERVFAIL
            return send(self.fit(reply, request, udp))
        Forward(self, request, send, udp).ask(0)

    def answer_forwarded(self, sock):
        forward = self.forwarded.get(sock)
        if forward is not None:
            forward.answered()

    # -- TCP ------------------------------------------------------------------

    def accept(self):
        try:
            conn, _ = self.tcp.accept()
        except OSError:
            return
        conn.setblocking(False)
        if len(self.clients) >= TCP_MAX:
            self.drop(min(self.clients, key=lambda c: self.clients[c][2]))
        self.clients[conn] = [b"", b"", time.monotonic()]
        self.selector.register(conn, selectors.EVENT_READ, "client")

    def client(self, conn, events):
        """A TCP client's turn: what it may be sent, then what it sent. Its
        queries are taken as UDP's, a token each; one that finds none, or that
        sends what is no query (RFC 7766 lets a server close such a stream), is
        closed, with all it has sent: else a client that writes faster than
        the tokens come back would have a backlog of megabytes answered for
        minutes, and nobody else."""
        state = self.clients.get(conn)
        if state is None:
            return
        if events & selectors.EVENT_WRITE:
            sent = conn.send(state[1])
            state[1] = state[1][sent:]
        if events & selectors.EVENT_READ:
            data = conn.recv(65537 - len(state[0]))
            if not data:
                return self.drop(conn)
            buffer, at = state[0] + data, 0
            # By offset: a buffer of tiny frames is read once, never copied per frame.
            while len(buffer) - at >= 2:
                size = int.from_bytes(buffer[at:at + 2], "big")
                if not 12 <= size <= MAX_QUERY:
                    return self.drop(conn)
                if len(buffer) - at < 2 + size:
                    break
                if not self.allowed():
                    return self.drop(conn)
                message, at = buffer[at + 2:at + 2 + size], at + 2 + size
                state[2] = time.monotonic()
                self.query(message, lambda answer, c=conn: self.reply_tcp(c, answer), udp=False)
                if conn not in self.clients:  # dropped: it never reads its answers
                    return
            state[0] = buffer[at:]
        if conn in self.clients:
            self.selector.modify(conn, selectors.EVENT_READ | (selectors.EVENT_WRITE if state[1] else 0),
                                 "client")

    def reply_tcp(self, conn, answer):
        state = self.clients.get(conn)
        if state is None:  # gone while its query was forwarded
            return
        if len(state[1]) > 4 * 65537:  # a client that asks and never reads
            return self.drop(conn)
        state[1] += len(answer).to_bytes(2, "big") + answer
        self.selector.modify(conn, selectors.EVENT_READ | selectors.EVENT_WRITE, "client")

    # -- the end of each ---------------------------------------------------------

    def drop(self, sock):
        self.clients.pop(sock, None)
        self.forwarded.pop(sock, None)
        try:
            self.selector.unregister(sock)
        except (KeyError, ValueError):
            pass
        sock.close()

    def expire(self, now):
        for conn in [c for c, state in self.clients.items() if now - state[2] > TCP_IDLE]:
            self.drop(conn)
        for forward in [f for f in self.forwarded.values() if now > f.deadline]:
            try:
                forward.timed_out()
            except Exception:  # its client gone (a send that fails): forgotten
                forward.close()


class Forward:
    """One forwarded query: a socket of its own (a random source port) and an
    id of its own; the answer must come from the server asked, with that id
    and the same question, else it is not taken."""

    def __init__(self, loop, request, send, udp):
        self.loop, self.request, self.send, self.udp = loop, request, send, udp
        self.sock, self.deadline, self.tries = None, 0.0, 0

    def ask(self, index):
        from dnslib import DNSHeader, DNSRecord
        servers = self.loop.server.upstreams
        self.close()
        self.tries += 1
        self.id = int.from_bytes(os.urandom(2), "big")
        query = DNSRecord(DNSHeader(id=self.id, rd=self.request.header.rd), q=self.request.q)
        self.server_index = index
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                             | socket.SOCK_NONBLOCK)
        try:
            sock.connect((servers[index % len(servers)], UPSTREAM_PORT))
            sock.send(query.pack())
        except OSError:
            sock.close()
            return self.failed()
        self.sock, self.deadline = sock, time.monotonic() + FORWARD_TIMEOUT
        self.loop.forwarded[sock] = self
        self.loop.selector.register(sock, selectors.EVENT_READ, "forward")

    def answered(self):
        from dnslib import DNSRecord
        try:
            data = self.sock.recv(65535)
        except OSError:  # refused (ICMP): the next server
            return self.timed_out()
        try:
            answer = DNSRecord.parse(data)
        except Exception:
            return  # not an answer: go on waiting for one
        if answer.header.id != self.id or not answer.header.qr or answer.questions != [self.request.q]:
            return
        self.close()
        answer.header.id = self.request.header.id
        self.send(self.loop.fit(answer, self.request, self.udp))

    def timed_out(self):
        if self.tries < min(FORWARD_TRIES, 2 * len(self.loop.server.upstreams)):
            return self.ask(self.server_index + 1)
        self.failed()

    def failed(self):
        from dnslib import RCODE
        self.close()
        reply = self.request.reply(ra=1, aa=0)
        reply.header.rcode = RCODE.SERVFAIL
        self.send(self.loop.fit(reply, self.request, self.udp))

    def close(self):
        if self.sock is not None:
            self.loop.drop(self.sock)
            self.sock = None


def dns_text(labels):
    """A queried name's labels as lowercase text without the trailing dot, or
    None where it is no name at all (over 253 characters, an empty or over
    63-byte label, a byte that is no printable ASCII)."""
    if not labels:
        return None
    if any(not 1 <= len(label) <= 63 for label in labels):
        return None
    if any(b <= 0x20 or b >= 0x7f or b == 0x2e for label in labels for b in label):
        return None
    text = b".".join(labels).decode("ascii").lower()
    return text if len(text) <= 253 else None
