"""The library as a door with the command line's shape, for the tests that run
a container both ways: `python library_door.py run [OPTIONS] COMMAND...`
parses run's options with the CLI's own parser, then starts the container
with minicontainer.run(), stdio inherited, and exits with its returncode (or
says the ContainerError in the CLI's one line, with its code). An option the
library has no counterpart for is refused with 2, so no test passes by
quietly dropping it."""
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import minicontainer  # noqa: E402

# run's option (click's parameter name) -> the library's keyword
RENAMED = {"volume": "volumes", "ulimit": "ulimits"}
KEPT = {"root", "hostname", "network", "subnet", "publish", "outbound", "network_alias", "ipc", "uts", "cgroupns",
        "userns", "uidmap", "gidmap", "init", "security_opt", "cap_add", "cap_drop", "seccomp",
        "user", "memory", "memory_swap", "pids_limit", "cpus", "cpu_shares", "env_file",
        "workdir", "entrypoint", "tmpfs", "read_only", "read_only_tmpfs", "stop_timeout", "device"}
# run's options whose default the library shares, and which it has no keyword for
DEFAULTS = {"preserve_fds": 0, "rm": False, "detach": False, "interactive": False, "tty": False,
            "name": None, "stats": False, "restart": "no", "health_cmd": None,
            "health_interval": None, "health_timeout": None, "health_retries": None,
            "health_start_period": None, "no_healthcheck": False}


def main(argv):
    if argv[:1] != ["run"]:
        sys.exit("library_door: only run")
    ctx = minicontainer.run_command.make_context("run", argv[1:])
    params = dict(ctx.params)
    command = params.pop("command")
    kwargs = {}
    for name, value in params.items():
        if name in DEFAULTS:
            if value != DEFAULTS[name]:
                print(f"library_door: the library has no --{name.replace('_', '-')}",
                      file=sys.stderr)
                return 2
        elif name == "env":
            kwargs["env"] = [v if "=" in v else f"{v}={os.environ[v]}" for v in value
                             if "=" in v or v in os.environ]
        else:
            assert name in KEPT or name in RENAMED, name
            kwargs[RENAMED.get(name, name)] = value
    try:
        return minicontainer.run(list(command), **kwargs).returncode
    except minicontainer.ContainerError as exc:
        print(f"minicontainer: {exc}", file=sys.stderr)
        return exc.code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
