"""Benchmark minicontainer: start-up, feature costs, memory, deploy, throughput.

Run from the repository root, as root, after `sudo ./setup.sh`:

    sudo .venv/bin/python bench/bench.py [--runs N] [--quick] [--json PATH]

What it measures (wall times of the real console script, .venv/bin/minicontainer):

1. Start-up: `minicontainer run /bin/noop` (a static no-op, default isolation)
   interleaved with a floor (`python -c "import click"`: the interpreter and
   the CLI library minicontainer cannot start without), a reference
   (`python -c pass`) and the peers installed here, doing comparable
   isolation on the same root: bwrap, unshare + chroot, crun, runc.
   Median, p10 and p90 in ms; the budget is minicontainer's median at most
   1.15 x the floor's.
2. The cost of each optional feature, as median deltas against a default run:
   the extra namespaces, the seccomp filter, cgroup limits, --init.
3. --network bridge against --network none, with the bridge kept from the
   container before and with none yet (`network prune` before each, untimed);
   the budget is at most +60 ms over none, bridge kept.
4. Containers in the background: `exec` of a no-op into a running container,
   and `run -d` followed by `rm -f`, beside a foreground run.
5. Peak memory (VmHWM) of minicontainer's supervising process, and of
   `runc run` (and crun) for the same command.
6. Deploy speed on a generated tree (~160 MB, 20,000 files, 20 symlinks) against
   `cp -a`, and `deploy --link` against `cp -al`.
7. Throughput: 100 containers back to back, 20 in parallel, against bwrap and
   runc (and crun) doing the same; then a check that nothing was left behind
   (cgroups, mounts, processes).
8. The library: serial containers from this one Python process, in
   interleaved blocks, with minicontainer.run(), bwrap and runc started by
   subprocess.run, and the command line; eight threads at once (the library
   and bwrap); then 10,000 containers (500 with --quick) with this process's
   descriptors, threads, children and memory before and after, and nothing
   left behind.

Everything runs in a temporary directory that is removed at the end, also on
errors and ^C. The results, with the environment, go to a JSON file (default
bench/results.json). --quick: 5 start-up and feature repetitions instead of
30 and 10. Standard library only.
"""

import argparse
import importlib.metadata
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from subprocess import DEVNULL, PIPE

REPO = Path(__file__).resolve().parent.parent
MINICONTAINER = REPO / ".venv" / "bin" / "minicontainer"
PYTHON = sys.executable  # .venv/bin/python: the interpreter the console script runs on
DEFAULT_JSON = REPO / "bench" / "results.json"

BUDGET = 1.15  # minicontainer's start-up median may be at most this times the floor's
STARTUP_RUNS, QUICK_RUNS = 40, 5
NETWORK_BUDGET_MS = 60  # --network bridge may cost at most this over --network none (median)
FEATURE_RUNS, QUICK_FEATURE_RUNS = 10, 5
DEPLOY_RUNS = 5
SEQUENTIAL_CONTAINERS, PARALLEL_CONTAINERS = 100, 20
TREE_FILES, TREE_DIRS, TREE_LINKS, TREE_SEED = 20000, 40, 20, 20240601

NOOP_C = "int main(void) { return 0; }\n"
NAP_C = "#include <unistd.h>\nint main(void) { sleep(1); return 0; }\n"


# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------

def mc(*args):
    """argv of the minicontainer console script."""
    return [str(MINICONTAINER), *map(str, args)]


def check_call(argv, **kwargs):
    """Run argv quietly; on failure raise with its stderr in the message."""
    subprocess.run(argv, check=True, stdout=DEVNULL, stderr=PIPE, **kwargs)


def failure_text(exc):
    """One line saying why a command failed."""
    if isinstance(exc, subprocess.CalledProcessError):
        lines = (exc.stderr or b"").decode(errors="replace").strip().splitlines()
        return f"exit {exc.returncode}: {lines[-1] if lines else '(no message)'}"
    return f"{type(exc).__name__}: {exc}"


def summary(samples):
    """Median, p10 and p90 of a list of milliseconds."""
    deciles = statistics.quantiles(samples, n=10, method="inclusive")
    return {"median": round(statistics.median(samples), 2), "p10": round(deciles[0], 2),
            "p90": round(deciles[-1], 2), "n": len(samples)}


def ratio(a, b):
    return round(a / b, 3) if b else None


