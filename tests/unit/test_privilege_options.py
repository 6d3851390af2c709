"""Unit tests for the privilege options: capability sets and user lookup."""
import pytest

import minicontainer as mc
from _minicontainer import constants, errors, options, spec


def names(caps):
    numbers = {v: k for k, v in spec.capability_numbers().items()}
    return {numbers[c] for c in caps}


def test_default_capabilities_are_podmans_set():
    assert names(options.resolve_capabilities((), ())) == set(constants.DEFAULT_CAPABILITIES)


def test_cap_add_and_drop_accept_docker_spellings():
    caps = names(options.resolve_capabilities(("net_raw", "CAP_MKNOD"), ("chown",)))
    assert caps == set(constants.DEFAULT_CAPABILITIES) - {"CHOWN"} | {"NET_RAW", "MKNOD"}


def test_drop_all_then_add_gives_only_the_added():
    assert names(options.resolve_capabilities(("KILL",), ("ALL",))) == {"KILL"}


def test_add_all_is_everything_minicontainer_holds():
    import prctl
    held = {n for n, c in spec.capability_numbers().items() if prctl.capbset_read(c)}
    assert names(options.resolve_capabilities(("ALL",), ())) == held


@pytest.mark.parametrize("adds, drops, message", [
    (("NOPE",), (), "--cap-add NOPE: unknown capability"),
    ((), ("CAP_NOPE",), "--cap-drop CAP_NOPE: unknown capability"),
    (("KILL",), ("KILL",), "--cap-add KILL and --cap-drop KILL: contradict each other"),
])
def test_bad_capability_options_are_refused(adds, drops, message):
    with pytest.raises(errors.ContainerError) as exc:
        options.resolve_capabilities(adds, drops)
    assert str(exc.value).startswith(message)


def test_adding_a_capability_the_host_withholds_is_refused(monkeypatch):
    import prctl
    monkeypatch.setattr(options, "own_bounding_set", lambda: ((1 << 41) - 1) & ~(1 << prctl.CAP_SYS_RESOURCE))
    with pytest.raises(errors.ContainerError) as exc:
        options.resolve_capabilities(("SYS_RESOURCE",), ())
    assert "does not hold it itself" in str(exc.value)


@pytest.fixture
def root(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\napp:x:1234:2345:App:/home/app:/bin/sh\n")
    (tmp_path / "etc" / "group").write_text("root:x:0:\nstaff:x:50:app\n")
    return tmp_path


@pytest.mark.parametrize("user, expected", [
    ("app", (1234, 2345, "/home/app")),
    ("app:staff", (1234, 50, "/home/app")),
    ("app:7", (1234, 7, "/home/app")),
    ("1234", (1234, 2345, "/home/app")),
    ("4000", (4000, 4000, "/")),
    ("4000:4001", (4000, 4001, "/")),
    ("0", (0, 0, "/root")),
])
def test_user_is_resolved_from_the_roots_files(root, user, expected):
    assert options.resolve_user(str(root), user) == expected


@pytest.mark.parametrize("user, message", [
    ("nobody-here", "no user 'nobody-here'"),
    ("app:nogroup", "no group 'nogroup'"),
    (":5", "expected NAME or UID"),
    ("4294967295", "expected NAME or UID"),
])
def test_unknown_users_are_refused(root, user, message):
    with pytest.raises(errors.ContainerError) as exc:
        options.resolve_user(str(root), user)
    assert message in str(exc.value)


def test_passwd_symlink_cannot_make_us_read_the_hosts(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").symlink_to("/etc/passwd")  # resolves to itself, inside
    with pytest.raises(errors.ContainerError):
        options.resolve_user(str(tmp_path), "root")


@pytest.mark.parametrize("opt", ["seccomp=unconfined", "no-new-privileges"])
def test_docker_security_opts_are_understood(opt):
    options.parse_security_opts([opt])
