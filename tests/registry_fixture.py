"""Private OCI/Docker registry test fixture (standard library + pytest only).

Starts the CNCF distribution server (`docker-registry`, Debian package
docker-registry 2.8.x) on a free loopback port, builds OCI image layouts on
disk without docker, and pushes them with `skopeo` so that a registry client
can be tested against a real registry.  Nothing here touches the internet:
every server binds 127.0.0.1 (or another 127/8 address you pass).

External programs used: docker-registry, skopeo (>= 1.9), openssl (TLS and
token auth only), zstd (zstd layers only).  /bin/busybox (busybox-static) is
copied into the "real" test image.

Main API (see NOTES.md for details and the gotchas):

    with start_registry(tmpdir, tls=False, auth=None, redirect=False) as reg:
        reg.url, reg.hostport, reg.storage_dir, reg.ca_cert, reg.creds
        reg.requests(), reg.blob_gets(digest), reg.count_blob_gets(digest)
        reg.mark(); reg.requests(since=mark)
        reg.request("GET", "/v2/repo/manifests/tag", headers=...)

    img = make_oci_layout(dir, layers, config, platform, tag=..., compression=...)
    img = busybox_layout(dir)                   # real busybox + whiteout layer
    idx = make_index_layout(dir)                # linux/amd64 + linux/arm64/v8
    push(img.layout_dir, reg, "repo:tag", src_tag=img.tag, format=None|"v2s2"|"oci")
    corrupt_blob(reg, digest)                   # bytes no longer match digest
    with start_fault_proxy(reg) as proxy: proxy.truncate_blob(digest, 100)

pytest fixtures (usable via ``pytest_plugins = ["registry_fixture"]`` or a
plain import into a conftest): ``registry``, ``tls_registry``,
``htpasswd_registry``, ``token_registry``, ``redirect_registry``,
``busybox_image``, ``index_image``.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import gzip
import hashlib
import http.client
import http.server
import io
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tarfile
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

REGISTRY_BIN = os.environ.get("REGISTRY_FIXTURE_BIN", "docker-registry")
SKOPEO_BIN = os.environ.get("REGISTRY_FIXTURE_SKOPEO", "skopeo")
BUSYBOX_BIN = "/bin/busybox"

# --------------------------------------------------------------------------
# media types
# --------------------------------------------------------------------------
MT_OCI_LAYOUT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
MT_OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MT_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MT_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
MT_DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

ACCEPT_ALL_MANIFESTS = ", ".join(
    [MT_OCI_INDEX, MT_OCI_MANIFEST, MT_DOCKER_LIST, MT_DOCKER_MANIFEST]
)

LAYER_MEDIA_TYPES = {
    "none": MT_OCI_LAYER,
    None: MT_OCI_LAYER,
    "gzip": MT_OCI_LAYER_GZIP,
    "zstd": MT_OCI_LAYER_ZSTD,
}

BLOB_URI_RE = re.compile(r"^/v2/(?P<repo>.+)/blobs/(?P<digest>[a-z0-9]+:[0-9a-f]+)$")
MANIFEST_URI_RE = re.compile(r"^/v2/(?P<repo>.+)/manifests/(?P<ref>[^/]+)$")
UPLOAD_URI_RE = re.compile(r"^/v2/(?P<repo>.+)/blobs/uploads/(?P<uuid>[^/]*)$")
TAGS_URI_RE = re.compile(r"^/v2/(?P<repo>.+)/tags/list$")


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def have_program(name: str) -> bool:
    return shutil.which(name) is not None


def zstd_available() -> bool:
    """zstd layers are produced with the `zstd` CLI (Python 3.11 has no zstd module)."""
    return have_program("zstd")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    return subprocess.run(cmd, **kw)


# --------------------------------------------------------------------------
# TLS / htpasswd / token helpers
# --------------------------------------------------------------------------
def make_self_signed_cert(directory: os.PathLike, name: str = "server",
                          hosts: Iterable[str] = ("127.0.0.1", "localhost"),
                          days: int = 2, key_type: str = "ec") -> tuple[Path, Path]:
    """Create <name>.crt / <name>.key (SAN = hosts) with `openssl req`.

    key_type "ec" (P-256, ~10 ms) or "rsa" (2048 bit, 0.2-0.8 s on this VM).

    The certificate is self-signed and is its own CA (basicConstraints CA:TRUE),
    so it can be used directly as a CA bundle by clients (ssl cafile,
    skopeo --cert-dir, the registry's token rootcertbundle).
    """
    if not have_program("openssl"):
        raise RuntimeError("openssl CLI not found")
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    crt, key = d / f"{name}.crt", d / f"{name}.key"
    sans = ",".join(("IP:" if re.fullmatch(r"[0-9.]+|[0-9a-fA-F:]+:[0-9a-fA-F:]*", h) else "DNS:") + h
                    for h in hosts)
    hosts = list(hosts)
    newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"] \
        if key_type == "ec" else ["-newkey", "rsa:2048"]
    cp = _run(["openssl", "req", "-x509", *newkey, "-nodes", "-sha256",
               "-keyout", str(key), "-out", str(crt), "-days", str(days),
               "-subj", f"/CN={hosts[0] if hosts else name}",
               "-addext", f"subjectAltName={sans}",
               "-addext", "basicConstraints=critical,CA:TRUE",
               "-addext", "keyUsage=digitalSignature,keyCertSign"])
    if cp.returncode != 0:
        raise RuntimeError(f"openssl req failed: {cp.stderr}")
    return crt, key


def bcrypt_hash(password: str, rounds: int = 5) -> str:
    """bcrypt hash for a docker-registry htpasswd file (registry accepts bcrypt only).

    Order tried: libcrypt via the deprecated `crypt` module (py <= 3.12), libcrypt
    via ctypes (works on 3.13+ too, libxcrypt on Debian 12 supports $2b$), and
    `htpasswd -nbB` (apache2-utils) if installed.  `openssl passwd` can NOT do bcrypt.
    """
    salt_chars = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    setting = f"$2b${rounds:02d}$" + "".join(secrets.choice(salt_chars) for _ in range(21)) + "u"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import crypt  # type: ignore  # removed in Python 3.13
        h = crypt.crypt(password, setting)
        if h and h.startswith("$2"):
            return h
    except Exception:  # pragma: no cover - depends on the python build
        pass
    try:
        import ctypes
        import ctypes.util
        lib = ctypes.CDLL(ctypes.util.find_library("crypt") or "libcrypt.so.1")
        lib.crypt.restype = ctypes.c_char_p
        lib.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
        res = lib.crypt(password.encode(), setting.encode())
        if res and res.startswith(b"$2"):
            return res.decode()
    except Exception:  # pragma: no cover
        pass
    if have_program("htpasswd"):  # pragma: no cover
        cp = _run(["htpasswd", "-nbB", "-C", str(rounds), "u", password])
        if cp.returncode == 0:
            return cp.stdout.strip().split(":", 1)[1]
    raise RuntimeError("no bcrypt implementation available (install apache2-utils)")


@dataclasses.dataclass
class HtpasswdAuth:
    users: dict[str, str] = dataclasses.field(
        default_factory=lambda: {"testuser": "testpass"})
    realm: str = "test-realm"


@dataclasses.dataclass
class TokenAuth:
    """Registry `auth: token` with a tiny in-process token server.

    users: basic-auth users accepted by the token endpoint (None = anyone).
    anonymous: what anonymous token requests get: "pull" (default), "none",
    or "all".  Authenticated users get every action they ask for unless
    `grant` (callable(user, type, name, actions) -> actions) says otherwise.
    """
    users: dict[str, str] | None = dataclasses.field(
        default_factory=lambda: {"testuser": "testpass"})
    anonymous: str = "pull"
    grant: Callable[[str | None, str, str, list[str]], list[str]] | None = None
    service: str = "test-registry"
    issuer: str = "test-token-issuer"
    expires_in: int = 300
    token_host: str = "127.0.0.1"


# --------------------------------------------------------------------------
# small threaded HTTP servers (token server, fault proxy, redirect target)
# --------------------------------------------------------------------------
class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _ServerThread:
    """Runs an http.server in a daemon thread; .stop() shuts it down."""

    def __init__(self, handler_cls, host="127.0.0.1", port=0, owner=None):
        self.httpd = _Server((host, port), handler_cls)
        self.httpd.owner = owner  # type: ignore[attr-defined]
        self.host, self.port = self.httpd.server_address[:2]
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def hostport(self) -> str:
        return f"{self.host}:{self.port}"

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


class TokenServer:
    """Issues ES256 JWTs (signed with `openssl dgst`) that docker-registry accepts.

    The JWT header carries x5c = [the self-signed signing cert]; the registry's
    `rootcertbundle` is that same cert, so the chain verifies.
    """

    def __init__(self, workdir: Path, cfg: TokenAuth):
        self.cfg = cfg
        self.cert, self.key = make_self_signed_cert(workdir, "token-signer",
                                                    hosts=("token-signer",))
        der = _pem_to_der(self.cert.read_text())
        self._x5c = [base64.b64encode(der).decode()]
        self.requests: list[dict] = []
        self.fail_next: list[int] = []  # status codes to return for the next requests
        self._lock = threading.Lock()
        self._srv = _ServerThread(_TokenHandler, host=cfg.token_host, owner=self)
        self.realm = f"http://{self._srv.hostport}/token"

    def stop(self):
        self._srv.stop()

    def sign(self, claims: dict) -> str:
        header = {"typ": "JWT", "alg": "ES256", "x5c": self._x5c}
        signing_input = (_b64url(json.dumps(header, separators=(",", ":")).encode()) + "." +
                         _b64url(json.dumps(claims, separators=(",", ":")).encode()))
        cp = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(self.key), "-binary"],
                            input=signing_input.encode(), capture_output=True, check=True)
        # openssl gives a DER ECDSA-Sig-Value; JWS ES256 wants r || s (32 bytes each)
        return signing_input + "." + _b64url(_ecdsa_der_to_raw(cp.stdout, 32))

    def issue(self, user: str | None, scopes: list[str], lifetime: int | None = None) -> str:
        access = []
        for scope in scopes:
            parts = scope.split(":")
            if len(parts) < 3:
                continue
            rtype, name, actions = parts[0], ":".join(parts[1:-1]), parts[-1].split(",")
            if self.cfg.grant:
                granted = self.cfg.grant(user, rtype, name, actions)
            elif user is not None or self.cfg.anonymous == "all":
                granted = actions
            elif self.cfg.anonymous == "pull":
                granted = [a for a in actions if a == "pull"]
            else:
                granted = []
            access.append({"type": rtype, "name": name, "actions": granted})
        now = int(time.time())
        claims = {"iss": self.cfg.issuer, "sub": user or "", "aud": self.cfg.service,
                  "exp": now + (lifetime or self.cfg.expires_in), "nbf": now - 10,
                  "iat": now, "jti": secrets.token_hex(8), "access": access}
        return self.sign(claims)


def _ecdsa_der_to_raw(der: bytes, size: int) -> bytes:
    """SEQUENCE { INTEGER r, INTEGER s } -> r||s, each left-padded to `size` bytes."""
    def read_len(b, i):
        n = b[i]
        if n < 0x80:
            return n, i + 1
        k = n & 0x7F
        return int.from_bytes(b[i + 1:i + 1 + k], "big"), i + 1 + k
    assert der[0] == 0x30
    _, i = read_len(der, 1)
    out = b""
    for _ in range(2):
        assert der[i] == 0x02
        n, i = read_len(der, i + 1)
        out += int.from_bytes(der[i:i + n], "big").to_bytes(size, "big")
        i += n
    return out


def _pem_to_der(pem: str) -> bytes:
    body = re.search(r"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", pem, re.S)
    assert body, "no certificate in PEM"
    return base64.b64decode("".join(body.group(1).split()))


class _QuietHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # keep pytest output clean
        pass


class _TokenHandler(_QuietHandler):
    def do_GET(self):
        ts: TokenServer = self.server.owner  # type: ignore[attr-defined]
        url = urllib.parse.urlsplit(self.path)
        q = urllib.parse.parse_qs(url.query)
        scopes = [s for v in q.get("scope", []) for s in v.split(" ") if s]
        user = None
        authz = self.headers.get("Authorization", "")
        ok = True
        if authz.lower().startswith("basic "):
            try:
                u, _, p = base64.b64decode(authz[6:]).decode().partition(":")
            except Exception:
                u, p = "", None
            if ts.cfg.users is None or ts.cfg.users.get(u) == p:
                user = u
            else:
                ok = False
        with ts._lock:
            ts.requests.append({"path": url.path, "query": q, "scopes": scopes,
                                "user": user, "authorized": ok,
                                "headers": dict(self.headers.items())})
            forced = ts.fail_next.pop(0) if ts.fail_next else None
        if forced is not None:
            return self._reply(forced, {"errors": [{"code": "FORCED", "message": "forced"}]})
        if url.path != "/token":
            return self._reply(404, {"error": "not found"})
        if not ok:
            return self._reply(401, {"errors": [{"code": "UNAUTHORIZED",
                                                 "message": "bad credentials"}]},
                               {"WWW-Authenticate": 'Basic realm="token"'})
        if q.get("service", [ts.cfg.service])[0] != ts.cfg.service:
            return self._reply(400, {"error": "unknown service"})
        tok = ts.issue(user, scopes)
        self._reply(200, {"token": tok, "access_token": tok, "expires_in": ts.cfg.expires_in,
                          "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})

    def _reply(self, status, obj, headers=None):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)


# --------------------------------------------------------------------------
# fault injection shared by the proxy and the redirect blob server
# --------------------------------------------------------------------------
@dataclasses.dataclass
class FaultRule:
    pattern: re.Pattern
    method: str | None
    action: str               # "truncate" | "status" | "corrupt" | "delay"
    times: int | None         # None = forever
    arg: Any = None
    headers: dict | None = None
    hits: int = 0


class _Faults:
    def __init__(self):
        self.rules: list[FaultRule] = []
        self.requests: list[dict] = []
        self.lock = threading.Lock()

    def add(self, path_regex: str, action: str, arg=None, method: str | None = "GET",
            times: int | None = 1, headers: dict | None = None) -> FaultRule:
        rule = FaultRule(re.compile(path_regex), method, action, times, arg, headers)
        with self.lock:
            self.rules.append(rule)
        return rule

    def clear(self):
        with self.lock:
            self.rules.clear()

    def match(self, method: str, path: str) -> FaultRule | None:
        with self.lock:
            for r in self.rules:
                if r.method and r.method != method:
                    continue
                if r.times is not None and r.hits >= r.times:
                    continue
                if r.pattern.search(path):
                    r.hits += 1
                    return r
        return None

    # convenience API -----------------------------------------------------
    def truncate_blob(self, digest: str, keep: int = 0, times: int | None = 1):
        """Send the full Content-Length but close the connection after `keep` bytes."""
        return self.add(re.escape(digest.split(":")[-1]) + r"(/data)?$", "truncate", keep,
                        times=times)

    def corrupt_blob(self, digest: str, times: int | None = 1):
        """Flip one byte of the body in flight (length unchanged)."""
        return self.add(re.escape(digest.split(":")[-1]) + r"(/data)?$", "corrupt", None,
                        times=times)

    def fail(self, path_regex: str, status: int = 503, times: int | None = 1,
             method: str | None = "GET", headers: dict | None = None):
        """Answer matching requests with `status` (e.g. 429 + Retry-After, 500, 503)."""
        return self.add(path_regex, "status", status, method=method, times=times,
                        headers=headers)

    def delay(self, path_regex: str, seconds: float, times: int | None = 1,
              method: str | None = "GET"):
        return self.add(path_regex, "delay", seconds, method=method, times=times)

    def count(self, method: str = "GET", path_regex: str = ".*") -> int:
        rx = re.compile(path_regex)
        return sum(1 for r in self.requests if r["method"] == method and rx.search(r["path"]))


def _read_request_body(handler: http.server.BaseHTTPRequestHandler) -> bytes | None:
    te = handler.headers.get("Transfer-Encoding", "")
    if "chunked" in te.lower():
        out = bytearray()
        while True:
            line = handler.rfile.readline()
            size = int(line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                break
            out += handler.rfile.read(size)
            handler.rfile.readline()
        return bytes(out)
    n = handler.headers.get("Content-Length")
    if n is not None:
        return handler.rfile.read(int(n))
    return None


def _send_with_fault(handler, status: int, headers: list[tuple[str, str]], body_iter,
                     length: int | None, rule: FaultRule | None, head: bool):
    """Write a response, applying a truncate/corrupt rule to the body."""
    handler.send_response(status)
    for k, v in headers:
        handler.send_header(k, v)
    if length is not None:
        handler.send_header("Content-Length", str(length))
    handler.end_headers()
    if head:
        return 0
    sent = 0
    flipped = False
    limit = rule.arg if rule and rule.action == "truncate" else None
    for chunk in body_iter:
        if rule and rule.action == "corrupt" and not flipped and chunk:
            chunk = bytes([chunk[0] ^ 0xFF]) + chunk[1:]
            flipped = True
        if limit is not None and sent + len(chunk) >= limit:
            chunk = chunk[: max(0, limit - sent)]
            handler.wfile.write(chunk)
            sent += len(chunk)
            handler.wfile.flush()
            handler.close_connection = True
            with contextlib.suppress(OSError):
                handler.connection.shutdown(socket.SHUT_RDWR)
            return sent
        handler.wfile.write(chunk)
        sent += len(chunk)
    return sent


_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te",
        "trailer", "upgrade", "content-length"}


class _ProxyHandler(_QuietHandler):
    def _handle(self):
        proxy: FaultProxy = self.server.owner  # type: ignore[attr-defined]
        method = self.command
        body = _read_request_body(self)
        rule = proxy.faults.match(method, self.path)
        rec = {"method": method, "path": self.path, "headers": dict(self.headers.items()),
               "fault": rule.action if rule else None}
        with proxy.faults.lock:
            proxy.faults.requests.append(rec)
        if rule and rule.action == "delay":
            time.sleep(rule.arg)
            rule = None
        if rule and rule.action == "status":
            payload = json.dumps({"errors": [{"code": "UNAVAILABLE",
                                              "message": "injected fault"}]}).encode()
            hdrs = [("Content-Type", "application/json")] + list((rule.headers or {}).items())
            rec["status"] = rule.arg
            _send_with_fault(self, rule.arg, hdrs, [payload], len(payload), None,
                             method == "HEAD")
            return
        conn = proxy._upstream_conn()
        try:
            # keep repeated headers (Go clients send one Accept line per media type)
            conn.putrequest(method, self.path, skip_host=True, skip_accept_encoding=True)
            for k, v in self.headers.items():
                if k.lower() not in _HOP:
                    conn.putheader(k, v)
            # the registry builds absolute upload Locations from Host + scheme;
            # the proxy speaks plain HTTP even when the registry uses TLS
            conn.putheader("X-Forwarded-Proto", "http")
            if body is not None:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            resp = conn.getresponse()
            hdrs = [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP]
            length = resp.getheader("Content-Length")
            if method == "HEAD" or resp.status in (204, 304):
                rec["status"] = resp.status
                _send_with_fault(self, resp.status, hdrs, [], int(length) if length else None,
                                 None, True)
                return
            if length is None:  # chunked upstream: buffer
                data = resp.read()
                chunks: Iterable[bytes] = [data]
                length_i = len(data)
            else:
                length_i = int(length)
                chunks = iter(lambda: resp.read(65536), b"")
            rec["status"] = resp.status
            rec["sent"] = _send_with_fault(self, resp.status, hdrs, chunks, length_i, rule, False)
        finally:
            conn.close()

    do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _handle


class _BlobFileHandler(_QuietHandler):
    """Serves <storage root>/<path> (the registry's redirect target), with Range."""

    def _handle(self):
        srv: BlobRedirectServer = self.server.owner  # type: ignore[attr-defined]
        path = urllib.parse.urlsplit(self.path).path
        rule = srv.faults.match(self.command, path)
        rec = {"method": self.command, "path": path, "headers": dict(self.headers.items()),
               "fault": rule.action if rule else None}
        with srv.faults.lock:
            srv.faults.requests.append(rec)
        if rule and rule.action == "delay":
            time.sleep(rule.arg)
            rule = None
        if rule and rule.action == "status":
            rec["status"] = rule.arg
            _send_with_fault(self, rule.arg, list((rule.headers or {}).items()), [b""], 0,
                             None, self.command == "HEAD")
            return
        fpath = (srv.root / path.lstrip("/")).resolve()
        if srv.root.resolve() not in fpath.parents or not fpath.is_file():
            rec["status"] = 404
            _send_with_fault(self, 404, [], [b"not found"], 9, None, self.command == "HEAD")
            return
        data = fpath.read_bytes()
        status, hdrs = 200, [("Content-Type", "application/octet-stream"),
                             ("Accept-Ranges", "bytes")]
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if m:
            start = int(m.group(1))
            end = int(m.group(2)) if m.group(2) else len(data) - 1
            hdrs.append(("Content-Range", f"bytes {start}-{end}/{len(data)}"))
            data, status = data[start:end + 1], 206
        rec["status"] = status
        rec["sent"] = _send_with_fault(self, status, hdrs, [data], len(data), rule,
                                       self.command == "HEAD")

    do_GET = do_HEAD = _handle


class BlobRedirectServer:
    """Redirect target for the registry's `redirect` storage middleware.

    The registry answers blob GET/HEAD with `307 Temporary Redirect` to
    http://<host>:<port>/docker/registry/v2/blobs/sha256/xx/<hex>/data;
    this server serves those files from the registry's storage root.
    `.faults` has truncate_blob/corrupt_blob/fail/delay and `.requests`.
    """

    def __init__(self, root: Path, host: str = "127.0.0.1"):
        self.root = Path(root)
        self.faults = _Faults()
        self._srv = _ServerThread(_BlobFileHandler, host=host, owner=self)
        # keep the name given (e.g. "localhost") so the redirect can be cross-host
        self.hostport = f"{host}:{self._srv.port}"
        self.url = f"http://{self.hostport}"

    @property
    def requests(self):
        return self.faults.requests

    def stop(self):
        self._srv.stop()


class FaultProxy:
    """Plain-HTTP reverse proxy in front of a Registry with fault injection.

    Forwards every method (the Host header is kept, so upload Locations point
    back at the proxy).  Use .faults.truncate_blob(digest, keep) to cut a blob
    body mid-stream, .faults.fail(path_regex, 503, times) for transient errors,
    .faults.corrupt_blob(digest) to flip a byte, .faults.delay(...).
    """

    def __init__(self, registry: "Registry", host: str = "127.0.0.1"):
        self.registry = registry
        self.faults = _Faults()
        self._srv = _ServerThread(_ProxyHandler, host=host, owner=self)
        self.hostport = self._srv.hostport
        self.host, self.port = self._srv.host, self._srv.port
        self.url = f"http://{self.hostport}"

    def _upstream_conn(self):
        r = self.registry
        if r.tls:
            return http.client.HTTPSConnection(r.host, r.port, timeout=30,
                                               context=r.ssl_context())
        return http.client.HTTPConnection(r.host, r.port, timeout=30)

    @property
    def requests(self):
        return self.faults.requests

    # convenience passthroughs
    def truncate_blob(self, digest, keep=0, times=1):
        return self.faults.truncate_blob(digest, keep, times)

    def corrupt_blob(self, digest, times=1):
        return self.faults.corrupt_blob(digest, times)

    def fail(self, path_regex, status=503, times=1, method="GET", headers=None):
        return self.faults.fail(path_regex, status, times, method, headers)

    def stop(self):
        self._srv.stop()


@contextlib.contextmanager
def start_fault_proxy(registry: "Registry", host: str = "127.0.0.1") -> Iterator[FaultProxy]:
    p = FaultProxy(registry, host)
    try:
        yield p
    finally:
        p.stop()


# --------------------------------------------------------------------------
# the registry
# --------------------------------------------------------------------------
@dataclasses.dataclass
class Registry:
    host: str
    port: int
    tls: bool
    root: Path                      # everything of this registry lives here
    storage_dir: Path               # filesystem driver rootdirectory
    config_path: Path
    log_path: Path                  # stderr: JSON app log incl. one line per request
    access_log_path: Path           # stdout: combined-format access log
    proc: subprocess.Popen
    ca_cert: Path | None = None     # server cert (self-signed CA) when tls=True
    cert_dir: Path | None = None    # dir with ca.crt, for skopeo --*-cert-dir
    creds: tuple[str, str] | None = None  # first htpasswd/token user
    auth_kind: str | None = None    # None | "htpasswd" | "token"
    token_server: TokenServer | None = None
    blob_server: BlobRedirectServer | None = None
    start_seconds: float = 0.0

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def hostport(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.hostport}"

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        ctx = ssl.create_default_context(cafile=str(self.ca_cert))
        return ctx

    # ---- storage -------------------------------------------------------
    def blob_path(self, digest: str) -> Path:
        algo, hexd = digest.split(":", 1)
        return self.storage_dir / "docker/registry/v2/blobs" / algo / hexd[:2] / hexd / "data"

    def tag_link_path(self, repo: str, tag: str) -> Path:
        return (self.storage_dir / "docker/registry/v2/repositories" / repo /
                "_manifests/tags" / tag / "current/link")

    # ---- logs ----------------------------------------------------------
    def _settle(self, timeout: float = 2.0, quiet: float = 0.15):
        """Wait until the log file stopped growing (lines are written just
        after the response, so a client may finish before the line lands)."""
        deadline = time.monotonic() + timeout
        last, last_change = -1, time.monotonic()
        while time.monotonic() < deadline:
            size = self.log_path.stat().st_size if self.log_path.exists() else 0
            if size != last:
                last, last_change = size, time.monotonic()
            elif time.monotonic() - last_change >= quiet:
                return
            time.sleep(0.03)

    def mark(self) -> int:
        """Current number of logged requests; pass to requests(since=...)."""
        return len(self.requests())

    def requests(self, since: int = 0, settle: bool = True) -> list[dict]:
        """One dict per HTTP request the registry answered, oldest first:
        method, uri, path, query, status, written, repo, kind
        ('base'|'manifest'|'blob'|'upload'|'tags'|'catalog'|'other'),
        ref (tag/digest for manifests), digest (blobs), useragent, time, raw."""
        if settle:
            self._settle()
        out = []
        if not self.log_path.exists():
            return out
        for line in self.log_path.read_text(errors="replace").splitlines():
            if not line.startswith("{"):
                continue
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if "http.response.status" not in e or "http.request.uri" not in e:
                continue
            uri = e["http.request.uri"]
            sp = urllib.parse.urlsplit(uri)
            path = sp.path
            d = {"method": e.get("http.request.method"), "uri": uri, "path": path,
                 "query": urllib.parse.parse_qs(sp.query),
                 "status": e.get("http.response.status"),
                 "written": e.get("http.response.written"),
                 "useragent": e.get("http.request.useragent"),
                 "time": e.get("time"), "error": e.get("err.code"),
                 "repo": None, "ref": None, "digest": None, "kind": "other", "raw": e}
            if path in ("/v2", "/v2/"):
                d["kind"] = "base"
            elif path == "/v2/_catalog":
                d["kind"] = "catalog"
            elif m := UPLOAD_URI_RE.match(path):
                d.update(kind="upload", repo=m["repo"])
            elif m := BLOB_URI_RE.match(path):
                d.update(kind="blob", repo=m["repo"], digest=m["digest"])
            elif m := MANIFEST_URI_RE.match(path):
                d.update(kind="manifest", repo=m["repo"], ref=m["ref"])
            elif m := TAGS_URI_RE.match(path):
                d.update(kind="tags", repo=m["repo"])
            out.append(d)
        return out[since:]

    def blob_gets(self, digest: str | None = None, since: int = 0,
                  status: int | None = None) -> list[dict]:
        return [r for r in self.requests(since) if r["kind"] == "blob" and r["method"] == "GET"
                and (digest is None or r["digest"] == digest)
                and (status is None or r["status"] == status)]

    def count_blob_gets(self, digest: str | None = None, since: int = 0) -> int:
        return len(self.blob_gets(digest, since))

    def blob_get_counts(self, since: int = 0) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in self.blob_gets(since=since):
            counts[r["digest"]] = counts.get(r["digest"], 0) + 1
        return counts

    def manifest_requests(self, since: int = 0) -> list[dict]:
        return [r for r in self.requests(since) if r["kind"] == "manifest"]

    def access_log_lines(self) -> list[str]:
        """Raw combined-log-format lines (stdout of docker-registry)."""
        self._settle()
        if not self.access_log_path.exists():
            return []
        return self.access_log_path.read_text(errors="replace").splitlines()

    # ---- a minimal HTTP client (for assertions / exploration) -----------
    def request(self, method: str, path: str, headers: Mapping[str, str] | None = None,
                body: bytes | None = None, auth: bool = True,
                scope: str | None = None) -> tuple[int, dict[str, str], bytes]:
        """Send one request; with auth=True answers a 401 challenge with the
        fixture's credentials (Basic, or a Bearer token from the token server).
        Returns (status, headers with lower-case names, body). Never follows redirects."""
        hdrs = dict(headers or {})

        def once(h):
            if self.tls:
                c = http.client.HTTPSConnection(self.host, self.port, timeout=30,
                                                context=self.ssl_context())
            else:
                c = http.client.HTTPConnection(self.host, self.port, timeout=30)
            try:
                c.request(method, path, body=body, headers=h)
                r = c.getresponse()
                return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
            finally:
                c.close()

        status, rh, data = once(hdrs)
        if status == 401 and auth and "www-authenticate" in rh:
            ch = rh["www-authenticate"]
            if ch.lower().startswith("basic") and self.creds:
                tok = base64.b64encode(f"{self.creds[0]}:{self.creds[1]}".encode()).decode()
                hdrs["Authorization"] = "Basic " + tok
                status, rh, data = once(hdrs)
            elif ch.lower().startswith("bearer"):
                params = dict(re.findall(r'(\w+)="([^"]*)"', ch))
                q = {"service": params.get("service", "")}
                if scope or params.get("scope"):
                    q["scope"] = scope or params["scope"]
                treq = urllib.request.Request(params["realm"] + "?" + urllib.parse.urlencode(q))
                if self.creds:
                    tok = base64.b64encode(f"{self.creds[0]}:{self.creds[1]}".encode()).decode()
                    treq.add_header("Authorization", "Basic " + tok)
                with urllib.request.urlopen(treq, timeout=30) as tr:
                    token = json.loads(tr.read())["token"]
                hdrs["Authorization"] = "Bearer " + token
                status, rh, data = once(hdrs)
        return status, rh, data

    # ---- lifecycle --------------------------------------------------------
    def stop(self):
        _stop_pid(self.proc)
        if self.token_server:
            self.token_server.stop()
            self.token_server = None
        if self.blob_server:
            self.blob_server.stop()
            self.blob_server = None


def _stop_pid(proc: subprocess.Popen, timeout: float = 5.0):
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout)


def _wait_ready(host: str, port: int, tls: bool, proc: subprocess.Popen,
                timeout: float) -> None:
    deadline = time.monotonic() + timeout
    ctx = None
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"docker-registry exited with {proc.returncode}")
        try:
            c = (http.client.HTTPSConnection(host, port, timeout=1, context=ctx) if tls
                 else http.client.HTTPConnection(host, port, timeout=1))
            c.request("GET", "/v2/")
            r = c.getresponse()
            r.read()
            c.close()
            if r.status in (200, 401):
                return
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(0.02)
    raise TimeoutError(f"registry on {host}:{port} did not answer within {timeout}s")


