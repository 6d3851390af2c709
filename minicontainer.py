"""minicontainer: a small Linux container tool.

`deploy` copies programs into a container root (default ./newroot); `run`
starts a command inside that root as PID 1 of its own PID and mount
namespaces, behind pivot_root, with a fresh /proc, and passes its exit
status through the way docker does; `run -d` keeps it in the background,
and docker's verbs (ps, logs, exec, stop, kill, wait, rm, inspect, cp, top)
see to it.
It is also an OCI runtime with runc's command line (create, start, state,
kill, delete, ...), so podman and containerd can drive it: a bundle's
config.json becomes the same Spec that run's options make. `pull` fills a
root from a registry, and `run` then follows the image's configuration. An
ordinary user runs the same way, without root: in a user namespace of its
own in which it is root, with slirp4netns for a private network.

This module is the front: the click commands (deploy and run first, as the
tutorial's two, then docker's verbs, then runc's) and main. The machinery
lives behind it in _minicontainer/, one module per part, in the order of a
container's life; each opens with what it owns and what it may import, and
imports run one way, from here down:

    constants     kernel names, docker's codes, default policies
    errors        ContainerError: "what failed: why", with its errno
    syscalls      the only ctypes: mount API, openat2, setns, seccomp, ...
    procs         pid + start time, guarded forks, exit codes, the report socket
    spec          Spec: the one description every door fills
    imageformat   media types, platforms, layers: read by deploy and pull
    rootfs        root filesystems and deploy: plan, check, write inside the root
    images        pull: references, the registry, the blob cache (pull only)
    cgroups       limits: cgroups v2 and v1, made before the fork
    network       the bridge, addresses, veths, ports; slirp4netns (bridge only)
    state         the state directory, entries, logs, the OCI state of an entry
    oci           config.json read into a Spec (the OCI verbs only)
    container     PID 1's set-up, in order, from container_main; exec's way in
    supervise     supervisor and holder: the fork, signals, waits, create's gate
    options       run's options checked and turned into a Spec's fields
    lifecycle     run -d's monitor and the verbs: stop, kill, wait, rm, inspect, top
    transfer      cp: files into and out of a container's root, by descriptor

A `run` goes: run (here) -> options and spec -> rootfs.check_run_root ->
supervise.run_container (cgroups made, network allocated) -> the holder
unshares and forks PID 1 -> container.container_main's steps -> exec.
"""

import gc

# No cyclic garbage collection while the interpreter and click load (it
# spares their imports some 2 ms of collections), nor in the short-lived
# processes of a container's start (see run_container). deploy and pull,
# which may hold many objects for long, turn it back on.
gc.disable()

import os  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402

import click  # noqa: E402

from _minicontainer import __version__

# The library's public names (see _minicontainer/library.py): loaded on first
# use, so the command line never pays for them.
LIBRARY = ("run", "Popen", "CompletedProcess", "TimeoutExpired", "CalledProcessError",
           "PIPE", "DEVNULL", "STDOUT")
__all__ = list(LIBRARY) + ["ContainerError", "main"]
if TYPE_CHECKING := False:  # what a type checker sees of them
    from _minicontainer.library import (  # noqa: F401
        DEVNULL, PIPE, STDOUT, CalledProcessError, CompletedProcess, Popen, TimeoutExpired, run,
    )


def __getattr__(name):
    if name in LIBRARY:
        from _minicontainer import library
        return getattr(library, name)
    raise AttributeError(f"module 'minicontainer' has no attribute {name!r}")
from _minicontainer.constants import (
    CLONE_NEWUSER, DEFAULT_HOSTNAME, DEFAULT_ROOT, DEFAULT_STOP_TIMEOUT, EXIT_NOT_FOUND,
    EXIT_OWN_FAILURE, ROOT_ENV,
)
from _minicontainer.errors import ContainerError, one_line
from _minicontainer.procs import process_start
from _minicontainer.spec import BRIDGE, DEFAULT_SUBNET, Spec, capability_numbers, publish_text
from _minicontainer.rootfs import deploy_paths, describe
from _minicontainer.cgroups import Cgroup, write_resources
from _minicontainer.state import (
    DEAD, EXITED, LIVE, LOG_MAX, OCI_VERSION, RESTARTING, RUNNING,
    STATE_DIR, STATE_ENV,
    Store, human_duration, now_iso, oci_state, oci_status, parse_iso, read_records,
)
from _minicontainer.container import run_hooks
from _minicontainer.supervise import create_container, exec_container, run_container, signal_owner
from _minicontainer.options import (
    Number, SHARE, check_container_path, check_preserved_fds, parse_env, resolve_user, run_spec,
    terminal_size,
)
from _minicontainer.lifecycle import (
    cgroup_controllers_of, container_processes, container_root_fd, container_summary, container_top,
    delete_container, describe_status, exec_spec, freeze, inspect_data, is_signal, kill_container,
    kill_every_process, parse_signal, print_tabbed, print_table, remove_container, run_detached,
    stop_container, wait_container, wait_healthy,
)


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------

root_option = click.option(
    "--root", metavar="DIR", envvar=ROOT_ENV, default=DEFAULT_ROOT, show_default=True,
    help=f"Container root directory (or set {ROOT_ENV}).")


@click.group(context_settings={"help_option_names": ["-h", "--help"]},
             epilog="Documentation: README.md, and docs/ in the repository, one page an area:"
                    " docs/run.md (every run option, exit status, signals), docs/services.md"
                    " (run -d, ps, logs, exec, stop, rm, cp, top), docs/deploy-and-pull.md,"
                    " docs/networking.md, docs/limits.md, docs/rootless.md,"
                    " docs/oci-runtime.md, docs/security.md.")
@click.version_option(__version__, prog_name="minicontainer",
                      message=f"%(prog)s version %(version)s\nspec: {OCI_VERSION}")
@click.option("--root", "state", metavar="DIR", envvar=STATE_ENV,
              help=f"The state directory, where containers are kept [default: {STATE_DIR};"
                   f" or set {STATE_ENV}].")
