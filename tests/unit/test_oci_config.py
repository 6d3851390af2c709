"""A bundle's config.json read as `create` reads it (load_bundle, in-process,
no root): every field the runtime reads is checked with its type before
anything is made, and every refusal is one ContainerError whose one line
names the field, never another exception (issue 21, item 5)."""
import json
import os
import resource
import stat
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from _minicontainer import constants, errors, oci, spec as mc_spec
from helpers import CLI
from oci_configs import (
    MUTATIONS, PROCESS_FIELDS, REPR, base_config, dumps, mutate, names_the_field, with_process,
)


@pytest.fixture(scope="module")
def spec_config(tmp_path_factory):
    """The repository's own `spec` verb's output."""
    path = tmp_path_factory.mktemp("spec")
    subprocess.run([*CLI, "spec", "--bundle", path], check=True)
    return json.loads((path / "config.json").read_text())


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("bundle")
    (path / "rootfs").mkdir()
    return path


def load(bundle_dir, config, text=None):
    (bundle_dir / "config.json").write_text(text if text is not None else dumps(config))
    spec, parts = oci.load_bundle(str(bundle_dir), "property")
    for fd in parts["namespace_fds"].values():  # create's, for the container to join
        os.close(fd)
    return spec, parts


def refusal(bundle_dir, config=None, text=None):
    with pytest.raises(errors.ContainerError) as exc:
        load(bundle_dir, config, text)
    message = str(exc.value)
    assert "\n" not in message and not REPR.search(message), message
    assert exc.value.code == 125
    return message


def test_the_base_and_specs_own_output_are_accepted(bundle_dir, spec_config):
    """Positive control: what the property tests mutate is itself valid."""
    spec, config = load(bundle_dir, base_config(spec_config))
    assert spec.user == (0, 0, "/") and spec.additional_gids == (1, 2) and spec.umask == 0o22
    assert spec.sysctl == {"net.ipv4.ip_forward": "1", "kernel.shmmni": "321"}
    assert spec.hooks["prestart"][0]["path"] == "/bin/true"
    assert config["annotations"] == {"org.example": "yes"}
    assert config["linux"]["resources"]["pids"] == {"limit": 100}
    load(bundle_dir, spec_config)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(MUTATIONS)
def test_every_wrong_field_is_one_line_naming_it(bundle_dir, spec_config, mutation):
    path, value = mutation
    config = mutate(base_config(spec_config), path, value)
    try:
        spec, kept = load(bundle_dir, config)
    except errors.ContainerError as exc:
        # A value quoted in it may hold a newline: the CLI prints it escaped
        # (one_line), as the integration tests check.
        message = errors.one_line(str(exc))
        assert message.startswith("config.json: ") and not REPR.search(message), message
        assert names_the_field(message, path), (path, message)
        assert exc.code == 125
        return
    # Accepted: what create keeps (the state entry) is plain JSON, without a NUL.
    text = json.dumps([spec.to_json(), kept])
    assert "\\u0000" not in text
    mc_spec.Spec.from_json(json.loads(text)[0])