@contextlib.contextmanager
def start_registry(tmpdir: os.PathLike, tls: bool = False,
                   auth: None | str | HtpasswdAuth | TokenAuth = None,
                   redirect: bool = False, host: str = "127.0.0.1",
                   redirect_host: str = "127.0.0.1", log_level: str = "info",
                   extra_config: Mapping[str, Any] | None = None,
                   keep: bool = False, timeout: float = 15.0) -> Iterator[Registry]:
    """Start docker-registry on host:<free port>; yield a Registry; stop it by pid
    and delete its directory (unless keep=True) on exit.

    tls:      serve HTTPS with a fresh self-signed cert (reg.ca_cert, reg.cert_dir).
    auth:     None | "htpasswd" | HtpasswdAuth(users) | "token" | TokenAuth(...).
    redirect: enable the `redirect` storage middleware: blob GET/HEAD answer
              307 to an in-process BlobRedirectServer (reg.blob_server) that
              serves the storage dir (and can inject faults).
    extra_config: dict deep-merged into the generated config (JSON is valid YAML,
              so the config file is written as JSON).
    """
    for prog in (REGISTRY_BIN,):
        if not have_program(prog):
            raise RuntimeError(f"{prog} not found")
    root = Path(tempfile.mkdtemp(prefix="registry-", dir=str(tmpdir)))
    token_server = blob_server = None
    proc = None
    try:
        storage = root / "storage"
        storage.mkdir()
        cfg: dict[str, Any] = {
            "version": "0.1",
            "log": {"level": log_level, "formatter": "json",
                    "fields": {"service": "registry-fixture"},
                    "accesslog": {"disabled": False}},
            "storage": {"filesystem": {"rootdirectory": str(storage)},
                        "delete": {"enabled": True},
                        "maintenance": {"uploadpurging": {"enabled": False}}},
            "http": {"addr": "", "secret": secrets.token_hex(16),
                     "headers": {"X-Content-Type-Options": ["nosniff"]}},
        }
        ca_cert = cert_dir = None
        if tls:
            crt, key = make_self_signed_cert(root / "tls", "server",
                                             hosts=(host, "localhost"))
            cfg["http"]["tls"] = {"certificate": str(crt), "key": str(key)}
            ca_cert = crt
            cert_dir = root / "certs.d"
            cert_dir.mkdir()
            shutil.copy(crt, cert_dir / "ca.crt")  # skopeo: *.crt = CA
        creds = None
        auth_kind = None
        if auth == "htpasswd":
            auth = HtpasswdAuth()
        elif auth == "token":
            auth = TokenAuth()
        if isinstance(auth, HtpasswdAuth):
            auth_kind = "htpasswd"
            hp = root / "htpasswd"
            hp.write_text("".join(f"{u}:{bcrypt_hash(p)}\n" for u, p in auth.users.items()))
            cfg["auth"] = {"htpasswd": {"realm": auth.realm, "path": str(hp)}}
            creds = next(iter(auth.users.items()), None)
        elif isinstance(auth, TokenAuth):
            auth_kind = "token"
            token_server = TokenServer(root / "token", auth)
            cfg["auth"] = {"token": {"realm": token_server.realm, "service": auth.service,
                                     "issuer": auth.issuer,
                                     "rootcertbundle": str(token_server.cert)}}
            creds = next(iter((auth.users or {}).items()), None)
        elif auth is not None:
            raise ValueError(f"unsupported auth {auth!r}")
        if redirect:
            blob_server = BlobRedirectServer(storage, host=redirect_host)
            cfg["middleware"] = {"storage": [{"name": "redirect",
                                              "options": {"baseurl": blob_server.url + "/"}}]}
        if extra_config:
            _deep_merge(cfg, extra_config)
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        last_err = None
        for _attempt in range(5):
            port = free_port(host)
            cfg["http"]["addr"] = f"{host}:{port}"
            config_path = root / "config.yml"
            config_path.write_text(json.dumps(cfg, indent=2))
            log_path, access_path = root / "registry.log", root / "access.log"
            t0 = time.monotonic()
            with open(log_path, "wb") as err, open(access_path, "wb") as out:
                proc = subprocess.Popen([REGISTRY_BIN, "serve", str(config_path)],
                                        stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                        env=env, start_new_session=True)
            try:
                _wait_ready(host, port, tls, proc, timeout)
                break
            except (RuntimeError, TimeoutError) as e:
                _stop_pid(proc)
                last_err = RuntimeError(f"{e}\n{log_path.read_text(errors='replace')[-3000:]}")
                if "address already in use" not in str(last_err):
                    raise last_err
        else:
            raise last_err  # type: ignore[misc]
        reg = Registry(host=host, port=port, tls=tls, root=root, storage_dir=storage,
                       config_path=config_path, log_path=log_path,
                       access_log_path=access_path, proc=proc, ca_cert=ca_cert,
                       cert_dir=cert_dir, creds=creds, auth_kind=auth_kind,
                       token_server=token_server, blob_server=blob_server,
                       start_seconds=time.monotonic() - t0)
        yield reg
    finally:
        if proc is not None:
            _stop_pid(proc)
        if token_server:
            token_server.stop()
        if blob_server:
            blob_server.stop()
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def _deep_merge(dst: dict, src: Mapping) -> dict:
    for k, v in src.items():
        if isinstance(v, Mapping) and isinstance(dst.get(k), dict):
            _deep_merge(dst[k], v)
        else:
            dst[k] = v
    return dst


