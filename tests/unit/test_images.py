"""pull's pieces that need no registry: references, platforms, docker's rule
for the command, the image file's trust checks, credentials and the cache."""
import base64
import hashlib
import io
import json
import os

import pytest

from _minicontainer import errors, imageformat, images, options, rootfs


@pytest.mark.parametrize("text, registry, repository, tag, digest", [
    ("alpine", "docker.io", "library/alpine", "latest", None),
    ("alpine:3.20", "docker.io", "library/alpine", "3.20", None),
    ("user/app", "docker.io", "user/app", "latest", None),
    ("quay.io/org/app:v1", "quay.io", "org/app", "v1", None),
    ("localhost/app", "localhost", "app", "latest", None),
    ("127.0.0.1:5000/a/b/c:t", "127.0.0.1:5000", "a/b/c", "t", None),
    ("app@sha256:" + "a" * 64, "docker.io", "library/app", None, "sha256:" + "a" * 64),
    ("r.io/app:1@sha256:" + "b" * 64, "r.io", "app", "1", "sha256:" + "b" * 64),
])
def test_references_read_as_docker_reads_them(text, registry, repository, tag, digest):
    ref = images.Reference(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (registry, repository, tag, digest)


@pytest.mark.parametrize("text", ["Alpine", "a//b", "a:b:c", "-a", "a@sha256:12", "a@md5:" + "0" * 32,
                                  "bad host!/a", "a:" + "t" * 129, ""])
def test_malformed_references_are_refused(text):
    with pytest.raises(errors.ContainerError) as caught:
        images.Reference(text)
    assert "not an image reference" in str(caught.value)


INDEX = json.dumps({"manifests": [
    {"digest": "sha256:1", "platform": {"os": "linux", "architecture": "amd64"}},
    {"digest": "sha256:2", "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
    {"digest": "sha256:3", "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
    {"digest": "sha256:4", "platform": {"os": "unknown", "architecture": "unknown"}},
]}).encode()


@pytest.mark.parametrize("platform, chosen", [
    ("linux/amd64", "sha256:1"), ("linux/arm64", "sha256:2"), ("linux/arm64/v8", "sha256:2"),
    ("linux/arm/v7", "sha256:3"), ("linux/arm", "sha256:3")])
def test_the_platform_is_chosen_from_an_index(platform, chosen):
    client = images.RegistryClient.__new__(images.RegistryClient)
    client.what, client.ref = "pull x", images.Reference("x")
    assert images.choose_platform(client, INDEX, imageformat.parse_platform(platform))["digest"] == chosen


def test_a_missing_platform_lists_those_there_are_but_not_attestations():
    client = images.RegistryClient.__new__(images.RegistryClient)
    client.what, client.ref = "pull x", images.Reference("x")
    with pytest.raises(errors.ContainerError) as caught:
        images.choose_platform(client, INDEX, ("linux", "s390x", None))
    assert str(caught.value) == ("pull x: the image does not provide the specified platform"
                                 " (linux/s390x); it has: linux/amd64, linux/arm64/v8, linux/arm/v7")


@pytest.mark.parametrize("image, entrypoint, command, argv", [
    ({"Entrypoint": ["/e"], "Cmd": ["c"]}, None, (), ("/e", "c")),
    ({"Entrypoint": ["/e"], "Cmd": ["c"]}, None, ("x",), ("/e", "x")),
    ({"Cmd": ["/c", "1"]}, None, ("/x",), ("/x",)),
    ({"Entrypoint": ["/e"], "Cmd": ["c"]}, "/o", (), ("/o",)),
    ({"Entrypoint": ["/e"], "Cmd": ["c"]}, "/o", ("a",), ("/o", "a")),
    ({"Entrypoint": ["/e"], "Cmd": ["c"]}, "", ("/x",), ("/x",)),
    ({}, None, ("/x",), ("/x",)),
])
def test_dockers_rule_for_the_command(image, entrypoint, command, argv):
    assert options.image_command(image, entrypoint, command) == argv


def test_no_command_and_no_image_is_one_line():
    with pytest.raises(errors.ContainerError) as caught:
        options.image_command({"Entrypoint": ["/e"]}, "", ())
    assert caught.value.code == 125 and "no command given" in str(caught.value)


def write_image(tmp_path, mode=0o644):
    path = tmp_path / "root.image.json"
    path.write_text(json.dumps({"reference": "r", "digest": None, "config": {"Cmd": ["/x"]}}))
    path.chmod(mode)
    return path


def test_the_image_file_is_read_when_it_is_the_callers(tmp_path):
    write_image(tmp_path)
    assert rootfs.read_image_file(str(tmp_path / "root")) == {"Cmd": ["/x"]}
    assert rootfs.read_image_file(str(tmp_path / "other")) is None


@pytest.mark.parametrize("plant", ["writable by others", "a symlink", "another user's"])
def test_an_image_file_another_could_have_planted_is_refused(tmp_path, plant):
    path = write_image(tmp_path, 0o666 if plant == "writable by others" else 0o644)
    if plant == "a symlink":
        path.rename(tmp_path / "real.json")
        path.symlink_to(tmp_path / "real.json")
    if plant == "another user's":
        if os.geteuid() != 0:
            pytest.skip("only root gives a file away")
        os.chown(path, 65534, 65534)
    with pytest.raises(errors.ContainerError) as caught:
        rootfs.read_image_file(str(tmp_path / "root"))
    assert "the image configuration" in str(caught.value)


def test_credentials_from_the_auth_file_and_dockers_hub_names(tmp_path, monkeypatch):
    auth = base64.b64encode(b"me:secret").decode()
    path = tmp_path / "auth.json"
    path.write_text(json.dumps({"auths": {"https://index.docker.io/v1/": {"auth": auth},
                                          "r.io": {"auth": auth}}}))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(path))
    monkeypatch.setenv("HOME", str(tmp_path))
    assert images.registry_credentials("docker.io") == ("me", "secret")
    assert images.registry_credentials("r.io") == ("me", "secret")
    assert images.registry_credentials("other.io") is None
    path.write_text(json.dumps({"auths": {"r.io": {"auth": "bm9jb2xvbg=="}}}))  # "nocolon"
    with pytest.raises(errors.ContainerError):
        images.registry_credentials("r.io")


class Body(io.BytesIO):
    connection_ = type("Closed", (), {"close": lambda self: None})()


def test_the_cache_keeps_only_what_hashes_to_its_name(tmp_path):
    cache = images.BlobCache(str(tmp_path / "cache"))
    assert (tmp_path / "cache").stat().st_mode & 0o777 == 0o700
    data = b"layer bytes"
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with cache.store(digest, len(data), Body(data)) as f:
        assert f.read() == data
    with cache.open(digest, len(data)) as f:
        assert f.read() == data
    with pytest.raises(errors.ContainerError, match="hash to"):
        cache.store(digest, len(data), Body(b"other bytes"))
    with pytest.raises(errors.ContainerError, match="more than the"):
        cache.store(digest, 3, Body(data))
    with pytest.raises(errors.ContainerError, match="truncated download"):
        cache.store(digest, 100, Body(data))
    damaged = tmp_path / "cache" / "blobs" / "sha256" / digest.split(":")[1]
    damaged.write_bytes(b"layer bytez")
    assert cache.open(digest, len(data)) is None and not damaged.exists()
    assert [p.name for p in damaged.parent.iterdir()] == []  # no temporaries kept


def test_a_cache_others_may_write_is_refused(tmp_path):
    (tmp_path / "cache").mkdir(mode=0o777)
    (tmp_path / "cache").chmod(0o777)
    with pytest.raises(errors.ContainerError, match="only you may write"):
        images.BlobCache(str(tmp_path / "cache"))


def test_a_killed_pulls_directory_is_swept_but_nothing_of_anyone_elses(tmp_path):
    """Beside a root in a shared directory, only the caller's own directories
    of a dead pull go; a symlink or another user's directory of the same name
    stays, and nothing is followed."""
    dead = "999999.1"
    mine = tmp_path / f".root.pull-{dead}"
    (mine / "proc").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("keep")
    planted = tmp_path / ".root.pull-999998.1"
    planted.symlink_to(outside)
    others = tmp_path / ".root.pull-999997.1"
    others.mkdir()
    if os.geteuid() == 0:
        os.chown(others, 65534, 65534)
    images.sweep_pulls(str(tmp_path), "root")
    assert not mine.exists()
    assert planted.is_symlink() and (outside / "keep").read_text() == "keep"
    assert others.exists() == (os.geteuid() == 0)  # a user's own is swept; another's stays