@pytest.mark.parametrize("change, message", [
    (lambda c: c["process"].update(user="root"), "config.json: process.user: not an object"),
    (lambda c: c["process"]["user"].update(uid="0"), "config.json: process.user.uid: not an integer"),
    (lambda c: c["process"]["user"].update(uid=-1),
     "config.json: process.user.uid: -1 is out of range (0 to 4294967294)"),
    (lambda c: c["process"]["user"].update(uid=1.0), "process.user.uid: not an integer"),
    (lambda c: c["process"]["user"].update(uid=True), "process.user.uid: not an integer"),
    (lambda c: c.update(hooks={"prestart": [1]}), "config.json: hooks.prestart[0]: not an object"),
    (lambda c: c["process"].update(rlimits=["x"]), "config.json: process.rlimits[0]: not an object"),
    (lambda c: c["process"].update(capabilities="all"), "config.json: process.capabilities: not an object"),
    (lambda c: c["linux"].update(cgroupsPath=5), "config.json: linux.cgroupsPath: not a string"),
    (lambda c: c["process"].update(args=["/bin/sh", "a\0b"]),
     "config.json: process.args[1]: a NUL byte in a string"),
    (lambda c: c["linux"].update(maskedPaths=[5]), "config.json: linux.maskedPaths[0]: not a string"),
    (lambda c: c["mounts"][0].update(options=5), "config.json: mounts[0].options: not an array"),
    (lambda c: c["process"]["user"].update(additionalGids=["a"]),
     "config.json: process.user.additionalGids[0]: not an integer"),
    (lambda c: c["process"].update(rlimits=[{"type": "RLIMIT_NOFILE", "soft": "x", "hard": 5}]),
     "config.json: process.rlimits[0].soft: not an integer"),
    (lambda c: c["process"]["user"].update(umask="x"), "config.json: process.user.umask: not an integer"),
    (lambda c: c["process"].update(env=["PATH=/bin", "NOEQUALS"]),
     "config.json: process.env[1]: 'NOEQUALS': not NAME=VALUE"),
    (lambda c: c["process"].update(env=["=x"]), "config.json: process.env[0]: '=x': not NAME=VALUE"),
    (lambda c: c.update(hostname="a\0b"), "config.json: hostname: a NUL byte in a string"),
    (lambda c: c["root"].update(path="rootfs\0x"), "config.json: root.path: a NUL byte in a string"),
    (lambda c: c["process"].update(cwd="\ud800"), "config.json: process.cwd: not valid Unicode"),
    (lambda c: c["process"].update(oomScoreAdj=10**30), "process.oomScoreAdj: 10000000000"),
    (lambda c: c["linux"].update(sysctl={"net.ipv4.ip_forward": "1+kernel.core_pattern=|/x"}),
     "config.json: linux.sysctl net.ipv4.ip_forward: value '1+kernel.core_pattern=|/x'"),
    (lambda c: c["linux"].update(sysctl={"kernel.shmmax=5,kernel.core_pattern": "1"}),
     "linux.sysctl kernel.shmmax=5,kernel.core_pattern: not a sysctl name"),
    (lambda c: c["linux"].update(sysctl={"net.ipv4/../../kernel/core_pattern": "x"}), "not a sysctl name"),
    (lambda c: c["linux"].update(sysctl={"net..ipv4": "1"}), "not a sysctl name"),
    (lambda c: c["linux"].update(sysctl={"kernel.core_pattern": "|/x"}),
     "linux.sysctl kernel.core_pattern: not in a namespace of the container's own"),
    (lambda c: c["mounts"][0].update(options=["nosuid", "nodev,mode=4777"]),
     "config.json: mounts[0].options[1]: 'nodev,mode=4777': a comma in an option"),
    (lambda c: c["linux"]["resources"].update(unified={"cgroup.procs": "1"}),
     "linux.resources.unified cgroup.procs: not a file of a group's limits"),
    (lambda c: c["linux"]["resources"].update(memory={"limit": "1g"}),
     "config.json: linux.resources.memory.limit: not an integer"),
    (lambda c: c["linux"]["seccomp"]["syscalls"][0].update(action=5),
     "config.json: linux.seccomp.syscalls[0].action: not a string"),
    (lambda c: c["linux"]["seccomp"].update(defaultAction="SCMP_ACT_NOPE"),
     "config.json: linux.seccomp: seccomp defaultAction SCMP_ACT_NOPE"),
    (lambda c: c.update(annotations={"a": ["b"]}), "config.json: annotations.a: not a string"),
    (lambda c: c["process"].update(rlimits=[{"type": "RLIMIT_NOFILE", "soft": 20, "hard": 10}]),
     "config.json: process.rlimits RLIMIT_NOFILE: soft 20 is above hard 10"),
    (lambda c: c["process"].update(rlimits=[{"type": "RLIMIT_CORE", "soft": 1, "hard": 1}] * 2),
     "config.json: process.rlimits RLIMIT_CORE: given twice"),
])
def test_the_issues_fields_name_themselves(bundle_dir, spec_config, change, message):
    config = base_config(spec_config)
    change(config)
    assert message in refusal(bundle_dir, config)


