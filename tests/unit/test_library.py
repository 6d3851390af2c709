"""The library's arguments, without a container: subprocess's misuses and
wrong Python types are refused as subprocess refuses them, before anything
is started; the command line's own checks answer in its words."""
import os
import subprocess

import pytest
from hypothesis import given, settings, strategies as st

import minicontainer as mc
from _minicontainer import errors, library


def test_the_public_names_are_the_librarys_and_subprocess_s():
    assert mc.run is library.run and mc.Popen is library.Popen
    assert mc.CompletedProcess is subprocess.CompletedProcess
    assert (mc.PIPE, mc.DEVNULL, mc.STDOUT) == (subprocess.PIPE, subprocess.DEVNULL, subprocess.STDOUT)
    assert mc.TimeoutExpired is subprocess.TimeoutExpired
    assert mc.CalledProcessError is subprocess.CalledProcessError
    assert mc.ContainerError is errors.ContainerError and mc.ContainerError.__module__ == "minicontainer"
    assert "minicontainer.run" in mc.run.__doc__ or "subprocess.run" in mc.run.__doc__
    with pytest.raises(AttributeError):
        mc.no_such_name


def test_importing_the_front_loads_no_library_until_it_is_used():
    code = ("import sys, minicontainer; print('_minicontainer.library' in sys.modules);"
            " minicontainer.run; print('_minicontainer.library' in sys.modules)")
    out = subprocess.run([os.sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=os.path.dirname(mc.__file__), check=True).stdout
    assert out.split() == ["False", "True"]


@pytest.mark.parametrize("kwargs, error", [
    ({"input": b"x", "stdin": subprocess.PIPE}, "stdin and input arguments may not both be used."),
    ({"capture_output": True, "stdout": subprocess.PIPE},
     "stdout and stderr arguments may not be used with capture_output."),
])
def test_subprocess_misuses_are_value_errors_as_there(tmp_path, kwargs, error):
    with pytest.raises(ValueError, match=error):
        mc.run(["true"], root=tmp_path, **kwargs)
    with pytest.raises(ValueError, match=error):  # control: subprocess says the same
        subprocess.run(["true"], **kwargs)


@pytest.mark.parametrize("kwargs", [
    {"memory": [64]}, {"memory": True}, {"cpus": "half"}, {"pids_limit": 2.5}, {"user": 1.5},
    {"env": {"A": 1}}, {"env": 5}, {"cap_add": [3]}, {"stop_timeout": "10"},
])
def test_a_wrong_type_is_a_type_error_before_anything_starts(tmp_path, kwargs):
    with pytest.raises(TypeError):
        mc.run(["true"], root=tmp_path / "never-looked-at", **kwargs)


@pytest.mark.parametrize("args", [5, [b"ok", 7], None])
def test_args_must_be_strings_bytes_or_paths(tmp_path, args):
    with pytest.raises(TypeError):
        mc.run(args, root=tmp_path)


def test_stdio_takes_what_subprocess_takes(tmp_path):
    with pytest.raises(TypeError, match="stdout must be PIPE, DEVNULL, a file"):
        mc.Popen(["true"], root=tmp_path, stdout="a file name")


def test_options_become_the_command_lines(tmp_path):
    """The library's names are the long options': the same values reach run_spec."""
    seen = {}

    def fake(root, command, **options):
        seen.update(options, root=root, command=command)
        raise errors.ContainerError("stop here")

    original, library.run_spec = library.run_spec, fake
    try:
        with pytest.raises(errors.ContainerError):
            mc.run(["sh", b"-c", tmp_path], root=tmp_path, env={"A": "1", b"B": b"2"}, memory=1 << 26,
                   cpus=0.5, volumes=[("/h", "/c", "ro"), "/x:/y"], ulimits="nofile=10",
                   user=1000, cap_drop="ALL")
    finally:
        library.run_spec = original
    assert seen["command"] == ["sh", "-c", str(tmp_path)] and seen["root"] == str(tmp_path)
    assert seen["env"] == ("A=1", "B=2") and seen["memory"] == str(1 << 26) and seen["cpus"] == 0.5
    assert seen["volume"] == ("/h:/c:ro", "/x:/y") and seen["ulimit"] == ("nofile=10",)
    assert seen["user"] == "1000" and seen["cap_drop"] == ("ALL",)


def test_an_env_name_with_an_equals_sign_is_refused_in_one_line(tmp_path):
    with pytest.raises(errors.ContainerError, match="a variable's name holds no '='"):
        mc.run(["true"], root=tmp_path, env={"A=B": "x"})


OPTIONS = ("env", "memory", "memory_swap", "cpus", "cpu_shares", "pids_limit", "user", "volumes",
           "tmpfs", "cap_add", "cap_drop", "workdir", "hostname", "ulimits", "network", "entrypoint",
           "publish", "security_opt", "uidmap", "stop_timeout", "env_file", "device",
           "network_alias")


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.binary(), st.integers(), st.floats(), st.none(), st.booleans(),
                 st.lists(st.one_of(st.text(), st.binary(), st.integers(),
                                    st.tuples(st.text(), st.text())), max_size=3),
                 st.dictionaries(st.one_of(st.text(), st.binary()), st.one_of(st.text(), st.integers()),
                                 max_size=3)))
