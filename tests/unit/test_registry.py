"""pull against a hostile registry: a fake one served from a thread on
127.0.0.1 (http.server), answering whatever the test sets. Redirects to
URLs that cannot be followed, manifests and indexes of every wrong shape,
broken HTTP and endless bodies: each is one line `minicontainer: pull REF:
...`, status 125, no Python repr, nothing written. Credentials go to the
registry's own origin (scheme, host and port) and nowhere else."""
import base64
import contextlib
import gzip
import hashlib
import http.server
import io
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import tarfile
import threading

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import minicontainer as mc
from _minicontainer import imageformat, images

REPR = re.compile(r"[A-Za-z]+(Error|Exception)\(|Traceback|<class |object at 0x|internal error"
                  r"|\b(KeyError|TypeError|AttributeError|IndexError|RecursionError)\b")
HOST_PLATFORM = imageformat.parse_platform(None)


def sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_bytes():
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"hi\n"))
    return gzip.compress(raw.getvalue())


class Image:
    """One small image: a layer, a configuration of a platform, a manifest."""

    def __init__(self, platform=HOST_PLATFORM):
        self.layer = layer_bytes()
        os_, arch, variant = platform
        config = {"os": os_, "architecture": arch, "config": {"Cmd": ["/hello"]},
                  "rootfs": {"type": "layers", "diff_ids": []}}
        if variant:
            config["variant"] = variant
        self.config = json.dumps(config).encode()
        self.manifest = json.dumps({
            "schemaVersion": 2, "mediaType": imageformat.MANIFEST_TYPES[0],
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": sha(self.config), "size": len(self.config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": sha(self.layer), "size": len(self.layer)}]}).encode()

    def routes(self, repo="test/img", tag="1"):
        return {f"/v2/{repo}/manifests/{tag}": (200, {"Content-Type": imageformat.MANIFEST_TYPES[0]}, self.manifest),
                f"/v2/{repo}/manifests/{sha(self.manifest)}": (200, {"Content-Type": imageformat.MANIFEST_TYPES[0]},
                                                               self.manifest),
                f"/v2/{repo}/blobs/{sha(self.config)}": (200, {}, self.config),
                f"/v2/{repo}/blobs/{sha(self.layer)}": (200, {}, self.layer)}


class FakeRegistry:
    """A registry that answers each path as `routes` says: (status, headers,
    body), a callable taking the handler, or 404. Plain HTTP and, on the same
    port, TLS (told apart by the first byte), so that a redirect from https to
    http on the same host and port can be tried. Every request is recorded."""

    def __init__(self, certificate=None):
        self.routes, self.requests = {}, []
        self.tls = None
        if certificate:
            self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.tls.load_cert_chain(*certificate)
        registry = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                path = self.path.split("?")[0]
                registry.requests.append((path, dict(self.headers), isinstance(self.connection, ssl.SSLSocket)))
                answer = registry.routes.get(path)
                if answer is None and path == "/v2/":
                    answer = (200, {}, b"{}")
                if callable(answer):
                    return answer(self)
                status, headers, body = answer or (404, {}, b'{"errors": [{"code": "MANIFEST_UNKNOWN"}]}')
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def get_request(self):
                sock, address = super().get_request()
                if registry.tls is not None:
                    sock.settimeout(5)
                    try:
                        first = sock.recv(1, socket.MSG_PEEK)
                    except OSError:
                        first = b""
                    if first == b"\x16":  # a TLS ClientHello
                        sock = registry.tls.wrap_socket(sock, server_side=True)
                    sock.settimeout(None)
                return sock, address

            def handle_error(self, request, address):
                pass  # a client that gave up on TLS, say

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def host(self):
        return f"127.0.0.1:{self.port}"

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def fake():
    registry = FakeRegistry()
    yield registry
    registry.stop()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    import registry_fixture as rf
    if not rf.have_program("openssl"):
        pytest.skip("openssl (setup.sh installs it) makes the fake registry's certificate")
    return rf.make_self_signed_cert(tmp_path_factory.mktemp("cert"))


@pytest.fixture
def tls_fake(certificate):
    registry = FakeRegistry(certificate)
    yield registry
    registry.stop()


