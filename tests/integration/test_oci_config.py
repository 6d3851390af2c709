"""A hostile config.json through the real CLI's `create`, as root: one line,
status 125, no Python repr, nothing left (state entry, cgroups, mounts);
everything checked at create, never after `start` returned 0 (issue 21
item 5, issue 22's rlimits). Positive controls: the valid base creates and
runs, and valid rlimits and umask are what the program sees."""
import copy
import json
import os
import shutil
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings

from helpers import CLI, cli, container_cgroups, host_mounts, run_to_files, wait_for
from oci_configs import (
    EXTRAS, MUTATIONS, PROCESS_VALUES, REPR, base_config, dumps, mutate, with_process,
)


@pytest.fixture(autouse=True)
def delete_every_container():
    yield
    for state in json.loads(cli("list", "--format", "json").stdout or b"[]"):
        cli("delete", "--force", state["id"])


@pytest.fixture
def bundle(tmp_path, template_root):
    """`spec`'s config.json with one valid example of each optional part
    (hooks aside: they run at start, on the host), the test root as rootfs,
    and the probe as the program."""
    path = tmp_path / "bundle"
    path.mkdir()
    subprocess.run(["cp", "-a", str(template_root), str(path / "rootfs")], check=True)
    assert cli("spec", "--bundle", path).returncode == 0
    config = base_config(json.loads((path / "config.json").read_text()))
    del config["hooks"]
    del config["linux"]["resources"]["cpu"]["cpus"]  # a cpuset controller is not everywhere
    config["process"].update(args=["/bin/probe", "exit", "0"], terminal=False)
    config["root"]["readonly"] = False
    config["linux"]["cgroupsPath"] = GROUP
    return path, config


# The base's group: a name of this run's own, looked for in every hierarchy.
GROUP = f"minicontainer-cfgtest-{os.getpid()}"


def groups_named(*names):
    """Directories of these names anywhere in the host's cgroup hierarchies
    (the leak check's container_cgroups sees only groups with a label of the
    test's; a bundle's cgroupsPath is the bundle's)."""
    names = {os.path.basename(n.rstrip("/")) for n in names if n and n.strip("/.")}
    found = []
    for top, dirs, _ in os.walk("/sys/fs/cgroup"):
        found += [os.path.join(top, d) for d in dirs if d in names]
    return found


def write(path, config):
    (path / "config.json").write_text(dumps(config))


def create(path, id, **kwargs):
    return run_to_files([*CLI, "create", "--bundle", path, id], **kwargs)


def state(id):
    result = cli("state", id)
    return json.loads(result.stdout) if result.returncode == 0 else None


def assert_refused(result, id, codes=(125,)):
    """One line, our status, no repr; no state entry, no cgroup."""
    err = result.stderr
    assert result.returncode in codes, err
    assert err.startswith(b"minicontainer: ") and err.count(b"\n") == 1, err
    assert not REPR.search(err.decode(errors="replace")), err
    assert cli("state", id).returncode == 125
    assert json.loads(cli("list", "--format", "json").stdout) == []
    assert groups_named(GROUP, f"minicontainer-{id}") == []
    return err.decode()


def test_the_base_creates_and_runs(bundle):
    """Positive control for everything below: the mutated base is valid."""
    path, config = bundle
    config["process"]["args"] = ["/bin/busybox", "sh", "-c", "echo ran > /ran"]
    write(path, config)
    assert create(path, "base").returncode == 0
    assert cli("start", "base").returncode == 0
    assert wait_for(lambda: (path / "rootfs" / "ran").exists(), 5)
    assert cli("delete", "--force", "base").returncode == 0


