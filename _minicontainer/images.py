"""pull: references, the registry's API, the blob cache, layers swapped in.

Owns: Reference, RegistryClient (redirects, tokens, credentials kept to the
registry's own scheme, host and port), manifests and indexes checked field by
field, BlobCache (content-addressed, verified), pull_image. Loaded only by
`pull`.
May import: the package's version, errors, syscalls, procs, imageformat, rootfs.
"""
import os
import sys

from . import __version__
from .errors import ContainerError
from .syscalls import rename_exchange
from .procs import alive, owner_of, process_start
from .imageformat import (
    INDEX_TYPES, MANIFEST_TYPES, MAX_MANIFEST, open_layer, parse_platform, platform_name,
)
from .rootfs import (
    Plan, Writer, image_file, image_settings, make_skeleton, open_root, plan_layer, remove_tree,
    write_image_file,
)

# ---------------------------------------------------------------------------
# Images
# `pull` as skopeo and podman do it: a reference read as docker reads it, the
# OCI distribution API over HTTPS (bearer tokens, credentials, redirects), an
# index resolved to one platform, and every blob checked against its sha256
# while it streams into a content-addressed cache, before anything is
# unpacked. The layers are applied by deploy's own plan and writer into a new
# directory beside the root, which is then swapped with it: the root is
# either the old one or the whole new one. The image's configuration
# (Entrypoint, Cmd, Env, ...) is kept beside the root, never inside it, for
# `run`; a deploy of an image archive records it too.
# ---------------------------------------------------------------------------

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
LAYER_COMPRESSION = {
    "application/vnd.oci.image.layer.v1.tar": None,
    "application/vnd.oci.image.layer.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd": "zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "gzip",
}
MAX_BLOB = (1 << 63) - 1  # a descriptor's size is an int64 (OCI image spec)
DOCUMENT_TIMEOUT = 60  # seconds: a manifest, a token or an error body that takes longer is refused


def printable(text, limit=120):
    """Text a registry or an image gave, fit for one line of a message: ASCII
    without control characters, at most `limit` characters."""
    text = "".join(c if " " <= c <= "~" else "?" for c in str(text))
    return text if len(text) <= limit else text[:limit] + "..."


def json_text(value, limit=60):
    """A JSON value as the document has it, for a message (JSON, not Python)."""
    import json
    try:
        text = json.dumps(value, ensure_ascii=True)
    except (TypeError, ValueError, RecursionError):
        text = "?"
    return printable(text, limit)


def url_origin(parts):
    """(scheme, host, port) of split URL parts, the port made explicit: what a
    credential is bound to."""
    return (parts.scheme, (parts.hostname or "").lower(),
            parts.port or {"https": 443, "http": 80}.get(parts.scheme))


class Reference:
    """An image reference as docker reads it: `alpine` is
    docker.io/library/alpine:latest; a first part with a '.' or ':', or
    `localhost`, is a registry; `@sha256:...` pins a digest."""

    def __init__(self, text):
        import re
        self.text = text
        name, _, digest = text.partition("@")
        head, _, last = name.rpartition("/")
        tag = None
        if ":" in last:
            last, _, tag = last.partition(":")
        name = f"{head}/{last}" if head else last
        first, _, rest = name.partition("/")
        if rest and ("." in first or ":" in first or first == "localhost"):
            registry, path = first, rest
        else:
            registry, path = DOCKER_HUB, name
        if registry == DOCKER_HUB and "/" not in path:
            path = f"library/{path}"
        component = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
        why = None
        if not re.fullmatch(r"[a-zA-Z0-9.-]+(?::[0-9]+)?", registry):
            why = f"{registry!r} is not a registry host[:port]"
        elif not re.fullmatch(rf"{component}(?:/{component})*", path) or len(path) > 255:
            why = f"{path!r} is not a repository name (lower-case letters, digits, '.', '_', '-', '/')"
        elif tag is not None and not re.fullmatch(r"[\w][\w.-]{0,127}", tag):
            why = f"{tag!r} is not a tag"
        elif digest and not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
            why = f"{digest!r} is not a sha256 digest (sha256: and 64 hex digits)"
        if why:
            raise ContainerError(f"pull {text}", f"not an image reference: {why}")
        self.registry, self.repository, self.digest = registry, path, digest or None
        self.tag = tag if tag is not None or digest else "latest"

    def __str__(self):
        return (f"{self.registry}/{self.repository}" + (f":{self.tag}" if self.tag else "")
                + (f"@{self.digest}" if self.digest else ""))


