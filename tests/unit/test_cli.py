"""Unit tests that need no root: messages, exit codes, parsing, signals."""
import os
import signal

import pytest

import minicontainer as mc
from _minicontainer import constants, container, errors, options, procs, supervise


def test_error_prints_what_failed_then_why():
    assert str(errors.ContainerError("mount /proc", errno=1)) == "mount /proc: Operation not permitted"
    assert str(errors.ContainerError("root x", "not a directory")) == "root x: not a directory"
    assert errors.ContainerError("x").code == constants.EXIT_OWN_FAILURE


def test_error_from_oserror_keeps_errno():
    exc = errors.ContainerError.from_os("deploy a", FileNotFoundError(2, "No such file or directory"))
    assert exc.errno == 2 and str(exc) == "deploy a: No such file or directory"


@pytest.mark.parametrize("status, code", [
    (0, 0), (1 << 8, 1), (42 << 8, 42), (255 << 8, 255),
    (signal.SIGKILL, 137), (signal.SIGTERM, 143), (signal.SIGINT, 130),
])
def test_exit_code_is_the_status_or_128_plus_signal(status, code):
    assert procs.exit_code(status) == code


def test_version_exits_zero(capsys):
    assert mc.main(["--version"]) == 0
    assert mc.__version__ in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["run", "--bogus", "x"], "No such option '--bogus'"),
    (["pull"], "Missing argument"),
    (["deploy"], "Missing argument"),
    (["nosuchcommand"], "No such command"),
])
def test_bad_usage_is_one_line_and_125(capsys, argv, message):
    assert mc.main(argv) == 125
    err = capsys.readouterr().err
    assert err.startswith("minicontainer: ") and message in err
    assert err.count("\n") == 1


def test_run_without_a_command_or_an_image_is_one_line_and_125(tmp_path, capsys):
    for name in ("proc", "dev", "sys"):
        (tmp_path / name).mkdir()
    assert mc.main(["run", "--root", str(tmp_path)]) == 125
    assert capsys.readouterr().err == ("minicontainer: run: no command given, and the root has"
                                       " no image that names one (see pull)\n")


@pytest.mark.parametrize("make, why", [
    (lambda p: p / "missing", "No such file or directory"),
    (lambda p: (p / "file").write_text("") or p / "file", "not a directory"),
    (lambda p: (p / "link").symlink_to(p) or p / "link", "is a symlink"),
    (lambda p: "/", "is the host's /"),
])
def test_unfit_roots_are_refused(tmp_path, capsys, make, why):
    assert mc.main(["run", "--root", str(make(tmp_path)), "true"]) == 125
    err = capsys.readouterr().err
    assert why in err and err.count("\n") == 1


@pytest.mark.parametrize("name", ["proc", "dev", "sys"])
def test_root_with_a_symlinked_mount_point_is_refused(tmp_path, capsys, name):
    (tmp_path / name).symlink_to("/")
    assert mc.main(["run", "--root", str(tmp_path), "true"]) == 125
    assert f"its {name} is a symlink" in capsys.readouterr().err


def test_root_comes_from_the_environment(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MINICONTAINER_ROOT", str(tmp_path / "elsewhere"))
    assert mc.main(["run", "true"]) == 125
    assert "elsewhere" in capsys.readouterr().err


def test_run_options_stop_at_the_command():
    ctx = mc.run_command.make_context("run", ["--root", "r", "ls", "-la", "--help", "--root", "x"])
    assert ctx.params["root"] == "r"
    assert ctx.params["command"] == ("ls", "-la", "--help", "--root", "x")


def test_relative_command_is_found_in_workdir_then_bin(tmp_path, monkeypatch):
    monkeypatch.setattr(container, "DEPLOY_DIR", str(tmp_path / "bin"))
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "app").write_text("")
    assert container.resolve_command("./app", str(tmp_path / "w")) == os.path.join(tmp_path, "bin", "./app")
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "app").write_text("")
    assert container.resolve_command("./app", str(tmp_path / "w")) == os.path.join(tmp_path, "w", "./app")
    assert container.resolve_command("ls", "/") == "ls"
    assert container.resolve_command("/bin/ls", "/") == "/bin/ls"