@pytest.mark.parametrize("text, message", [
    ("[1, 2]", "config.json: not a JSON object"),
    ("null", "config.json: not a JSON object"),
    ('"x"', "config.json: not a JSON object"),
    ("{", "config.json: not JSON: "),
    ('{"ociVersion": NaN}', "config.json: not JSON: NaN is not a JSON number"),
    ('{"ociVersion": Infinity}', "config.json: not JSON: Infinity is not a JSON number"),
    ("[" * 200000 + "]" * 200000, "config.json: not JSON this runtime reads: nested too deeply"),
    ('{"a": ' + "[" * 100000 + "]" * 100000 + "}", "nested too deeply"),
    ('{"ociVersion": 1' + "0" * 5000 + "}", "config.json: not JSON: "),
])
def test_a_document_that_is_no_json_object_is_one_line(bundle_dir, text, message):
    assert message in refusal(bundle_dir, text=text)


def test_invalid_utf8_is_one_line(bundle_dir, spec_config):
    text = dumps(base_config(spec_config)).replace('"sh"', '"\udcff"')
    (bundle_dir / "config.json").write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(errors.ContainerError) as exc:
        oci.load_bundle(str(bundle_dir), "property")
    assert str(exc.value).startswith("config.json: not JSON: 'utf-8' codec can't decode byte 0xff")


def test_null_is_read_as_absent_as_runc_reads_it(bundle_dir, spec_config):
    config = base_config(spec_config)
    config.update(hostname=None, annotations=None, hooks=None)
    config["process"].update(user=None, rlimits=None, capabilities=None, env=None)
    config["process"]["args"] = ["/bin/sh"]  # no env, so no PATH to search for a bare "sh"
    config["linux"].update(sysctl=None, seccomp=None, resources=None, maskedPaths=None)
    spec, kept = load(bundle_dir, config)
    assert spec.user == (0, 0, "/") and spec.hostname is None and spec.seccomp is None
    assert spec.env == () and spec.limits.rlimits == () and kept["annotations"] == {}


def test_rlimits_are_checked_against_what_the_host_can_grant(bundle_dir, spec_config):
    """Issue 22: podman's RLIMIT_NOFILE 1048576 where the hard limit is lower
    and CAP_SYS_RESOURCE is not held is refused by create, naming the limit
    and the values (runc: "error setting rlimits"), not after start."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    with open("/proc/self/status") as f:
        effective = next(int(line.split()[1], 16) for line in f if line.startswith("CapEff:"))
    if hard == resource.RLIM_INFINITY or effective >> 24 & 1:
        pytest.skip("this process may raise its hard nofile limit (CAP_SYS_RESOURCE)")
    config = base_config(spec_config)
    config["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": hard + 1, "hard": hard + 1}]
    assert refusal(bundle_dir, config) == (
        f"config.json: process.rlimits RLIMIT_NOFILE: error setting rlimits: soft {hard + 1},"
        f" hard {hard + 1}: above this host's hard limit {hard} (raising it needs CAP_SYS_RESOURCE)")
    config["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": hard, "hard": hard}]
    assert load(bundle_dir, config)[0].limits.rlimits == ((resource.RLIMIT_NOFILE, hard, hard),)


def test_a_namespace_path_must_be_a_namespace_of_its_type(bundle_dir, spec_config, tmp_path):
    """A FIFO is refused without being opened for reading (that would hang);
    so are a plain file, a directory and a namespace of another type. The
    caller's own network namespace, by path, is the positive control."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    plain = tmp_path / "plain"
    plain.write_text("")
    config = base_config(spec_config)
    config["linux"]["sysctl"] = {"kernel.shmmni": "321"}  # net.*: not in a joined one
    assert config["linux"]["namespaces"][1]["type"] == "network"
    for path, why in [(fifo, "not a namespace file"), (plain, "not a namespace file"),
                      (tmp_path, "not a namespace file"), ("/dev/null", "not a namespace file"),
                      ("/proc/self/ns/uts", "a namespace of type uts, not network"),
                      (tmp_path / "none", "No such file or directory")]:
        config["linux"]["namespaces"][1]["path"] = str(path)
        assert refusal(bundle_dir, config).startswith(
            f"config.json: linux.namespaces[1].path {path}: {why}")
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    config["linux"]["namespaces"][1]["path"] = "/proc/self/ns/net"
    spec, _ = load(bundle_dir, config)
    assert spec.ns_paths == {constants.CLONE_NEWNET: "/proc/self/ns/net"}
    assert not spec.namespaces & constants.CLONE_NEWNET


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(st.none(), st.integers(), st.text(max_size=8), st.booleans(),
                          st.dictionaries(st.text(max_size=4), st.integers(), max_size=2)),
                max_size=4))