@pytest.mark.parametrize("change, message", [
    (lambda c: c["process"].update(user="root"), "config.json: process.user: not an object"),
    (lambda c: c["process"]["user"].update(uid="0"), "config.json: process.user.uid: not an integer"),
    (lambda c: c["process"]["user"].update(uid=-1), "process.user.uid: -1 is out of range"),
    (lambda c: c.update(hooks={"prestart": [1]}), "config.json: hooks.prestart[0]: not an object"),
    (lambda c: c["process"].update(rlimits=["x"]), "config.json: process.rlimits[0]: not an object"),
    (lambda c: c["process"].update(capabilities="all"), "process.capabilities: not an object"),
    (lambda c: c["linux"].update(cgroupsPath=5), "config.json: linux.cgroupsPath: not a string"),
    (lambda c: c["process"].update(args=["/bin/probe", "a\0b"]), "process.args[1]: a NUL byte"),
    (lambda c: c["linux"].update(maskedPaths=[5]), "config.json: linux.maskedPaths[0]: not a string"),
    (lambda c: c["mounts"][0].update(options=5), "config.json: mounts[0].options: not an array"),
    (lambda c: c["process"]["user"].update(additionalGids=["a"]),
     "process.user.additionalGids[0]: not an integer"),
    (lambda c: c["process"].update(env=["NOEQUALS"]), "process.env[0]: 'NOEQUALS': not NAME=VALUE"),
    (lambda c: c.update(hostname="a\0b"), "config.json: hostname: a NUL byte in a string"),
    (lambda c: c["linux"].update(sysctl={"net.ipv4.ip_forward": "1+kernel.core_pattern=|/x"}),
     "linux.sysctl net.ipv4.ip_forward: value '1+kernel.core_pattern=|/x'"),
    (lambda c: c["mounts"][0].update(options=["nosuid", "nodev,mode=4777"]),
     "mounts[0].options[1]: 'nodev,mode=4777': a comma in an option"),
    # These passed create and failed in PID 1 after start returned 0.
    (lambda c: c["process"].update(rlimits=[{"type": "RLIMIT_NOFILE", "soft": "x", "hard": 5}]),
     "config.json: process.rlimits[0].soft: not an integer"),
    (lambda c: c["process"]["user"].update(umask="x"), "config.json: process.user.umask: not an integer"),
])
def test_a_wrong_field_fails_create_in_one_line_naming_it(bundle, change, message):
    path, config = bundle
    change(config)
    write(path, config)
    groups, mounts = container_cgroups(), host_mounts()
    err = assert_refused(create(path, "bad"), "bad")
    assert err == f"minicontainer: create bad: {err.split('create bad: ', 1)[1]}"
    assert message in err, err
    assert container_cgroups() == groups and host_mounts() == mounts


def test_resources_cannot_pull_a_host_process_into_the_containers_group(bundle):
    """linux.resources.unified {"cgroup.procs": PID} moved any host process (the
    old code moved the host's PID 1 in this test) into the container's group,
    where delete --force and kill --all kill what they find. Refused at create;
    the sleeper stays where it was. Positive control: a limit's file is written."""
    path, config = bundle
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        with open(f"/proc/{sleeper.pid}/cgroup") as f:
            before = f.read()
        for key in ("cgroup.procs", "cgroup.threads", "cgroup.subtree_control", "cgroup.kill"):
            config["linux"]["resources"]["unified"] = {key: str(sleeper.pid)}
            write(path, config)
            err = assert_refused(create(path, "unified"), "unified")
            assert f"linux.resources.unified {key}: not a file of a group's limits" in err
        with open(f"/proc/{sleeper.pid}/cgroup") as f:
            assert f.read() == before
        assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()
    v2 = next(g for g in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup")
              if os.path.exists(f"{g}/cgroup.subtree_control"))
    config["linux"]["resources"]["unified"] = {"cgroup.max.descendants": "5"}  # a limit
    write(path, config)
    assert create(path, "unified").returncode == 0
    assert open(f"{v2}/{GROUP}/cgroup.max.descendants").read() == "5\n"
    assert cli("delete", "--force", "unified").returncode == 0


def test_a_deeply_nested_document_fails_create_in_one_line(bundle):
    path, _ = bundle
    (path / "config.json").write_text('{"ociVersion": "1.0.2", "x": ' + "[" * 200000 + "]" * 200000 + "}")
    err = assert_refused(create(path, "deep"), "deep")
    assert err == "minicontainer: create deep: config.json: not JSON this runtime reads: nested too deeply\n"