@click.option("--log", metavar="FILE", help="Also write errors to FILE (runc's option).")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="json: one JSON object a line, as runc writes them.")
@click.option("--debug", is_flag=True, help="Write what each verb does to the --log file too.")
@click.option("--systemd-cgroup", is_flag=True,
              help="Refused: minicontainer manages cgroups itself (cgroupfs).")
def cli(state, log, log_format, debug, systemd_cgroup):
    """A small Linux container: deploy programs into a root, run them isolated."""
    global LOG
    LOG = (log, log_format, debug) if log else None
    if systemd_cgroup:
        raise ContainerError("--systemd-cgroup", "not supported: minicontainer manages cgroups"
                             " itself, in cgroupfs (use cgroup_manager=cgroupfs)")


def store():
    """The state directory the command line names (the group's --root),
    checked before a verb reads anything of it (and again on every read)."""
    return Store(click.get_current_context().find_root().params.get("state")).check()


@cli.command()
@root_option
@click.option("--to", metavar="DIR",
              help="Directory inside the root to deploy into [default: /bin; / for archives].")
@click.option("--no-deps", is_flag=True, help="Do not copy the shared libraries a program needs.")
@click.option("--link", is_flag=True,
              help="Hard-link files instead of copying them (same filesystem only; the"
                   " container then shares those files with the host).")
@click.option("--dry-run", is_flag=True, help="List what would be done; change nothing.")
@click.argument("paths", nargs=-1, required=True, metavar="PATH...")
def deploy(root, to, no_deps, link, dry_run, paths):
    """Copy programs (with the libraries they need), directories, root filesystem
    archives and images into the container root (made, with the directories
    `run` needs, if it is missing)."""
    gc.enable()
    missing = not os.path.lexists(root)
    writer, plan, made = deploy_paths(root, paths, to, deps=not no_deps, link=link,
                                      dry_run=dry_run, progress=sys.stderr.isatty())
    for path in plan.skipped:
        click.echo(f"minicontainer: warning: skipped {path}: not a file, directory or symlink",
                   err=True)
    for warning in writer.warnings:
        click.echo(f"minicontainer: warning: {warning}", err=True)
    if plan.foreign:
        click.echo(f"minicontainer: warning: {plan.foreign} archive member"
                   f"{'s' * (plan.foreign != 1)} of other owners made yours: only root keeps"
                   " owners (in your containers, your files belong to root)", err=True)
    if dry_run:
        for op in plan.ops:
            click.echo(describe(op))
        for name in made:
            click.echo(f"mkdir /{name} (the skeleton)")
        return 0
    if missing:
        click.echo(f"minicontainer: made the root {root}, with /{', /'.join(made)}", err=True)
    files, links = writer.files, writer.links
    click.echo(f"deployed {files} file{'s' * (files != 1)} ({writer.size} bytes), {links} "
               f"link{'s' * (links != 1)}, {len(plan.skipped)} skipped into {root}")
    return 0


@cli.command(name="run", context_settings={"allow_interspersed_args": False})
@root_option
@click.option("--hostname", metavar="NAME",
              help=f"Hostname inside the container [default: {DEFAULT_HOSTNAME}].")
@click.option("--network", "--net", type=click.Choice(["none", "host", "bridge", "private"]),
              default="none", show_default=True,
              help="none: own namespace with only lo; host: the host's; bridge (or private):"
                   " an address on minicontainer's bridge.")
@click.option("--subnet", metavar="CIDR", default=DEFAULT_SUBNET, show_default=True,
              help="The bridge's subnet, with --network bridge.")
@click.option("--publish", "-p", multiple=True, metavar="[IP:]HOST_PORT:PORT[/udp]",
              help="With --network bridge: relay a host port (on 127.0.0.1 by default) to the"
                   " container; /tcp (the default) or /udp.")
@click.option("--outbound", is_flag=True,
              help="With --network bridge: let the container reach beyond the host (masquerade).")
@click.option("--network-alias", multiple=True, metavar="NAME",
              help="With --network bridge (root's): another name the bridge's containers reach"
                   " this one by, as they do by --name.")
@click.option("--ipc", type=SHARE, default="private", show_default=True,
              help="IPC namespace (System V IPC, POSIX queues).")
@click.option("--uts", type=SHARE, default="private", show_default=True,
              help="UTS namespace (hostname).")
@click.option("--cgroupns", type=SHARE, default="private", show_default=True,
              help="cgroup namespace (the view of /proc/self/cgroup).")
@click.option("--userns", type=SHARE,
              help="User namespace: host for root by default; private (always, for a user):"
                   " the container's root is an unprivileged id outside.")
@click.option("--uidmap", multiple=True, metavar="CONTAINER:HOST:SIZE",
              help="With --userns private (root only): uids to map [default: root's"
                   " /etc/subuid range].")
@click.option("--gidmap", multiple=True, metavar="CONTAINER:HOST:SIZE",
              help="With --userns private (root only): gids to map [default: as --uidmap].")
@click.option("--init", is_flag=True,
              help="Run a small init as PID 1 that reaps zombies and forwards signals.")
@click.option("--preserve-fds", type=Number(int, 0), default=0, metavar="N",
              help="Pass descriptors 3 to 3+N-1 on to the command.")
@click.option("--security-opt", multiple=True, metavar="OPT",
              help="systempaths=unconfined: leave /proc and /sys unmasked;"
                   " seccomp=unconfined: as --seccomp unconfined.")
@click.option("--cap-add", multiple=True, metavar="CAP",
              help="Add a capability to the default set (or ALL).")
@click.option("--cap-drop", multiple=True, metavar="CAP",
              help="Drop a capability from the default set (or ALL).")
@click.option("--seccomp", type=click.Choice(["default", "unconfined"]), default="default",
              show_default=True, help="The seccomp filter; unconfined turns it off.")
@click.option("--user", "-u", metavar="USER[:GROUP]",
              help="Run as this user: a name from the root's /etc/passwd, or UID[:GID].")
@click.option("--memory", "-m", metavar="SIZE", help="Memory limit, e.g. 64m, 1g (at least 6m).")
@click.option("--memory-swap", metavar="SIZE",
              help="Memory plus swap limit (needs --memory); -1 for unlimited swap.")