def test_an_exec_process_file_is_read_the_same_way(tmp_path_factory, spec_config, args):
    """exec --process reads a process object through the same reader."""
    path = tmp_path_factory.mktemp("process") / "process.json"
    process = dict(base_config(spec_config)["process"], args=args)
    path.write_text(dumps(process))
    spec = mc_spec.Spec("/", ("x",))
    try:
        oci.load_exec_process(spec, str(path))
    except errors.ContainerError as exc:
        assert str(exc).startswith(f"--process {path}: ") and "\n" not in str(exc)
        assert not REPR.search(str(exc))
        return
    assert spec.command == tuple(args) and all(isinstance(a, str) for a in args)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fields=PROCESS_FIELDS)
def test_process_fields_are_refused_at_create_or_fit_the_kernel(bundle_dir, spec_config, fields):
    """The class of the outside attacker's KeyError('PATH'), OSError(22) and
    ValueError('too many groups'): every user, uid, gid, additionalGids,
    env, args and cwd either fails the typed reader in one line, or is what
    PID 1 can do: ids the kernel has ((uid_t)-1 is none), no more groups
    than NGROUPS_MAX, a program it can look for (a bare name needs a PATH),
    an absolute working directory."""
    config = with_process(base_config(spec_config), fields)
    try:
        spec, _ = load(bundle_dir, config)
    except errors.ContainerError as exc:
        message = str(exc)
        assert "\n" not in message and not REPR.search(message), message
        assert exc.code == 125 and message.startswith("config.json: process"), message
        return
    uid, gid, _ = spec.user
    assert all(0 <= i <= 2**32 - 2 for i in (uid, gid, *spec.additional_gids))
    assert len(spec.additional_gids) <= int(open("/proc/sys/kernel/ngroups_max").read())
    assert spec.command and spec.command[0]
    assert "/" in spec.command[0] or dict(spec.env).get("PATH"), (spec.command, spec.env)
    assert spec.workdir.startswith("/")


def test_in_a_user_namespace_the_process_ids_must_be_mapped(bundle_dir, spec_config):
    """setuid, setgid and setgroups refuse an id the namespace does not map
    (EINVAL, once an OSError(22) from PID 1): refused at create, naming it.
    Control: the last mapped ids are taken."""
    config = base_config(spec_config)
    config["linux"]["namespaces"].append({"type": "user"})
    for key in ("uidMappings", "gidMappings"):
        config["linux"][key] = [{"containerID": 0, "hostID": 200000, "size": 65536}]
    config["process"]["user"].update(uid=65535, gid=65535, additionalGids=[0, 65535])
    spec, _ = load(bundle_dir, config)
    assert spec.user[:2] == (65535, 65535) and spec.additional_gids == (0, 65535)
    for field, value, mappings in (("uid", 65536, "uidMappings"), ("gid", 70000, "gidMappings"),
                                   ("additionalGids", [1, 65536], "gidMappings")):
        changed = json.loads(json.dumps(config))
        changed["process"]["user"][field] = value
        message = refusal(bundle_dir, changed)
        assert message == (f"config.json: process.user.{field} {value if field != 'additionalGids' else 65536}:"
                           f" not mapped in the container's user namespace (linux.{mappings})"), message