def test_a_fifo_as_a_namespace_path_fails_create_at_once(bundle, tmp_path):
    """It hung create for ever (an open for reading waits for a writer)."""
    path, config = bundle
    fifo = tmp_path / "netns-fifo"
    os.mkfifo(fifo)
    del config["linux"]["sysctl"]["net.ipv4.ip_forward"]  # a joined network: no net.* sysctl
    assert config["linux"]["namespaces"][1]["type"] == "network"
    config["linux"]["namespaces"][1]["path"] = str(fifo)
    write(path, config)
    err = assert_refused(create(path, "fifo"), "fifo")
    assert err.startswith(f"minicontainer: create fifo: config.json: linux.namespaces[1].path"
                          f" {fifo}: not a namespace file")
    config["linux"]["namespaces"][1]["path"] = "/proc/self/ns/uts"
    write(path, config)
    err = assert_refused(create(path, "uts"), "uts")
    assert "a namespace of type uts, not network" in err
    # Positive control: a network namespace by path is joined.
    holder = subprocess.Popen(["unshare", "--net", "sleep", "30"])
    try:
        netns = f"/proc/{holder.pid}/ns/net"
        assert wait_for(lambda: os.readlink(netns) != os.readlink("/proc/self/ns/net"), 5)
        config["linux"]["namespaces"][1]["path"] = netns
        write(path, config)
        assert create(path, "joined").returncode == 0
        assert os.readlink(f"/proc/{state('joined')['pid']}/ns/net") == os.readlink(netns)
        assert cli("delete", "--force", "joined").returncode == 0
    finally:
        holder.kill()
        holder.wait()


def host_can_raise_nofile():
    with open("/proc/self/status") as f:
        effective = next(int(line.split()[1], 16) for line in f if line.startswith("CapEff:"))
    return bool(effective >> 24 & 1)


def test_an_rlimit_the_host_cannot_grant_fails_create_as_runc_does(bundle, tmp_path):
    """Issue 22: podman asks for RLIMIT_NOFILE 1048576. Where the host's hard
    limit is lower and root lacks CAP_SYS_RESOURCE, create says so in one line
    naming the limit and the values; `start` never returns 0 for a program
    that cannot run. runc, here, refuses it at create too."""
    import resource
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if host_can_raise_nofile() or hard >= 1048576:
        pytest.skip("this host can grant RLIMIT_NOFILE 1048576")
    path, config = bundle
    config["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 1048576, "hard": 1048576}]
    write(path, config)
    groups, mounts = container_cgroups(), host_mounts()
    err = assert_refused(create(path, "nofile"), "nofile")
    assert err == ("minicontainer: create nofile: config.json: process.rlimits RLIMIT_NOFILE: error"
                   f" setting rlimits: soft 1048576, hard 1048576: above this host's hard limit"
                   f" {hard} (raising it needs CAP_SYS_RESOURCE)\n")
    assert container_cgroups() == groups and host_mounts() == mounts
    if shutil.which("runc"):
        config["root"]["path"] = str(path / "rootfs")
        runc_bundle = tmp_path / "runc-bundle"
        runc_bundle.mkdir()
        write(runc_bundle, config)
        runc = ["runc", "--root", str(tmp_path / "runc-state")]
        result = run_to_files([*runc, "create", "--bundle", runc_bundle, "nofile"])
        subprocess.run([*runc, "delete", "--force", "nofile"], capture_output=True)
        assert result.returncode != 0 and b"error setting rlimits" in result.stderr, result.stderr


def test_valid_rlimits_and_umask_are_what_the_program_sees(bundle):
    """Positive control: limits below the host's hard one, and a umask, are
    applied; the program sees them in /proc/self/limits."""
    path, config = bundle
    config["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 100, "hard": 200},
                                    {"type": "RLIMIT_CORE", "soft": 0, "hard": 0},
                                    {"type": "RLIMIT_NPROC", "soft": 4096, "hard": 8192}]
    config["process"]["user"]["umask"] = 0o027
    config["process"]["args"] = ["/bin/busybox", "sh", "-c",
                                 "cat /proc/self/limits > /limits; umask > /umask"]
    write(path, config)
    assert create(path, "limits").returncode == 0
    assert cli("start", "limits").returncode == 0
    assert wait_for(lambda: (path / "rootfs" / "umask").exists()
                    and (path / "rootfs" / "umask").read_text(), 5)
    limits = {line[:26].strip(): line[26:].split()[:2]
              for line in (path / "rootfs" / "limits").read_text().splitlines()[1:]}
    assert limits["Max open files"] == ["100", "200"]
    assert limits["Max core file size"] == ["0", "0"]
    assert limits["Max processes"] == ["4096", "8192"]
    assert (path / "rootfs" / "umask").read_text().strip() == "0027"
    assert cli("delete", "--force", "limits").returncode == 0


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutation=MUTATIONS)
def test_a_hostile_config_is_refused_by_create_or_runs(bundle, tmp_path, mutation):
    """The real CLI: every mutated config either fails create in one line
    with 125 (126/127 for a program that cannot run), no repr, and leaves
    nothing; or it creates, starts and its PID 1 says nothing after start."""
    path, base = bundle
    where, value = mutation
    if where[:1] == ("hooks",):
        where = ("process",) + where[1:2]  # no hooks in this base (they run at start)
    write(path, mutate(base, where, value))
    made_group = value if where == ("linux", "cgroupsPath") and isinstance(value, str) \
        and "\0" not in value and value.isprintable() else GROUP
    refused_or_runs(path, "prop", tmp_path, 30, made_group, GROUP)