@pytest.fixture(autouse=True)
def no_credentials(tmp_path, monkeypatch):
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(tmp_path / "no-auth.json"))
    monkeypatch.setenv("HOME", str(tmp_path))


def pull(work, *args):
    """minicontainer pull, in this process: (status, stderr, stdout)."""
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        code = mc.main(["pull", "--root", str(work / "root"), "--cache", str(work / "cache"), *args])
    return code, err.getvalue(), out.getvalue()


def refused(work, ref, *args):
    """The one line of a refusal, checked: 125, one line naming the pull, no
    repr, nothing written into the root."""
    code, err, out = pull(work, *args, ref)
    assert code == 125 and err.count("\n") == 1 and out == "", err
    assert err.startswith(f"minicontainer: pull {ref}: "), err
    assert not REPR.search(err), err
    assert not os.path.exists(work / "root"), err
    return err


def serve(fake, routes):
    fake.routes = dict(routes)
    fake.requests.clear()


# -- the controls ------------------------------------------------------------

def test_the_fake_registry_serves_a_pull(tmp_path, fake):
    serve(fake, Image().routes())
    code, err, out = pull(tmp_path, f"{fake.host}/test/img:1")
    assert code == 0, err
    assert (tmp_path / "root" / "hello.txt").read_bytes() == b"hi\n"


# -- redirects ---------------------------------------------------------------

@pytest.mark.parametrize("location", [
    "ftp://127.0.0.1/x", "file:///etc/passwd", "javascript:alert(1)", "http://[::1/x",
    "http://127.0.0.1:notaport/x", "http://:80/no/host", "https://user@/x", "http://127.0.0.1:99999999/x",
    "http://exa mple/x", "http://127.0.0.1/a\x00b", "http://h\u00e9.example/x", "gopher:x",
])
def test_a_redirect_that_cannot_be_followed_is_one_line(tmp_path, fake, location):
    image = Image()
    serve(fake, {**image.routes(), f"/v2/test/img/blobs/{sha(image.layer)}": (
        307, {"Location": location.encode("utf-8").decode("latin-1")}, b"")})
    assert "leads to" in refused(tmp_path, f"{fake.host}/test/img:1")


def test_a_redirect_without_a_location_and_a_loop_are_one_line(tmp_path, fake):
    image = Image()
    routes = image.routes()
    serve(fake, {**routes, f"/v2/test/img/blobs/{sha(image.config)}": (302, {}, b"")})
    assert "302 without a Location" in refused(tmp_path, f"{fake.host}/test/img:1")
    serve(fake, {**routes, f"/v2/test/img/blobs/{sha(image.config)}": (
        302, {"Location": f"/v2/test/img/blobs/{sha(image.config)}"}, b"")})
    assert "too many redirects" in refused(tmp_path, f"{fake.host}/test/img:1")


def endless(status, headers):
    """An answer whose body never ends (chunked, a chunk at a time)."""
    def answer(handler):
        handler.send_response(status)
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        try:
            while True:
                handler.wfile.write(b"10000\r\n" + b"x" * 0x10000 + b"\r\n")
        except OSError:
            pass
    return answer


def test_an_endless_redirect_or_challenge_body_is_not_read(tmp_path, fake):
    """A redirect's body is not waited for: it may never end."""
    image = Image()
    serve(fake, {**image.routes(), "/v2/test/img/manifests/1": endless(
        302, {"Location": f"/v2/test/img/manifests/{sha(image.manifest)}"})})
    script = (f"import sys, minicontainer as mc; sys.exit(mc.main(['pull', '--root', {str(tmp_path / 'root')!r},"
              f" '--cache', {str(tmp_path / 'cache')!r}, '{fake.host}/test/img:1']))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": os.path.dirname(mc.__file__)})
    assert result.returncode == 0, result.stderr


def test_https_to_plain_http_elsewhere_is_refused(tmp_path, tls_fake, certificate, monkeypatch):
    """Following it would let a network change what arrives; loopback and
    --tls-verify=false allow plain HTTP, as for the first contact."""
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    image = Image()
    serve(tls_fake, {**image.routes(), "/v2/test/img/manifests/1": (
        307, {"Location": "http://registry.example:80/v2/test/img/manifests/1"}, b"")})
    assert "leads from https to plain http (registry.example:80): refused" in \
        refused(tmp_path, f"{tls_fake.host}/test/img:1")
    serve(tls_fake, image.routes())  # the control: the same registry, no redirect
    code, err, _ = pull(tmp_path, f"{tls_fake.host}/test/img:1")
    assert code == 0, err
    assert all(tls for _, _, tls in tls_fake.requests)