def loopback_host(host):
    import ipaddress
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


def registry_credentials(registry):
    """(user, password) for a registry from $REGISTRY_AUTH_FILE (podman's
    auth.json) or ~/.docker/config.json: their `auths` entries, `auth` being
    base64 of user:password. None when there are none."""
    import base64
    import json
    paths = [os.environ.get("REGISTRY_AUTH_FILE")] if os.environ.get("REGISTRY_AUTH_FILE") else []
    paths.append(os.path.join(os.path.expanduser("~"), ".docker", "config.json"))
    keys = [registry, f"https://{registry}", f"http://{registry}"]
    if registry == DOCKER_HUB:
        keys += ["https://index.docker.io/v1/", "index.docker.io", DOCKER_HUB_API]
    for path in paths:
        try:
            with open(path, "rb") as f:
                auths = json.loads(f.read(MAX_MANIFEST)).get("auths", {})
        except FileNotFoundError:
            continue
        except (OSError, ValueError, AttributeError) as exc:
            raise ContainerError(f"credentials {path}", f"unreadable: {exc}") from None
        for key in keys:
            entry = auths.get(key) or auths.get(key.rstrip("/"))
            if isinstance(entry, dict) and entry.get("auth"):
                try:
                    user, sep, password = base64.b64decode(entry["auth"]).decode().partition(":")
                except (ValueError, UnicodeDecodeError):
                    sep = ""
                if not sep:
                    raise ContainerError(f"credentials {path}", f"the entry for {key} is not"
                                         " base64 of user:password")
                return user, password
    return None