def test_a_bundle_without_mounts_runs_as_runc_runs_it(bundle, tmp_path):
    """mounts: null (or none at all): no /proc in the container, and nothing of
    the set-up may need one (closing descriptors listed /proc/self/fd: an
    internal error, found by the property test above)."""
    path, base = bundle
    write(path, mutate(base, ("mounts",), None))
    with open(tmp_path / "create-stderr", "wb") as err:  # the container keeps it: no pipe
        created = subprocess.run([*CLI, "create", "--bundle", path, "nomounts"],
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                 timeout=30)
    assert created.returncode == 0, (tmp_path / "create-stderr").read_bytes()
    assert cli("start", "nomounts").returncode == 0
    assert wait_for(lambda: (state("nomounts") or {}).get("status") == "stopped", 10)
    assert cli("delete", "nomounts").returncode == 0


def refused_or_runs(path, name, tmp_path, timeout, *groups_made):
    """`create` the bundle at path: refused in one line (125, or 126/127 for a
    program that cannot run, no repr), or a container that starts, stops and
    is deleted with its PID 1 saying nothing after start; either way nothing
    left (the cgroups it may have made: groups_made, and minicontainer-NAME)."""
    groups, mounts = container_cgroups(), host_mounts()
    err_file = tmp_path / "create-stderr"
    with open(err_file, "wb") as err:
        result = subprocess.run([*CLI, "create", "--bundle", path, name], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err, timeout=timeout)
    if result.returncode != 0:
        result.stderr = err_file.read_bytes()
        assert_refused(result, name, codes=(125, 126, 127))
    else:
        started = cli("start", name)
        assert started.returncode == 0, started.stderr
        assert wait_for(lambda: (state(name) or {}).get("status") == "stopped", 10)
        assert b"minicontainer: " not in err_file.read_bytes()  # PID 1 said nothing
        assert cli("delete", name).returncode == 0
    assert wait_for(lambda: container_cgroups() == groups, 2), container_cgroups()
    assert wait_for(lambda: groups_named(*groups_made, f"minicontainer-{name}") == [], 2)
    assert host_mounts() == mounts


def test_a_process_killed_during_set_up_fails_create(bundle):
    """Found by the property test: a memory limit too low for the set-up got
    PID 1 killed before its "ready", and create returned 0 with a stopped
    container. It fails create now, in one line, leaving nothing."""
    path, config = bundle
    config["linux"]["resources"]["memory"] = {"limit": 16 << 10}
    write(path, config)
    err = assert_refused(create(path, "oom"), "oom")
    assert "killed before it was ready" in err
    config["linux"]["resources"]["memory"] = {"limit": 256 << 20}  # positive control
    write(path, config)
    assert create(path, "oom").returncode == 0
    assert cli("delete", "--force", "oom").returncode == 0


def test_a_mount_inside_proc_fails_create_as_runc_refuses_it(bundle):
    """A file mounted over /proc/sys/kernel/cap_last_cap told PID 1 that the
    kernel's last capability was 0: every one above stayed in the bounding
    set (an outside attacker's finding). Inside /proc only proc itself and
    runc's short list may be mounted. Control: /proc/uptime, on that list."""
    path, config = bundle
    (path / "zero").write_text("0\n")
    config["mounts"].append({"destination": "/proc/sys/kernel/cap_last_cap", "type": "bind",
                             "source": str(path / "zero"), "options": ["bind"]})
    write(path, config)
    err = assert_refused(create(path, "capmount"), "capmount")
    assert "/proc/sys/kernel/cap_last_cap: cannot be mounted because it is inside /proc" in err
    config["mounts"][-1]["destination"] = "/proc/uptime"
    config["process"]["args"] = ["/bin/busybox", "sh", "-c", "cat /proc/uptime > /uptime"]
    write(path, config)
    assert create(path, "uptime").returncode == 0
    assert cli("start", "uptime").returncode == 0
    assert wait_for(lambda: (path / "rootfs" / "uptime").exists()
                    and (path / "rootfs" / "uptime").read_text() == "0\n", 5)
    assert cli("delete", "--force", "uptime").returncode == 0