@pytest.mark.parametrize("target, sent", [
    ("https://127.0.0.1:{port}/moved", True),   # the control: the registry's own origin
    ("http://127.0.0.1:{port}/moved", False),   # same host and port, plain http
    ("https://localhost:{port}/moved", False),  # another host
    ("http://127.0.0.1:{other}/moved", False),  # another port
])
def test_authorization_goes_to_the_registrys_origin_only(tmp_path, tls_fake, fake, target, sent,
                                                         monkeypatch):
    (tmp_path / "auth.json").write_text(json.dumps({"auths": {tls_fake.host: {
        "auth": base64.b64encode(b"user:secret").decode()}}}))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(tmp_path / "auth.json"))
    image = Image()
    location = target.format(port=tls_fake.port, other=fake.port)
    routes = {"/v2/": lambda h: (h.send_response(401), h.send_header("WWW-Authenticate", 'Basic realm="r"'),
                                 h.send_header("Content-Length", "0"), h.end_headers()),
              **image.routes(),
              f"/v2/test/img/blobs/{sha(image.layer)}": (307, {"Location": location}, b""),
              "/moved": (200, {}, image.layer)}
    serve(tls_fake, routes)
    serve(fake, {"/moved": (200, {}, image.layer)})
    code, err, _ = pull(tmp_path, "--tls-verify=false", f"{tls_fake.host}/test/img:1")
    assert code == 0, err
    manifest = [h for p, h, _ in tls_fake.requests if p == "/v2/test/img/manifests/1"]
    assert manifest and manifest[0].get("Authorization") == "Basic " + base64.b64encode(b"user:secret").decode()
    moved = [h for p, h, _ in tls_fake.requests + fake.requests if p == "/moved"]
    assert len(moved) == 1 and ("Authorization" in moved[0]) == sent, moved


# -- answers that are not HTTP, or not what they should be --------------------

def raw(data):
    def answer(handler):
        handler.wfile.write(data)
        handler.close_connection = True
    return answer


