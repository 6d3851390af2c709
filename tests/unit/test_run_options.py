"""Unit tests for run's docker-style options: env, volumes, tmpfs, names."""

import os
import stat

import pytest
from hypothesis import example, given, settings, strategies as st

import minicontainer as mc
from _minicontainer import constants, container, errors, network, options, spec


def test_env_values_files_and_host_copies(tmp_path, monkeypatch):
    monkeypatch.setenv("FROM_HOST", "h")
    monkeypatch.delenv("NOT_ON_HOST", raising=False)
    env_file = tmp_path / "env"
    env_file.write_text("# comment\n\nA=1\nB=x=y\nFROM_HOST\n")
    assert options.parse_env(["C=3", "FROM_HOST", "NOT_ON_HOST", "A=override"], [str(env_file)]) == \
        [("A", "1"), ("B", "x=y"), ("FROM_HOST", "h"), ("C", "3"), ("FROM_HOST", "h"), ("A", "override")]


@pytest.mark.parametrize("value", ["=x", " A=1"])
def test_bad_env_is_refused(value):
    with pytest.raises(errors.ContainerError) as exc:
        options.parse_env([value], [])
    assert "expected KEY=VALUE or KEY" in str(exc.value)


def test_missing_env_file_is_refused(tmp_path):
    with pytest.raises(errors.ContainerError) as exc:
        options.parse_env([], [str(tmp_path / "nope")])
    assert "No such file" in str(exc.value)


def test_an_env_file_past_what_the_kernel_takes_is_refused_as_soon_as_read():
    """/dev/zero is one endless line; before, it was read whole (MemoryError
    under a memory limit, the machine's memory without one)."""
    with pytest.raises(errors.ContainerError) as exc:
        options.parse_env([], ["/dev/zero"])
    assert str(exc.value) == ("--env-file /dev/zero: a line is longer than 131072 bytes,"
                              " more than the kernel takes for an environment string")


def test_an_env_file_of_many_lines_past_2_mib_is_refused_and_one_at_the_bound_is_read(tmp_path):
    line = "K=" + "v" * 1021 + "\n"  # 1 KiB a line
    at_bound, past = tmp_path / "at", tmp_path / "past"
    at_bound.write_text(line * 2048)
    past.write_text(line * 2049)
    assert len(options.parse_env([], [str(at_bound)])) == 2048
    with pytest.raises(errors.ContainerError) as exc:
        options.parse_env([], [str(past)])
    assert str(exc.value) == (f"--env-file {past}: longer than 2097152 bytes, more than the"
                              " kernel takes for a whole environment")
    longest = tmp_path / "longest"
    longest.write_text("K=" + "v" * (131072 - 2) + "\n")
    assert options.parse_env([], [str(longest)]) == [("K", "v" * (131072 - 2))]


def test_volumes_parse(tmp_path):
    assert options.parse_volume(f"{tmp_path}:/data") == {
        "destination": "/data", "type": "bind", "source": str(tmp_path),
        "options": ["bind", "nosuid", "nodev"], "why": "--volume /data"}
    assert options.parse_volume(f"{tmp_path}:/data/:ro")["options"] == ["bind", "nosuid", "nodev", "ro"]


@pytest.mark.parametrize("value, message", [
    ("/nonexistent-mc:/data", "does not exist"),
    ("TMP:data", "the container path must be absolute"),
    ("TMP:/", "the container path must not be /"),
    ("TMP://", "the container path must not be /"),
    ("TMP:/proc", "/proc is the kernel's"),
    ("TMP:/proc/sys/x", "/proc is the kernel's"),
    ("TMP:/sys", "/sys is the kernel's"),
    ("TMP:/dev/null", "one of the devices minicontainer puts in /dev"),
    ("TMP:/dev/pts/x", "one of the devices minicontainer puts in /dev"),
    ("TMP:/" + "a" * 256, "the container path is too long"),
    ("TMP:/" + "a/" * 2100, "the container path is too long"),
    ("TMP:/d:rx", "expected HOST:CONTAINER[:ro]"),
    ("named:/d", "must be absolute or start with ./"),
])
def test_bad_volumes_are_refused(tmp_path, value, message):
    with pytest.raises(errors.ContainerError) as exc:
        options.parse_volume(value.replace("TMP", str(tmp_path)))
    assert message in str(exc.value)