class RegistryClient:
    """The OCI distribution API for one repository: GETs that follow
    redirects (never taking Authorization to another host), answer bearer and
    basic challenges, and turn every failure into one line."""

    def __init__(self, ref, tls_verify=True):
        self.ref, self.tls_verify = ref, tls_verify
        self.host = DOCKER_HUB_API if ref.registry == DOCKER_HUB else ref.registry
        self.scheme = "https"
        self.plain_allowed = loopback_host(self.host) or not tls_verify
        self.authorization, self.probed, self.tls = None, False, None
        self.credentials = registry_credentials(ref.registry)
        self.what = f"pull {ref.text}"

    def fail(self, why):
        return ContainerError(self.what, why)

    def context(self):
        """One TLS context for every connection: loading the system's
        certificate authorities costs some 50 ms."""
        import ssl
        if self.tls is None:
            self.tls = ssl.create_default_context()
            if not self.tls_verify:
                self.tls.check_hostname, self.tls.verify_mode = False, ssl.CERT_NONE
        return self.tls

    def connect(self, scheme, host):
        import http.client
        if scheme == "https":
            return http.client.HTTPSConnection(host, timeout=30, context=self.context())
        return http.client.HTTPConnection(host, timeout=30)

    def url(self, url, what):
        """The parts of a URL to GET, checked: http or https, a host, a numeric
        port, printable ASCII without spaces; or one line of what is wrong."""
        import urllib.parse
        try:
            if not url.isascii() or any(c <= " " or c == "\x7f" for c in url):
                raise ValueError
            parts = urllib.parse.urlsplit(url)
            parts.port  # noqa: B018 (a port that is no number raises here)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError
        except ValueError:
            raise self.fail(f"{what} leads to {printable(url)}: not an http(s) URL with a host") from None
        return parts

    def send(self, url, headers, probe=False):
        """One GET of an absolute URL; the response (its connection kept on it).
        A TLS failure of the first contact (probe) is left to base()."""
        import http.client
        import socket
        import ssl
        parts = self.url(url, "a request")
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        connection = self.connect(parts.scheme, parts.netloc)
        try:
            connection.request("GET", target, headers=headers)
            response = connection.getresponse()
        except ssl.SSLCertVerificationError as exc:
            connection.close()
            raise self.fail(f"TLS failure with {parts.netloc}: {exc.verify_message}"
                            " (--tls-verify=false skips the check, for loopback or test"
                            " registries)") from None
        except ssl.SSLError as exc:
            connection.close()
            if probe:
                raise
            raise self.fail(f"TLS failure with {parts.netloc}: {printable(exc.reason or exc)}") from None
        except socket.gaierror:
            connection.close()
            raise self.fail(f"unknown host {parts.hostname}") from None
        except ConnectionRefusedError:
            connection.close()
            raise self.fail(f"connection refused by {parts.netloc}") from None
        except (socket.timeout, TimeoutError):
            connection.close()
            raise self.fail(f"{parts.netloc} did not answer in 30 s") from None
        except OSError as exc:
            connection.close()
            raise self.fail(f"cannot reach {parts.netloc}: {printable(exc.strerror or exc)}") from None
        except http.client.HTTPException as exc:  # a status line or headers that are not HTTP
            connection.close()
            why = ("a header line too long" if isinstance(exc, http.client.LineTooLong) else
                   "not an HTTP answer" if isinstance(exc, http.client.BadStatusLine) else
                   printable(exc) or "a broken HTTP answer")
            raise self.fail(f"{parts.netloc} answered badly: {why}") from None
        response.connection_ = connection
        return response

    def body(self, response, limit, what):
        """Up to `limit` bytes of a response's body (then its connection is
        closed), or one line: a body that breaks off is the registry's failure,
        and so is one that trickles in for longer than DOCUMENT_TIMEOUT (each
        read's own timeout alone would let a byte every 29 s go on for days)."""
        import http.client
        import socket
        import time
        deadline, data = time.monotonic() + DOCUMENT_TIMEOUT, b""
        try:
            while len(data) < limit:
                if time.monotonic() > deadline:
                    raise self.fail(f"the answer for {what} took longer than {DOCUMENT_TIMEOUT} s")
                chunk = response.read1(min(limit - len(data), 65536))
                if not chunk:
                    break
                data += chunk
        except (http.client.HTTPException, OSError, ValueError, socket.timeout):
            raise self.fail(f"the answer for {what} broke off") from None
        finally:
            response.connection_.close()
        if len(data) < limit and response.length:  # fewer bytes than its Content-Length
            raise self.fail(f"the answer for {what} broke off")
        return data

    def base(self):
        """The first contact: HTTPS, or plain HTTP where allowed and the server
        does not speak TLS (a loopback registry, or --tls-verify=false)."""
        import ssl
        try:
            return self.send(f"https://{self.host}/v2/", {}, probe=True)
        except ssl.SSLError as exc:
            if not self.plain_allowed:
                raise self.fail(f"TLS failure with {self.host}: {exc.reason or exc} (--tls-verify"
                                "=false allows plain HTTP, for loopback or test registries)") from None
        self.scheme = "http"
        return self.send(f"http://{self.host}/v2/", {})

    def get(self, path, accept=None, what=None):
        """GET /v2/<repository>/<path>: a 200 response, or one line of why not."""
        import urllib.parse
        if not self.probed:
            answer = self.base()
            self.probed = True
            self.body(answer, 65536, "/v2/")
            if answer.status == 401:
                self.authorization = self.authorize(answer.getheader("WWW-Authenticate", ""))
        url = f"{self.scheme}://{self.host}/v2/{self.ref.repository}/{path}"
        # The registry's origin: scheme, host and port. Its Authorization goes
        # to it alone, never where a redirect leads (another host, another
        # port, or plain http on the same host and port).
        home = url_origin(urllib.parse.urlsplit(url))
        authorized = False
        for _ in range(6):  # redirects and one challenge
            headers = {"User-Agent": f"minicontainer/{__version__}"}
            if accept:
                headers["Accept"] = ", ".join(accept)
            at_home = url_origin(urllib.parse.urlsplit(url)) == home
            if self.authorization and at_home:
                headers["Authorization"] = self.authorization
            response = self.send(url, headers)
            if response.status in (301, 302, 303, 307, 308):
                location = response.getheader("Location")
                response.connection_.close()  # unread: a redirect's body may never end
                url = self.redirect(url, location, response.status, what or path)
                continue
            if response.status == 401 and at_home and not authorized:
                response.connection_.close()
                self.authorization = self.authorize(response.getheader("WWW-Authenticate", ""))
                authorized = True
                continue
            if response.status == 200:
                return response
            body = self.body(response, 65536, what or path)
            raise self.fail(self.refusal(response.status, body, what or path))
        raise self.fail(f"too many redirects for {what or path}")

    def redirect(self, url, location, status, what):
        """Where a redirect leads, checked: an http(s) URL with a host, and never
        from https down to plain http (where a network could change what
        arrives) unless plain http is allowed there (loopback, or
        --tls-verify=false)."""
        import urllib.parse
        if not location:
            raise self.fail(f"{status} without a Location for {what}")
        try:
            target = urllib.parse.urljoin(url, location)
        except ValueError:
            target = location
        parts = self.url(target, f"the redirect ({status}) for {what}")
        if urllib.parse.urlsplit(url).scheme == "https" and parts.scheme == "http" and \
                self.tls_verify and not loopback_host(parts.netloc):
            raise self.fail(f"the redirect ({status}) for {what} leads from https to plain http"
                            f" ({printable(parts.netloc)}): refused")
        return target

    def refusal(self, status, body, what):
        import json
        codes, messages = set(), []
        try:
            errors = json.loads(body).get("errors")
        except (ValueError, AttributeError, RecursionError):
            errors = None
        for error in errors if isinstance(errors, list) else ():
            if isinstance(error, dict):
                if isinstance(error.get("code"), str):
                    codes.add(error["code"])
                if isinstance(error.get("message"), str):
                    messages.append(error["message"])
        message = printable("; ".join(messages))
        if status == 401:
            return (f"authentication required by {self.ref.registry} (401): credentials go in"
                    " ~/.docker/config.json or $REGISTRY_AUTH_FILE")
        if status == 403:
            return f"access denied by {self.ref.registry} (403)"
        if status == 404 and what == "manifest":
            return f"unknown repository or tag in {self.ref.registry}"
        if status == 404 or codes & {"BLOB_UNKNOWN", "MANIFEST_UNKNOWN", "NAME_UNKNOWN"}:
            return f"{what} not found in {self.ref.registry} ({status})"
        return f"{self.ref.registry} answered {status} for {what}" + (f": {message}" if message else "")

    def authorize(self, challenge):
        """The Authorization for a WWW-Authenticate challenge: an anonymous or
        credentialed bearer token from its realm, or basic credentials."""
        import base64
        import json
        import re
        import urllib.parse
        scheme, _, rest = challenge.partition(" ")
        params = dict(re.findall(r'(\w+)="([^"]*)"', rest))
        basic = None
        if self.credentials:
            basic = "Basic " + base64.b64encode(":".join(self.credentials).encode()).decode()
        if scheme.lower() == "basic":
            if basic is None:
                raise self.fail(self.refusal(401, b"", "the registry"))
            return basic
        if scheme.lower() != "bearer" or "realm" not in params:
            raise self.fail(f"{self.ref.registry} asks for authentication minicontainer does"
                            f" not speak: {printable(challenge) or 'none named'}")
        query = {"scope": f"repository:{self.ref.repository}:pull"}
        if "service" in params:
            query["service"] = params["service"]
        realm = params["realm"]
        parts = self.url(realm, "the token realm")
        headers = {"User-Agent": f"minicontainer/{__version__}"}
        if basic and (parts.scheme == "https" or loopback_host(parts.netloc)):
            headers["Authorization"] = basic  # never a password in the clear beyond this host
        url = realm + ("&" if parts.query else "?") + urllib.parse.urlencode(query)
        response = self.send(url, headers)
        body = self.body(response, MAX_MANIFEST, "a token")
        if response.status != 200:
            raise self.fail(f"the token service {parts.netloc} refused a token"
                            f" ({response.status})" + (": wrong credentials?" if basic else ""))
        try:
            answer = json.loads(body)
            token = answer.get("token") or answer.get("access_token")
        except (ValueError, AttributeError, RecursionError):
            token = None
        if not token or not isinstance(token, str) or len(token) > 65536 or \
                not all("!" <= c <= "~" for c in token):
            raise self.fail(f"the token service {parts.netloc} gave no token")
        return f"Bearer {token}"

    def manifest(self, reference):
        """(media type, bytes, digest) of a manifest or index, its digest checked
        when asked for by digest."""
        import hashlib
        response = self.get(f"manifests/{reference}", INDEX_TYPES + MANIFEST_TYPES, "manifest")
        body = self.body(response, MAX_MANIFEST + 1, f"the manifest {reference}")
        if len(body) > MAX_MANIFEST:
            raise self.fail(f"the manifest {reference} is larger than {MAX_MANIFEST} bytes")
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        if reference.startswith("sha256:") and digest != reference:
            raise self.fail(f"the manifest {reference} arrived as {digest}: refused")
        kind = printable((response.getheader("Content-Type") or "").split(";")[0].strip())
        return kind, body, digest