@click.option("--pids-limit", type=Number(int), metavar="N", help="Most processes at once; 0 or -1: no limit.")
@click.option("--cpus", type=Number(float), metavar="N", help="CPU time as a number of CPUs, e.g. 0.5.")
@click.option("--cpu-shares", "-c", type=Number(int), metavar="N",
              help="Relative CPU weight (default 1024 under contention).")
@click.option("--ulimit", multiple=True, metavar="NAME=SOFT[:HARD]",
              help="A resource limit (only lowering); nofile defaults to 1024:524288.")
@click.option("--stats", is_flag=True,
              help="After the run, print wall time, CPU time, peak memory and pids on stderr.")
@click.option("--env", "-e", multiple=True, metavar="KEY[=VALUE]",
              help="Set an environment variable (KEY alone: the host's value).")
@click.option("--env-file", multiple=True, metavar="FILE", help="Read KEY=VALUE lines from a file.")
@click.option("--workdir", "-w", metavar="DIR",
              help="Working directory inside the container (made if missing) [default: the"
                   " image's, else /].")
@click.option("--entrypoint", metavar="COMMAND",
              help="Run this instead of the image's Entrypoint (and not its Cmd); '' for none.")
@click.option("--volume", "-v", multiple=True, metavar="HOST:CONTAINER[:ro]",
              help="Bind a host file or directory into the container.")
@click.option("--tmpfs", multiple=True, metavar="PATH[:OPTIONS]",
              help="Mount a tmpfs, e.g. /cache:size=64m.")
@click.option("--device", multiple=True, metavar="HOST[:CONTAINER][:rwm]",
              help="Make a host device (e.g. /dev/fuse) in the container's /dev, allowed in its"
                   " devices cgroup with these permissions (default rwm).")
@click.option("--read-only", is_flag=True, help="Mount the root read-only.")
@click.option("--read-only-tmpfs", type=click.BOOL, default=True, show_default=True,
              metavar="BOOL", help="With --read-only, keep /tmp and /run writable as tmpfs.")
@click.option("--rm", is_flag=True,
              help="Keep nothing: writes go to an overlay that is discarded afterwards, and"
                   " the container's entry (-d, --name) is removed when it ends.")
@click.option("--detach", "-d", is_flag=True,
              help="Run in the background: print the container's id once the command runs;"
                   " its output goes to its log (see logs).")
@click.option("--restart", metavar="POLICY", default="no", show_default=True,
              help="With -d: no, on-failure[:N], always or unless-stopped: when its monitor"
                   " starts the container again after it ends (docker's back-off).")
@click.option("--health-cmd", metavar="COMMAND",
              help="With -d: a command (run by /bin/sh -c) whose success says the container is"
                   " healthy; run as exec runs one, in the container.")
@click.option("--health-interval", metavar="DURATION", help="Between checks [default: 30s].")
@click.option("--health-timeout", metavar="DURATION",
              help="A check that runs longer is killed, and fails [default: 30s].")
@click.option("--health-retries", metavar="N",
              help="Failures in a row that make it unhealthy [default: 3].")
@click.option("--health-start-period", metavar="DURATION",
              help="Failures in this first time do not count [default: 0s].")
@click.option("--no-healthcheck", is_flag=True, help="No health check, not even the image's.")
@click.option("--interactive", "-i", is_flag=True,
              help="Keep stdin attached (it always is; accepted for docker's habit).")
@click.option("--tty", "-t", is_flag=True,
              help="Give the command a pseudo-terminal of its own (job control, ^C, resize).")
@click.option("--stop-timeout", type=Number(int, 0), default=DEFAULT_STOP_TIMEOUT,
              show_default=True, metavar="SECONDS",
              help="After SIGTERM, SIGINT, SIGHUP or SIGQUIT, SIGKILL the command this much later.")
@click.option("--name", metavar="NAME",
              help="Name the container (hostname and cgroup default to it); it is kept, with"
                   " its exit status, until rm (unless --rm).")
@click.argument("command", nargs=-1, type=click.UNPROCESSED, metavar="[COMMAND [ARG]...]")
def run_command(root, hostname, network, subnet, publish, outbound, network_alias, ipc, uts, cgroupns, userns, uidmap,
        gidmap, init, preserve_fds, security_opt,
        cap_add, cap_drop, seccomp, user, memory, memory_swap, pids_limit, cpus, cpu_shares,
        ulimit, stats, env, env_file, workdir, entrypoint, volume, tmpfs, device, read_only,
        read_only_tmpfs, rm, detach, restart, health_cmd, health_interval, health_timeout,
        health_retries, health_start_period, no_healthcheck, interactive, tty, stop_timeout, name,
        command):
    """Run COMMAND as PID 1 of a new container; exits with its status.

    Options go before COMMAND; everything after it is passed on untouched.
    Without COMMAND, the root's image (see pull) gives it, as docker does.
    """
    spec, net = run_spec(
        root, command, hostname=hostname, network=network, subnet=subnet, publish=publish,
        outbound=outbound, ipc=ipc, uts=uts, cgroupns=cgroupns, userns=userns, uidmap=uidmap,
        gidmap=gidmap, init=init, preserve_fds=preserve_fds, security_opt=security_opt,
        cap_add=cap_add, cap_drop=cap_drop, seccomp=seccomp, user=user, memory=memory,
        memory_swap=memory_swap, pids_limit=pids_limit, cpus=cpus, cpu_shares=cpu_shares,
        ulimit=ulimit, stats=stats, env=env, env_file=env_file, workdir=workdir,
        entrypoint=entrypoint, volume=volume, tmpfs=tmpfs, read_only=read_only,
        read_only_tmpfs=read_only_tmpfs, rm=rm, detach=detach, tty=tty,
        stop_timeout=stop_timeout, name=name, closed_stdio=CLOSED_STDIO, device=device,
        restart=restart, network_alias=network_alias,
        health={"cmd": health_cmd, "interval": health_interval, "timeout": health_timeout,
                "retries": health_retries, "start_period": health_start_period,
                "none": no_healthcheck})
    root = spec.root
    entry = None
    if detach or name is not None:  # docker's rule: a named container is kept until rm
        entry = store().create(name, {
            "root": root, "command": list(spec.command), "spec": spec.to_json(), "rm": rm,
            "detached": detach, "monitor": [os.getpid(), process_start(os.getpid())],
            "ports": [publish_text(p) for p in net.publish] if net else []})
    if detach:
        return run_detached(spec, net, entry)
    import time
    started = time.monotonic()
    code, found = run_container(spec, net, entry)
    report_resources(spec.limits, memory, code, found, time.monotonic() - started)
    return code