@pytest.mark.parametrize("answer, why", [
    (raw(b"HELLO THERE\r\n\r\n"), "not an HTTP answer"),
    (raw(b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70000 + b"\r\n\r\n"), "a header line too long"),
    (raw(b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 150 + b"\r\n"), "answered badly"),
    (raw(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nContent-Type: " + imageformat.MANIFEST_TYPES[0].encode()
         + b"\r\n\r\n{\"sch"), "broke off"),
    (raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"), "broke off"),
    ((500, {}, b'{"errors": 5}'), "answered 500 for manifest"),
    ((307, {"Location": "https://127.0.0.1:1/x"}, b""), "connection refused by 127.0.0.1:1"),
    ((500, {}, b'{"errors": [{"code": ["x"], "message": "two\\nlines\\u0000"}, 7]}'),
     "answered 500 for manifest: two?lines?"),
    ((500, {}, b"[" * 100000), "answered 500 for manifest"),
])
def test_broken_answers_are_one_line(tmp_path, fake, answer, why):
    serve(fake, {"/v2/test/img/manifests/1": answer})
    assert why in refused(tmp_path, f"{fake.host}/test/img:1")


def test_a_redirect_to_https_where_plain_http_answers_is_one_line(tmp_path, fake):
    serve(fake, {"/v2/test/img/manifests/1": (307, {"Location": f"https://{fake.host}/x"}, b"")})
    assert f"TLS failure with {fake.host}: " in refused(tmp_path, f"{fake.host}/test/img:1")


@pytest.mark.parametrize("token", [{"a": 1}, "a\r\nX-Evil: 1", ["t"], 5, "", "sp ace"])
def test_a_token_that_cannot_be_a_header_is_one_line(tmp_path, fake, token):
    image = Image()
    serve(fake, {"/v2/": lambda h: (h.send_response(401), h.send_header(
        "WWW-Authenticate", f'Bearer realm="http://127.0.0.1:{fake.port}/token",service="s"'),
        h.send_header("Content-Length", "0"), h.end_headers()),
        "/token": (200, {}, json.dumps({"token": token}).encode()), **image.routes()})
    assert "gave no token" in refused(tmp_path, f"{fake.host}/test/img:1")


@pytest.mark.parametrize("realm", ["ftp://127.0.0.1/t", "http://[::1/t", "/relative", "http://a b/t"])
def test_a_token_realm_that_cannot_be_followed_is_one_line(tmp_path, fake, realm):
    serve(fake, {"/v2/": lambda h: (h.send_response(401), h.send_header(
        "WWW-Authenticate", f'Bearer realm="{realm}"'), h.send_header("Content-Length", "0"),
        h.end_headers())})
    assert "the token realm leads to" in refused(tmp_path, f"{fake.host}/test/img:1")


# -- manifests and indexes ---------------------------------------------------

def test_a_digest_that_is_a_path_deletes_nothing(tmp_path, fake):
    """A descriptor's digest names a file in the cache, which a damaged blob
    is unlinked from: "sha256:" and 64 characters of "../" must never be it."""
    sentinel = tmp_path / "sentinel"
    sentinel.write_text("keep")
    climb = "../../../sentinel"
    digest = "sha256:" + "./" * ((64 - len(climb)) // 2) + "." * ((64 - len(climb)) % 2) + climb
    assert len(digest) == 71
    image = Image()
    manifest = json.loads(image.manifest)
    manifest["config"]["digest"] = digest
    serve(fake, {**image.routes(), "/v2/test/img/manifests/1": (
        200, {"Content-Type": imageformat.MANIFEST_TYPES[0]}, json.dumps(manifest).encode())})
    assert "a digest minicontainer does not check" in refused(tmp_path, f"{fake.host}/test/img:1")
    assert sentinel.read_text() == "keep"


def index_of(*entries):
    return json.dumps({"schemaVersion": 2, "mediaType": imageformat.INDEX_TYPES[0], "manifests": list(entries)}).encode()


def test_an_index_inside_an_index_is_one_line(tmp_path, fake):
    image = Image()
    inner = index_of({"mediaType": imageformat.MANIFEST_TYPES[0], "digest": sha(image.manifest),
                      "size": len(image.manifest), "platform": {"os": "linux", "architecture": HOST_PLATFORM[1]}})
    outer = index_of({"mediaType": imageformat.INDEX_TYPES[0], "digest": sha(inner), "size": len(inner),
                      "platform": {"os": "linux", "architecture": HOST_PLATFORM[1]}})
    serve(fake, {**image.routes(),
                 "/v2/test/img/manifests/1": (200, {"Content-Type": imageformat.INDEX_TYPES[0]}, outer),
                 f"/v2/test/img/manifests/{sha(inner)}": (200, {"Content-Type": imageformat.INDEX_TYPES[0]}, inner)})
    assert "is an index itself" in refused(tmp_path, f"{fake.host}/test/img:1")
    serve(fake, {**image.routes(),  # the control: the inner index alone is pulled
                 "/v2/test/img/manifests/1": (200, {"Content-Type": imageformat.INDEX_TYPES[0]}, inner)})
    code, err, _ = pull(tmp_path, f"{fake.host}/test/img:1")
    assert code == 0, err


@pytest.mark.parametrize("body", [b"[" * 100000 + b"]" * 100000, b'{"a":' * 50000 + b"1" + b"}" * 50000,
                                  b"\xff\xfe\x00", b"", b"null", b"[]", b'"manifest"'])
def test_a_manifest_nested_too_deep_or_not_an_object_is_one_line(tmp_path, fake, body):
    for kind in (imageformat.MANIFEST_TYPES[0], imageformat.INDEX_TYPES[0], ""):
        serve(fake, {"/v2/test/img/manifests/1": (200, {"Content-Type": kind} if kind else {}, body)})
        refused(tmp_path, f"{fake.host}/test/img:1")


def test_a_config_nested_too_deep_is_one_line(tmp_path, fake):
    image = Image()
    image.config = b"[" * 100000 + b"]" * 100000
    manifest = json.loads(image.manifest)
    manifest["config"].update(digest=sha(image.config), size=len(image.config))
    image.manifest = json.dumps(manifest).encode()
    serve(fake, image.routes())
    assert "nested too deep" in refused(tmp_path, f"{fake.host}/test/img:1")


# hypothesis: JSON of every type where a manifest, an index, a descriptor,
# a platform or a configuration holds something else.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-2**70, max_value=2**70)
    | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8)
strings = st.sampled_from(["", "sha256:", "sha256:" + "0" * 64, "sha256:" + "A" * 64, "../x", "md5:0",
                           "sha256:" + "0" * 63 + "/", "linux", "amd64", imageformat.MANIFEST_TYPES[0],
                           imageformat.INDEX_TYPES[0], "application/vnd.oci.image.layer.v1.tar+gzip"])
hostile = json_values | strings | st.integers(min_value=-2**64, max_value=2**64)


def manifest_paths():
    """(where in a good manifest or index, what to put there)."""
    return st.sampled_from([
        ("manifest", ()), ("manifest", ("config",)), ("manifest", ("layers",)),
        ("manifest", ("config", "digest")), ("manifest", ("config", "size")),
        ("manifest", ("layers", 0)), ("manifest", ("layers", 0, "digest")),
        ("manifest", ("layers", 0, "size")), ("manifest", ("layers", 0, "mediaType")),
        ("manifest", ("mediaType",)),
        ("index", ()), ("index", ("manifests",)), ("index", ("manifests", 0)),
        ("index", ("manifests", 0, "platform")), ("index", ("manifests", 0, "platform", "os")),
        ("index", ("manifests", 0, "platform", "architecture")),
        ("index", ("manifests", 0, "platform", "variant")), ("index", ("manifests", 0, "digest")),
        ("index", ("manifests", 0, "size")), ("index", ("manifests", 0, "mediaType")),
        ("config", ()), ("config", ("config",)), ("config", ("config", "Cmd")),
        ("config", ("config", "Env")), ("config", ("config", "Entrypoint")),
        ("config", ("config", "User")), ("config", ("config", "WorkingDir")),
        ("config", ("config", "ExposedPorts")),
    ])


def put(document, path, value):
    if not path:
        return value
    target = document
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return document


@pytest.fixture(scope="module")
def hostile_work(tmp_path_factory):
    return tmp_path_factory.mktemp("hostile")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(where=manifest_paths(), value=hostile)
def test_hostile_documents_are_refused_in_one_line_or_pulled(hostile_work, fake, monkeypatch, where, value):
    """Whatever a field holds: a pull that succeeds, or one line, 125, no repr,
    and the root untouched (here: never made)."""
    import shutil
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(hostile_work / "none"))
    image = Image()
    kind, path = where
    routes = image.routes()
    if kind == "config":
        image.config = json.dumps(put(json.loads(image.config), path, value)).encode()
        manifest = json.loads(image.manifest)
        manifest["config"].update(digest=sha(image.config), size=len(image.config))
        image.manifest = json.dumps(manifest).encode()
        routes = image.routes()
    elif kind == "manifest":
        body = json.dumps(put(json.loads(image.manifest), path, value)).encode()
        routes["/v2/test/img/manifests/1"] = (200, {"Content-Type": imageformat.MANIFEST_TYPES[0]}, body)
    else:
        entry = {"mediaType": imageformat.MANIFEST_TYPES[0], "digest": sha(image.manifest),
                 "size": len(image.manifest), "platform": {"os": "linux", "architecture": HOST_PLATFORM[1]}}
        body = json.dumps(put(json.loads(index_of(entry)), path, value)).encode()
        routes["/v2/test/img/manifests/1"] = (200, {"Content-Type": imageformat.INDEX_TYPES[0]}, body)
    serve(fake, routes)
    shutil.rmtree(hostile_work / "root", ignore_errors=True)
    code, err, out = pull(hostile_work, f"{fake.host}/test/img:1")
    if code == 0:  # what the field may hold (an empty list of layers, say): pulled
        assert (hostile_work / "root").is_dir() and out.startswith("pulled "), (err, out)
        return
    assert code == 125 and err.count("\n") == 1 and out == "", err
    assert err.startswith(f"minicontainer: pull {fake.host}/test/img:1: "), err
    assert not REPR.search(err), err
    assert not os.path.exists(hostile_work / "root")