def test_signal_disposition_reads_the_kernel_masks():
    old = signal.signal(signal.SIGUSR1, lambda *a: None)
    try:
        assert supervise.signal_disposition(os.getpid(), signal.SIGUSR1) == "caught"
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        assert supervise.signal_disposition(os.getpid(), signal.SIGUSR1) == "ignored"
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)
        assert supervise.signal_disposition(os.getpid(), signal.SIGUSR1) == "default"
    finally:
        signal.signal(signal.SIGUSR1, old)


@pytest.mark.parametrize("how, sent, applied", [
    ("caught", [signal.SIGTERM], None),              # PID 1 handles it: pass it on
    ("ignored", [], None),                           # PID 1 chose to ignore it
    ("default", [signal.SIGKILL], signal.SIGTERM),   # the kernel would drop it: apply it
])
def test_forward_respects_pid1_signal_rule(monkeypatch, how, sent, applied):
    kills = []
    monkeypatch.setattr(supervise, "signal_disposition", lambda pid, sig: how)
    monkeypatch.setattr(supervise, "send", lambda pidfd, sig: kills.append(sig))
    assert supervise.forward(signal.SIGTERM, 1234, 99) == applied
    assert kills == sent


def test_forward_to_own_init_always_passes_signals(monkeypatch):
    kills = []
    monkeypatch.setattr(supervise, "send", lambda pidfd, sig: kills.append(sig))
    monkeypatch.setattr(supervise, "signal_disposition", lambda pid, sig: "default")
    assert supervise.forward(signal.SIGTERM, 1234, 99, own_init=True) is None
    assert supervise.forward(signal.SIGINT, 1234, 99, own_init=True) is None
    assert kills == [signal.SIGTERM, signal.SIGINT]


@pytest.mark.parametrize("option", [("--uidmap", "0:1:1"), ("--gidmap", "0:1:1"), ("--userns", "host")])
def test_a_user_may_not_choose_the_user_namespace(tmp_path, capsys, monkeypatch, option):
    """A user's container always maps the user's own ids (and its subordinate
    ranges): root alone picks maps, or the host's namespace."""
    for name in ("proc", "dev", "sys"):
        (tmp_path / name).mkdir()
    monkeypatch.setattr(mc.os, "geteuid", lambda: 1000)
    assert mc.main(["run", "--root", str(tmp_path), *option, "true"]) == 125
    err = capsys.readouterr().err
    assert err.startswith(f"minicontainer: {option[0]}") and len(err.splitlines()) == 1, err


def test_a_pid_1_waiting_in_sigwaitinfo_counts_as_catching():
    """sigwaitinfo unblocks what it waits for, so SigBlk alone would say 'default'."""
    import subprocess
    import sys
    code = ("import signal, sys; signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1]); "
            "print('ready', flush=True); signal.sigwaitinfo([signal.SIGUSR1])")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"ready\n"
        import time
        for _ in range(100):
            with open(f"/proc/{proc.pid}/wchan") as f:
                if "sigtimedwait" in f.read():
                    break
            time.sleep(0.01)
        assert supervise.signal_disposition(proc.pid, signal.SIGUSR1) == "caught"
        # The waited-for set is not visible: any signal counts as caught then,
        # so an init-like PID 1 is never killed for a signal it may be awaiting.
        assert supervise.signal_disposition(proc.pid, signal.SIGUSR2) == "caught"
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def test_a_bug_is_still_one_line_and_125(capsys, monkeypatch):
    def broken(root):
        raise RuntimeError("boom")

    monkeypatch.setattr(options, "check_run_root", broken)
    assert mc.main(["run", "true"]) == 125
    assert capsys.readouterr().err == "minicontainer: internal error: RuntimeError('boom')\n"