class BlobCache:
    """Blobs by sha256, verified when written and when read: a file whose
    bytes do not hash to its name is removed, never used. Written under a
    temporary name and renamed, so concurrent pulls of one blob both succeed."""

    def __init__(self, path):
        self.path = path
        for directory in (path, os.path.join(path, "blobs"), os.path.join(path, "blobs", "sha256")):
            try:
                os.makedirs(directory, 0o700, exist_ok=True)
                st = os.lstat(directory)
            except OSError as exc:
                raise ContainerError.from_os(f"the image cache {directory}", exc) from None
            import stat
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
                raise ContainerError(f"the image cache {directory}", "not a directory of yours that"
                                     " only you may write: refused")
        self.tag = f".download-{os.getpid()}.{process_start(os.getpid())}."
        blobs = os.path.join(path, "blobs", "sha256")
        for name in os.listdir(blobs):  # what pulls killed midway left
            if name.startswith(".download-") and not alive(owner_of(name[len(".download-"):])):
                try:
                    os.unlink(os.path.join(blobs, name))
                except FileNotFoundError:
                    pass

    def file(self, digest):
        import re
        if not isinstance(digest, str) or not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
            # Never a path made of what a registry wrote ("sha256:../../x"):
            # a damaged blob is unlinked by that path.
            raise ContainerError("the image cache", f"not a sha256 digest: {json_text(digest)}")
        return os.path.join(self.path, "blobs", "sha256", digest.split(":", 1)[1])

    def open(self, digest, size):
        """The cached blob, opened and checked, or None."""
        import hashlib
        try:
            f = open(os.open(self.file(digest), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "rb")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ContainerError.from_os(f"the image cache {self.file(digest)}", exc) from None
        hasher, length = hashlib.sha256(), 0
        while chunk := f.read(1 << 20):
            hasher.update(chunk)
            length += len(chunk)
        if "sha256:" + hasher.hexdigest() != digest or (size is not None and length != size):
            f.close()
            os.unlink(self.file(digest))  # damaged: fetched again
            return None
        f.seek(0)
        return f

    def store(self, digest, size, response, progress=None):
        """Stream a response into the cache, checking its length and sha256; the
        cached file, opened, or one line of what was wrong."""
        import hashlib
        import http.client
        import tempfile
        fd, temporary = tempfile.mkstemp(prefix=self.tag, dir=os.path.dirname(self.file(digest)))
        hasher, length = hashlib.sha256(), 0
        try:
            with open(fd, "wb") as out:
                try:
                    while chunk := response.read(1 << 16):
                        length += len(chunk)
                        if size is not None and length > size:
                            raise ContainerError(digest, f"more than the {size} bytes its descriptor"
                                                 " gives: refused")
                        hasher.update(chunk)
                        out.write(chunk)
                        if progress:
                            progress(length)
                except (http.client.HTTPException, OSError, ValueError) as exc:
                    why = f": {printable(exc.strerror)}" if getattr(exc, "strerror", None) else ""
                    raise ContainerError(digest, f"truncated download ({length} bytes){why}") from None
            if size is not None and length != size:
                raise ContainerError(digest, f"truncated download: {length} of {size} bytes")
            actual = "sha256:" + hasher.hexdigest()
            if actual != digest:
                raise ContainerError(digest, f"the bytes received hash to {actual}: refused")
            os.rename(temporary, self.file(digest))
        except BaseException:
            os.unlink(temporary)
            raise
        finally:
            response.connection_.close()
        return open(os.open(self.file(digest), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "rb")


def default_cache_dir():
    """/var/cache/minicontainer for root, $XDG_CACHE_HOME or ~/.cache otherwise."""
    if os.geteuid() == 0:
        return "/var/cache/minicontainer"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "minicontainer")


def parse_document(client, body, what):
    """A manifest, an index or a configuration: a JSON object, or one line
    (not JSON, nested past what the parser takes, or not an object)."""
    import json
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise client.fail(f"the {what} is not JSON minicontainer can read") from None
    if not isinstance(document, dict):
        raise client.fail(f"the {what} is not a JSON object but {json_text(document, 30)}")
    return document


def check_descriptor(client, descriptor, what):
    """A descriptor's (digest, size), checked: a sha256 digest (the only one
    a blob is verified against) and its size, an int64 (both required by the
    OCI image spec; without the size a blob's download would have no end)."""
    import re
    if not isinstance(descriptor, dict):
        raise client.fail(f"{what} is not a descriptor (a JSON object) but {json_text(descriptor, 30)}")
    digest, size = descriptor.get("digest"), descriptor.get("size")
    if not isinstance(digest, str) or not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
        raise client.fail(f"{what} has a digest minicontainer does not check: {json_text(digest)}"
                          " (sha256: and 64 hex digits)")
    if type(size) is not int or not 0 <= size <= MAX_BLOB:
        raise client.fail(f"{what} has a size that is no byte count: {json_text(size)}")
    return digest, size


def platform_matches(offered, wanted):
    """Whether an (os, architecture, variant) offered is the one wanted: no
    variant wanted takes any; arm64 without a variant is v8."""
    (os_, arch, variant), (wanted_os, wanted_arch, wanted_variant) = offered, wanted
    return (os_, arch) == (wanted_os, wanted_arch) and (
        wanted_variant is None or variant == wanted_variant
        or (variant is None and (arch, wanted_variant) == ("arm64", "v8")))


def document_platform(client, document, what):
    """The (os, architecture, variant) of an index entry's `platform` or of an
    image configuration; None where it names none."""
    if document is None or ("os" not in document and "architecture" not in document):
        return None
    values = [document.get(key) for key in ("os", "architecture")] + [document.get("variant")]
    if not all(isinstance(v, str) and v for v in values[:2]) or \
            not (values[2] is None or isinstance(values[2], str)):
        raise client.fail(f"{what} has no os and architecture strings: {json_text(document)}")
    return tuple(printable(v, 40) if v else None for v in values)


def choose_platform(client, index, platform, host=False):
    """The manifest descriptor in an index for the platform, or one line
    listing the platforms there are (in docker's words where it was asked
    for with --platform)."""
    document = parse_document(client, index, "index")
    entries = document.get("manifests")
    if not isinstance(entries, list):
        raise client.fail(f"the index has no list of manifests but {json_text(entries, 30)}")
    offered = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise client.fail(f"manifests[{i}] of the index is not an object but {json_text(entry, 30)}")
        found = entry.get("platform")
        if found is not None and not isinstance(found, dict):
            raise client.fail(f"manifests[{i}].platform of the index is not an object but"
                              f" {json_text(found, 30)}")
        found = document_platform(client, found, f"manifests[{i}].platform of the index")
        if found is not None and found[0] != "unknown":  # "unknown": attestations
            offered.append((entry, found))
    for entry, found in offered:
        if platform_matches(found, platform):
            return entry
    there = ", ".join(platform_name(p) for _, p in offered) or "none"
    which = "this host's platform" if host else "the specified platform"
    raise client.fail(f"the image does not provide {which} ({platform_name(platform)});"
                      f" it has: {there}" + (" (choose one with --platform)" if host else ""))


class Progress:
    """One line a layer on a terminal: bytes and rate, updated in place."""

    def __init__(self, enabled):
        self.enabled = enabled

    def start(self, label, size):
        import time
        self.label, self.size, self.started = label, size, time.monotonic()
        self.shown = 0.0

    def update(self, done, final=False):
        import time
        if not self.enabled:
            return
        now = time.monotonic()
        if not final and now - self.shown < 0.1:
            return
        self.shown = now
        rate = done / max(now - self.started, 1e-3)
        line = f"{self.label}: {size_text(done)} of {size_text(self.size or 0)}, {size_text(rate)}/s"
        sys.stderr.write(f"\r\033[K{line}" + ("\n" if final else ""))
        sys.stderr.flush()

    def cached(self, label):
        if self.enabled:
            sys.stderr.write(f"{label}: cached\n")


def size_text(n):
    return f"{n / 1e6:.1f} MB" if n >= 100e3 else f"{n / 1e3:.1f} kB"


def fetch_blob(client, cache, descriptor, label, progress):
    """A blob by its descriptor: from the cache, checked, or downloaded into it."""
    digest, size = check_descriptor(client, descriptor, label)
    found = cache.open(digest, size)
    if found is not None:
        progress.cached(label)
        return found
    response = client.get(f"blobs/{digest}", what=f"{label} {digest}")
    progress.start(label, size)
    try:
        found = cache.store(digest, size, response, progress.update)
    except ContainerError as exc:
        raise client.fail(f"{label} {exc}") from None
    progress.update(size or 0, final=True)
    return found


def sweep_pulls(parent, name):
    """Remove what pulls killed midway left beside a root: directories of the
    caller's only (beside a root in /tmp, a name like ours may be anyone's),
    never through a symlink."""
    import stat
    prefix = f".{name}.pull-"
    for entry in os.listdir(parent or "."):
        if not entry.startswith(prefix) or alive(owner_of(entry[len(prefix):])):
            continue
        path = os.path.join(parent, entry)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid():
            remove_tree(path)


def replace_root(new, root):
    """Put the new root at the root's path in one step: exchanged with the old
    one (then removed), or renamed into place where there was none."""
    if os.path.lexists(root):
        if os.path.islink(root) or not os.path.isdir(root):
            raise ContainerError(f"pull into {root}", "not a directory (a symlink is refused)")
        rename_exchange(new, root)
        remove_tree(new)  # the old root, now at the temporary name
    else:
        os.rename(new, root)


def pull_image(root, text, platform=None, tls_verify=True, cache_dir=None, progress=False):
    """Pull an image into the root: (reference, manifest digest, layer count,
    layer bytes, archive members of other owners made the user's)."""
    import json
    ref = Reference(text)
    client = RegistryClient(ref, tls_verify)
    cache = BlobCache(cache_dir or default_cache_dir())
    shown = Progress(progress)
    wanted = parse_platform(platform)
    kind, body, digest = client.manifest(ref.digest or ref.tag)
    manifest = parse_document(client, body, "manifest")
    if manifest_kind(client, kind, manifest) == "index":
        chosen = choose_platform(client, body, wanted, host=platform is None)
        chosen_digest, _ = check_descriptor(client, chosen, f"the index's entry for {platform_name(wanted)}")
        kind, body, _ = client.manifest(chosen_digest)
        manifest = parse_document(client, body, f"manifest {chosen_digest}")
        if manifest_kind(client, kind, manifest) == "index":
            raise client.fail(f"the index's entry for {platform_name(wanted)} is an index itself:"
                              " minicontainer reads one level")
        platform = None  # the index said which platform it is
    config_descriptor, layer_descriptors = manifest.get("config"), manifest.get("layers")
    check_descriptor(client, config_descriptor, "the manifest's config")
    if not isinstance(layer_descriptors, list):
        raise client.fail(f"the manifest's layers are not a list but {json_text(layer_descriptors, 30)}")
    compressions = []
    for i, descriptor in enumerate(layer_descriptors):
        check_descriptor(client, descriptor, f"layers[{i}] of the manifest")
        media = descriptor.get("mediaType")
        if not isinstance(media, str) or media not in LAYER_COMPRESSION:
            raise client.fail(f"a layer of media type {json_text(media)} minicontainer does not unpack")
        compressions.append(LAYER_COMPRESSION[media])
    if config_descriptor["size"] > MAX_MANIFEST:
        raise client.fail(f"the image configuration is larger than {MAX_MANIFEST} bytes")
    with fetch_blob(client, cache, config_descriptor, "config", Progress(False)) as f:
        config_bytes = f.read(MAX_MANIFEST)
    settings = image_settings(config_bytes, client.what)
    if platform is not None:
        # One manifest, no index: its configuration says the platform, which
        # must be the one asked for (docker refuses it too), not the host's.
        offered = document_platform(client, parse_document(client, config_bytes, "image configuration"),
                                    "the image configuration")
        if offered is None or not platform_matches(offered, wanted):
            raise client.fail(f"the image does not provide the specified platform"
                              f" ({platform_name(wanted)}): it is"
                              f" {platform_name(offered) if offered else 'of no platform it names'}")
    blobs = []
    try:
        for i, descriptor in enumerate(layer_descriptors):
            label = f"layer {i + 1}/{len(layer_descriptors)}"
            blobs.append(fetch_blob(client, cache, descriptor, label, shown))
        layers = [(blob, compression, f"pull {text}: layer {d['digest']}")
                  for blob, compression, d in zip(blobs, compressions, layer_descriptors)]
        foreign = unpack_image(root, layers, {"reference": str(ref), "digest": digest,
                                              "config": settings})
    finally:
        for blob in blobs:
            blob.close()
    size = sum(d["size"] for d in layer_descriptors)
    return ref, digest, len(layer_descriptors), size, foreign


def manifest_kind(client, kind, document):
    """"index" or "manifest", by the Content-Type or else the document's own
    mediaType (or, with neither, its shape); one line for anything else."""
    media = kind or document.get("mediaType")
    if media in INDEX_TYPES or (not media and "manifests" in document and "layers" not in document):
        return "index"
    if media in MANIFEST_TYPES:
        return "manifest"
    named = printable(media, 60) if isinstance(media, str) and media else "untyped"
    raise client.fail(f"a {named} manifest: minicontainer reads OCI and docker v2 manifests and indexes")


def unpack_image(root, layers, image):
    """Apply the layers, bottom first, into a new directory beside the root
    with deploy's plan and writer, add the skeleton, and swap it in; the
    configuration is written beside it. Whatever fails, the root is untouched."""
    root = os.path.abspath(root)
    parent, name = os.path.split(root)
    if not name:
        raise ContainerError(f"pull into {root}", "the host's / is no container root")
    sweep_pulls(parent, name)
    new = os.path.join(parent, f".{name}.pull-{os.getpid()}.{process_start(os.getpid())}")
    try:
        os.mkdir(new, 0o755)
    except OSError as exc:
        raise ContainerError.from_os(f"pull into {root}", exc) from None
    umask = os.umask(0)
    try:
        rootfd = open_root(new)
        plan, writer = Plan(rootfd), Writer(rootfd)
        try:
            for blob, compression, what in layers:
                plan_layer(plan, open_layer(blob, compression, what), what, "/")
            for op in plan.ops:
                writer.apply(op)
            make_skeleton(rootfd)
        finally:
            writer.close()
            os.close(rootfd)
            plan.close()
        os.umask(umask)
        write_image_file(image_file(new), image)
        replace_root(new, root)
        os.rename(image_file(new), image_file(root))
    except BaseException:
        os.umask(umask)
        remove_tree(new)
        if os.path.lexists(image_file(new)):
            os.unlink(image_file(new))
        raise
    return plan.foreign