def test_tmpfs_options():
    mount = options.parse_tmpfs("/cache:size=64m,mode=1777,exec")
    assert (mount["destination"], mount["type"]) == ("/cache", "tmpfs")
    assert mount["options"] == ["nosuid", "nodev", "exec", "size=64m", "mode=1777"]
    parsed = container.parse_mount_options(mount["options"])
    assert parsed["set"] == constants.MOUNT_ATTR_NOSUID | constants.MOUNT_ATTR_NODEV
    assert parsed["data"] == [("size", "64m"), ("mode", "1777")]
    assert options.parse_tmpfs("/x")["options"] == ["nosuid", "nodev", "noexec"]
    assert container.parse_mount_options(options.parse_tmpfs("/x:ro")["options"])["set"] & constants.MOUNT_ATTR_RDONLY
    for bad in ("/x:bogus", "/x:size=", "/proc/x", "/sys", "/dev/zero", "rel"):
        with pytest.raises(errors.ContainerError):
            options.parse_tmpfs(bad)


def test_mount_options_sort_into_the_mount_api():
    parsed = container.parse_mount_options(["rbind", "ro", "rnosuid", "rslave", "noatime", "sync",
                                     "mode=755", "newinstance", "x-whatever", "defaults"])
    assert parsed["rbind"] and parsed["set"] == constants.MOUNT_ATTR_RDONLY | constants.MOUNT_ATTR_NOATIME
    assert parsed["clear"] == constants.MOUNT_ATTR__ATIME
    assert parsed["rset"] == constants.MOUNT_ATTR_NOSUID and parsed["propagation"] == (constants.MS_SLAVE, True)
    assert parsed["sb"] == [("sync", None)]
    assert parsed["data"] == [("mode", "755"), ("newinstance", None)]
    assert container.parse_mount_options(["rw", "ro"])["set"] == constants.MOUNT_ATTR_RDONLY
    assert container.parse_mount_options(["ro", "rw"])["set"] == 0


def test_run_mounts_keep_their_order_and_read_only_tmpfs():
    mounts = options.run_mounts(["/tmp:/data"], ["/run"], True, True)
    assert [m["destination"] for m in mounts] == ["/proc", "/dev", "/dev/pts", "/dev/shm", "/sys",
                                                  "/data", "/run", "/tmp"]


@pytest.mark.parametrize("name", ["", "-x", "_x", "a b", "x" * 64, "a/b"])
def test_bad_names_are_refused(name):
    with pytest.raises(errors.ContainerError) as exc:
        options.check_container_name(name)
    assert "--name" in str(exc.value)


def test_tty_needs_a_terminal(monkeypatch):
    monkeypatch.setattr(mc.os, "isatty", lambda fd: False)
    with pytest.raises(errors.ContainerError) as exc:
        options.terminal_size()
    assert "not a terminal" in str(exc.value)


def test_relative_workdir_is_refused(tmp_path, capsys):
    (tmp_path / "proc").mkdir()
    assert mc.main(["run", "--root", str(tmp_path), "-w", "rel", "true"]) == 125
    assert "must be absolute" in capsys.readouterr().err


@pytest.mark.parametrize("value, expected", [
    ("8080:80", ("127.0.0.1", 8080, 80, "tcp")), ("0.0.0.0:8080:80/tcp", ("0.0.0.0", 8080, 80, "tcp")),
    ("5353:53/udp", ("127.0.0.1", 5353, 53, "udp")), ("5353:53/UDP", ("127.0.0.1", 5353, 53, "udp"))])
def test_publish_parses(value, expected):
    assert spec.parse_publish(value) == expected
    assert spec.publish_text(expected) == f"{expected[0]}:{expected[1]}->{expected[2]}/{expected[3]}"


@pytest.mark.parametrize("value", ["80", "x:80", "8080:0", "1.2.3:80:80", "8080:80/sctp", "70000:80",
                                   "8080:80/", "8080:80/udp/tcp", "8080:80/ udp", "8080:80/udp\n",
                                   " 8080:80", "8_080:80", "8080:\u0668\u0660", "8080:80/\u212acp"])
def test_bad_publish_is_refused(value):
    with pytest.raises(errors.ContainerError):
        spec.parse_publish(value)


@settings(max_examples=500)
@given(st.text(alphabet=st.sampled_from("0123456789:./udptcUDPTC \x00\n_-\u0660\u212a"), max_size=30)
       | st.text(max_size=30))