# -- --platform --------------------------------------------------------------

def test_a_single_manifest_of_another_platform_is_refused_when_one_is_asked_for(tmp_path, fake):
    image = Image(("linux", "arm64", "v8"))
    serve(fake, image.routes())
    ref = f"{fake.host}/test/img:1"
    err = refused(tmp_path, ref, "--platform", "linux/s390x")
    assert err == (f"minicontainer: pull {ref}: the image does not provide the specified platform"
                   " (linux/s390x): it is linux/arm64/v8\n")
    refused(tmp_path, ref, "--platform", "linux/arm64/v7")
    for platform in ("linux/arm64", "linux/arm64/v8"):  # the controls
        code, err, _ = pull(tmp_path, "--platform", platform, ref)
        assert code == 0, err
    code, err, _ = pull(tmp_path, ref)  # none asked for: the one there is, as docker pulls it
    assert code == 0, err


def test_a_single_manifest_whose_config_names_no_platform_is_refused_when_one_is_asked_for(tmp_path, fake):
    image = Image()
    config = json.loads(image.config)
    del config["os"], config["architecture"]
    image.config = json.dumps(config).encode()
    manifest = json.loads(image.manifest)
    manifest["config"].update(digest=sha(image.config), size=len(image.config))
    image.manifest = json.dumps(manifest).encode()
    serve(fake, image.routes())
    assert "does not provide the specified platform (linux/amd64): it is of no platform it names" in \
        refused(tmp_path, f"{fake.host}/test/img:1", "--platform", "linux/amd64")