def test_any_value_of_any_option_is_refused_cleanly_or_reaches_run_spec_well_typed(value):
    """Whatever a caller passes, it is refused with a TypeError or ValueError
    (Python's own, for a value of the wrong kind) or the command line's one
    line, or it reaches the command line's run_spec as the types its options
    have (str, numbers, tuples of str): never anything else."""
    reached = []

    def checking(root, command, **options):
        for name, got in options.items():
            assert got is None or isinstance(got, (str, int, float)) or (
                isinstance(got, tuple) and all(isinstance(item, str) for item in got)), (name, got)
        reached.append(options)
        raise errors.ContainerError("checked")

    original, library.run_spec = library.run_spec, checking
    try:
        for name in OPTIONS:
            try:
                mc.run(["true"], root="/nonexistent", **{name: value})
            except errors.ContainerError as exc:
                assert "\n" not in str(exc) and exc.code == 125
            except (TypeError, ValueError):
                pass
    finally:
        library.run_spec = original


def test_the_helper_imports_the_callers_own_package_from_the_callers_path(monkeypatch, tmp_path):
    """The helper runs in "/": a relative entry of the caller's path ("" of
    `python -c`) meant "/" there, and the helper loaded whatever copy of
    minicontainer was installed on the rest of the path, not the caller's."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.path", ["", "rel", "/abs"])
    path = library.helper_path()
    assert path[0] == os.path.dirname(os.path.dirname(os.path.abspath(library.__file__)))
    assert path[1:] == [str(tmp_path), str(tmp_path / "rel"), "/abs"]


def test_a_default_containers_seccomp_program_is_the_one_the_helper_built_ahead(tmp_path, monkeypatch):
    """Built in a freshly forked spare, the default policy's program costs
    about 2 ms of copied pages; the helper builds it once, keyed by the
    policy's bytes as the caller sends them. A change to either side that
    made the two differ would cost every container those 2 ms, silently."""
    from _minicontainer import helper
    sent = []

    def capture(payload, fds):
        sent.append(payload)
        raise errors.ContainerError("stop here")

    monkeypatch.setattr(library, "submit", capture)
    for options in ({}, {"cap_add": ["SYS_ADMIN"]}):
        with pytest.raises(errors.ContainerError, match="stop here"):
            mc.run(["true"], root=tmp_path, **options)
    import pickle
    heads = [int.from_bytes(payload[:4], os.sys.byteorder) for payload in sent]
    policies = [payload[4:4 + head] for payload, head in zip(sent, heads)]
    built = helper.prebuilt_programs()
    assert policies[0] in built
    assert built[policies[0]][0] == pickle.loads(policies[0])[0]
    assert policies[1] not in built  # control: another policy is not taken for it
    # The policy goes once, apart: the spec in the request's body has none.
    for payload, head in zip(sent, heads):
        assert pickle.loads(payload[4 + head:])[0].seccomp is None