def test_publish_is_parsed_whole_or_refused_in_one_line(value):
    """Any -p value: a published port that says exactly what was written, or
    one line naming the value, never another exception."""
    try:
        host_ip, host_port, port, proto = spec.parse_publish(value)
    except errors.ContainerError as exc:
        assert str(exc).startswith("--publish ") and exc.code == 125
        return
    assert proto in ("tcp", "udp") and 0 < host_port < 65536 and 0 < port < 65536
    written = value.lower() if "/" in value else value + "/tcp"
    assert written.endswith(f"{host_port}:{port}/{proto}")


def test_subnet_parses_and_refuses():
    assert str(spec.parse_subnet("10.88.0.0/16")[1]) == "10.88.0.1"
    for bad in ("10.88.0.1/16", "10.0.0.0/30", "nonsense"):
        with pytest.raises(errors.ContainerError):
            spec.parse_subnet(bad)


def test_outbound_without_nft_or_iptables_says_so(monkeypatch):
    import shutil
    monkeypatch.setattr(shutil, "which", lambda name, path=None: None)
    net = network.Network(spec.parse_subnet("10.213.0.0/24"), outbound=True)
    with pytest.raises(errors.ContainerError) as exc:
        net.ensure_outbound({})
    assert str(exc.value) == ("--outbound: needs nftables (nft) or iptables to masquerade,"
                              " and neither is installed")


def test_an_address_belongs_to_the_process_that_takes_it(tmp_path, monkeypatch):
    """run -d reads the options (and makes the Network) in one process and its
    monitor takes the address in another, that lives as long as the
    container: the table names the monitor, by pid and start time."""
    import json
    import os
    monkeypatch.setattr(network, "NET_STATE_DIR", str(tmp_path))
    monkeypatch.setattr(network.Network, "ensure_bridge", lambda self, state: None)
    net = network.Network(spec.parse_subnet("10.213.0.0/24"))
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # the "monitor"
        try:
            net.allocate()
            os.write(write_end, json.dumps(list(net.owner)).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    owner = json.loads(os.read(read_end, 100))
    os.close(read_end)
    os.waitpid(child, 0)
    table = json.loads((tmp_path / network.NET_STATE).read_text())["containers"]
    assert table == {"10.213.0.2": owner} and owner[0] == child
    # Its owner gone, the address is swept by the next to look.
    other = network.Network(spec.parse_subnet("10.213.0.0/24"))
    lock = other.locked()
    try:
        assert other.load()["containers"] == {}
    finally:
        os.close(lock)
        os.close(other.state_dir)


@pytest.mark.parametrize("address, mac", [("10.88.0.2", "02:42:0a:58:00:02"),
                                          ("172.17.0.255", "02:42:ac:11:00:ff")])
def test_a_containers_mac_is_made_from_its_address_as_docker_makes_it(address, mac):
    assert network.mac_for(address) == mac


def test_every_address_of_a_subnet_has_its_own_mac():
    hosts = [str(ip) for ip in spec.parse_subnet("10.88.0.0/16").hosts()]
    macs = {network.mac_for(ip) for ip in hosts}
    assert len(macs) == len(hosts)
    assert all(int(m[:2], 16) & 0b11 == 0b10 for m in macs)  # locally administered, unicast


WORD_OPTIONS = {"network": "none", "ipc": "private", "uts": "private", "cgroupns": "private",
                "userns": None, "seccomp": "default"}


def test_a_word_option_outside_its_words_is_refused_never_read_as_another():
    """The library's caller passes any object where the command line's click
    allows a few words: `seccomp != "default"` once meant no filter at all."""
    from hypothesis import given, settings, strategies as st

    values = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=12),
                       st.sampled_from(["Default", "DEFAULT", " default", "default\0", "on",
                                        "/etc/seccomp.json", "HOST", "Private", b"host"]),
                       st.builds(lambda s: __import__("pathlib").Path(s or "x"), st.text(max_size=5)))

    @settings(max_examples=400, deadline=None)
    @given(name=st.sampled_from(sorted(WORD_OPTIONS)), value=values)
    def check(name, value):
        if value in options.CHOICES[name] and (value is None or type(value) is str):
            return  # one of its words: accepted (the control below)
        with pytest.raises(errors.ContainerError) as caught:
            options.run_spec("/nonexistent-root", ["/bin/true"], **{name: value})
        assert caught.value.code == 125 and "expected one of" in str(caught.value)
        assert str(caught.value).startswith(f"--{name} ")

    check()
    # Control: each word is accepted by the check (the run then fails on its
    # root, which does not exist: the check came first and let it through).
    for name, words in options.CHOICES.items():
        for word in words:
            with pytest.raises(errors.ContainerError) as caught:
                options.run_spec("/nonexistent-root", ["/bin/true"], **{name: word})
            assert "expected one of" not in str(caught.value)