def test_a_blob_without_a_size_is_refused_before_an_endless_download(tmp_path, fake):
    image = Image()
    manifest = json.loads(image.manifest)
    del manifest["layers"][0]["size"]
    serve(fake, {**image.routes(), "/v2/test/img/manifests/1": (
        200, {"Content-Type": imageformat.MANIFEST_TYPES[0]}, json.dumps(manifest).encode()),
        f"/v2/test/img/blobs/{sha(image.layer)}": endless(200, {})})
    assert "layers[0] of the manifest has a size that is no byte count: null" in \
        refused(tmp_path, f"{fake.host}/test/img:1")


def test_huge_manifests_and_configurations_are_refused_before_they_are_read(tmp_path, fake):
    image = Image()
    serve(fake, {"/v2/test/img/manifests/1": (200, {"Content-Type": imageformat.MANIFEST_TYPES[0]},
                                              b" " * (imageformat.MAX_MANIFEST + 1))})
    assert f"the manifest 1 is larger than {imageformat.MAX_MANIFEST} bytes" in refused(tmp_path, f"{fake.host}/test/img:1")
    manifest = json.loads(image.manifest)
    manifest["config"]["size"] = 2**63 - 1
    serve(fake, {**image.routes(), "/v2/test/img/manifests/1": (
        200, {"Content-Type": imageformat.MANIFEST_TYPES[0]}, json.dumps(manifest).encode())})
    assert "the image configuration is larger than" in refused(tmp_path, f"{fake.host}/test/img:1")
    assert not [p for p, _, _ in fake.requests if "/blobs/" in p]
    manifest["config"]["size"] = 2**63
    serve(fake, {**image.routes(), "/v2/test/img/manifests/1": (
        200, {"Content-Type": imageformat.MANIFEST_TYPES[0]}, json.dumps(manifest).encode())})
    assert "has a size that is no byte count: 9223372036854775808" in refused(tmp_path, f"{fake.host}/test/img:1")


def test_a_manifest_that_trickles_in_is_refused_at_the_deadline(tmp_path, fake, monkeypatch):
    import time
    monkeypatch.setattr(images, "DOCUMENT_TIMEOUT", 1)

    def trickle(handler):
        handler.send_response(200)
        handler.send_header("Content-Type", imageformat.MANIFEST_TYPES[0])
        handler.send_header("Content-Length", "1000")
        handler.end_headers()
        try:
            for _ in range(100):
                handler.wfile.write(b" ")
                handler.wfile.flush()
                time.sleep(0.1)
        except OSError:
            pass
    serve(fake, {"/v2/test/img/manifests/1": trickle})
    started = time.monotonic()
    assert "the answer for the manifest 1 took longer than 1 s" in refused(tmp_path, f"{fake.host}/test/img:1")
    assert time.monotonic() - started < 5