# -- the verbs of containers that outlive the command line ------------------

def each_container(refs, act, verb=None):
    """act(container) for each reference; a failure is said in one line and the
    others go on, as docker does; 125 at the end if any failed. `verb`: runc's
    verb, for runc's words when one is missing (Store.find)."""
    failed = False
    containers = store()  # a state directory not the caller's: refused once, for all
    for ref in refs:
        try:
            act(containers.find(ref, verb), ref)
        except ContainerError as exc:
            say(str(exc))
            failed = True
    return EXIT_OWN_FAILURE if failed else 0


@cli.command()
@root_option
@click.option("--platform", metavar="OS/ARCH[/VARIANT]",
              help="The platform to take from a multi-platform image [default: the host's].")
@click.option("--tls-verify", type=click.BOOL, default=True, show_default=True, metavar="BOOL",
              help="Check the registry's TLS certificate; false also allows plain HTTP.")
@click.option("--cache", "cache_dir", metavar="DIR",
              help="The blob cache [default: /var/cache/minicontainer for root, else"
                   " ~/.cache/minicontainer].")
@click.argument("reference")
def pull(root, platform, tls_verify, cache_dir, reference):
    """Fill the root with an image's file system from a registry (`alpine`,
    `host:port/repo:tag`, `repo@sha256:...`), and keep its configuration
    (Entrypoint, Cmd, Env, WorkingDir, User) beside it for `run`. The root
    is replaced whole, and only once every blob is verified."""
    from _minicontainer.imageformat import parse_platform
    from _minicontainer.images import pull_image
    gc.enable()
    if platform is not None:
        parse_platform(platform)
    ref, digest, count, size, foreign = pull_image(root, reference, platform, tls_verify,
                                                   cache_dir, progress=sys.stderr.isatty())
    if foreign:
        click.echo(f"minicontainer: warning: {foreign} layer member{'s' * (foreign != 1)} of other"
                   " owners made yours: only root keeps owners", err=True)
    click.echo(f"pulled {ref} ({digest}): {count} layer{'s' * (count != 1)},"
               f" {size / 1e6:.1f} MB, into {root}")
    return 0


@cli.group()
def network():
    """The bridge that --network bridge containers share."""


@network.command(name="prune")
def network_prune():
    """Remove the bridge (mc0) and its state when no container is on it; the
    next --network bridge container makes them again."""
    from _minicontainer.network import prune_network
    if os.geteuid() != 0:
        raise ContainerError("network prune", "needs root: the bridge is root's")
    left = prune_network()
    if left:
        raise ContainerError("network prune", f"{left} running container{'s' * (left != 1)}"
                             f" still on {BRIDGE}: kept")
    return 0


@cli.command(name="ps")
@click.option("--all", "-a", "show_all", is_flag=True, help="Show every container, not only running ones.")
@click.option("--quiet", "-q", is_flag=True, help="Only the ids.")
@click.option("--format", "-f", "form", type=click.Choice(["table", "json"]), default="table",
              show_default=True, help="json: one JSON array.")
