"""pull, for real: the CNCF distribution server (Debian's docker-registry) on a
loopback port with its own storage, images built here as OCI layouts and
pushed by skopeo, and the pulled roots run by minicontainer. Nothing here
reaches beyond the machine."""
import base64
import json
import os
import re
import signal
import subprocess

import pytest

import registry_fixture as rf
from helpers import CLI, cli, wait_for

pytestmark = pytest.mark.skipif(
    not (rf.have_program("docker-registry") and rf.have_program("skopeo")),
    reason="docker-registry and skopeo (setup.sh installs them) serve and push the test images")

DEFAULT_OUTPUT = ["hello from the fixture", "uid=1000(app) gid=1000(app)", "/www"]


def pull(tmp_path, *args, root="root", **kwargs):
    return cli("pull", "--root", tmp_path / root, "--cache", tmp_path / "cache", *args, **kwargs)


def run(root, *args):
    return cli("run", "--root", root, *args)


def lines(result):
    return result.stdout.decode().splitlines()


def error(result):
    """The one line of a refusal, checked to be one line and 125."""
    text = result.stderr.decode()
    assert result.returncode == 125 and len(text.splitlines()) == 1 and result.stdout == b"", text
    return text


def snapshot(path):
    """What a tree holds: each entry's kind, mode, owner and bytes or target."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            content = os.readlink(full) if os.path.islink(full) else \
                open(full, "rb").read() if os.path.isfile(full) else None
            found[os.path.relpath(full, path)] = (st.st_mode, st.st_uid, content)
    return found


def leftovers(tmp_path):
    """What a pull may leave only while it runs: its new root, its downloads."""
    beside = [p.name for p in tmp_path.iterdir() if ".pull-" in p.name]
    cache = tmp_path / "cache" / "blobs" / "sha256"
    downloads = [p.name for p in cache.iterdir() if p.name.startswith(".")] if cache.exists() else []
    return beside + downloads


def test_pull_then_run_the_images_default_command(tmp_path, registry, busybox_image):
    digest = rf.push(busybox_image, registry, "test/busybox:1")
    root = tmp_path / "root"
    result = pull(tmp_path, f"{registry.hostport}/test/busybox:1")
    assert result.returncode == 0 and result.stderr == b"", result.stderr  # quiet: not a terminal
    assert re.fullmatch(rf"pulled {registry.hostport}/test/busybox:1 \({digest}\): 2 layers,"
                        rf" [0-9.]+ MB, into {root}\n", result.stdout.decode()), result.stdout
    # The layers, the upper one's whiteouts and opaque directory applied.
    assert not (root / "etc" / "motd").exists() and (root / "etc" / "layer2").exists()
    assert os.listdir(root / "www") == ["index.html"]
    assert (root / "www" / "index.html").read_text() == "<h1>layer 2</h1>\n"
    # Entrypoint + Cmd, Env, WorkingDir and User, as docker runs them.
    assert lines(run(root)) == DEFAULT_OUTPUT
    assert lines(run(root, "echo $GREETING from args")) == ["hello from the fixture from args"]
    assert lines(run(root, "-e", "GREETING=mine", "-w", "/tmp", "-u", "0")) == [
        "mine", "uid=0(root) gid=0(root)", "/tmp"]
    assert lines(run(root, "--entrypoint", "/bin/busybox", "pwd")) == ["/www"]
    kept = json.loads((tmp_path / "root.image.json").read_text())
    assert kept["digest"] == digest and kept["config"]["ExposedPorts"] == {"8080/tcp": {}}
    # Control: a root without an image has no default to run.
    (tmp_path / "root.image.json").unlink()
    assert "no command given" in error(run(root))


def test_an_index_gives_the_hosts_platform_or_the_one_asked_for(tmp_path, registry, index_image):
    rf.push(index_image, registry, "test/multi:1")
    ref = f"{registry.hostport}/test/multi:1"
    assert pull(tmp_path, ref).returncode == 0
    assert lines(run(tmp_path / "root")) == DEFAULT_OUTPUT  # linux/amd64: the real busybox
    for platform in ("linux/arm64/v8", "linux/arm64"):  # arm64 without a variant means v8
        assert pull(tmp_path, "--platform", platform, ref, root=platform[-2:]).returncode == 0
        assert (tmp_path / platform[-2:] / "hello.txt").read_text() == "fake arm64 layer (not runnable)\n"
    before = snapshot(tmp_path / "root")
    refused = error(pull(tmp_path, "--platform", "linux/s390x", ref))
    assert refused.endswith(": the image does not provide the specified platform (linux/s390x);"
                            " it has: linux/amd64, linux/arm64/v8\n")
    assert snapshot(tmp_path / "root") == before
    malformed = error(pull(tmp_path, "--platform", "s390x", ref))
    assert "--platform s390x: expected OS/ARCH" in malformed
    # The same as docker's own media types: a manifest list and v2 manifests.
    rf.push(index_image, registry, "test/dlist:1", format="v2s2")
    assert pull(tmp_path, f"{registry.hostport}/test/dlist:1", root="docker").returncode == 0
    assert lines(run(tmp_path / "docker")) == DEFAULT_OUTPUT


def test_a_corrupted_or_cut_blob_is_refused_and_the_root_left_as_it_was(tmp_path, registry, busybox_image):
    rf.push(busybox_image, registry, "test/busybox:1")
    ref = f"{registry.hostport}/test/busybox:1"
    root = tmp_path / "root"
    assert cli("deploy", "--root", root, "/bin/busybox").returncode == 0
    before = snapshot(root)
    layer = busybox_image.layers[1].digest
    with rf.start_fault_proxy(registry) as proxy:  # full Content-Length, then the connection cut
        proxy.truncate_blob(layer, keep=100)
        cut = error(pull(tmp_path, f"{proxy.hostport}/test/busybox:1"))
        assert snapshot(root) == before and leftovers(tmp_path) == []
        # Control: the same pull through the same proxy, once it cuts nothing.
        assert pull(tmp_path, f"{proxy.hostport}/test/busybox:1", root="control").returncode == 0
    assert f"layer 2/2 {layer}: truncated download: 100 of " in cut
    (tmp_path / "cache").rename(tmp_path / "cache.control")  # the next pull fetches every blob
    rf.corrupt_blob(registry, layer, mode="flip-middle")  # the same length, other bytes
    corrupted = error(pull(tmp_path, ref))
    assert f"layer 2/2 {layer}: the bytes received hash to sha256:" in corrupted and "refused" in corrupted
    assert snapshot(root) == before and not (tmp_path / "root.image.json").exists()
    assert leftovers(tmp_path) == []
    cache = tmp_path / "cache" / "blobs" / "sha256"
    assert not (cache / layer.split(":")[1]).exists()  # nothing unverified is kept either
    assert (cache / busybox_image.layers[0].digest.split(":")[1]).exists()  # what was verified is


def test_the_cache_fetches_no_layer_twice_and_checks_what_it_reads(tmp_path, registry, busybox_image):
    rf.push(busybox_image, registry, "test/busybox:1")
    ref = f"{registry.hostport}/test/busybox:1"
    assert pull(tmp_path, ref, root="first").returncode == 0
    layers = [layer.digest for layer in busybox_image.layers]
    assert all(registry.count_blob_gets(d) == 1 for d in layers)
    mark = registry.mark()
    assert pull(tmp_path, ref, root="second").returncode == 0
    assert registry.count_blob_gets(since=mark) == 0  # neither layers nor config
    assert len(registry.manifest_requests(since=mark)) == 1  # the tag may have moved: asked
    assert snapshot(tmp_path / "first") == snapshot(tmp_path / "second")
    # A cached blob that no longer hashes to its name is fetched again, never used.
    cached = tmp_path / "cache" / "blobs" / "sha256" / layers[0].split(":")[1]
    data = bytearray(cached.read_bytes())
    data[len(data) // 2] ^= 0xFF
    cached.write_bytes(bytes(data))
    mark = registry.mark()
    assert pull(tmp_path, ref, root="third").returncode == 0
    assert registry.blob_get_counts(since=mark) == {layers[0]: 1}
    assert lines(run(tmp_path / "third")) == DEFAULT_OUTPUT


def test_concurrent_pulls_share_the_cache(tmp_path, registry, busybox_image):
    rf.push(busybox_image, registry, "test/busybox:1")
    pulls = [subprocess.Popen([*CLI, "pull", "--root", tmp_path / f"r{i}", "--cache",
                               tmp_path / "cache", f"{registry.hostport}/test/busybox:1"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(3)]
    for p in pulls:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    assert snapshot(tmp_path / "r0") == snapshot(tmp_path / "r1") == snapshot(tmp_path / "r2")
    assert leftovers(tmp_path) == []


def test_a_killed_pull_leaves_the_root_and_the_next_pull_sweeps(tmp_path, registry, busybox_image):
    rf.push(busybox_image, registry, "test/busybox:1")
    root = tmp_path / "root"
    assert cli("deploy", "--root", root, "/bin/busybox").returncode == 0
    before = snapshot(root)
    with rf.start_fault_proxy(registry) as proxy:
        proxy.faults.delay(r"/blobs/", 30)
        killed = subprocess.Popen([*CLI, "pull", "--root", root, "--cache", tmp_path / "cache",
                                   f"{proxy.hostport}/test/busybox:1"])
        assert wait_for(lambda: proxy.faults.count("GET", r"/blobs/") > 0, 10)
        killed.send_signal(signal.SIGKILL)
        killed.wait()
    assert snapshot(root) == before
    # What a pull killed while unpacking or downloading leaves, the next one removes.
    dead = "999999.1"
    (tmp_path / f".root.pull-{dead}").mkdir()
    ((tmp_path / f".root.pull-{dead}") / "proc").mkdir(mode=0o555)
    (tmp_path / "cache" / "blobs" / "sha256" / f".download-{dead}.x").write_bytes(b"part")
    assert pull(tmp_path, f"{registry.hostport}/test/busybox:1").returncode == 0
    assert leftovers(tmp_path) == []
    assert lines(run(root)) == DEFAULT_OUTPUT


def test_zstd_layers(tmp_path, registry):
    if not rf.zstd_available():
        pytest.skip("the zstd tool makes the zstd layers")
    image = rf.make_oci_layout(tmp_path / "layout", [rf.busybox_rootfs()], compression="zstd")
    rf.push(image, registry, "test/zstd:1")
    assert pull(tmp_path, f"{registry.hostport}/test/zstd:1").returncode == 0
    assert lines(run(tmp_path / "root", "-u", "0", "--entrypoint", "/bin/busybox", "echo", "ok")) == ["ok"]


@pytest.mark.parametrize("reference, why", [
    ("Bad/Name:1", "pull Bad/Name:1: not an image reference: 'Bad/Name' is not a repository name"),
    ("alpine:bad:tag", "not an image reference"),
    ("alpine@sha256:1234", "not an image reference: 'sha256:1234' is not a sha256 digest"),
    ("registry.nosuch.invalid/x:1", "pull registry.nosuch.invalid/x:1: unknown host registry.nosuch.invalid"),
])
def test_references_and_hosts_that_cannot_be(tmp_path, reference, why):
    assert why in error(pull(tmp_path, reference))
    assert not (tmp_path / "root").exists()


def test_registry_errors_each_in_one_line(tmp_path, registry, busybox_image):
    rf.push(busybox_image, registry, "test/busybox:1")
    port = rf.free_port()
    assert f"connection refused by 127.0.0.1:{port}" in error(pull(tmp_path, f"127.0.0.1:{port}/x:1"))
    assert f"unknown repository or tag in {registry.hostport}" in \
        error(pull(tmp_path, f"{registry.hostport}/test/nothere:1"))
    assert f"unknown repository or tag in {registry.hostport}" in \
        error(pull(tmp_path, f"{registry.hostport}/test/busybox:2"))
    with rf.start_fault_proxy(registry) as proxy:
        proxy.fail(r"/manifests/", 403, times=None)
        assert f"access denied by {proxy.hostport} (403)" in error(pull(tmp_path, f"{proxy.hostport}/test/busybox:1"))
    assert not (tmp_path / "root").exists()
    assert pull(tmp_path, f"{registry.hostport}/test/busybox:1").returncode == 0  # control


def test_tls_is_checked_unless_told_not_to(tmp_path, tls_registry, busybox_image):
    rf.push(busybox_image, tls_registry, "test/busybox:1")
    ref = f"{tls_registry.hostport}/test/busybox:1"
    refused = error(pull(tmp_path, ref))
    assert f"TLS failure with {tls_registry.hostport}: " in refused and "--tls-verify=false" in refused
    assert pull(tmp_path, "--tls-verify=false", ref).returncode == 0
    # Trusting the registry's certificate authority works as it does for any client.
    trusted = pull(tmp_path, ref, root="trusted", env={**os.environ, "SSL_CERT_FILE": str(tls_registry.ca_cert)})
    assert trusted.returncode == 0, trusted.stderr


def auth_file(tmp_path, host, user, password):
    path = tmp_path / "auth.json"
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    path.write_text(json.dumps({"auths": {host: {"auth": token}}}))
    return {**os.environ, "REGISTRY_AUTH_FILE": str(path)}


def test_credentials_from_an_auth_file(tmp_path, htpasswd_registry, busybox_image):
    rf.push(busybox_image, htpasswd_registry, "test/busybox:1")
    ref = f"{htpasswd_registry.hostport}/test/busybox:1"
    anonymous = pull(tmp_path, ref, env={**os.environ, "REGISTRY_AUTH_FILE": str(tmp_path / "none")})
    assert "authentication required by" in error(anonymous) and "REGISTRY_AUTH_FILE" in error(anonymous)
    wrong = pull(tmp_path, ref, env=auth_file(tmp_path, htpasswd_registry.hostport, "testuser", "nope"))
    assert "(401)" in error(wrong)
    right = pull(tmp_path, ref, env=auth_file(tmp_path, htpasswd_registry.hostport, "testuser", "testpass"))
    assert right.returncode == 0, right.stderr
    assert lines(run(tmp_path / "root")) == DEFAULT_OUTPUT


def test_a_bearer_token_from_the_registrys_challenge(tmp_path, token_registry, busybox_image):
    rf.push(busybox_image, token_registry, "test/busybox:1")
    result = pull(tmp_path, "--tls-verify=false", f"{token_registry.hostport}/test/busybox:1",
                  env={**os.environ, "REGISTRY_AUTH_FILE": str(tmp_path / "none")})
    assert result.returncode == 0, result.stderr
    asked = [r for r in token_registry.token_server.requests if r["scopes"]]
    assert asked and asked[-1]["scopes"] == ["repository:test/busybox:pull"] and asked[-1]["user"] is None


def test_blobs_redirected_to_another_host_get_no_credentials(tmp_path, busybox_image):
    (tmp_path / "registry").mkdir()
    with rf.start_registry(tmp_path / "registry", auth="htpasswd", redirect=True,
                           redirect_host="localhost") as registry:
        rf.push(busybox_image, registry, "test/busybox:1")
        ref = f"{registry.hostport}/test/busybox:1"
        result = pull(tmp_path, ref, env=auth_file(tmp_path, registry.hostport, "testuser", "testpass"))
        assert result.returncode == 0, result.stderr
        fetched = registry.blob_server.requests
        assert fetched and not any("Authorization" in r.get("headers", {}) for r in fetched)


def test_a_platform_the_image_does_not_provide_is_refused(tmp_path, registry, busybox_image, index_image):
    """pull --platform as docker does it: an index without the platform, or a
    single manifest whose configuration names another, is refused in one
    line; the one it provides is pulled."""
    host = "linux/amd64"  # the fixture's real busybox image
    rf.push(busybox_image, registry, "test/single:1")
    single = f"{registry.hostport}/test/single:1"
    refused = error(pull(tmp_path, "--platform", "linux/arm64", single))
    assert refused == (f"minicontainer: pull {single}: the image does not provide the specified"
                       f" platform (linux/arm64): it is {host}\n")
    assert not (tmp_path / "root").exists() and not leftovers(tmp_path)
    assert pull(tmp_path, "--platform", host, single).returncode == 0  # the control
    assert lines(run(tmp_path / "root")) == DEFAULT_OUTPUT
    # An image of arm64 only: asked for, it is pulled; asked for as amd64, refused.
    arm = rf.make_oci_layout(tmp_path / "arm-oci", [rf.fake_layer_entries("arm64")], platform="linux/arm64/v8")
    rf.push(arm, registry, "test/arm:1")
    arm_ref = f"{registry.hostport}/test/arm:1"
    assert pull(tmp_path, "--platform", "linux/arm64", arm_ref, root="arm").returncode == 0
    assert (tmp_path / "arm" / "hello.txt").read_text() == "fake arm64 layer (not runnable)\n"
    before = snapshot(tmp_path / "arm")
    assert error(pull(tmp_path, "--platform", host, arm_ref, root="arm")).endswith(
        f": the image does not provide the specified platform ({host}): it is linux/arm64/v8\n")
    assert snapshot(tmp_path / "arm") == before
    # An index: the same words, and the platforms it has.
    rf.push(index_image, registry, "test/multi:1")
    multi = f"{registry.hostport}/test/multi:1"
    assert error(pull(tmp_path, "--platform", "linux/riscv64", multi)) == (
        f"minicontainer: pull {multi}: the image does not provide the specified platform"
        " (linux/riscv64); it has: linux/amd64, linux/arm64/v8\n")
    assert pull(tmp_path, "--platform", "linux/arm64", multi, root="multi").returncode == 0


def test_a_zstd_bomb_is_refused_before_it_writes(tmp_path, registry):
    """A zstd layer of 35 KB whose stream is 1.06 GiB of zero blocks: it went
    whole into a temporary file before anything was checked. Now the layer is
    read as it decompresses and refused in one line past its bound, though no
    file the pull writes may pass 64 MB; the root is as it was, nothing left.
    The control: a layer of 200 MB of zero blocks (under the bound) pulls
    under the same limit, as it streams."""
    import resource
    import tarfile
    pytest.importorskip("zstandard")
    from archives import compress, write_tar, zeros
    from _minicontainer import imageformat
    head = write_tar(None, [("hello", b"hi\n", tarfile.REGTYPE, "", 0o644)])
    scratch = tmp_path / "scratch"
    scratch.mkdir()

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 20, 64 << 20))

    def image(tag, size):
        data = compress("zstd", [head, *zeros(size)])
        layer = rf.Layer(rf.MT_OCI_LAYER_ZSTD, data, rf.sha256_digest(data), len(data),
                         rf.sha256_digest(head), "zstd")
        rf.push_raw(rf.make_oci_layout(tmp_path / tag, [layer], tag=tag), registry, f"test/bomb:{tag}")
        return pull(tmp_path, f"{registry.hostport}/test/bomb:{tag}", preexec_fn=limit,
                    env=dict(os.environ, TMPDIR=str(scratch)), timeout=300)

    root = tmp_path / "root"
    assert cli("deploy", "--root", root, "/bin/busybox").returncode == 0
    before = snapshot(root)
    assert "zstd stream expands past" in error(image("bomb", imageformat.LAYER_FLOOR + (64 << 20)))
    assert snapshot(root) == before and leftovers(tmp_path) == [] and os.listdir(scratch) == []
    result = image("fine", 200 << 20)
    assert result.returncode == 0, result.stderr
    assert (root / "hello").read_bytes() == b"hi\n" and os.listdir(scratch) == []
