"""A user's bridge attacked from outside: from its containers (root inside,
with and without added capabilities), from a hostile table in the user's
state directory, and by killing its helpers (the keeper, the connector) at
every moment. Each probe has its positive control: the same probe
succeeding where it should. The user and its harness are test_rootless's.
"""
import json
import os
import signal
import subprocess
import time

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from helpers import running_children, wait_for
# The module pytest imported (--import-mode=importlib names it so): its
# session's user is the one test_rootless's tests have (see rootless_user).
from tests.integration.test_rootless import rootless_user, user, subids, tun, lines  # noqa: F401


def table(user):
    try:
        return json.loads((user.state_dir() / "network.json").read_text())
    except (OSError, ValueError):
        return None


def keeper_of(user):
    state = table(user)
    return state["keeper"]["owner"][0] if state and "keeper" in state else None


def monitor_of(user, name):
    return json.loads(user.run("inspect", name).stdout)[0]["Monitor"][0]


def is_pid_one(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(l.split() for l in f if l.startswith("NSpid:"))[-1] == "1"
    except (OSError, StopIteration):
        return False


def connector_of(monitor):
    """The monitor's other child, once the holder (its child whose child is
    PID 1) is seen; not the keeper (the child of the first container's). The
    connector may have children of its own a moment (ip, nft)."""
    kids = [pid for pid in running_children(monitor) if pid not in keepers()]
    holders = [pid for pid in kids if any(is_pid_one(c) for c in running_children(pid))]
    return next(pid for pid in kids if pid not in holders) if len(kids) == 2 and len(holders) == 1 \
        else None


def one_line_125(result):
    err = result.stderr.decode()
    return (result.returncode == 125 and err.count("\n") == 1 and err.startswith("minicontainer: ")
            and "Traceback" not in err and "Error(" not in err)


# -- from inside a container ----------------------------------------------------

PING_SLIRP = "busybox ping -c 1 -W 2 10.0.2.2 >/dev/null 2>&1 && echo reached || echo unreached"


def test_a_container_without_outbound_reaches_nothing_beyond_the_bridge_even_with_net_admin(user, tun):
    """--outbound is what lets a container past the bridge: one without it
    that gives itself the default route (NET_ADMIN) still reaches nothing
    of slirp4netns's (10.0.2.2 answers pings from slirp itself: nothing
    leaves the machine; the ping needs NET_RAW, a raw socket being the
    other way past a missing route). Control: with --outbound the same ping answers;
    and the container without it still reaches its neighbours."""
    outbound = user.run("run", "-d", "--name", "out", "--network", "bridge", "--outbound",
                        "--cap-add", "NET_RAW", "/bin/busybox", "sleep", "60")
    assert outbound.returncode == 0, outbound.stderr
    try:
        control = user.run("exec", "out", "/bin/busybox", "sh", "-c", PING_SLIRP)
        assert lines(control) == ["reached"], control
        sneaky = user.run("run", "--network", "bridge", "--cap-add", "NET_ADMIN", "--cap-add", "NET_RAW", "/bin/busybox", "sh",
                          "-c", "busybox ip route add default via 10.88.0.1 && " + PING_SLIRP
                          + "; busybox ping -c 1 -W 2 10.88.0.2 >/dev/null && echo neighbour")
        assert sneaky.returncode == 0, sneaky.stderr
        assert lines(sneaky) == ["unreached", "neighbour"], sneaky
        # the address it had is the next one's: a container with --outbound there is let out
        again = user.run("run", "--network", "bridge", "--outbound", "--cap-add", "NET_RAW", "/bin/busybox", "sh", "-c",
                         PING_SLIRP)
        assert lines(again) == ["reached"], again
    finally:
        user.run("rm", "-f", "out")


def test_the_hosts_loopback_is_out_of_reach_with_outbound(user, tun):
    """slirp4netns runs with --disable-host-loopback: 10.0.2.2 is not the
    host's 127.0.0.1. Control: the host's listener answers on its loopback."""
    import socket
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    port = listener.getsockname()[1]
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass  # the control
        tried = user.run("run", "--network", "bridge", "--outbound", "--cap-add", "NET_RAW", "/bin/busybox", "sh", "-c",
                         f"{PING_SLIRP}; busybox nc -w 2 10.0.2.2 {port} </dev/null && echo connected"
                         " || echo refused")
        assert lines(tried) == ["reached", "refused"], tried
    finally:
        listener.close()


# -- a hostile table --------------------------------------------------------------

JSON = st.recursive(st.none() | st.booleans() | st.integers(-2, 2**63) | st.text(max_size=8)
                    | st.just("1"), lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=6)


def hostile_tables():
    start = st.integers(0, 2**40)
    owner = st.one_of(JSON, st.tuples(st.just("1"), start).map(list),
                      st.tuples(st.just(1), start).map(list))
    return st.one_of(
        JSON,
        st.fixed_dictionaries({"containers": JSON}),
        st.fixed_dictionaries({"containers": st.dictionaries(st.just("10.88.0.2"), owner)}),
        st.fixed_dictionaries({"keeper": JSON}),
        st.fixed_dictionaries({"keeper": st.fixed_dictionaries({"owner": owner, "maps": JSON})}),
        st.fixed_dictionaries({"names": JSON, "subnet": JSON}),
    )


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(state=hostile_tables())
def test_a_hostile_table_is_no_traceback(user, tun, state):
    """network.json is the user's own to edit: whatever it holds (wrong
    types, a keeper named by a pid written as a string), a run either works
    or says one line with 125; nothing of it is left behind. Control: the
    run on the bridge works when the table is absent (the first example
    proves nothing alone: each is checked)."""
    path = user.state_dir()
    if not path.exists():  # made as the user's first run makes it
        path.mkdir(mode=0o700)
        os.chown(path, user.uid, user.gid)
    (path / "network.json").write_text(json.dumps(state))
    os.chown(path / "network.json", user.uid, user.gid)
    result = user.run("run", "--network", "bridge", "/bin/busybox", "sh", "-c",
                      "busybox ip -4 -o addr show eth0")
    assert result.returncode == 0 or one_line_125(result), result
    assert "Traceback" not in result.stderr.decode(), result.stderr.decode()
    if result.returncode == 0:
        assert "inet 10.88.0." in result.stdout.decode(), result
    assert wait_for(lambda: not user.live_processes(), 5), user.live_processes()
    (path / "network.json").unlink(missing_ok=True)
    (path / "network.lock").unlink(missing_ok=True)
    control = user.run("run", "--network", "bridge", "/bin/probe", "pid")
    assert control.returncode == 0, control.stderr
    assert wait_for(lambda: not user.live_processes(), 5), user.live_processes()


def test_a_table_naming_a_process_not_the_users_joins_nothing(user, tun):
    """The user's table naming, as its keeper, a process of root's (pid 1,
    this machine's init) with its true start time and the user's maps: the
    holder may not join root's user namespace, and the run says so in one
    line; pid 1 is untouched. Control: the same run with the table removed."""
    first = user.run("run", "-d", "--name", "a", "--network", "bridge", "/bin/busybox", "sleep", "60")
    assert first.returncode == 0, first.stderr
    try:
        state = table(user)
        with open("/proc/1/stat") as f:
            init_start = int(f.read().rsplit(")", 1)[1].split()[19])
        state["keeper"]["owner"] = [1, init_start]
        (user.state_dir() / "network.json").write_text(json.dumps(state))
        forged = user.run("run", "--network", "bridge", "/bin/probe", "pid")
        assert one_line_125(forged) and forged.stderr.decode() == (
            "minicontainer: --network bridge: join the keeper's user namespace: setns: Operation not"
            " permitted\n"), forged
        with open("/proc/1/stat") as f:
            assert int(f.read().rsplit(")", 1)[1].split()[19]) == init_start
    finally:
        user.run("rm", "-f", "a")
    assert wait_for(lambda: not user.live_processes(), 5), user.live_processes()
    for name in ("network.json", "network.lock"):  # kept: the keeper it names is alive
        (user.state_dir() / name).unlink(missing_ok=True)
    control = user.run("run", "--network", "bridge", "/bin/probe", "pid")
    assert control.returncode == 0, control.stderr


# -- hostile input ------------------------------------------------------------------

def test_a_privileged_port_is_refused_before_anything_starts(user, tun):
    """-p 80 on the host is root's (ip_unprivileged_port_start): one line, 125,
    no keeper started, no table left. Control: a high port works."""
    with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as f:
        if int(f.read()) <= 80:
            pytest.skip("port 80 is open to users on this machine")
    refused = user.run("run", "--network", "bridge", "-p", "80:80", "/bin/probe", "pid")
    assert one_line_125(refused) and "--publish 127.0.0.1:80/tcp" in refused.stderr.decode(), refused
    assert not user.live_processes() and table(user) is None
    control = user.run("run", "--network", "bridge", "-p", "18093:80", "/bin/probe", "pid")
    assert control.returncode == 0, control.stderr


def test_addresses_run_out_in_one_line(user, tun):
    """A /29 has five addresses for containers: the sixth is refused in one
    line while they run, and so is another subnet; nothing is left once
    they end. Control: the five."""
    names = [f"c{n}" for n in range(5)]
    try:
        for name in names:
            started = user.run("run", "-d", "--name", name, "--network", "bridge", "--subnet",
                               "10.77.0.0/29", "/bin/busybox", "sleep", "60")
            assert started.returncode == 0, started.stderr
        sixth = user.run("run", "--rm", "--network", "bridge", "--subnet", "10.77.0.0/29", "/bin/probe",
                         "pid")
        assert one_line_125(sixth) and "no free address left" in sixth.stderr.decode(), sixth
        other = user.run("run", "--rm", "--network", "bridge", "/bin/probe", "pid")
        assert one_line_125(other) and "already serves" in other.stderr.decode(), other
    finally:
        user.run("rm", "-f", *names)
    assert wait_for(lambda: not user.live_processes(), 5), user.live_processes()
    assert wait_for(lambda: table(user) is None, 5)


NAMES = st.text(st.sampled_from("aZ0-_.:/ \n\té*"), min_size=0, max_size=70)  # argv has no NUL


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(alias=NAMES, name=NAMES)
def test_hostile_names_and_aliases_are_refused_or_resolved(user, tun, alias, name):
    """A user's --name and --network-alias: refused in one line with 125 before
    anything starts, or taken; never a traceback, nothing left."""
    result = user.run("run", "--rm", "--name", name or "n", "--network", "bridge",
                      "--network-alias", alias, "/bin/probe", "pid")
    assert result.returncode == 0 or one_line_125(result), result
    assert wait_for(lambda: not user.live_processes(), 5), user.live_processes()


# -- killed at every moment -------------------------------------------------------------

@pytest.mark.parametrize("victim", ["keeper", "connector", "monitor"])
def test_a_killed_helper_leaves_nothing_and_the_next_run_works(user, tun, victim):
    """SIGKILL of the keeper, of a container's connector, or of its monitor:
    the rest ends with it or at the container's end (rm -f), the table goes
    with the last of them, and the next bridge container works (the control)."""
    started = user.run("run", "-d", "--name", "k", "--network", "bridge", "/bin/busybox", "sleep", "60")
    assert started.returncode == 0, started.stderr
    try:
        monitor = monitor_of(user, "k")
        pid = wait_for({"keeper": lambda: keeper_of(user), "connector": lambda: connector_of(monitor),
                        "monitor": lambda: monitor}[victim], 10)
        assert pid, victim
        os.kill(pid, signal.SIGKILL)
        time.sleep(1)
    finally:
        user.run("rm", "-f", "k")
    assert wait_for(lambda: not user.live_processes(), 5), user.live_processes()
    assert wait_for(lambda: table(user) is None, 5), table(user)
    control = user.run("run", "--network", "bridge", "/bin/busybox", "sh", "-c",
                       "busybox ip -4 -o addr show eth0")
    assert control.returncode == 0 and "inet 10.88.0.2" in control.stdout.decode(), control
    assert wait_for(lambda: not user.live_processes(), 5), user.live_processes()


def test_two_first_containers_at_once_share_one_keeper(user, tun):
    """Two runs started together, neither finding a keeper: one keeper, one
    user namespace, two addresses; the second reaches the first."""
    a = user.popen("run", "--rm", "--name", "a", "--network", "bridge", "/bin/busybox", "sleep", "6")
    b = user.popen("run", "--rm", "--name", "b", "--network", "bridge", "/bin/busybox", "sleep", "6")
    try:
        def both():
            state = table(user)
            return state if state and len(state.get("containers", {})) == 2 else None
        state = wait_for(both, 15)
        assert state and sorted(state["containers"]) == ["10.88.0.2", "10.88.0.3"], state
        keepers = [p for p in user.live_processes() if p == state["keeper"]["owner"][0]]
        assert len(keepers) == 1
    finally:
        assert a.wait(30) == 0 and b.wait(30) == 0
    assert wait_for(lambda: not user.live_processes(), 5), user.live_processes()


# -- what the helpers carry -------------------------------------------------------------

def test_the_keeper_and_the_connector_carry_no_descriptor_of_the_callers(user, tun):
    """The keeper is a fresh interpreter: none of the caller's environment
    (a secret in it) and none of its descriptors (one left open across
    exec), and it is in no PID namespace of a container's; the connector
    none of the caller's descriptors. Control: the caller's own run (the
    supervisor) carries both."""
    secret_file = user.work / "secret"
    secret_file.write_text("s3cret\n")
    fd = os.open(secret_file, os.O_RDONLY)
    run = user.popen("run", "--network", "bridge", "/bin/busybox", "sleep", "30",
                     env=dict(user.env(), MC_SECRET="s3cret"), pass_fds=(fd,), stderr=subprocess.PIPE)
    try:
        keeper = wait_for(lambda: keeper_of(user), 15)
        connector = wait_for(lambda: connector_of(run.pid), 10)
        assert keeper and connector

        def carries(pid):
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = b"MC_SECRET=s3cret" in f.read()
            fds = []
            for n in os.listdir(f"/proc/{pid}/fd"):
                try:  # one closed between the listing and the look (ip, nft, a pipe) is none
                    fds.append(os.readlink(f"/proc/{pid}/fd/{n}"))
                except FileNotFoundError:
                    pass
            return env, str(secret_file) in fds
        assert carries(run.pid) == (True, True)  # the control
        assert carries(keeper) == (False, False)
        # The connector is the supervisor's fork: its memory and environment
        # (unseen by any container: it is in no PID namespace of theirs), but
        # none of the caller's descriptors.
        assert carries(connector) == (True, False)
        with open(f"/proc/{keeper}/status") as f:
            assert "NSpid:\t%d\n" % keeper in f.read()
    finally:
        os.close(fd)
        run.kill()
        assert run.wait() == -signal.SIGKILL, run.stderr.read()
        run.stderr.close()


# -- the shared user namespace ---------------------------------------------------------

KEYS_C = r"""
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>
/* keys add NAME VALUE: a user key in the user keyring (@u); keys read NAME: print it. */
int main(int argc, char **argv) {
    if (argc == 4 && !strcmp(argv[1], "add")) {
        long id = syscall(SYS_add_key, "user", argv[2], argv[3], strlen(argv[3]), -4 /* @u */);
        if (id < 0) { perror("add_key"); return 1; }
        puts("added");
        return 0;
    }
    if (argc == 3 && !strcmp(argv[1], "read")) {
        char buf[256];
        long id = syscall(SYS_keyctl, 10 /* SEARCH */, -4, "user", argv[2], 0);
        if (id < 0) { puts("none"); return 0; }
        long n = syscall(SYS_keyctl, 11 /* READ */, id, buf, sizeof buf - 1);
        if (n < 0) { puts("unreadable"); return 0; }
        buf[n] = 0;
        puts(buf);
        return 0;
    }
    return 2;
}
"""


def test_what_the_shared_user_namespace_shares_a_keyring_only_unconfined(user, tun, tmp_path):
    """A user's bridge containers share the keeper's user namespace, and with
    it the user keyring of root inside (kernel keyrings are not namespaced
    otherwise): with seccomp=unconfined one container reads a key another
    put there, as in rootless podman (one user namespace for all). The
    default seccomp filter refuses the keyring calls: nothing is shared then.
    Control: a container off the bridge (a user namespace of its own) sees
    no such key."""
    from helpers import build_static
    source = tmp_path / "keys.c"
    source.write_text(KEYS_C)
    target = user.work / "newroot" / "bin" / "keys"
    build_static(source, target)
    os.chown(target, user.uid, user.gid)
    target.chmod(0o755)
    started = user.run("run", "-d", "--name", "ka", "--network", "bridge", "--security-opt",
                       "seccomp=unconfined", "/bin/busybox", "sleep", "60")
    assert started.returncode == 0, started.stderr
    try:
        added = user.run("exec", "ka", "/bin/keys", "add", "mc-secret", "s3cret")
        assert lines(added) == ["added"], added
        found = {}
        for label, args in (("bridge", ("--network", "bridge")), ("apart", ("--network", "none"))):
            result = user.run("run", *args, "--security-opt", "seccomp=unconfined", "/bin/keys",
                              "read", "mc-secret")
            found[label] = lines(result)
        confined = user.run("run", "--network", "bridge", "/bin/keys", "read", "mc-secret")
        print(found, lines(confined))
        assert found["bridge"] == ["s3cret"] and found["apart"] == ["none"], found
        assert lines(confined) == ["none"], confined
    finally:
        user.run("rm", "-f", "ka")


@pytest.mark.parametrize("name", ["network.json", "network.lock"])
@pytest.mark.parametrize("kind", ["fifo", "directory", "symlink"])
def test_a_table_file_of_another_kind_is_no_hang(user, tun, name, kind):
    """The table or its lock, made a FIFO, a directory or a symlink (to a file
    of the user's) in the user's state directory: a run works or says one
    line with 125, within its time, and the file linked to is untouched.
    Control: the same run once the file is removed."""
    path = user.state_dir()
    path.mkdir(mode=0o700, exist_ok=True)
    os.chown(path, user.uid, user.gid)
    target = user.work / "elsewhere"
    target.write_text("untouched\n")
    planted = path / name
    if kind == "fifo":
        os.mkfifo(planted)
    elif kind == "directory":
        planted.mkdir()
    else:
        planted.symlink_to(target)
    os.lchown(planted, user.uid, user.gid)
    try:
        try:
            result = user.run("run", "--network", "bridge", "/bin/probe", "pid", timeout=20)
        except subprocess.TimeoutExpired:
            result = None
        assert wait_for(lambda: not user.live_processes(), 10), user.live_processes()
        assert result is not None, "it hung"
        assert result.returncode == 0 or one_line_125(result), result
        print(kind, name, result.returncode, result.stderr.decode().strip())
        assert target.read_text() == "untouched\n"
    finally:
        if planted.is_dir() and not planted.is_symlink():
            planted.rmdir()
        else:
            planted.unlink(missing_ok=True)
        for leftover in ("network.json", "network.lock", "network.json.tmp"):
            (path / leftover).unlink(missing_ok=True)
    control = user.run("run", "--network", "bridge", "/bin/probe", "pid")
    assert control.returncode == 0, control.stderr


@pytest.mark.parametrize("subnet", ["10.0.2.0/24", "10.0.0.0/8", "127.0.0.0/8", "0.0.0.0/0",
                                    "224.0.0.0/24", "255.255.255.248/29"])
def test_a_hostile_subnet_works_or_is_refused_in_one_line(user, tun, subnet):
    """--subnet for a user: the keeper's bridge is the user's alone, so an odd
    one (slirp4netns's own 10.0.2.0/24, loopback's, everything) harms only
    the user's network: it works or is refused in one line, never hangs,
    and leaves nothing. Control: the default subnet afterwards."""
    try:
        result = user.run("run", "--network", "bridge", "--outbound", "--subnet", subnet, "/bin/probe",
                          "pid", timeout=30)
    except subprocess.TimeoutExpired:
        result = None
    assert wait_for(lambda: not user.live_processes(), 10), user.live_processes()
    assert result is not None, "it hung"
    print(subnet, result.returncode, result.stderr.decode().strip())
    assert result.returncode == 0 or one_line_125(result), result
    assert wait_for(lambda: table(user) is None, 5), table(user)
    control = user.run("run", "--network", "bridge", "/bin/probe", "pid")
    assert control.returncode == 0, control.stderr


def keepers():
    """The keepers that run: processes started as one, whose parent is none
    (its children are forks of it until they exec)."""
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"keeper_main" in f.read():
                    with open(f"/proc/{pid}/stat", "rb") as f:
                        found[int(pid)] = int(f.read().rsplit(b")", 1)[1].split()[1])
        except OSError:
            pass
    return [pid for pid, parent in found.items() if parent not in found]


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.2])
def test_a_keeper_killed_as_it_starts_leaves_nothing(user, tun, delay):
    """The keeper SIGKILLed as soon as it is seen (and a little later): the run
    that started it fails in one line or goes on without it; either way
    slirp4netns and the connector go. A keeper killed once its last
    container has ended leaves the table (naming it, and no container: it
    would have removed it), which the next run sweeps. Control: the next run."""
    before = set(keepers())
    run = user.popen("run", "--network", "bridge", "/bin/probe", "pid",
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        keeper = wait_for(lambda: next(iter(set(keepers()) - before), None), 10)
        assert keeper
        time.sleep(delay)
        os.kill(keeper, signal.SIGKILL)
        out, err = run.communicate(timeout=30)
        print(delay, run.returncode, err.decode().strip())
        assert run.returncode == 0 or (run.returncode == 125 and err.decode().count("\n") == 1
                                       and "Traceback" not in err.decode()), err
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert wait_for(lambda: not user.live_processes(), 10), user.live_processes()
    left = table(user)
    assert left is None or (not left["containers"] and left["keeper"]["owner"][0] == keeper), left
    control = user.run("run", "--network", "bridge", "/bin/probe", "pid")
    assert control.returncode == 0, control.stderr
    assert wait_for(lambda: table(user) is None, 5), table(user)