@click.argument("container", required=False)
def ps_command(show_all, quiet, form, container):
    """List containers (running ones; -a: all), as docker ps does; with a
    CONTAINER, its processes' host pids, as runc ps does."""
    import json
    if container is not None:
        pids = container_processes(store().find(container, "ps"))  # runc's ps
        if form == "json":
            click.echo(json.dumps(pids))
        else:
            click.echo("PID")
            for pid in pids:
                click.echo(pid)
        return 0
    entries = [c for c in store().entries() if show_all or c.status in (RUNNING, RESTARTING)]
    if form == "json":
        click.echo(json.dumps([container_summary(c) for c in entries]))
    elif quiet:
        for c in entries:
            click.echo(c.id[:12])
    else:
        import shlex
        import time
        rows = [("CONTAINER ID", "ROOT", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES")]
        for c in entries:
            command = shlex.join(c.data.get("command") or [])
            command = '"' + (command if len(command) <= 20 else command[:19] + "…") + '"'
            created = parse_iso(c.data.get("created")) or time.time()
            rows.append((c.id[:12], c.data.get("root") or "", command,
                         f"{human_duration(time.time() - created)} ago", describe_status(c),
                         ", ".join(c.data.get("ports") or []), c.name))
        print_table(rows)
    return 0


@cli.command()
@click.option("--follow", "-f", is_flag=True, help="Keep printing output until the container ends.")
@click.option("--tail", metavar="N", type=Number(int, 0), help="Only the last N lines.")
@click.argument("container")
def logs(follow, tail, container):
    """Print a detached container's output: its stdout to stdout, its stderr to stderr."""
    import time
    entry = store().find(container)
    if not entry.data.get("detached"):
        raise ContainerError(f"logs {entry.name}", "it was not started with -d: its output went"
                             " where its run's went, and has no log")
    if entry.data.get("log_dropped"):
        say(f"logs {entry.name}: the log keeps its last {LOG_MAX >> 20} MiB; the"
            f" {entry.data['log_dropped']} bytes before were dropped")
    out = {b"1": sys.stdout.buffer, b"2": sys.stderr.buffer}
    records, offset = read_records(entry.path("container.log.1"))
    current, offset = read_records(entry.path("container.log"))
    records += current
    if tail is not None:
        lines = [(stream, line) for stream, _, data in records
                 for line in data.splitlines(keepends=True)]
        records = [(stream, 0, line) for stream, line in lines[len(lines) - tail:]] if tail else []
    for stream, _, data in records:
        out[stream].write(data)
        out[stream].flush()
    while follow:
        running = entry.reload() and entry.status in LIVE
        try:
            size = os.stat(entry.path("container.log")).st_size
        except FileNotFoundError:
            size = 0
        if size < offset:  # rotated: the rest of the old file, then the new one from its start
            rest, _ = read_records(entry.path("container.log.1"), offset)
            records, offset = rest, 0
        else:
            records = []
        more, offset = read_records(entry.path("container.log"), offset)
        for stream, _, data in records + more:
            out[stream].write(data)
            out[stream].flush()
        if not running and not more:
            break
        time.sleep(0.1)
    return 0


@cli.command(name="exec", context_settings={"allow_interspersed_args": False})
@click.option("--detach", "-d", is_flag=True,
              help="Return once the command runs (docker's: its output is dropped; runc's: it"
                   " keeps this stdio, for the engine that reaps it).")
@click.option("--interactive", "-i", is_flag=True,
              help="Keep stdin attached (it always is; accepted for docker's habit).")
@click.option("--tty", "-t", is_flag=True, help="Give the command a pseudo-terminal of its own.")
@click.option("--env", "-e", multiple=True, metavar="KEY[=VALUE]", help="Set an environment variable.")
@click.option("--workdir", "-w", "--cwd", metavar="DIR",
              help="Working directory inside the container (must exist).")
@click.option("--user", "-u", metavar="USER[:GROUP]", help="Run as this user (from the container's /etc/passwd).")
@click.option("--process", "-p", "process_file", metavar="FILE",
              help="runc's: the process as JSON (args, env, cwd, user, capabilities, ...).")
@click.option("--pid-file", metavar="FILE", help="Write the process's host pid here.")
@click.option("--console-socket", metavar="SOCKET", help="Send the terminal's master here (with -t).")
@click.option("--cap", "-c", multiple=True, metavar="CAP", help="runc's: one more capability.")
@click.option("--no-new-privs", is_flag=True, help="runc's: set no_new_privs.")
@click.argument("container")
@click.argument("command", nargs=-1, type=click.UNPROCESSED, metavar="[COMMAND [ARG]...]")
def exec_command_line(detach, interactive, tty, env, workdir, user, process_file, pid_file,
                      console_socket, cap, no_new_privs, container, command):
    """Run COMMAND in a running container: its namespaces, cgroups, capabilities,
    no_new_privs and seccomp filter, its environment plus -e. Takes docker's
    options and runc's (--process, --pid-file, --console-socket, --cap)."""
    from _minicontainer.oci import load_exec_process
    runc_form = bool(process_file or pid_file or console_socket)  # runc's options alone
    entry = store().find(container, "exec" if runc_form else None)
    entry.check("exec")
    spec = exec_spec(entry)  # the same description a health check runs by
    oci = bool(entry.data.get("bundle"))
    if process_file:
        load_exec_process(spec, process_file)
    elif not command:
        raise ContainerError("exec", "missing COMMAND (or --process FILE)")
    else:
        spec.command = tuple(command)
    if not spec.command or not spec.command[0]:
        raise ContainerError("exec ''", "not found in the container (an empty command name)",
                             code=EXIT_NOT_FOUND)
    spec.env = list(spec.env or ()) + parse_env(env, ())
    if workdir is not None:
        spec.workdir = check_container_path("--workdir", workdir, workdir)
    if user is not None:
        root_fd = container_root_fd(entry)
        try:
            spec.user = resolve_user(root_fd, user)
        finally:
            os.close(root_fd)
    if cap:
        added = frozenset(capability_numbers()[c.upper().removeprefix("CAP_")] for c in cap
                          if c.upper().removeprefix("CAP_") in capability_numbers())
        spec.caps = frozenset(spec.caps) | added
        if spec.cap_sets is not None:
            spec.cap_sets = {k: frozenset(v) | added for k, v in spec.cap_sets.items()}
    if no_new_privs:
        spec.no_new_privs = True
    spec.tty = spec.tty if process_file else tty
    if console_socket is None:
        spec.tty = spec.tty and not (detach and not oci)
        spec.winsize = terminal_size() if spec.tty else None
    spec.closed_stdio = CLOSED_STDIO
    if os.geteuid() != 0 and not spec.namespaces & CLONE_NEWUSER:
        raise ContainerError("exec", "needs root: the container is root's (try: sudo"
                             " minicontainer exec ...)")
    return exec_container(entry, spec, detached=detach, keep_stdio=oci, pid_file=pid_file,
                          console_socket=console_socket)


@cli.command()
@click.option("--time", "-t", "timeout", type=Number(int, 0), metavar="SECONDS",
              help="Seconds to wait before SIGKILL [default: the container's --stop-timeout].")
@click.argument("containers", nargs=-1, required=True, metavar="CONTAINER...")
def stop(timeout, containers):
    """Stop containers: SIGTERM, then SIGKILL after the timeout."""
    def act(entry, ref):
        stop_container(entry, timeout if timeout is not None
                       else (entry.data.get("spec") or {}).get("stop_timeout", DEFAULT_STOP_TIMEOUT))
        click.echo(ref)
    return each_container(containers, act)


@cli.command()
@click.option("--signal", "-s", "sig", metavar="SIGNAL",
              help="The signal, by name or number [default: KILL; TERM for a created one].")
@click.option("--all", "-a", "every", is_flag=True,
              help="Every process of the container, not only its PID 1 (runc's option).")
@click.argument("args", nargs=-1, required=True, metavar="CONTAINER... | ID [SIGNAL]")
def kill(sig, every, args):
    """Send a signal to containers: docker's `kill [-s SIGNAL] CONTAINER...`
    (SIGKILL by default), and runc's `kill ID [SIGNAL]` (SIGTERM by default)."""
    refs = list(args)
    runc_form = every  # --all is runc's alone
    if sig is None and len(refs) == 2 and is_signal(refs[1]) and (
            store().is_bundles(refs[0]) or not store().named(refs[1])):
        # runc's form, ID SIGNAL: always so for a bundle's container (what an
        # engine kills): `kill web 9` was taken for two containers where one's
        # id was "9", which got SIGTERM while web was never sent its SIGKILL.
        sig = refs.pop()
        runc_form = True

    def act(entry, ref):
        oci = bool(entry.data.get("bundle"))
        number = parse_signal(sig or ("TERM" if oci else "KILL"))
        if oci and entry.status in (EXITED, DEAD):
            # runc's words and moves, which engines parse: containerd's shim takes
            # "container not running" for a process already gone. --all still
            # reaches what its first process left in its cgroup, and succeeds.
            if not every:
                raise ContainerError(f"kill {entry.name}", "container not running")
            kill_every_process(entry, number, strict=False)
            return
        entry.check("kill")
        if every:
            kill_every_process(entry, number)
        elif oci:
            if not signal_owner(entry.data.get("pid1"), number):
                raise ContainerError(f"kill {entry.name}", "container not running")
        else:
            kill_container(entry, number)
        if not oci:
            click.echo(ref)
    return each_container(refs, act, "kill" if runc_form else None)


@cli.command()
@click.option("--condition", type=click.Choice(["not-running", "healthy"]), default="not-running",
              show_default=True,
              help="not-running: until each ends, and print its exit code; healthy: until its"
                   " health check says so (and print `healthy`).")
@click.argument("containers", nargs=-1, required=True, metavar="CONTAINER...")
def wait(condition, containers):
    """Wait for containers to end; print each one's exit code."""
    def act(entry, ref):
        if condition == "healthy":
            wait_healthy(entry)
            click.echo("healthy")
            return
        code = wait_container(entry)
        click.echo("" if code is None else code)
    return each_container(containers, act)


@cli.command()
@click.option("--force", "-f", is_flag=True, help="Kill a running container first.")
@click.argument("containers", nargs=-1, required=True, metavar="CONTAINER...")
def rm(force, containers):
    """Remove containers (a running one only with -f)."""
    def act(entry, ref):
        remove_container(entry, force)
        click.echo(ref)
    return each_container(containers, act)


@cli.command()
@click.argument("containers", nargs=-1, required=True, metavar="CONTAINER...")
def inspect(containers):
    """Print everything known of containers, as a JSON array."""
    import json
    found = []
    code = each_container(containers, lambda entry, ref: found.append(inspect_data(entry)))
    click.echo(json.dumps(found, indent=4))
    return code


def split_cp_arg(arg):
    """docker's reading of a cp argument: (container, path), container None for
    a host path: an absolute path, one without ':', or one starting with '.'."""
    if arg.startswith("/"):
        return None, arg
    container, colon, path = arg.partition(":")
    if not colon or container.startswith("."):
        return None, arg
    return container, path


@cli.command(name="cp")
@click.option("--archive", "-a", is_flag=True,
              help="Keep the files' owners (uid and gid; mapped through the container's user"
                   " namespace). Without it, what goes in is the container root's and what"
                   " comes out is yours.")
@click.option("--follow-link", "-L", is_flag=True, help="Follow a symlink that SRC names.")
@click.option("--quiet", "-q", is_flag=True, help="Say nothing on a terminal.")
@click.argument("src", metavar="SRC")
@click.argument("dst", metavar="DEST")
def cp_command(archive, follow_link, quiet, src, dst):
    """Copy files between a container and the host, as docker cp does:
    `cp CONTAINER:SRC DEST` and `cp SRC CONTAINER:DEST`, `-` for a tar stream
    on stdout or stdin; running and stopped containers. Paths in the
    container are resolved with its root as /; `SRC/.` copies what a
    directory holds."""
    from _minicontainer.transfer import check_container_path, copy_in, copy_out
    (src_ref, src_path), (dst_ref, dst_path) = split_cp_arg(src), split_cp_arg(dst)
    verb = f"cp {src} {dst}"
    if src_ref is not None and dst_ref is not None:
        raise ContainerError(verb, "copying between containers is not supported")
    if src_ref is None and dst_ref is None:
        raise ContainerError(verb, "must specify at least one container source"
                             " (CONTAINER:PATH)")
    if not src_path or not dst_path:
        raise ContainerError(verb, "a path may not be empty")
    for ref, path in ((src_ref, src_path), (dst_ref, dst_path)):
        if ref is not None:
            check_container_path(path, verb)
    entry = store().find(src_ref or dst_ref)
    if src_ref is not None:
        warnings = copy_out(entry, src_path, dst_path, archive, follow_link,
                            stdout=sys.stdout.buffer if dst_path == "-" else None)
    else:
        warnings = copy_in(entry, src_path, dst_path, archive, follow_link,
                           stdin=sys.stdin.buffer if src_path == "-" else None)
    for warning in warnings:
        click.echo(f"minicontainer: warning: {warning}", err=True)
    if not quiet and sys.stderr.isatty() and "-" not in (src_path, dst_path):
        click.echo(f"Successfully copied {src} to {dst}", err=True)
    return 0


@cli.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("container")
@click.argument("ps_args", nargs=-1, type=click.UNPROCESSED, metavar="[PS OPTIONS]")
def top(container, ps_args):
    """Show a running container's processes, as docker top does: the host's
    ps (-ef by default, or these options), only the container's rows, host pids."""
    titles, rows = container_top(store().find(container), list(ps_args))
    print_tabbed([titles] + rows)
    return 0


@cli.command()
@click.option("--all", "-a", "show_all", is_flag=True, help="Every container, not only running ones.")
@click.option("--no-stream", is_flag=True, help="Print one reading and end (the default when"
              " stdout is not a terminal).")
@click.option("--format", "form", type=click.Choice(["table", "json"]), default="table",
              show_default=True, help="json: one JSON object a line, with docker's keys.")
@click.argument("containers", nargs=-1, metavar="[CONTAINER]...")
def stats(show_all, no_stream, form, containers):
    """What containers use: CPU %, memory and its limit, network and block
    I/O, pids; redrawn every second on a terminal (Ctrl-C ends it), one line
    a container otherwise."""
    import json
    import time
    from _minicontainer.lifecycle import STATS_COLUMNS, container_usage, stats_row
    found = store()
    named = [(found.find(ref), ref) for ref in containers]  # a missing one: said before anything
    stream = not no_stream and sys.stdout.isatty()

    def chosen():
        if named:
            return [(entry.reload() and entry, ref) for entry, ref in named]
        return [(c, c.id[:12]) for c in found.entries() if show_all or c.status == RUNNING]

    def readings():
        return {id(entry): container_usage(entry) for entry, _ in current}

    current = chosen()
    before, started = readings(), time.monotonic()
    try:
        while True:
            time.sleep(1.0 if stream else 0.5)  # CPU % needs two readings
            after, now = readings(), time.monotonic()
            rows = [stats_row(entry, ref, before[id(entry)], after[id(entry)], now - started)
                    for entry, ref in current if entry]
            if form == "json":
                for row in rows:
                    click.echo(json.dumps(row))
            else:
                if stream:
                    click.echo("\033[2J\033[H", nl=False)  # a plain redraw: clear, home
                print_table([tuple(title for title, _ in STATS_COLUMNS)]
                            + [tuple(row[key] for _, key in STATS_COLUMNS) for row in rows])
            if not stream:
                return 0
            sys.stdout.flush()
            current = chosen()
            before, started = readings(), time.monotonic()
    except KeyboardInterrupt:  # how a terminal's stats ends, as docker's does: not a failure
        return 0


# -- the OCI runtime's verbs (runc's command line) ----------------------------

@cli.command()
@click.option("--bundle", "-b", default=".", metavar="DIR", help="The bundle (config.json, the root).")
@click.option("--pid-file", metavar="FILE", help="Write PID 1's host pid here.")
@click.option("--console-socket", metavar="SOCKET", help="Send the terminal's master here.")
@click.option("--no-pivot", is_flag=True, help="Move the root onto / and chroot (for a ramfs host).")
@click.option("--no-new-keyring", is_flag=True, help="Keep the caller's session keyring.")
@click.option("--preserve-fds", type=Number(int, 0), default=0, metavar="N",
              help="Pass descriptors 3 to 3+N-1 on.")
@click.argument("id")
def create(bundle, pid_file, console_socket, no_pivot, no_new_keyring, preserve_fds, id):
    """Create a container from a bundle: set it up, and leave its process
    waiting, before its program, for `start`."""
    from _minicontainer.oci import check_oci_id, load_bundle
    check_oci_id(id)
    preserve_fds = check_preserved_fds(preserve_fds)
    try:
        spec, config = load_bundle(bundle, id, preserve_fds, keyring=not no_new_keyring)
        if spec.tty and not console_socket:
            raise ContainerError("config.json: process.terminal", "needs --console-socket")
    except ContainerError as exc:  # an engine's log holds many containers': say whose
        raise exc.within(f"create {id}") from None
    spec.no_pivot = no_pivot
    if os.geteuid() != 0:
        raise ContainerError("create", "needs root")
    entry = store().create(None, {
        "root": spec.root, "command": list(spec.command), "spec": spec.to_json(),
        "bundle": os.path.abspath(bundle), "annotations": config["annotations"],
        "monitor": None}, id=id)
    try:
        return create_container(spec, entry, config, pid_file, console_socket)
    except BaseException:
        entry.remove()
        raise


@cli.command()
@click.argument("id")
def start(id):
    """Start a created container: its program runs."""
    import json
    entry = store().find(id, "start")
    if not os.path.exists(entry.path("exec.fifo")):
        raise ContainerError(f"start {entry.name}", f"it is not created (it is {oci_status(entry)})")
    entry.check("start")
    spec = Spec.from_json(entry.data["spec"])
    try:
        run_hooks(spec.hooks, "prestart", json.dumps(oci_state(entry, "created")).encode())
    except ContainerError:  # the spec: stop the container, delete it, and say why
        delete_container(entry)
        raise
    try:
        fd = os.open(entry.path("exec.fifo"), os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        why = "its process has exited" if exc.errno == 6 else exc.strerror  # ENXIO: no reader
        raise ContainerError(f"start {entry.name}", why) from None
    try:
        os.write(fd, b"0")
    finally:
        os.close(fd)
    os.unlink(entry.path("exec.fifo"))
    entry.update(status=RUNNING, started=now_iso())
    run_hooks(spec.hooks, "poststart", json.dumps(oci_state(entry, "running")).encode(), fail=False)
    return 0


@cli.command()
@click.argument("id")
def state(id):
    """Print a container's state, as the runtime spec defines it (JSON)."""
    import json
    click.echo(json.dumps(oci_state(store().find(id, "state")), indent=2))
    return 0


@cli.command()
@click.option("--force", "-f", is_flag=True, help="Kill it first if it runs (and succeed if it is gone).")
@click.argument("id")
def delete(force, id):
    """Delete a stopped container (a running or created one only with --force):
    its processes, cgroups and state; then its poststop hooks."""
    containers = store()  # a state directory not the caller's is refused, --force or not
    try:
        entry = containers.find(id, "delete")
    except ContainerError:
        if force:
            return 0  # engines delete --force after they deleted: nothing to do
        raise
    status = oci_status(entry)
    if status not in ("stopped",) and not force:
        raise ContainerError(f"delete {entry.name}", f"it is {status}, not stopped (use --force)")
    delete_container(entry)
    return 0


@cli.command()
@click.option("--resources", "-r", metavar="FILE",
              help="linux.resources as JSON (- for stdin), as podman passes them.")
@click.option("--memory", type=Number(int), metavar="BYTES", help="Memory limit.")
@click.option("--pids-limit", type=Number(int), metavar="N", help="Most processes.")
@click.option("--cpu-shares", type=Number(int), metavar="N", help="CPU weight.")
@click.option("--cpu-quota", type=Number(int), metavar="USEC", help="CFS quota.")
@click.option("--cpu-period", type=Number(int), metavar="USEC", help="CFS period.")
@click.argument("id")
def update(resources, memory, pids_limit, cpu_shares, cpu_quota, cpu_period, id):
    """Change a running container's resources (runc's update)."""
    from _minicontainer.oci import oci_resources, read_json_document
    entry = store().find(id, "update")
    entry.check("kill")  # created, running or paused
    wanted = {}
    if resources:
        wanted = oci_resources(read_json_document(resources, f"--resources {resources}"))
    for section, key, value in (("memory", "limit", memory), ("pids", "limit", pids_limit),
                                ("cpu", "shares", cpu_shares), ("cpu", "quota", cpu_quota),
                                ("cpu", "period", cpu_period)):
        if value is not None:
            wanted.setdefault(section, {})[key] = value
    groups = []
    try:
        for version, path in entry.data.get("cgroups") or ():
            group = Cgroup(version, path, cgroup_controllers_of(version, path))
            group.fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            groups.append(group)
        if not groups:
            raise ContainerError(f"update {entry.name}", "it has no cgroups to update")
        write_resources(groups, wanted)
    finally:
        for group in groups:
            os.close(group.fd)
    return 0


@cli.command(name="list")
@click.option("--format", "-f", "form", type=click.Choice(["table", "json"]), default="table",
              show_default=True)
@click.option("--quiet", "-q", is_flag=True, help="Only the ids.")
def list_command(form, quiet):
    """List containers as runc does: id, pid, status, bundle, created."""
    import json
    states = [oci_state(c) for c in store().entries()]
    if form == "json":
        click.echo(json.dumps(states))
    elif quiet:
        for st in states:
            click.echo(st["id"])
    else:
        rows = [("ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER")] + [
            (st["id"], str(st["pid"]), st["status"], st["bundle"], st["created"] or "", "root")
            for st in states]
        print_table(rows)
    return 0


@cli.command()
@click.argument("id")
def pause(id):
    """Freeze every process of a running container (the freezer cgroup)."""
    freeze(store().find(id, "pause"), True)
    return 0


@cli.command()
@click.argument("id")
def resume(id):
    """Thaw a paused container."""
    freeze(store().find(id, "resume"), False)
    return 0


@cli.command()
def features():
    """Print what this runtime supports, as the runtime spec's features document."""
    from _minicontainer.oci import oci_features
    import json
    click.echo(json.dumps(oci_features(), indent=2))
    return 0


@cli.command(name="spec")
@click.option("--bundle", "-b", default=".", metavar="DIR", help="Where to write config.json.")
def spec_command(bundle):
    """Write a default config.json: runc's, with minicontainer's capabilities,
    masks and seccomp policy."""
    from _minicontainer.oci import default_config
    import json
    path = os.path.join(bundle, "config.json")
    try:
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644), "w") as f:
            json.dump(default_config(), f, indent=2)
    except FileExistsError:
        raise ContainerError(f"spec {path}", "it exists; remove it first") from None
    except OSError as exc:
        raise ContainerError.from_os(f"spec {path}", exc) from None
    return 0


def mib(size):
    return f"{size / (1 << 20):.1f} MiB"


def report_resources(limits, memory_text, code, found, wall):
    """The OOM line and the --stats line, on stderr, after the run."""
    for error in found.get("cleanup_errors", ()):
        click.echo(f"minicontainer: warning: {error}", err=True)
    oom = found.get("oom_kills")
    if oom and code == 128 + signal.SIGKILL:
        click.echo(f"minicontainer: memory limit {memory_text} hit: the kernel's OOM killer"
                   " ended the command", err=True)
    elif oom:
        click.echo(f"minicontainer: warning: memory limit {memory_text} hit: the kernel's OOM"
                   f" killer ended {oom} process{'es' * (oom > 1)} in the container", err=True)
    if limits.stats:
        parts = [f"{wall:.2f} s wall"]
        if found.get("cpu_us") is not None:
            parts.append(f"{found['cpu_us'] / 1e6:.2f} s CPU")
        if found.get("memory_peak") is not None:
            parts.append(f"{mib(found['memory_peak'])} peak memory")
        if found.get("pids_peak") is not None:
            parts.append(f"{found['pids_peak']} peak pids")
        click.echo("minicontainer: stats: " + ", ".join(parts), err=True)


# runc's --log FILE and --log-format: where an engine reads why a call failed.
LOG = None


def say(message, level="error"):
    """The one line on stderr through which every failure is told; in the --log
    file too, as a JSON object with an RFC 3339 time when asked (what
    containerd's shim and podman read)."""
    click.echo(f"minicontainer: {one_line(message)}", err=True)
    if LOG is not None:
        import json
        path, form, _ = LOG
        line = (json.dumps({"level": level, "msg": one_line(message), "time": now_iso()})
                if form == "json" else f"{now_iso()} {level}: {one_line(message)}")
        try:  # never waiting: a FIFO without a reader at --log would hang the verb
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK
                         | os.O_CLOEXEC, 0o644)
            try:
                os.write(fd, (line + "\n").encode())
            finally:
                os.close(fd)
        except OSError:
            pass