def first_line(argv):
    """First line of a command's output (for version strings), or None."""
    try:
        out = subprocess.run(argv, stdout=PIPE, stderr=subprocess.STDOUT, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = out.decode(errors="replace").strip().splitlines()
    return lines[0] if lines else None


def compile_static(source, path):
    src = path.with_suffix(".c")
    src.write_text(source)
    check_call(["gcc", "-static", "-O2", "-o", str(path), str(src)])
    return path


def heading(text):
    print(f"\n== {text}")


# ---------------------------------------------------------------------------
# Commands to time
# ---------------------------------------------------------------------------

class Command:
    """A command timed as the wall time of subprocess.run(..., check=True)."""

    def __init__(self, name, argv, optional=False):
        self.name = name
        self._argv = argv
        self.optional = optional  # a peer: skipped, not fatal, when it fails

    def argv(self):
        return self._argv

    def display(self):
        return " ".join(self._argv)

    def before(self):
        """Prepare one run (untimed)."""

    def after(self):
        """Clean up after one run (untimed)."""

    def run(self):
        self.before()
        argv = self.argv()
        start = time.perf_counter()
        try:
            check_call(argv)
        finally:
            elapsed = (time.perf_counter() - start) * 1000
            self.after()
        return elapsed


class FreshBridge(Command):
    """A bridge container with no bridge yet: `network prune` first, untimed."""

    def before(self):
        check_call(mc("network", "prune"))


class Sequence(Command):
    """Several commands in a row, timed together (run -d, then rm -f)."""

    def __init__(self, name, argvs):
        super().__init__(name, None)
        self.argvs = argvs

    def display(self):
        return " && ".join(" ".join(map(str, argv)) for argv in self.argvs)

    def run(self):
        start = time.perf_counter()
        for argv in self.argvs:
            check_call(argv)
        return (time.perf_counter() - start) * 1000


class OciCommand(Command):
    """`RUNTIME run --bundle B ID` with a fresh ID each run, deleted if left over."""

    def __init__(self, runtime, bundle):
        super().__init__(runtime, None, optional=True)
        self.runtime, self.bundle = runtime, bundle
        self.prefix = f"mc-bench-{os.getpid()}-"
        self.count = 0

    def argv(self):
        self.count += 1
        return [self.runtime, "run", "--bundle", str(self.bundle), f"{self.prefix}{self.count}"]

    def display(self):
        return f"{self.runtime} run --bundle {self.bundle} {self.prefix}N"

    def bundle_args(self, args):
        """Make the bundle's process run args instead."""
        path = Path(self.bundle) / "config.json"
        config = json.loads(path.read_text())
        config["process"]["args"] = list(args)
        path.write_text(json.dumps(config, indent=2))

    def after(self):
        self.delete_leftovers()

    def delete_leftovers(self):
        """`RUNTIME delete -f` every container of this bench still listed."""
        listed = subprocess.run([self.runtime, "list", "-q"], stdout=PIPE, stderr=DEVNULL)
        for cid in listed.stdout.decode().split():
            if cid.startswith(self.prefix):
                subprocess.run([self.runtime, "delete", "-f", cid], stdout=DEVNULL, stderr=DEVNULL)


def drop(cmd, exc, active, skipped):
    """Skip a failing peer for the rest of the bench, saying why once."""
    reason = failure_text(exc)
    print(f"  skipping {cmd.name}: it failed on this host: {reason}")
    skipped[cmd.name] = reason
    active.remove(cmd)


def interleave(commands, runs, skipped):
    """Time each command `runs` times, every repetition running each once in turn.

    One untimed warm-up round first. The order rotates by one each repetition
    so no command always runs right after the same one. A failing optional
    command is dropped (recorded in `skipped`); any other failure is raised.
    Returns {name: [ms, ...]} for the commands that never failed.
    """
    active = list(commands)
    samples = {cmd.name: [] for cmd in commands}
    for rep in range(-1, runs):
        shift = max(rep, 0) % len(active)
        for cmd in active[shift:] + active[:shift]:
            try:
                elapsed = cmd.run()
            except (subprocess.CalledProcessError, OSError) as exc:
                if not cmd.optional:
                    raise
                drop(cmd, exc, active, skipped)
                continue
            if rep >= 0:
                samples[cmd.name].append(elapsed)
    return {cmd.name: samples[cmd.name] for cmd in active}


# ---------------------------------------------------------------------------
# Set-up
# ---------------------------------------------------------------------------

def make_root(tmp):
    """A container root: the repo's newroot/ plus the no-op (and busybox), deployed."""
    root = tmp / "root"
    shutil.copytree(REPO / "newroot", root, symlinks=True,
                    ignore=shutil.ignore_patterns(".keep"))
    os.chmod(root / "tmp", 0o1777)
    noop = compile_static(NOOP_C, tmp / "noop")
    check_call(mc("deploy", "--root", root, noop))
    busybox = shutil.which("busybox")
    if busybox:
        check_call(mc("deploy", "--root", root, busybox))
    return root


def oci_bundle(runtime, root, tmp):
    """An OCI bundle for runtime: `RUNTIME spec`, edited to run /bin/noop on a copy of root.

    The spec is the runtime's default (runc 1.1's: pid, network, ipc, uts and
    mount namespaces, no cgroup namespace, no seccomp profile; masked and
    read-only /proc paths; 3 capabilities), edited only as below.
    """
    bundle = tmp / f"bundle-{runtime}"
    bundle.mkdir()
    check_call([runtime, "spec"], cwd=bundle)
    rootfs = bundle / "rootfs"
    shutil.copytree(root, rootfs, symlinks=True)
    config_path = bundle / "config.json"
    config = json.loads(config_path.read_text())
    config["process"]["args"] = ["/bin/noop"]
    config["process"]["terminal"] = False
    config["root"] = {"path": str(rootfs.resolve()), "readonly": False}
    config_path.write_text(json.dumps(config, indent=2))
    return bundle


# ---------------------------------------------------------------------------
# 1. Start-up
# ---------------------------------------------------------------------------

def startup_commands(root, tmp, skipped, oci):
    """minicontainer, the floor, the reference, and the installed peers."""
    commands = [
        Command("minicontainer", mc("run", "--root", root, "/bin/noop")),
        Command("floor: python -c 'import click'", [PYTHON, "-c", "import click"]),
        Command("reference: python -c pass", [PYTHON, "-c", "pass"]),
    ]
    # bwrap 0.8 accepts every option here as root; nothing had to be adapted.
    peers = [  # name, the programs it needs, argv
        ("bwrap", ["bwrap"],
         ["bwrap", "--unshare-all", "--die-with-parent", "--bind", str(root), "/",
          "--proc", "/proc", "--dev", "/dev", "--cap-drop", "ALL", "/bin/noop"]),
        ("unshare", ["unshare", "chroot"],
         ["unshare", "--pid", "--fork", "--mount", "--uts", "--ipc", "--net", "--cgroup",
          "chroot", str(root), "/bin/noop"]),
    ]
    for name, needs, argv in peers:
        if all(shutil.which(program) for program in needs):
            commands.append(Command(name, argv, optional=True))
        else:
            print(f"  skipping {name}: not installed")
            skipped[name] = "not installed"
    for runtime in ("crun", "runc"):
        if not shutil.which(runtime):
            print(f"  skipping {runtime}: not installed")
            skipped[runtime] = "not installed"
            continue
        try:
            command = OciCommand(runtime, oci_bundle(runtime, root, tmp))
        except (subprocess.CalledProcessError, OSError) as exc:
            print(f"  skipping {runtime}: its bundle could not be made: {failure_text(exc)}")
            skipped[runtime] = failure_text(exc)
            continue
        oci.append(command)
        commands.append(command)
    return commands


def bench_startup(root, tmp, runs, skipped, oci):
    heading(f"start-up: {runs} interleaved repetitions, wall time in ms")
    commands = startup_commands(root, tmp, skipped, oci)
    samples = interleave(commands, runs, skipped)
    stats = {name: summary(ms) for name, ms in samples.items()}
    ours = stats["minicontainer"]["median"]
    print(f"  {'command':34} {'median':>8} {'p10':>8} {'p90':>8} {'mc / this':>10}")
    for cmd in commands:
        if cmd.name in stats:
            s = stats[cmd.name]
            s["command"] = cmd.display()
            s["minicontainer_ratio"] = ratio(ours, s["median"])
            print(f"  {cmd.name:34} {s['median']:8.1f} {s['p10']:8.1f} {s['p90']:8.1f}"
                  f" {s['minicontainer_ratio']:10.2f}")
    floor = stats["floor: python -c 'import click'"]["median"]
    limit = BUDGET * floor
    verdict = "PASS" if ours <= limit else "FAIL"
    print(f"start-up budget (minicontainer median <= {BUDGET} x floor median):"
          f" {verdict} ({ours:.1f} ms vs {limit:.1f} ms)")
    return {"runs": runs, "commands": stats,
            "budget": {"factor": BUDGET, "floor_median": floor, "limit": round(limit, 2),
                       "minicontainer_median": ours, "pass": ours <= limit}}


# ---------------------------------------------------------------------------
# 2. Feature costs
# ---------------------------------------------------------------------------

RELAXED = ("--network", "host", "--ipc", "host", "--uts", "host", "--cgroupns", "host")
FEATURES = {  # name: (options, sign): cost = sign * (median with options - default median)
    "extra namespaces (default - shared)": (RELAXED, -1),
    "seccomp (default - unconfined)": (("--seccomp", "unconfined"), -1),
    "cgroup limits (--memory 64m --pids-limit 100 - default)":
        (("--memory", "64m", "--pids-limit", "100"), +1),
    "--init (--init - default)": (("--init",), +1),
}


def bench_features(root, runs, skipped):
    heading(f"feature costs: {runs} interleaved repetitions, median deltas in ms")
    commands = [Command("default", mc("run", "--root", root, "/bin/noop"))]
    commands += [Command(name, mc("run", "--root", root, *options, "/bin/noop"))
                 for name, (options, _) in FEATURES.items()]
    samples = interleave(commands, runs, skipped)
    base = statistics.median(samples["default"])
    print(f"  default run: median {base:.1f} ms")
    costs = {"default_median": round(base, 2)}
    for name, (options, sign) in FEATURES.items():
        median = statistics.median(samples[name])
        cost = sign * (median - base)
        costs[name] = {"options": list(options), "median": round(median, 2),
                       "cost": round(cost, 2)}
        print(f"  {name:58} {cost:+7.1f} ms  (with the options: {median:.1f} ms)")
    return {"runs": runs, **costs}


def bench_network(root, runs, skipped):
    heading(f"--network bridge: {runs} interleaved repetitions, wall time in ms")
    check_call(mc("network", "prune"))
    commands = [Command("--network none", mc("run", "--root", root, "/bin/noop")),
                Command("--network bridge (bridge kept)",
                        mc("run", "--root", root, "--network", "bridge", "/bin/noop")),
                FreshBridge("--network bridge (no bridge yet)",
                            mc("run", "--root", root, "--network", "bridge", "/bin/noop"))]
    try:
        samples = interleave(commands, runs, skipped)
    finally:
        check_call(mc("network", "prune"))
    stats = {name: summary(ms) for name, ms in samples.items()}
    none = stats["--network none"]["median"]
    for name, st in stats.items():
        st["over_none"] = round(st["median"] - none, 2)
        print(f"  {name:34} {st['median']:8.1f} {st['p10']:8.1f} {st['p90']:8.1f}"
              f"  {st['over_none']:+7.1f} over none")
    kept = stats["--network bridge (bridge kept)"]["over_none"]
    verdict = "PASS" if kept <= NETWORK_BUDGET_MS else "FAIL"
    print(f"network budget (bridge, kept, at most +{NETWORK_BUDGET_MS} ms over none): {verdict}"
          f" ({kept:+.1f} ms)")
    return {"runs": runs, "commands": stats,
            "budget": {"ms": NETWORK_BUDGET_MS, "kept_over_none": kept,
                       "pass": kept <= NETWORK_BUDGET_MS}}


def bench_lifecycle(root, runs, skipped):
    heading(f"containers in the background: {runs} interleaved repetitions, wall time in ms")
    name = f"mc-bench-{os.getpid()}"
    check_call(mc("run", "--root", root, "-d", "--name", name, "/bin/busybox", "sleep", "600"))
    try:
        commands = [Command("run (foreground, no-op)", mc("run", "--root", root, "/bin/noop")),
                    Command("exec of a no-op", mc("exec", name, "/bin/noop")),
                    Sequence("run -d, then rm -f", [
                        mc("run", "--root", root, "-d", "--name", f"{name}-d", "/bin/busybox",
                           "sleep", "600"),
                        mc("rm", "-f", f"{name}-d")])]
        samples = interleave(commands, runs, skipped)
    finally:
        subprocess.run(mc("rm", "-f", name, f"{name}-d"), stdout=DEVNULL, stderr=DEVNULL)
    stats = {cmd: summary(ms) for cmd, ms in samples.items()}
    for cmd, st in stats.items():
        print(f"  {cmd:34} {st['median']:8.1f} {st['p10']:8.1f} {st['p90']:8.1f}")
    return {"runs": runs, "commands": stats}


# ---------------------------------------------------------------------------
# 3. Peak memory
# ---------------------------------------------------------------------------

def vm_hwm_kib(pid):
    """VmHWM of pid in KiB, or None once it is gone (or a zombie)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return None


def bench_memory(root, tmp, oci):
    heading("peak memory of minicontainer's supervising process (VmHWM)")
    if (root / "bin" / "busybox").exists():
        command = ["/bin/busybox", "sleep", "1"]
    else:
        check_call(mc("deploy", "--root", root, compile_static(NAP_C, tmp / "nap")))
        command = ["/bin/nap"]
    argv = mc("run", "--root", root, *command)
    peak = 0
    proc = subprocess.Popen(argv, stdout=DEVNULL, stderr=PIPE)
    try:
        while proc.poll() is None:
            peak = max(peak, vm_hwm_kib(proc.pid) or 0)
            time.sleep(0.05)
        _, err = proc.communicate()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, argv, stderr=err)
    mib = peak / 1024
    print(f"  {' '.join(command)}: VmHWM {mib:.1f} MiB")
    result = {"command": " ".join(argv), "vm_hwm_mib": round(mib, 2)}
    for peer in oci:
        peer.bundle_args(command)
        peer_peak = 0
        proc = subprocess.Popen(peer.argv(), stdout=DEVNULL, stderr=PIPE)
        try:
            while proc.poll() is None:
                peer_peak = max(peer_peak, vm_hwm_kib(proc.pid) or 0)
                time.sleep(0.05)
            proc.communicate()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            peer.bundle_args(["/bin/noop"])
            peer.delete_leftovers()
        if proc.returncode == 0:
            print(f"  {peer.runtime} run, the same command: VmHWM {peer_peak / 1024:.1f} MiB")
            result[f"{peer.runtime}_vm_hwm_mib"] = round(peer_peak / 1024, 2)
    return result


# ---------------------------------------------------------------------------
# 4. Deploy speed
# ---------------------------------------------------------------------------

def make_tree(top, seed=TREE_SEED):
    """A reproducible tree: TREE_FILES files of 0.5-16 KiB in nested folders, TREE_LINKS symlinks."""
    rng = random.Random(seed)
    files, total = [], 0
    for i in range(TREE_FILES):
        folder = top / f"d{rng.randrange(TREE_DIRS):02d}" / f"s{rng.randrange(5)}"
        if rng.random() < 0.3:
            folder = folder / f"t{rng.randrange(3)}"
        folder.mkdir(parents=True, exist_ok=True)
        size = rng.randint(512, 16 * 1024)
        path = folder / f"f{i:04d}.bin"
        path.write_bytes(rng.randbytes(size))
        files.append(path)
        total += size
    for i in range(TREE_LINKS):
        link = top / f"d{i % TREE_DIRS:02d}" / f"link{i:02d}"
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(rng.choice(files), link.parent), link)
    return {"files": TREE_FILES, "symlinks": TREE_LINKS, "bytes": total, "seed": seed}


def timed(argv):
    start = time.perf_counter()
    check_call(argv)
    return (time.perf_counter() - start) * 1000


def deploy_vs_cp(tmp, tree, runs, deploy_opts, cp_opts):
    """Interleave `deploy [opts] --to /data TREE` into a fresh root with `cp OPTS TREE R/data`."""
    times = {"deploy": [], "cp": []}
    for rep in range(runs):
        order = ("deploy", "cp") if rep % 2 == 0 else ("cp", "deploy")
        for tool in order:
            target = tmp / f"target-{tool}"
            target.mkdir()
            if tool == "deploy":
                (target / "proc").mkdir()
                argv = mc("deploy", *deploy_opts, "--root", target, "--to", "/data", tree)
            else:
                argv = ["cp", *cp_opts, str(tree), str(target / "data")]
            try:
                times[tool].append(timed(argv))
            finally:
                shutil.rmtree(target)
                os.sync()
    deploy, cp = (round(statistics.median(times[t]), 2) for t in ("deploy", "cp"))
    return {"deploy_median": deploy, "cp_median": cp, "ratio": ratio(deploy, cp), "runs": runs}


def bench_deploy(tmp):
    heading(f"deploy speed: {DEPLOY_RUNS} interleaved repetitions, medians in ms")
    tree = tmp / "tree"
    shape = make_tree(tree)
    os.sync()
    print(f"  tree: {shape['files']} files, {shape['symlinks']} symlinks,"
          f" {shape['bytes'] / 2**20:.1f} MiB (seed {shape['seed']})")
    result = {"tree": shape}
    copy = deploy_vs_cp(tmp, tree, DEPLOY_RUNS, [], ["-a"])
    print(f"  deploy --to /data: {copy['deploy_median']:.1f} ms   cp -a: {copy['cp_median']:.1f} ms"
          f"   deploy / cp: {copy['ratio']:.2f}")
    result["copy"] = copy
    help_text = subprocess.run(mc("deploy", "--help"), stdout=PIPE, check=True).stdout.decode()
    if "--link" in help_text:
        link = deploy_vs_cp(tmp, tree, DEPLOY_RUNS, ["--link"], ["-al"])
        print(f"  deploy --link: {link['deploy_median']:.1f} ms   cp -al: {link['cp_median']:.1f} ms"
              f"   deploy / cp: {link['ratio']:.2f}")
        result["link"] = link
    else:
        print("  deploy --link is not available yet: deploy --link vs cp -al not measured")
        result["link"] = None
    return result


# ---------------------------------------------------------------------------
# 5. Throughput and leftovers
# ---------------------------------------------------------------------------

def wait_all(procs, argv):
    """Wait for every process; raise if any did not exit 0."""
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise subprocess.CalledProcessError(proc.returncode, argv, stderr=err)


def start_parallel(argv, count):
    """Start count copies of argv at once, then wait for all; seconds taken."""
    procs = []
    start = time.perf_counter()
    try:
        for _ in range(count):
            procs.append(subprocess.Popen(argv, stdout=DEVNULL, stderr=PIPE))
        wait_all(procs, argv)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return time.perf_counter() - start


def leftover_cgroups():
    found = []
    for top, dirs, _ in os.walk("/sys/fs/cgroup"):
        found += [os.path.join(top, d) for d in dirs if d.startswith("minicontainer-")]
    return found


def processes_rooted_at(root):
    """Pids of processes whose root directory is root."""
    want = os.stat(root)
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{entry}/root")
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (want.st_dev, want.st_ino):
            pids.append(int(entry))
    return pids


def read_mountinfo():
    with open("/proc/self/mountinfo") as f:
        return f.read().splitlines()


def leftovers(root, mounts_before):
    mounts = read_mountinfo()
    return {
        "cgroups": leftover_cgroups(),
        "mounts_added": sorted(set(mounts) - set(mounts_before)),
        "mounts_removed": sorted(set(mounts_before) - set(mounts)),
        "processes": processes_rooted_at(root),
    }


def check_leftovers(root, mounts_before, tries=3):
    """Look for leftovers; look again a second later (up to tries) if any are seen.

    A real leak stays; a container another user is starting at the same time
    (say, the test suite) comes and goes.
    """
    found = leftovers(root, mounts_before)
    for _ in range(tries - 1):
        if not any(found.values()):
            break
        time.sleep(1)
        found = leftovers(root, mounts_before)
    return found


def bench_throughput(root, oci):
    heading("throughput: containers per second")
    argv = mc("run", "--root", root, "/bin/noop")
    mounts_before = read_mountinfo()
    start = time.perf_counter()
    for _ in range(SEQUENTIAL_CONTAINERS):
        check_call(argv)
    sequential = SEQUENTIAL_CONTAINERS / (time.perf_counter() - start)
    parallel = PARALLEL_CONTAINERS / start_parallel(argv, PARALLEL_CONTAINERS)
    print(f"  minicontainer: {SEQUENTIAL_CONTAINERS} back to back {sequential:.1f}/s,"
          f" {PARALLEL_CONTAINERS} in parallel {parallel:.1f}/s")
    peers = {}
    if shutil.which("bwrap"):
        bwrap = ["bwrap", "--unshare-all", "--die-with-parent", "--bind", str(root), "/",
                 "--proc", "/proc", "--dev", "/dev", "--cap-drop", "ALL", "/bin/noop"]
        peers["bwrap"] = (lambda: bwrap, None)
    for peer in oci:
        peers[peer.runtime] = (peer.argv, peer.delete_leftovers)
    peer_results = {}
    for name, (make_argv, clean) in peers.items():
        try:
            start = time.perf_counter()
            for _ in range(SEQUENTIAL_CONTAINERS):
                check_call(make_argv())
            peer_sequential = SEQUENTIAL_CONTAINERS / (time.perf_counter() - start)
            start = time.perf_counter()
            procs = [subprocess.Popen(make_argv(), stdout=DEVNULL, stderr=PIPE)
                     for _ in range(PARALLEL_CONTAINERS)]
            wait_all(procs, [name])
            peer_parallel = PARALLEL_CONTAINERS / (time.perf_counter() - start)
        except (subprocess.CalledProcessError, OSError) as exc:
            print(f"  skipping {name}: {failure_text(exc)}")
            continue
        finally:
            if clean:
                clean()
        print(f"  {name}: {SEQUENTIAL_CONTAINERS} back to back {peer_sequential:.1f}/s,"
              f" {PARALLEL_CONTAINERS} in parallel {peer_parallel:.1f}/s")
        peer_results[name] = {"sequential_per_second": round(peer_sequential, 2),
                              "parallel_per_second": round(peer_parallel, 2)}
    found = check_leftovers(root, mounts_before)
    clean = not any(found.values())
    print(f"left behind (minicontainer-* cgroups, mountinfo changes, processes rooted at ROOT):"
          f" {'nothing' if clean else 'LEAK'}")
    for kind, items in found.items():
        for item in items:
            print(f"  {kind}: {item}")
    return {"sequential": {"containers": SEQUENTIAL_CONTAINERS, "per_second": round(sequential, 2)},
            "parallel": {"containers": PARALLEL_CONTAINERS, "per_second": round(parallel, 2)},
            "peers": peer_results, "leftovers": found, "clean": clean}


# ---------------------------------------------------------------------------
# The library: minicontainer.run() from this process
# ---------------------------------------------------------------------------

LIBRARY_BLOCKS, LIBRARY_BLOCK = 10, 20  # interleaved blocks of serial containers, each
QUICK_LIBRARY_BLOCKS = 3
THREADS, THREAD_CONTAINERS = 8, 25  # eight threads at once, each this many containers
LEAK_RUN, QUICK_LEAK_RUN = 10000, 500


def caller_state():
    """This process's descriptors, threads, children and resident memory (KiB)."""
    import threading
    me = str(os.getpid())
    children = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                children += f.read().rsplit(")", 1)[1].split()[1] == me
        except OSError:
            pass
    with open("/proc/self/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return {"fds": len(os.listdir("/proc/self/fd")), "threads": threading.active_count(),
            "children": children, "rss_kib": rss}


def bench_library(root, oci, quick):
    """Serial containers from one Python process, in interleaved blocks: the
    library, bwrap and runc started with subprocess.run from this process,
    and the command line; then eight threads at once (library and bwrap);
    then the leak run: 10,000 containers, and the caller's descriptors,
    threads, children and memory before and after."""
    import threading
    import minicontainer
    heading("the library: minicontainer.run() from one Python process")
    blocks = QUICK_LIBRARY_BLOCKS if quick else LIBRARY_BLOCKS
    noop = ["/bin/noop"]

    def library():
        minicontainer.run(noop, root=str(root), check=True)

    contenders = {"library": library}
    if shutil.which("bwrap"):
        bwrap = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--bind",
                 str(root), "/", "--proc", "/proc", "--dev", "/dev", "/bin/noop"]
        contenders["bwrap"] = lambda: subprocess.run(bwrap, check=True)
    for peer in oci:
        if peer.runtime == "runc":  # `runc run` removes its container when it ends
            peer.bundle_args(noop)
            contenders["runc"] = lambda peer=peer: subprocess.run(peer.argv(), check=True,
                                                                  stdout=DEVNULL)
    cli = mc("run", "--root", root, "/bin/noop")
    contenders["command line"] = lambda: subprocess.run(cli, check=True)
    mounts_before = read_mountinfo()
    per_block = {name: [] for name in contenders}
    for name, run in list(contenders.items()):  # a warm-up each, and the peers that fail go
        try:
            run()
        except (subprocess.CalledProcessError, OSError) as exc:
            print(f"  skipping {name}: {failure_text(exc)}")
            del contenders[name], per_block[name]
    for _ in range(blocks):
        for name, run in contenders.items():
            start = time.perf_counter()
            for _ in range(LIBRARY_BLOCK):
                run()
            per_block[name].append((time.perf_counter() - start) * 1000 / LIBRARY_BLOCK)
    serial = {name: round(statistics.median(times), 2) for name, times in per_block.items()}
    for name, ms in serial.items():
        print(f"  {name:14} {ms:7.2f} ms a container, {1000 / ms:6.1f}/s"
              f" (median of {blocks} blocks of {LIBRARY_BLOCK})")
    pace = None
    if "bwrap" in serial:
        pace = round(serial["bwrap"] / serial["library"], 3)
        print(f"  the library's pace: {pace:.2f} x bwrap's (the goal: at least 0.5)")

    def threaded(run):
        errors = []

        def worker():
            try:
                for _ in range(THREAD_CONTAINERS):
                    run()
            except BaseException as exc:  # said below
                errors.append(exc)
        threads = [threading.Thread(target=worker) for _ in range(THREADS)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        return THREADS * THREAD_CONTAINERS / (time.perf_counter() - start)

    eight = {}
    for name in ("library", "bwrap"):
        if name in contenders:
            eight[name] = round(threaded(contenders[name]), 1)
            print(f"  {name:14} {THREADS} threads x {THREAD_CONTAINERS}: {eight[name]:6.1f}/s")
    count = QUICK_LEAK_RUN if quick else LEAK_RUN
    before = caller_state()
    start = time.perf_counter()
    for _ in range(count):
        library()
    leak_seconds = time.perf_counter() - start
    after = caller_state()
    print(f"  {count} containers from this process in {leak_seconds:.1f} s; the caller before"
          f" {before}, after {after}")
    found = check_leftovers(root, mounts_before)
    clean = not any(found.values())
    print(f"  left behind (minicontainer-* cgroups, mountinfo changes, processes rooted at ROOT):"
          f" {'nothing' if clean else 'LEAK'}")
    return {"serial_ms": serial, "pace_vs_bwrap": pace, "blocks": blocks,
            "block_size": LIBRARY_BLOCK, "eight_threads_per_second": eight,
            "leak_run": {"containers": count, "seconds": round(leak_seconds, 1),
                         "caller_before": before, "caller_after": after},
            "leftovers": found, "clean": clean}


# ---------------------------------------------------------------------------
# Environment, main
# ---------------------------------------------------------------------------

def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def environment():
    uname = platform.uname()
    try:
        click_version = importlib.metadata.version("click")
    except importlib.metadata.PackageNotFoundError:
        click_version = None
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "kernel": f"{uname.release} {uname.version}",
        "machine": uname.machine,
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "load_average": os.getloadavg(),
        "python": sys.version,
        "python_executable": PYTHON,
        "git_commit": first_line(["git", "-C", str(REPO), "rev-parse", "HEAD"]),
        "tools": {
            "minicontainer": first_line(mc("--version")),
            "click": click_version,
            "gcc": first_line(["gcc", "--version"]),
            "bwrap": first_line(["bwrap", "--version"]),
            "unshare": first_line(["unshare", "--version"]),
            "crun": first_line(["crun", "--version"]),
            "runc": first_line(["runc", "--version"]),
            "busybox": first_line(["busybox"]),
        },
    }


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, help=f"start-up repetitions (default {STARTUP_RUNS},"
                        f" {QUICK_RUNS} with --quick); at least 2")
    parser.add_argument("--quick", action="store_true",
                        help="fewer repetitions, for a smoke test")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON,
                        help="where to write the results (default: bench/results.json)")
    args = parser.parse_args()
    if args.runs is None:
        args.runs = QUICK_RUNS if args.quick else STARTUP_RUNS
    if args.runs < 2:
        parser.error("--runs must be at least 2 (p10 and p90 need two samples)")
    return args