@pytest.mark.parametrize("value", [-1, 1.5, "10", True, None])
def test_a_stop_timeout_that_is_not_whole_seconds_is_refused(value):
    with pytest.raises(errors.ContainerError) as caught:
        options.run_spec("/nonexistent-root", ["/bin/true"], stop_timeout=value)
    assert str(caught.value).startswith("--stop-timeout ")
    with pytest.raises(errors.ContainerError) as caught:  # control: 0 is a timeout
        options.run_spec("/nonexistent-root", ["/bin/true"], stop_timeout=0)
    assert "--stop-timeout" not in str(caught.value)


@given(st.integers(min_value=options.MAX_STOP_TIMEOUT + 1, max_value=2**200))
def test_a_stop_timeout_beyond_the_supervisors_wait_is_refused(value):
    """The outside attack found --stop-timeout 2**70 (the library's
    stop_timeout= too) taken, and the supervisor's wait for it, once a
    SIGTERM came, ended in "internal error: OverflowError(...)". It is
    refused before anything is made."""
    with pytest.raises(errors.ContainerError) as caught:
        options.run_spec("/nonexistent-root", ["/bin/true"], stop_timeout=value)
    assert str(caught.value) == (f"--stop-timeout {value}: above the largest,"
                                 f" {options.MAX_STOP_TIMEOUT} seconds (68 years)")
    with pytest.raises(errors.ContainerError) as caught:  # control: the largest is a timeout
        options.run_spec("/nonexistent-root", ["/bin/true"], stop_timeout=options.MAX_STOP_TIMEOUT)
    assert "--stop-timeout" not in str(caught.value)


DEVICE_PARTS = st.text(alphabet=st.sampled_from("/dev.null:rwmx\x00\n fd pts shm"), max_size=24)


@settings(max_examples=500)
@example("/dev/net/tun")  # a host node the alphabet spells (found on CI's Python 3.13)
@given(st.one_of(DEVICE_PARTS, st.builds("/dev/null:{}".format, DEVICE_PARTS),
                 st.builds("/dev/null:/dev/{}".format, st.text(max_size=20))))
def test_a_device_is_a_new_name_below_dev_or_refused_in_one_line(value):
    """Any --device value: a node below /dev that is none of the standard
    ones, nor through them, with permissions of r, w and m; or one line
    naming the value, never another exception."""
    try:
        device, rule = options.parse_device(value)
    except errors.ContainerError as exc:
        assert str(exc).startswith("--device ") and exc.code == 125
        return
    path = device["path"]
    assert path.startswith("/dev/") and os.path.normpath(path) == path and "\0" not in path
    assert path.split("/")[2] not in ("null", "zero", "full", "random", "urandom", "tty", "fd",
                                      "stdin", "stdout", "stderr", "ptmx", "console", "pts")
    # the host's node the value names (/dev/null, or another the alphabet
    # spells, such as /dev/net/tun)
    host = os.stat(value.split(":", 1)[0])
    assert (device["type"], device["major"], device["minor"]) == (
        "c" if stat.S_ISCHR(host.st_mode) else "b", os.major(host.st_rdev), os.minor(host.st_rdev))
    assert rule["access"] and set(rule["access"]) <= set("rwm")
    assert len(set(rule["access"])) == len(rule["access"])


def test_a_device_takes_dockers_forms():
    assert options.parse_device("/dev/null:/dev/a")[0]["path"] == "/dev/a"
    assert options.parse_device("/dev/null:/dev/a")[1]["access"] == "rwm"
    assert options.parse_device("/dev/null:/dev/a:rw")[1]["access"] == "rw"
    device, rule = options.parse_device("/dev/null:/dev/a:mr")
    assert (device["type"], device["major"], device["minor"], rule["access"]) == ("c", 1, 3, "mr")