def main(argv=None):
    """Entry point: run the CLI; print any failure as one line; return the exit code."""
    try:
        return cli.main(args=argv, prog_name="minicontainer", standalone_mode=False) or 0
    except ContainerError as exc:
        say(str(exc))
        return exc.code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        say(exc.format_message())
        return EXIT_OWN_FAILURE
    except (click.Abort, KeyboardInterrupt):
        say("interrupted")
        return 128 + signal.SIGINT
    except Exception as exc:  # a bug: still one line, never a traceback
        say(f"internal error: {exc!r}")
        return EXIT_OWN_FAILURE


# Which of stdin, stdout and stderr minicontainer's caller had closed (`>&-`).
CLOSED_STDIO = ()


def hold_stdio():
    """Put /dev/null where the caller closed 0, 1 or 2, and remember which.

    Otherwise the first descriptor minicontainer opens (the report socket,
    say) would take the number, and the command would write into it. The
    container gets them closed again (close_stdio), as it was asked.
    """
    global CLOSED_STDIO
    closed = []
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            closed.append(fd)
    for fd in closed:
        null = os.open("/dev/null", os.O_RDWR)
        if null != fd:
            os.dup2(null, fd)
            os.close(null)
    if 0 in closed:
        sys.stdin = open(0, closefd=False)
    if 1 in closed:
        sys.stdout = open(1, "w", closefd=False)
    if 2 in closed:
        sys.stderr = open(2, "w", errors="backslashreplace", closefd=False)
    CLOSED_STDIO = tuple(closed)


def entry():
    """Console-script entry point: main(), then exit without interpreter teardown.

    Tearing down click's modules costs about as much as starting a container;
    with the output flushed, nothing is lost by skipping it.
    """
    if sys.stdin is None or sys.stdout is None or sys.stderr is None:
        hold_stdio()
    code = main()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:  # a closed pipe: nothing left to say
        pass
    os._exit(code)


if __name__ == "__main__":
    entry()