@pytest.mark.parametrize("change, message, code", [
    # runc's init searches only the container's PATH (its own environment is
    # cleared): without one, a bare command is not found, at create.
    (lambda c: c["process"].update(args=["sh", "-c", "true"], env=["A=b"]),
     "config.json: process.env: no PATH to search for 'sh' (process.args[0] is a bare name)", 125),
    # Found by the property below: "." was found in PATH (a directory) and
    # failed after start; a search takes executable files only, as runc's.
    (lambda c: c["process"].update(args=["."]), "exec .: not found in the container", 127),
    (lambda c: c["process"]["user"].update(uid=4294967295),
     "config.json: process.user.uid: 4294967295 is out of range (0 to 4294967294)", 125),
    (lambda c: c["process"]["user"].update(gid=4294967295),
     "config.json: process.user.gid: 4294967295 is out of range (0 to 4294967294)", 125),
    (lambda c: c["process"]["user"].update(additionalGids=[4294967295]),
     "process.user.additionalGids[0]: 4294967295 is out of range (0 to 4294967294)", 125),
    (lambda c: c["process"]["user"].update(additionalGids=list(range(70000))),
     "config.json: process.user.additionalGids: 70000 groups, above the kernel's NGROUPS_MAX 65536", 125),
    (lambda c: (in_user_namespace(c), c["process"]["user"].update(uid=65536)),
     "config.json: process.user.uid 65536: not mapped in the container's user namespace"
     " (linux.uidMappings)", 125),
    (lambda c: (in_user_namespace(c), c["process"]["user"].update(additionalGids=[1, 70000])),
     "config.json: process.user.additionalGids 70000: not mapped in the container's user"
     " namespace (linux.gidMappings)", 125),
])
def test_a_process_field_the_kernel_refuses_fails_create_in_one_line(bundle, change, message, code):
    """An outside attacker's finding: these reached PID 1 and came back as
    KeyError('PATH'), OSError(22) and ValueError. Each is one line at create
    now, naming its field."""
    path, config = bundle
    change(config)
    write(path, config)
    err = assert_refused(create(path, "proc"), "proc", codes=(code,))
    assert err.startswith("minicontainer: create proc: " if code == 125 else "minicontainer: ")
    assert message in err, err


def in_user_namespace(config):
    config["linux"]["namespaces"].append({"type": "user"})
    for key in ("uidMappings", "gidMappings"):
        config["linux"][key] = [{"containerID": 0, "hostID": 200000, "size": 65536}]
    config["linux"].pop("sysctl", None)


@pytest.mark.parametrize("change", [
    lambda c: c["process"].update(args=["busybox", "true"], env=["PATH=/bin", "A=b"]),
    lambda c: c["process"].update(args=["/bin/busybox", "true"], env=["A=b"]),
    lambda c: c["process"]["user"].update(uid=4294967294, gid=4294967294,
                                          additionalGids=[4294967294, 0]),
    lambda c: c["process"]["user"].update(additionalGids=list(range(65536))),
])
def test_the_edges_of_those_fields_run(bundle, change):
    """Positive control: the same fields at their last valid values run."""
    path, config = bundle
    change(config)
    write(path, config)
    result = create(path, "edge")
    assert result.returncode == 0, result.stderr
    assert cli("start", "edge").returncode == 0
    assert wait_for(lambda: (state("edge") or {}).get("status") == "stopped", 10)
    assert cli("delete", "edge").returncode == 0


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fields=PROCESS_VALUES)
def test_hostile_process_fields_are_refused_by_create_or_run(bundle, tmp_path, fields):
    """The same class through the real create and start: one line (125, or
    126/127 for a program that cannot run), no repr, nothing left; or a
    container that starts and whose PID 1 says nothing after start."""
    path, base = bundle
    write(path, with_process(base, fields))
    refused_or_runs(path, "fields", tmp_path, 60, GROUP)