# --------------------------------------------------------------------------
# OCI image building
# --------------------------------------------------------------------------
@dataclasses.dataclass
class File:
    data: bytes | str = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0


@dataclasses.dataclass
class Dir:
    mode: int = 0o755
    uid: int = 0
    gid: int = 0


@dataclasses.dataclass
class Symlink:
    target: str


@dataclasses.dataclass
class Hardlink:
    target: str  # path inside the layer


def whiteout(path: str) -> str:
    """Layer entry name that deletes `path` from lower layers: a/b -> a/.wh.b"""
    head, _, tail = path.strip("/").rpartition("/")
    return (head + "/" if head else "") + ".wh." + tail


def opaque_whiteout(directory: str) -> str:
    """Entry name that hides all lower-layer content of `directory`."""
    return directory.strip("/") + "/.wh..wh..opq"


Entries = Mapping[str, "bytes | str | File | Dir | Symlink | Hardlink"]

FIXED_MTIME = 1_700_000_000  # deterministic layers => stable digests


def build_tar(entries: Entries | os.PathLike) -> bytes:
    """Deterministic (sorted, fixed mtime, uid/gid 0 unless given) tar of entries.

    entries: {path: bytes|str (regular file 0644) | File | Dir | Symlink | Hardlink}
    or a directory on disk.  Missing parent directories are added.  A name
    made with whiteout()/opaque_whiteout() becomes an empty regular file.
    """
    if isinstance(entries, (str, os.PathLike)):
        entries = _entries_from_dir(Path(entries))
    norm: dict[str, Any] = {}
    for name, val in entries.items():
        name = name.strip("/")
        parts = name.split("/")
        for i in range(1, len(parts)):
            norm.setdefault("/".join(parts[:i]), Dir())
        if isinstance(val, (bytes, str)):
            val = File(val)
        norm[name] = val
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name in sorted(norm):
            val = norm[name]
            ti = tarfile.TarInfo(name)
            ti.mtime = FIXED_MTIME
            ti.uname = ti.gname = ""
            if isinstance(val, Dir):
                ti.type, ti.mode, ti.uid, ti.gid = tarfile.DIRTYPE, val.mode, val.uid, val.gid
                tf.addfile(ti)
            elif isinstance(val, Symlink):
                ti.type, ti.linkname, ti.mode = tarfile.SYMTYPE, val.target, 0o777
                tf.addfile(ti)
            elif isinstance(val, Hardlink):
                ti.type, ti.linkname, ti.mode = tarfile.LNKTYPE, val.target.strip("/"), 0o644
                tf.addfile(ti)
            else:
                data = val.data.encode() if isinstance(val.data, str) else val.data
                ti.size, ti.mode, ti.uid, ti.gid = len(data), val.mode, val.uid, val.gid
                tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def _entries_from_dir(root: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        st = p.lstat()
        if p.is_symlink():
            out[rel] = Symlink(os.readlink(p))
        elif p.is_dir():
            out[rel] = Dir(st.st_mode & 0o7777)
        elif p.is_file():
            out[rel] = File(p.read_bytes(), st.st_mode & 0o7777)
    return out


@dataclasses.dataclass
class Layer:
    media_type: str
    data: bytes          # the blob as stored (compressed or not)
    digest: str          # digest of data
    size: int
    diff_id: str         # digest of the uncompressed tar
    compression: str     # "gzip" | "none" | "zstd"

    def descriptor(self) -> dict:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


def build_layer(entries: Entries | os.PathLike | bytes, compression: str = "gzip") -> Layer:
    """Build a layer blob.  `entries` may also be a ready uncompressed tar (bytes)."""
    tar = entries if isinstance(entries, bytes) else build_tar(entries)
    compression = compression or "none"
    if compression == "gzip":
        data = gzip.compress(tar, compresslevel=6, mtime=0)
    elif compression == "none":
        data = tar
    elif compression == "zstd":
        if not zstd_available():
            raise RuntimeError("zstd layers need the `zstd` CLI (apt-get install zstd)")
        data = subprocess.run(["zstd", "-q", "-c", "-3", "--no-progress"], input=tar,
                              capture_output=True, check=True).stdout
    else:
        raise ValueError(f"unknown compression {compression!r}")
    return Layer(LAYER_MEDIA_TYPES[compression], data, sha256_digest(data), len(data),
                 sha256_digest(tar), compression)


def parse_platform(platform: str | Mapping[str, str]) -> dict[str, str]:
    if isinstance(platform, Mapping):
        return dict(platform)
    parts = platform.split("/")
    p = {"os": parts[0], "architecture": parts[1]}
    if len(parts) > 2 and parts[2]:
        p["variant"] = parts[2]
    return p


DEFAULT_CONFIG = {
    "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "GREETING=hello from the fixture"],
    "Entrypoint": ["/bin/sh", "-c"],
    "Cmd": ["echo $GREETING; id; pwd"],
    "WorkingDir": "/www",
    "User": "1000:1000",
    "ExposedPorts": {"8080/tcp": {}},
    "Labels": {"org.example.fixture": "registry-fixture"},
}


@dataclasses.dataclass
class ImageInfo:
    layout_dir: Path
    tag: str
    manifest: dict
    manifest_bytes: bytes
    manifest_digest: str
    config: dict
    config_bytes: bytes
    config_digest: str
    layers: list[Layer]
    platform: dict

    @property
    def descriptor(self) -> dict:
        d = {"mediaType": MT_OCI_MANIFEST, "digest": self.manifest_digest,
             "size": len(self.manifest_bytes)}
        return d

    @property
    def blob_digests(self) -> list[str]:
        return [self.config_digest] + [l.digest for l in self.layers]


@dataclasses.dataclass
class IndexInfo:
    layout_dir: Path
    tag: str
    index: dict
    index_bytes: bytes
    index_digest: str
    images: list[ImageInfo]

    def image(self, platform: str) -> ImageInfo:
        want = parse_platform(platform)
        for im in self.images:
            if all(im.platform.get(k) == v for k, v in want.items()):
                return im
        raise KeyError(platform)


def _write_blob(layout: Path, data: bytes) -> str:
    dig = sha256_digest(data)
    p = layout / "blobs" / "sha256" / dig.split(":")[1]
    p.parent.mkdir(parents=True, exist_ok=True)
    if not p.exists():
        p.write_bytes(data)
    return dig


def _init_layout(layout: Path) -> dict:
    layout.mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    (layout / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    idx_path = layout / "index.json"
    if idx_path.exists():
        return json.loads(idx_path.read_text())
    return {"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": []}


def _add_to_layout_index(layout: Path, index: dict, desc: dict, tag: str | None):
    desc = dict(desc)
    if tag:
        desc.setdefault("annotations", {})["org.opencontainers.image.ref.name"] = tag
        index["manifests"] = [m for m in index["manifests"]
                              if m.get("annotations", {}).get(
                                  "org.opencontainers.image.ref.name") != tag]
    index["manifests"].append(desc)
    (layout / "index.json").write_text(json.dumps(index, indent=2))


def _build_image(layout: Path, layers: list, config: Mapping | None, platform,
                 compression: str, annotations: Mapping | None,
                 history: list | None) -> tuple[ImageInfo, dict]:
    built: list[Layer] = []
    for spec in layers:
        if isinstance(spec, Layer):
            built.append(spec)
        elif isinstance(spec, tuple):  # (entries, compression)
            built.append(build_layer(spec[0], spec[1]))
        else:
            built.append(build_layer(spec, compression))
    plat = parse_platform(platform)
    img_cfg = {
        "created": "2024-01-01T00:00:00Z",
        "architecture": plat["architecture"],
        "os": plat["os"],
        "config": dict(DEFAULT_CONFIG if config is None else config),
        "rootfs": {"type": "layers", "diff_ids": [l.diff_id for l in built]},
        "history": history or [{"created": "2024-01-01T00:00:00Z",
                                "created_by": f"registry_fixture layer {i}"}
                               for i in range(len(built))],
    }
    if "variant" in plat:
        img_cfg["variant"] = plat["variant"]
    cfg_bytes = json.dumps(img_cfg, indent=None, separators=(",", ":")).encode()
    cfg_digest = _write_blob(layout, cfg_bytes)
    for l in built:
        _write_blob(layout, l.data)
    manifest = {"schemaVersion": 2, "mediaType": MT_OCI_MANIFEST,
                "config": {"mediaType": MT_OCI_CONFIG, "digest": cfg_digest,
                           "size": len(cfg_bytes)},
                "layers": [l.descriptor() for l in built]}
    if annotations:
        manifest["annotations"] = dict(annotations)
    m_bytes = json.dumps(manifest, indent=None, separators=(",", ":")).encode()
    m_digest = _write_blob(layout, m_bytes)
    info = ImageInfo(layout, "", manifest, m_bytes, m_digest, img_cfg, cfg_bytes,
                     cfg_digest, built, plat)
    desc = {"mediaType": MT_OCI_MANIFEST, "digest": m_digest, "size": len(m_bytes),
            "platform": plat}
    return info, desc


def make_oci_layout(directory: os.PathLike, layers: list, config: Mapping | None = None,
                    platform: str | Mapping = "linux/amd64", tag: str = "latest",
                    compression: str = "gzip", annotations: Mapping | None = None,
                    history: list | None = None) -> ImageInfo:
    """Write (or add a tag to) an OCI image layout at `directory`.

    layers: list of entries-dicts / directories / (entries, compression) tuples /
            prebuilt Layer objects (see build_tar / build_layer).
    config: the image config's "config" object (Env, Cmd, Entrypoint, WorkingDir,
            User, ExposedPorts, Labels...); default DEFAULT_CONFIG.
    platform: "os/arch[/variant]" or a dict.
    compression: "gzip" (default) | "none" | "zstd" (needs zstd CLI).
    The manifest is referenced from index.json with
    org.opencontainers.image.ref.name=tag, so skopeo can use oci:DIR:TAG.
    """
    layout = Path(directory)
    index = _init_layout(layout)
    info, desc = _build_image(layout, layers, config, platform, compression,
                              annotations, history)
    info.tag = tag
    _add_to_layout_index(layout, index, desc, tag)
    return info


def busybox_rootfs(applets: Iterable[str] = ("sh", "echo", "cat", "ls", "env", "pwd", "id",
                                             "sleep", "httpd", "true", "false", "uname",
                                             "mkdir", "rm", "touch", "wget", "grep")) -> dict:
    """A minimal runnable root tree: /bin/busybox (static) + applet symlinks,
    /etc/passwd, /etc/group, /tmp (1777), /www/index.html, /etc/motd."""
    bb = Path(BUSYBOX_BIN).read_bytes()
    e: dict[str, Any] = {
        "bin": Dir(),
        "bin/busybox": File(bb, 0o755),
        "etc/passwd": "root:x:0:0:root:/root:/bin/sh\n"
                      "app:x:1000:1000:app:/www:/bin/sh\n"
                      "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        "etc/group": "root:x:0:\napp:x:1000:\nnogroup:x:65534:\n",
        "etc/motd": "this file is deleted by the whiteout layer\n",
        "etc/hostname": "fixture\n",
        "root": Dir(0o700),
        "tmp": Dir(0o1777),
        "www": Dir(0o755, 1000, 1000),
        "www/index.html": File("<h1>layer 1</h1>\n", 0o644, 1000, 1000),
        "www/old.txt": "hidden by the opaque whiteout in layer 2\n",
        "usr/bin": Dir(),
    }
    for a in applets:
        e[f"bin/{a}"] = Symlink("busybox")
    return e


def whiteout_layer_entries() -> dict:
    """Second layer for the busybox image: deletes /etc/motd (.wh. file),
    makes /www opaque and re-creates /www/index.html, adds /etc/layer2."""
    return {
        whiteout("etc/motd"): b"",
        opaque_whiteout("www"): b"",
        "www": Dir(0o755, 1000, 1000),
        "www/index.html": File("<h1>layer 2</h1>\n", 0o644, 1000, 1000),
        "etc/layer2": "added by layer 2\n",
    }


def busybox_layout(directory: os.PathLike, tag: str = "latest", compression: str = "gzip",
                   config: Mapping | None = None, platform: str = "linux/amd64") -> ImageInfo:
    """Two-layer runnable busybox image (layer 2 has whiteouts)."""
    return make_oci_layout(directory, [busybox_rootfs(), whiteout_layer_entries()],
                           config=config, platform=platform, tag=tag,
                           compression=compression)


def fake_layer_entries(label: str = "arm64") -> dict:
    return {"hello.txt": f"fake {label} layer (not runnable)\n",
            "bin/sh": File(b"#!fake " + label.encode() + b"\n", 0o755)}


def make_index_layout(directory: os.PathLike, tag: str = "latest",
                      platforms: list[tuple[str, list]] | None = None,
                      config: Mapping | None = None, compression: str = "gzip",
                      annotations: Mapping | None = None) -> IndexInfo:
    """OCI layout whose tag points at an image index.

    Default platforms: linux/amd64 = the real busybox image (2 layers incl.
    whiteouts), linux/arm64/v8 = one small fake layer.
    platforms: [(platform, layers), ...] to override.
    """
    layout = Path(directory)
    index = _init_layout(layout)
    if platforms is None:
        platforms = [("linux/amd64", [busybox_rootfs(), whiteout_layer_entries()]),
                     ("linux/arm64/v8", [fake_layer_entries("arm64")])]
    images, descs = [], []
    for plat, layers in platforms:
        cfg = dict(DEFAULT_CONFIG if config is None else config)
        info, desc = _build_image(layout, layers, cfg, plat, compression, None, None)
        info.tag = tag
        images.append(info)
        descs.append(desc)
    idx = {"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": descs}
    if annotations:
        idx["annotations"] = dict(annotations)
    idx_bytes = json.dumps(idx, separators=(",", ":")).encode()
    idx_digest = _write_blob(layout, idx_bytes)
    _add_to_layout_index(layout, index, {"mediaType": MT_OCI_INDEX, "digest": idx_digest,
                                         "size": len(idx_bytes)}, tag)
    return IndexInfo(layout, tag, idx, idx_bytes, idx_digest, images)


# --------------------------------------------------------------------------
# skopeo
# --------------------------------------------------------------------------
class SkopeoError(RuntimeError):
    def __init__(self, cmd, cp):
        super().__init__(f"{' '.join(cmd)} failed ({cp.returncode}):\n{cp.stderr}")
        self.returncode, self.stdout, self.stderr = cp.returncode, cp.stdout, cp.stderr


def _tls_flags(registry: Registry | None, prefix: str, verify: bool | None) -> list[str]:
    """prefix: "src-" / "dest-" / "" (inspect)."""
    if registry is None:
        return []
    if registry.tls and verify is not False:
        return [f"--{prefix}tls-verify=true", f"--{prefix}cert-dir", str(registry.cert_dir)]
    return [f"--{prefix}tls-verify=false"]


def _creds_flags(registry: Registry | None, prefix: str, creds) -> list[str]:
    if creds is False or registry is None:
        return []
    creds = creds or registry.creds
    if creds:
        return [f"--{prefix}creds", f"{creds[0]}:{creds[1]}"]
    return []


_NO_AUTH_FILE = os.path.join(tempfile.gettempdir(), f"registry-fixture-none-{secrets.token_hex(6)}",
                             "auth.json")


def skopeo(*args: str, check: bool = True, timeout: float = 300,
           env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run skopeo with a hermetic environment (no saved logins, no policy check)."""
    cmd = [SKOPEO_BIN, "--insecure-policy", *args]
    if os.geteuid() == 0 and have_program("unshare"):
        # root's skopeo keeps a blob-info cache in /var/lib/containers/cache:
        # give it a tmpfs there, in a mount namespace of its own, so that the
        # tests leave nothing on the host
        cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
               'mount -t tmpfs tmpfs /var/lib && exec "$@"', "skopeo", *cmd]
    e = dict(os.environ)
    # never use the machine's saved logins: point at an auth file that does not
    # exist (c/image treats a missing file as "no credentials"; nothing is created)
    e["REGISTRY_AUTH_FILE"] = _NO_AUTH_FILE
    if env:
        e.update(env)
    cp = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=e)
    if check and cp.returncode != 0:
        raise SkopeoError(cmd, cp)
    return cp


def push(layout_dir: "os.PathLike | ImageInfo | IndexInfo", registry: Registry, ref: str,
         src_tag: str | None = None,
         all_platforms: bool = True, format: str | None = None, creds=None,
         tls_verify: bool | None = None, extra_args: Iterable[str] = (),
         host: str | None = None) -> str:
    """skopeo copy oci:DIR:SRC_TAG docker://HOST:PORT/REF; returns the pushed digest.

    layout_dir: a layout directory, or the ImageInfo/IndexInfo returned by the builders.
    ref: "repo:tag" (tag defaults to "latest").  src_tag defaults to the info's tag,
         else the layout's only ref name, else ref's tag.
    all_platforms: pass --all so an index is pushed with all its images
                   (skopeo 1.9 also has --multi-arch all; --all is equivalent).
    format: None (keep OCI), "v2s2" (docker manifest / manifest list), "oci".
    host: push through another address (e.g. a FaultProxy's hostport).
    """
    if isinstance(layout_dir, (ImageInfo, IndexInfo)):
        src_tag = src_tag or layout_dir.tag
        layout_dir = layout_dir.layout_dir
    repo, _, tag = ref.rpartition(":") if ":" in ref.split("/")[-1] else (ref, "", "latest")
    if src_tag is None:
        names = [m.get("annotations", {}).get("org.opencontainers.image.ref.name")
                 for m in json.loads((Path(layout_dir) / "index.json").read_text())["manifests"]]
        names = [n for n in names if n]
        src_tag = names[0] if len(names) == 1 else tag
    with tempfile.NamedTemporaryFile("r", suffix=".digest") as df:
        args = ["copy", "-q", "--digestfile", df.name]
        if all_platforms:
            args.append("--all")
        if format:
            args += ["--format", format]
        args += _tls_flags(registry if host is None else None, "dest-", tls_verify)
        if host is not None:
            args.append("--dest-tls-verify=false")
        args += _creds_flags(registry, "dest-", creds)
        args += list(extra_args)
        args += [f"oci:{layout_dir}:{src_tag}", f"docker://{host or registry.hostport}/{repo}:{tag}"]
        skopeo(*args)
        return Path(df.name).read_text().strip()


def skopeo_inspect(registry: Registry, ref: str, raw: bool = False, config: bool = False,
                   creds=None, tls_verify: bool | None = None, override: str | None = None,
                   check: bool = True) -> Any:
    """skopeo inspect docker://HOST/ref -> parsed JSON (raw manifest if raw=True).
    override: platform "os/arch[/variant]" to select from an index."""
    args = ["inspect"]
    if override:
        p = parse_platform(override)
        args = ["--override-os", p["os"], "--override-arch", p["architecture"]] + (
            ["--override-variant", p["variant"]] if "variant" in p else []) + args
    if raw:
        args.append("--raw")
    if config:
        args.append("--config")
    args += _tls_flags(registry, "", tls_verify) + _creds_flags(registry, "", creds)
    args.append(f"docker://{registry.hostport}/{ref}")
    cp = skopeo(*args, check=check)
    if not check and cp.returncode != 0:
        return cp
    return json.loads(cp.stdout)


def pull_to_dir(registry: Registry, ref: str, dest: os.PathLike, creds=None,
                tls_verify: bool | None = None, all_platforms: bool = False,
                override: str | None = None, check: bool = True,
                host: str | None = None) -> subprocess.CompletedProcess:
    """skopeo copy docker://HOST/ref dir:DEST (a client-side pull)."""
    args = []
    if override:
        p = parse_platform(override)
        args += ["--override-os", p["os"], "--override-arch", p["architecture"]] + (
            ["--override-variant", p["variant"]] if "variant" in p else [])
    args += ["copy", "-q"]
    if all_platforms:
        args.append("--all")
    if host is not None:
        args.append("--src-tls-verify=false")
    else:
        args += _tls_flags(registry, "src-", tls_verify)
    args += _creds_flags(registry, "src-", creds)
    args += [f"docker://{host or registry.hostport}/{ref}", f"dir:{dest}"]
    return skopeo(*args, check=check)


# --------------------------------------------------------------------------
# a tiny pure-python pusher (exact bytes, any media type)
# --------------------------------------------------------------------------
def _split_ref(ref: str) -> tuple[str, str]:
    if "@" in ref:
        repo, _, r = ref.partition("@")
        return repo, r
    if ":" in ref.split("/")[-1]:
        repo, _, tag = ref.rpartition(":")
        return repo, tag
    return ref, "latest"


def upload_blob(registry: Registry, repo: str, data: bytes, digest: str | None = None,
                check_exists: bool = True) -> str:
    """Monolithic upload: POST /v2/<repo>/blobs/uploads/ then PUT <Location>&digest=.
    `digest` may be given wrong on purpose (the registry answers 400 DIGEST_INVALID)."""
    digest = digest or sha256_digest(data)
    if check_exists:
        st, _, _ = registry.request("HEAD", f"/v2/{repo}/blobs/{digest}")
        if st == 200:
            return digest
    st, h, body = registry.request("POST", f"/v2/{repo}/blobs/uploads/", body=b"")
    if st != 202:
        raise RuntimeError(f"upload start failed {st}: {body[:300]!r}")
    loc = urllib.parse.urlsplit(h["location"])
    path = loc.path + "?" + (loc.query + "&" if loc.query else "") + \
        urllib.parse.urlencode({"digest": digest})
    st, h, body = registry.request("PUT", path, body=data,
                                   headers={"Content-Type": "application/octet-stream",
                                            "Content-Length": str(len(data))})
    if st != 201:
        raise RuntimeError(f"blob PUT failed {st}: {body[:300]!r}")
    return digest


def put_manifest(registry: Registry, repo: str, reference: str, data: bytes,
                 media_type: str) -> tuple[int, dict, bytes]:
    """PUT /v2/<repo>/manifests/<reference> with Content-Type media_type; returns
    (status, headers, body) so tests can also provoke errors."""
    return registry.request("PUT", f"/v2/{repo}/manifests/{reference}", body=data,
                            headers={"Content-Type": media_type})


def push_raw(layout: "os.PathLike | ImageInfo | IndexInfo", registry: Registry, ref: str,
             src_tag: str | None = None) -> str:
    """Push a layout byte-for-byte without skopeo (no recompression: uncompressed
    layers stay uncompressed, digests are the layout's).  Index children are
    pushed by digest first.  Returns the top manifest digest."""
    if isinstance(layout, (ImageInfo, IndexInfo)):
        src_tag = src_tag or layout.tag
        layout = layout.layout_dir
    layout = Path(layout)
    repo, tag = _split_ref(ref)
    top = json.loads((layout / "index.json").read_text())["manifests"]
    cands = [m for m in top if src_tag is None or
             m.get("annotations", {}).get("org.opencontainers.image.ref.name") == src_tag]
    if len(cands) != 1:
        raise KeyError(f"{src_tag!r} not (uniquely) in {layout}/index.json")

    def blob(d):
        return (layout / "blobs" / d.replace(":", "/")).read_bytes()

    def push_manifest(desc, reference):
        data = blob(desc["digest"])
        m = json.loads(data)
        mt = m.get("mediaType") or desc["mediaType"]
        if "manifests" in m:
            for child in m["manifests"]:
                push_manifest(child, child["digest"])
        else:
            for b in [m["config"]] + m.get("layers", []):
                upload_blob(registry, repo, blob(b["digest"]), b["digest"])
        st, _, body = put_manifest(registry, repo, reference, data, mt)
        if st != 201:
            raise RuntimeError(f"manifest PUT {reference} failed {st}: {body[:300]!r}")
        return desc["digest"]

    digest = push_manifest(cands[0], tag)
    return digest


# --------------------------------------------------------------------------
# breaking blobs in storage
# --------------------------------------------------------------------------
def corrupt_blob(registry: Registry, digest: str, mode: str = "flip") -> Path:
    """Change a blob's data file in the registry storage
    (<root>/docker/registry/v2/blobs/sha256/<xx>/<hex>/data).

    mode "flip":     invert the last byte (same size => Content-Length unchanged,
                     only the digest check can catch it).  For gzip blobs the last
                     bytes are the gzip trailer's ISIZE, so decompression also fails
                     -- use "flip-middle" to hit deflate data instead.
    mode "flip-middle": invert the byte in the middle.
    mode "truncate": cut the file to half (the registry then serves the short
                     file with the short Content-Length; size AND digest differ).
    mode "append":   add bytes at the end.
    The registry does not re-verify blobs when serving them, so clients get the
    changed bytes.  Returns the data path.
    """
    p = registry.blob_path(digest)
    if not p.exists():
        raise FileNotFoundError(f"{digest} not in registry storage ({p})")
    data = bytearray(p.read_bytes())
    if mode == "flip":
        data[-1] ^= 0xFF
    elif mode == "flip-middle":
        data[len(data) // 2] ^= 0xFF
    elif mode == "truncate":
        data = data[: len(data) // 2]
    elif mode == "append":
        data += b"garbage"
    else:
        raise ValueError(mode)
    p.write_bytes(bytes(data))
    return p


def delete_blob_file(registry: Registry, digest: str) -> None:
    """Remove a blob's data file: the registry then answers 404 BLOB_UNKNOWN."""
    p = registry.blob_path(digest)
    shutil.rmtree(p.parent)


# --------------------------------------------------------------------------
# pytest fixtures
# --------------------------------------------------------------------------
try:
    import pytest
except ImportError:  # pragma: no cover - module usable without pytest
    pytest = None  # type: ignore

if pytest is not None:
    def _needs(*progs):
        missing = [p for p in progs if not have_program(p)]
        if missing:
            pytest.skip(f"missing programs: {missing}")

    @pytest.fixture
    def registry(tmp_path):
        """Plain-HTTP registry, no auth."""
        _needs(REGISTRY_BIN, SKOPEO_BIN)
        with start_registry(tmp_path) as reg:
            yield reg

    @pytest.fixture
    def tls_registry(tmp_path):
        _needs(REGISTRY_BIN, SKOPEO_BIN, "openssl")
        with start_registry(tmp_path, tls=True) as reg:
            yield reg

    @pytest.fixture
    def htpasswd_registry(tmp_path):
        _needs(REGISTRY_BIN, SKOPEO_BIN)
        with start_registry(tmp_path, auth="htpasswd") as reg:
            yield reg

    @pytest.fixture
    def token_registry(tmp_path):
        _needs(REGISTRY_BIN, SKOPEO_BIN, "openssl")
        with start_registry(tmp_path, tls=True, auth="token") as reg:
            yield reg

    @pytest.fixture
    def redirect_registry(tmp_path):
        _needs(REGISTRY_BIN, SKOPEO_BIN)
        with start_registry(tmp_path, redirect=True) as reg:
            yield reg

    @pytest.fixture(scope="session")
    def busybox_image(tmp_path_factory):
        """OCI layout with the 2-layer busybox image tagged 'latest'."""
        return busybox_layout(tmp_path_factory.mktemp("busybox-oci"))

    @pytest.fixture(scope="session")
    def index_image(tmp_path_factory):
        """OCI layout whose 'latest' is a linux/amd64 + linux/arm64/v8 index."""
        return make_index_layout(tmp_path_factory.mktemp("index-oci"))


# --------------------------------------------------------------------------
# manual use: python3 registry_fixture.py serve [--tls] [--auth htpasswd|token]
#             [--redirect] [--populate]   (prints JSON info, runs until SIGTERM/^C)
# --------------------------------------------------------------------------
def _main(argv=None):
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--tls", action="store_true")
    s.add_argument("--auth", choices=["htpasswd", "token"])
    s.add_argument("--redirect", action="store_true")
    s.add_argument("--populate", action="store_true",
                   help="push test/busybox:1 (OCI), test/multi:1 (OCI index), "
                        "test/docker:1 (v2s2) and test/dlist:1 (manifest list)")
    s.add_argument("--info", help="also write the JSON info to this file")
    a = ap.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with tempfile.TemporaryDirectory(prefix="regfix-") as td, \
            start_registry(td, tls=a.tls, auth=a.auth, redirect=a.redirect) as reg:
        info: dict[str, Any] = {"url": reg.url, "hostport": reg.hostport, "pid": reg.pid,
                                "storage": str(reg.storage_dir), "log": str(reg.log_path),
                                "access_log": str(reg.access_log_path),
                                "ca_cert": str(reg.ca_cert) if reg.ca_cert else None,
                                "creds": reg.creds,
                                "token_realm": reg.token_server.realm if reg.token_server else None,
                                "blob_server": reg.blob_server.url if reg.blob_server else None}
        if a.populate:
            img = busybox_layout(Path(td) / "bb")
            idx = make_index_layout(Path(td) / "idx")
            info["images"] = {
                "test/busybox:1": push(img, reg, "test/busybox:1"),
                "test/multi:1": push(idx, reg, "test/multi:1"),
                "test/docker:1": push(img, reg, "test/docker:1", format="v2s2"),
                "test/dlist:1": push(idx, reg, "test/dlist:1", format="v2s2"),
            }
            info["layers"] = [l.digest for l in img.layers]
            info["config"] = img.config_digest
        text = json.dumps(info, indent=2)
        print(text, flush=True)
        if a.info:
            Path(a.info).write_text(text)
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    _main()