def preflight():
    if os.geteuid() != 0:
        sys.exit("bench.py: run as root: sudo .venv/bin/python bench/bench.py")
    if not MINICONTAINER.exists():
        sys.exit(f"bench.py: {MINICONTAINER} is missing: run sudo ./setup.sh first")
    if not shutil.which("gcc"):
        sys.exit("bench.py: gcc is missing: run sudo ./setup.sh first")


def run_all(args, tmp, oci):
    skipped = {}
    results = {"environment": environment()}
    env = results["environment"]
    print(f"{env['tools']['minicontainer']} | Linux {platform.release()} | {env['cpu_count']} CPUs"
          f" | Python {platform.python_version()} | load {env['load_average'][0]:.2f}")
    root = make_root(tmp)
    results["startup"] = bench_startup(root, tmp, args.runs, skipped, oci)
    feature_runs = QUICK_FEATURE_RUNS if args.quick else FEATURE_RUNS
    results["features"] = bench_features(root, feature_runs, skipped)
    results["network"] = bench_network(root, feature_runs * 2, skipped)
    results["lifecycle"] = bench_lifecycle(root, feature_runs * 2, skipped)
    results["memory"] = bench_memory(root, tmp, oci)
    results["deploy"] = bench_deploy(tmp)
    results["throughput"] = bench_throughput(root, oci)
    results["library"] = bench_library(root, oci, args.quick)
    results["skipped"] = skipped
    return results


def main():
    args = parse_args()
    preflight()
    tmp = Path(tempfile.mkdtemp(prefix="mc-bench-"))
    # The background containers' state in the bench's own directory, removed
    # with it: the host's /run/minicontainer is never touched.
    os.environ["MINICONTAINER_STATE"] = str(tmp / "state")
    oci = []
    try:
        results = run_all(args, tmp, oci)
    except KeyboardInterrupt:
        print("\nbench.py: interrupted", file=sys.stderr)
        return 130
    except subprocess.CalledProcessError as exc:
        print(f"bench.py: {' '.join(map(str, exc.cmd))}: {failure_text(exc)}", file=sys.stderr)
        return 1
    finally:
        for command in oci:
            command.delete_leftovers()
        shutil.rmtree(tmp, ignore_errors=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nresults written to {args.json.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