@pytest.mark.parametrize("link, target, destination", [
    ("x", "/proc/sys/kernel", "/x/cap_last_cap"),          # a directory link on the way
    ("x", "../proc/sys", "/x/kernel/cap_last_cap"),          # relative, resolved in the root
    ("cll", "/proc/sys/kernel/cap_last_cap", "/cll"),        # the destination itself a link
    ("x", "/proc", "/x/sys/kernel/cap_last_cap"),
])
def test_a_mount_through_a_link_into_proc_fails_create(bundle, link, target, destination):
    """An outside attacker's finding: the lexical check of /proc (runc's list)
    did not see a destination that leads into /proc through a symlink in the
    rootfs: mounted over cap_last_cap through /x -> /proc/sys/kernel, it told
    PID 1 the kernel's last capability was 0. The destination is checked
    where it resolves in the root, on the descriptor that is mounted on, as
    runc checks its securejoin'd path. Controls: an allowed /proc file through
    a link is mounted, and a link that leads elsewhere is followed."""
    path, config = bundle
    (path / "zero").write_text("0\n")
    (path / "rootfs" / link).symlink_to(target)
    config["mounts"].append({"destination": destination, "type": "bind",
                             "source": str(path / "zero"), "options": ["bind"]})
    write(path, config)
    err = assert_refused(create(path, "linkmount"), "linkmount")
    assert "/proc/sys/kernel/cap_last_cap: cannot be mounted because it is inside /proc" in err, err
    (path / "rootfs" / link).unlink()


def test_a_mount_on_a_second_proc_fails_create(bundle):
    """The same class without a link: proc mounted a second time elsewhere
    (/myproc) and a file mounted over its sys/kernel/cap_last_cap. The
    target's file system (fstatfs: proc) says where it is."""
    path, config = bundle
    (path / "zero").write_text("0\n")
    config["mounts"] += [{"destination": "/myproc", "type": "proc", "source": "proc"},
                         {"destination": "/myproc/sys/kernel/cap_last_cap", "type": "bind",
                          "source": str(path / "zero"), "options": ["bind"]}]
    write(path, config)
    err = assert_refused(create(path, "procagain"), "procagain")
    assert "it leads to /myproc/sys/kernel/cap_last_cap: cannot be mounted because it is inside" \
        " /proc" in err, err
    config["mounts"].pop()  # control: the second proc itself is mounted
    write(path, config)
    assert create(path, "procagain").returncode == 0
    assert cli("delete", "--force", "procagain").returncode == 0


def test_a_mount_through_a_link_is_checked_where_it_leads(bundle):
    """The controls of the test above: through links, /proc/uptime (on runc's
    list) is mounted, and a destination outside /proc is followed there."""
    path, config = bundle
    (path / "zero").write_text("0\n")
    (path / "rootfs" / "up").symlink_to("/proc/uptime")
    (path / "rootfs" / "data").mkdir()
    (path / "rootfs" / "d").symlink_to("/data")
    config["mounts"] += [{"destination": "/up", "type": "bind", "source": str(path / "zero"),
                          "options": ["bind"]},
                         {"destination": "/d/zero", "type": "bind", "source": str(path / "zero"),
                          "options": ["bind"]}]
    config["process"]["args"] = ["/bin/busybox", "sh", "-c",
                                 "cat /proc/uptime /data/zero > /seen"]
    write(path, config)
    result = create(path, "linkok")
    assert result.returncode == 0, result.stderr
    assert cli("start", "linkok").returncode == 0
    seen = path / "rootfs" / "seen"
    assert wait_for(lambda: seen.exists() and seen.read_text() == "0\n0\n", 5)
    assert cli("delete", "--force", "linkok").returncode == 0


def test_a_user_namespaces_root_it_cannot_reach_fails_create_in_one_line(bundle):
    """Found while testing the ids above: a bundle in a directory the mapped
    root cannot search (the test's own, 0700) came back from PID 1 as
    PermissionError(13). It is one line naming the root now. Control: the
    same bundle in a searchable directory creates and runs with mapped,
    non-zero ids."""
    import tempfile
    path, config = bundle
    in_user_namespace(config)
    config["process"]["user"].update(uid=65535, gid=65535, additionalGids=[1, 65535])
    config["process"].pop("oomScoreAdj", None)
    write(path, config)
    err = assert_refused(create(path, "unreach"), "unreach")
    assert f"root {path}/rootfs: Permission denied (in a user namespace" in err, err
    place = tempfile.mkdtemp(prefix="minicontainer-userns-")
    os.chmod(place, 0o755)
    try:
        moved = shutil.move(str(path), place)
        result = create(moved, "unreach")
        assert result.returncode == 0, result.stderr
        assert cli("start", "unreach").returncode == 0
        assert wait_for(lambda: (state("unreach") or {}).get("status") == "stopped", 10)
        assert cli("delete", "unreach").returncode == 0
    finally:
        shutil.rmtree(place)
