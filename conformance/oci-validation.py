#!/usr/bin/env python3
"""Build and run the OCI runtime-tools validation suite against one runtime; score its TAP.

usage: oci-validation.py --runtime PATH [--source TARBALL] [--build-dir DIR] [--jobs 1]
                   [--only NAME...] [--timeout SECONDS] [--json OUT]
                   [--crun-hybrid-workaround] [--argv-log FILE] [--system-tmpdir]
                   [--keep-scratch]

The suite's source (runtime-tools with its vendor dir and rootfs) is --source, else
$OCI_RUNTIME_TOOLS, else ../shared/oci/runtime-tools-*.tar.gz next to the repository.
It is built with go (apt-get installs golang-go if go is missing), offline from the
vendor dir, once, and cached in --build-dir (/var/tmp/oci-validation-build).

Scoring ("TOTAL", the last line), per program: every line starting (column 0) with "ok"
or "not ok" counts once ("ok N # SKIP" is an ok; also shown in the skip column).  Lines
nested in YAML diagnostics (indented) are not counted.  A program that times out, is
killed by a signal, exits non-zero, or prints TAP lines without a "1..N" plan adds one
"not ok".  A program that exits 0 printing nothing (process_rlimits_fail) passed: 0/0,
status "pass-silent".  A program whose only output is plan "1..0" plus a YAML diagnostic
with an "error" key (how hooks, prestart, poststart... report failure) also scores 0/0;
its status says so.
A second score ("STRICT", the line before TOTAL) does not count SKIP lines as passes and
counts each program without test points as one point, failed if it printed an "error"
diagnostic.

Each program runs in its own scratch dir (with copies of runtimetest and the rootfs
tarball) and TMPDIR pointing inside it, so bundles are not in /tmp.  After each program
the script removes what the suite left: containers whose bundle is in the scratch dir,
processes carrying the run's env token or rooted in the scratch dir, mounts under the
scratch dir, cgroups named cgrouptest/testdir/<uuid>, and <uuid> entries in the runtime
state dirs.  It reports each as a leak, then re-checks at the end ("residual").

Standard library only (Python 3.11).  Must run as root.
"""

import argparse
import concurrent.futures
import datetime
import glob
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time

# The repository's top (this script is <top>/conformance/oci-validation.py); the
# source tarball's default place is beside it: <top>/../shared/oci.
REPO_TOP = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
SOURCE_ENV = "OCI_RUNTIME_TOOLS"
SOURCE_GLOB = os.path.join(os.path.dirname(REPO_TOP), "shared", "oci", "runtime-tools-*.tar.gz")
DEFAULT_BUILD_DIR = "/var/tmp/oci-validation-build"
DEFAULT_STATE_DIRS = ["/run/runc", "/run/crun", "/run/minicontainer"]
CGROUP_ROOT = "/sys/fs/cgroup"
UNIFIED = "/sys/fs/cgroup/unified"
INNER_ENV = "OCIV_INSIDE_PRIVATE_NS"
MARK_ENV = "OCIV_RUN_TOKEN"
PROG_ENV = "OCIV_PROGRAM"

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
OK_RE = re.compile(r"^ok\b")
NOT_OK_RE = re.compile(r"^not ok\b")
PLAN_RE = re.compile(r"^1\.\.(\d+)")
SKIP_RE = re.compile(r"^ok\b[^#]*#\s*skip", re.I)
TAP_ANY_RE = re.compile(r"^(ok\b|not ok\b|1\.\.\d+|TAP version)")
SUITE_CGROUP_NAMES = {"cgrouptest", "testdir"}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def run(cmd, **kw):
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


# ----------------------------------------------------------------------------- build

def find_source(arg):
    """The runtime-tools tarball: --source, else $OCI_RUNTIME_TOOLS, else the newest-named
    match of SOURCE_GLOB. Exits with one line if there is none."""
    given = arg or os.environ.get(SOURCE_ENV)
    if given:
        if not os.path.isfile(given):
            sys.exit(f"oci-validation: runtime-tools source {given} "
                     f"({'--source' if arg else SOURCE_ENV}): no such file")
        return os.path.abspath(given)
    found = sorted(glob.glob(SOURCE_GLOB))
    if not found:
        sys.exit(f"oci-validation: no runtime-tools source: pass --source TARBALL, set "
                 f"{SOURCE_ENV}, or put runtime-tools-*.tar.gz in {os.path.dirname(SOURCE_GLOB)}")
    return found[-1]


def ensure_go():
    """Install Debian's go (golang-go) if there is none; gcc and libc6-dev too if gcc is
    missing (the suite's programs link net and os/user with cgo)."""
    pkgs = ([] if shutil.which("go") else ["golang-go"]) + \
        ([] if shutil.which("gcc") else ["gcc", "libc6-dev"])
    if not pkgs:
        return
    log(f"[build] installing {' '.join(pkgs)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], env=env, check=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends"] + pkgs,
                   env=env, check=True, stdout=subprocess.DEVNULL)
    if not shutil.which("go"):
        sys.exit("oci-validation: go is still missing after installing golang-go")


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def inside_git_checkout(path):
    p = os.path.abspath(path)
    while True:
        if os.path.exists(os.path.join(p, ".git")):
            return p
        parent = os.path.dirname(p)
        if parent == p:
            return None
        p = parent


def build(build_dir, source, force=False):
    """Extract the source and build runtimetest + validation programs. Returns info dict."""
    build_dir = os.path.abspath(build_dir)
    git = inside_git_checkout(build_dir)
    if git:
        sys.exit(f"refusing to build inside a git checkout ({git}); choose another --build-dir")
    src = os.path.join(build_dir, "src", "runtime-tools")
    bindir = os.path.join(build_dir, "bin")
    stamp = os.path.join(build_dir, "build-stamp.json")
    ensure_go()
    go_version = run(["go", "version"]).stdout.strip()
    digest = sha256(source)
    if not force and os.path.exists(stamp):
        with open(stamp) as f:
            st = json.load(f)
        if st.get("source_sha256") == digest and st.get("go") == go_version and \
                os.path.exists(os.path.join(bindir, "runtimetest")):
            st["cached"] = True
            return st
    log(f"[build] extracting {source} -> {build_dir}/src")
    shutil.rmtree(os.path.join(build_dir, "src"), ignore_errors=True)
    shutil.rmtree(bindir, ignore_errors=True)
    os.makedirs(os.path.join(build_dir, "src"))
    os.makedirs(os.path.join(bindir, "validation"))
    t0 = time.monotonic()
    subprocess.run(["tar", "-xzf", source, "-C", os.path.join(build_dir, "src")], check=True)
    env = dict(os.environ, GO111MODULE="on", GOFLAGS="-mod=vendor", GOPROXY="off",
               GOTOOLCHAIN="local", GOCACHE=os.path.join(build_dir, "gocache"),
               GOPATH=os.path.join(build_dir, "gopath"))
    cmds = [
        (dict(env, CGO_ENABLED="0"),
         ["go", "build", "-tags", "netgo osusergo", "-o", os.path.join(bindir, "runtimetest"),
          "./cmd/runtimetest"]),
        (env, ["go", "build", "-o", os.path.join(bindir, "validation") + "/", "./validation/..."]),
    ]
    times = []
    for e, cmd in cmds:
        log("[build] " + " ".join(shlex.quote(c) for c in cmd))
        t1 = time.monotonic()
        subprocess.run(cmd, cwd=src, env=e, check=True)
        times.append(round(time.monotonic() - t1, 1))
    shutil.copy2(os.path.join(src, "rootfs-amd64.tar.gz"), os.path.join(bindir, "rootfs-amd64.tar.gz"))
    st = {"source": source, "source_sha256": digest, "go": go_version, "build_dir": build_dir,
          "extract_and_build_seconds": round(time.monotonic() - t0, 1),
          "runtimetest_seconds": times[0], "validation_seconds": times[1],
          "built_at": datetime.datetime.now().isoformat(timespec="seconds"),
          "env": "GO111MODULE=on GOFLAGS=-mod=vendor GOPROXY=off GOTOOLCHAIN=local", "cached": False}
    with open(stamp, "w") as f:
        json.dump(st, f, indent=1)
    return st


def list_programs(build_dir):
    src = os.path.join(build_dir, "src", "runtime-tools", "validation")
    names = sorted(n for n in os.listdir(src)
                   if n != "util" and os.path.isdir(os.path.join(src, n)))
    missing = [n for n in names if not os.access(os.path.join(build_dir, "bin", "validation", n), os.X_OK)]
    if missing:
        sys.exit(f"not built: {missing} (use --rebuild)")
    return names


# ----------------------------------------------------------------------------- host state

def mounts():
    """Mount points of this mount namespace: list of (mount id, mountpoint, fstype)."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            sep = parts.index("-")
            mp = parts[4].encode().decode("unicode_escape")
            out.append((parts[0], mp, parts[sep + 1]))
    return out


def cgroup_dirs():
    dirs = set()
    for ctrl in sorted(os.listdir(CGROUP_ROOT)):
        top = os.path.join(CGROUP_ROOT, ctrl)
        if not os.path.isdir(top) or os.path.islink(top):
            continue
        for root, subdirs, _ in os.walk(top):
            for d in subdirs:
                dirs.add(os.path.join(root, d))
    return dirs


def state_entries(state_dirs):
    ent = set()
    for d in state_dirs:
        if os.path.isdir(d):
            for n in os.listdir(d):
                ent.add(os.path.join(d, n))
    return ent


def tmp_entries():
    return {os.path.join("/tmp", n) for n in os.listdir("/tmp")
            if n.startswith(("ocitest", "oci-pid"))}


def containers(runtime):
    r = run([runtime, "list", "-q"])
    if r.returncode != 0:
        r = run([runtime, "list"])
        return {l.split()[0] for l in r.stdout.splitlines()[1:] if l.strip()}
    return {l.strip() for l in r.stdout.splitlines() if l.strip()}


def suite_containers(ctx, before_ids):
    """New containers whose bundle is in our scratch dir (other users of the same runtime
    root, e.g. podman, are never touched)."""
    found = []
    for cid in sorted(containers(ctx["real_runtime"]) - before_ids):
        r = run([ctx["real_runtime"], "state", cid])
        try:
            bundle = json.loads(r.stdout).get("bundle", "")
        except ValueError:
            bundle = ""
        if bundle.startswith(ctx["scratch"] + "/") or (not bundle and UUID_RE.match(cid)):
            found.append(cid)
    return found


def fs_type(mtab, path):
    """fstype of the topmost mount holding path (later mountinfo lines are mounted on top)."""
    hits = [(len(mp), i, fs) for i, (_, mp, fs) in enumerate(mtab)
            if path == mp or path.startswith(mp.rstrip("/") + "/")]
    return max(hits)[2]


def suite_mount(ctx, mp):
    return mp.startswith(ctx["scratch"] + "/") or mp.startswith("/tmp/ocitest")


def suite_state(ctx, path):
    """A state entry of ours: named like a suite container (<uuid>), and a file in it
    (runc's state.json, crun's status, minicontainer's state.json) names our scratch dir
    or /tmp/ocitest. Entries of other users of the same runtime root are never touched."""
    if not UUID_RE.match(os.path.basename(path)):
        return False
    marks = (ctx["scratch"].encode() + b"/", b"/tmp/ocitest")
    try:
        files = [os.path.join(path, n) for n in os.listdir(path)] if os.path.isdir(path) else [path]
        for f in files:
            if os.path.isfile(f):
                with open(f, "rb") as fh:
                    data = fh.read(1 << 20)
                if any(m in data for m in marks):
                    return True
    except OSError:
        pass
    return False


def suite_cgroup(d):
    """cgroups the suite makes: /cgrouptest, testdir/cgrouptest/..., /<uuid container id>."""
    comps = set(d[len(CGROUP_ROOT):].split("/"))
    return bool(comps & SUITE_CGROUP_NAMES) or any(UUID_RE.match(c) for c in comps)


def snapshot(ctx):
    return {"mounts": mounts(), "cgroups": cgroup_dirs(), "state": state_entries(ctx["state_dirs"]),
            "tmp": tmp_entries(), "containers": containers(ctx["real_runtime"])}


def suite_processes(ctx):
    """Processes left by the suite: marked by our env token, or whose root/cwd is in scratch."""
    found = []
    me = os.getpid()
    token = f"{MARK_ENV}={ctx['token']}".encode()
    scratch = ctx["scratch"]
    for p in os.listdir("/proc"):
        if not p.isdigit() or int(p) == me:
            continue
        try:
            with open(f"/proc/{p}/environ", "rb") as f:
                marked = token in f.read().split(b"\0")
            root = os.readlink(f"/proc/{p}/root")
            cwd = os.readlink(f"/proc/{p}/cwd")
            with open(f"/proc/{p}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if marked or root.startswith(scratch) or cwd.startswith(scratch + "/"):
            found.append((int(p), cmd))
    return found


def cleanup(ctx, before, label):
    """Undo whatever appeared since `before`. Returns a dict of leaks found (and what was done)."""
    leaks = {}
    rt = ctx["real_runtime"]
    # 1. containers
    new_ct = suite_containers(ctx, before["containers"])
    if new_ct:
        leaks["containers"] = new_ct
        for cid in new_ct:
            run([rt, "delete", "--force", cid])
    # 2. processes
    procs = suite_processes(ctx)
    if procs:
        leaks["processes"] = [f"{pid} {cmd}" for pid, cmd in procs]
        for pid, _ in procs:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.5)
        for cid in suite_containers(ctx, before["containers"]):
            run([rt, "delete", "--force", cid])
    # 3. mounts under our scratch dir (or /tmp/ocitest*); other new mounts are not ours
    old_ids = {m[0] for m in before["mounts"]}
    new_m = [m for m in mounts() if m[0] not in old_ids and suite_mount(ctx, m[1])]
    if new_m:
        leaks["mounts"] = [f"{mp} ({fs})" for _, mp, fs in new_m]
        for _, mp, _ in sorted(new_m, key=lambda m: -len(m[1])):
            r = run(["umount", "-l", mp])
            if r.returncode:
                leaks.setdefault("cleanup_errors", []).append(f"umount {mp}: {r.stderr.strip()}")
    # 4. cgroups named like the suite's
    new_cg = sorted(d for d in cgroup_dirs() - before["cgroups"] if suite_cgroup(d))
    if new_cg:
        leaks["cgroups"] = new_cg
        mtab = mounts()
        for d in sorted(new_cg, key=lambda d: -d.count("/")):
            try:
                if fs_type(mtab, d) == "tmpfs":
                    # --private-unified-tmpfs: crun writes its "cgroup" dirs and files there
                    shutil.rmtree(d)
                else:
                    os.rmdir(d)
            except FileNotFoundError:
                pass
            except OSError as e:
                leaks.setdefault("cleanup_errors", []).append(f"rmdir {d}: {e}")
    # 5. runtime state dirs
    new_st = sorted(s for s in state_entries(ctx["state_dirs"]) - before["state"]
                    if suite_state(ctx, s))
    if new_st:
        leaks["state"] = new_st
        for s in new_st:
            shutil.rmtree(s, ignore_errors=True)
    # 6. /tmp bundles (only if the suite wrote to /tmp despite TMPDIR)
    new_tmp = sorted(tmp_entries() - before["tmp"])
    if new_tmp:
        leaks["tmp"] = new_tmp
        for t in new_tmp:
            shutil.rmtree(t, ignore_errors=True)
    if leaks:
        log(f"[cleanup] {label}: " + "; ".join(f"{k}={len(v)}" for k, v in leaks.items()))
    return leaks


# ----------------------------------------------------------------------------- running

def parse_tap(text):
    ok = not_ok = skip = 0
    plans = []
    anything = False
    failures = []
    for line in text.splitlines():
        if TAP_ANY_RE.match(line):
            anything = True
        if NOT_OK_RE.match(line):
            not_ok += 1
            failures.append(line)
        elif OK_RE.match(line):
            ok += 1
            if SKIP_RE.match(line):
                skip += 1
        else:
            m = PLAN_RE.match(line)
            if m:
                plans.append(int(m.group(1)))
    # linux_cgroups_cpus prints two TAP streams ("1..112" then "1..0"): add the plans up
    plan = sum(plans) if plans else None
    return ok, not_ok, skip, plan, anything, failures


def run_program(ctx, name):
    pdir = os.path.join(ctx["scratch"], "runs", name)
    tmpd = os.path.join(pdir, "tmp")
    os.makedirs(tmpd)
    for d in (ctx["scratch"], os.path.dirname(pdir), pdir, tmpd):
        # mkdtemp makes 0700 dirs; containers with a user namespace (linux_uid_mappings,
        # linux_ns_nopath) must traverse them to reach their bundle, as they can in /tmp.
        os.chmod(d, 0o1777 if d == tmpd else 0o755)
    for f in ("runtimetest", "rootfs-amd64.tar.gz"):
        shutil.copy2(os.path.join(ctx["bindir"], f), os.path.join(pdir, f))
    env = dict(os.environ)
    env.update({"RUNTIME": ctx["runtime_cmd"], MARK_ENV: ctx["token"], PROG_ENV: name})
    if ctx["scratch_tmpdir"]:
        env["TMPDIR"] = tmpd
    else:
        env.pop("TMPDIR", None)
    if "/usr/sbin" not in env.get("PATH", ""):
        env["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    exe = os.path.join(ctx["bindir"], "validation", name)
    out_p, err_p = os.path.join(pdir, "stdout"), os.path.join(pdir, "stderr")
    t0 = time.monotonic()
    timed_out = False
    with open(out_p, "wb") as out, open(err_p, "wb") as err:
        p = subprocess.Popen([exe], cwd=pdir, env=env, stdin=subprocess.DEVNULL, stdout=out,
                             stderr=err, start_new_session=True)
        try:
            rc = p.wait(timeout=ctx["timeout"])
        except subprocess.TimeoutExpired:
            timed_out = True
            try:
                os.killpg(p.pid, signal.SIGKILL)  # the program's own process group only
            except ProcessLookupError:
                pass
            rc = p.wait()
    secs = round(time.monotonic() - t0, 2)
    with open(out_p, errors="replace") as f:
        stdout = f.read()
    with open(err_p, errors="replace") as f:
        stderr = f.read()
    ok, not_ok, skip, plan, anything, failures = parse_tap(stdout)
    if timed_out:
        status = f"timeout({ctx['timeout']}s)"
    elif rc < 0:
        status = f"signal {-rc}"
    elif rc != 0:
        status = f"exit {rc}"
    elif plan is None and not anything and not stdout.strip():
        status = "pass-silent"
    elif plan is None:
        status = "no-plan"
    elif plan == 0 and re.search(r'^\s+"error":', stdout, re.M):
        # e.g. hooks, prestart_fail: the failure is only a YAML diagnostic, with plan 1..0
        status = "0 tests, error in YAML (uncounted)"
    else:
        status = "ok" if not_ok == 0 else "fail"
    if status.startswith(("timeout", "signal", "exit", "no-plan")):
        not_ok += 1
        failures.append(f"not ok - [harness] {name}: {status}")
    elif plan is not None and plan != ok + not_ok:
        status += f" (plan 1..{plan} but {ok + not_ok} lines)"
    # second, "strict" score: SKIPs are not passes; a program with no test points
    # (plan 1..0 or silent) is one point, failed when it left an "error" diagnostic.
    s_pass, s_fail = ok - skip, not_ok
    if status == "pass-silent" or (plan == 0 and status == "ok"):
        s_pass += 1
    elif status.startswith("0 tests, error"):
        s_fail += 1
    return {"name": name, "ok": ok, "not_ok": not_ok, "skip": skip, "plan": plan,
            "strict_pass": s_pass, "strict_fail": s_fail,
            "status": status, "exit_code": rc, "timed_out": timed_out, "seconds": secs,
            "failures": failures, "stdout": stdout, "stderr": stderr}


def make_wrapper(ctx, logfile):
    w = os.path.join(ctx["scratch"], "runtime-wrapper.sh")
    with open(w, "w") as f:
        f.write("#!/bin/bash\n"
                "# logs: time, validation program, cwd, argv; then execs the real runtime\n"
                f"{{ printf '%s\\t%s\\t%s\\t' \"$(date +%s.%N)\" \"${{{PROG_ENV}:-?}}\" \"$PWD\"\n"
                "  printf '%q ' \"$@\"; printf '\\n'; } >> " + shlex.quote(logfile) + "\n"
                f"exec {shlex.quote(ctx['real_runtime'])} \"$@\"\n")
    os.chmod(w, 0o755)
    return w


def summarize_argv(logfile, scratch):
    """verb -> {count, flags{flag: count}, programs[]} from the wrapper log."""
    verbs = {}
    if not os.path.exists(logfile):
        return verbs
    with open(logfile) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t", 3)
            if len(parts) < 4:
                continue
            prog, argv = parts[1], shlex.split(parts[3])
            verb = next((a for a in argv if not a.startswith("-")), "")
            v = verbs.setdefault(verb, {"count": 0, "flags": {}, "shapes": {}, "programs": set()})
            v["count"] += 1
            v["programs"].add(prog)
            for a in argv:
                if a.startswith("-"):
                    v["flags"][a] = v["flags"].get(a, 0) + 1
            shape = " ".join("<id>" if UUID_RE.match(a) else
                             "<path>" if a.startswith("/") else a for a in argv)
            v["shapes"][shape] = v["shapes"].get(shape, 0) + 1
    for v in verbs.values():
        v["programs"] = sorted(v["programs"])
    return verbs


def runtime_version(rt):
    r = run([rt, "--version"])
    return (r.stdout or r.stderr).strip()


def host_facts():
    facts = {"kernel": os.uname().release}
    try:
        with open(os.path.join(UNIFIED, "cgroup.controllers")) as f:
            facts["unified_controllers"] = f.read().strip()
    except OSError:
        facts["unified_controllers"] = None
    facts["cgroup_mounts"] = [f"{mp} {fs}" for _, mp, fs in mounts() if mp.startswith(CGROUP_ROOT)]
    with open("/proc/self/status") as f:
        facts["CapEff"] = next(l.split()[1] for l in f if l.startswith("CapEff"))
    return facts


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runtime", required=True, help="path to the OCI runtime (runc, crun, ...)")
    ap.add_argument("--build-dir", default=DEFAULT_BUILD_DIR)
    ap.add_argument("--source", help=f"runtime-tools source tarball (default: ${SOURCE_ENV}, "
                    f"else {SOURCE_GLOB})")
    ap.add_argument("--rebuild", action="store_true")
    ap.add_argument("--build-only", action="store_true")
    ap.add_argument("--jobs", type=int, default=1,
                    help="programs run at once (default 1; >1 is unsafe: several programs "
                         "share the cgroup path /cgrouptest)")
    ap.add_argument("--only", nargs="+", metavar="NAME")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per program")
    ap.add_argument("--json", metavar="OUT")
    ap.add_argument("--private-unified-tmpfs", "--crun-hybrid-workaround", action="store_true",
                    dest="private_unified",
                    help="run the suite in a private mount namespace (unshare -m) with a tmpfs "
                         "over /sys/fs/cgroup/unified (crun refuses hybrid cgroups otherwise)")
    ap.add_argument("--argv-log", metavar="FILE",
                    help="run through a wrapper that appends time, program, cwd and argv of "
                         "every runtime call to FILE")
    ap.add_argument("--state-dir", action="append", default=None,
                    help=f"runtime state dirs to watch (default {DEFAULT_STATE_DIRS})")
    ap.add_argument("--scratch-parent", default="/var/tmp")
    ap.add_argument("--keep-scratch", action="store_true")
    ap.add_argument("--system-tmpdir", action="store_true",
                    help="do not point TMPDIR into the scratch dir: bundles go to /tmp/ocitest*")
    args = ap.parse_args()

    if os.geteuid() != 0:
        sys.exit("must run as root")
    real_runtime = shutil.which(args.runtime)
    if not real_runtime:
        sys.exit(f"runtime not found: {args.runtime}")
    real_runtime = os.path.abspath(real_runtime)

    inner = os.environ.get(INNER_ENV) == "1"
    if not inner:
        binfo = build(args.build_dir, find_source(args.source), args.rebuild)
        log(f"[build] {'cached' if binfo.get('cached') else 'built'} in {args.build_dir} "
            f"(runtimetest {binfo['runtimetest_seconds']}s, validation {binfo['validation_seconds']}s)")
        if args.build_only:
            return 0
    else:
        with open(os.path.join(args.build_dir, "build-stamp.json")) as f:
            binfo = json.load(f)

    if args.private_unified and not inner:
        # Re-run this script inside a new private mount namespace; check the host after.
        host_before = mounts()
        cmd = ["unshare", "--mount", "--propagation", "private", "--",
               sys.executable, os.path.abspath(__file__)] + sys.argv[1:]
        log("[ns] " + " ".join(shlex.quote(c) for c in cmd))
        rc = subprocess.call(cmd, env=dict(os.environ, **{INNER_ENV: "1"}))
        host_ids = {m[0] for m in host_before}
        host_new = [f"{mp} ({fs})" for i, mp, fs in mounts() if i not in host_ids
                    and ("/ociv-" in mp or "/ocitest" in mp or mp.startswith(CGROUP_ROOT))]
        log(f"[ns] host mount namespace after the run: {len(host_new)} new mounts {host_new}")
        if args.json and os.path.exists(args.json):
            with open(args.json) as f:
                data = json.load(f)
            data["host_mounts_new_after_private_ns_run"] = host_new
            with open(args.json, "w") as f:
                json.dump(data, f, indent=1)
        return rc

    ns_setup = []
    if args.private_unified:
        for cmd in (["mount", "--make-rprivate", "/"],
                    ["mount", "-t", "tmpfs", "tmpfs", UNIFIED]):
            subprocess.run(cmd, check=True)
            ns_setup.append(" ".join(cmd))

    programs = list_programs(args.build_dir)
    if args.only:
        want = [n[:-2] if n.endswith(".t") else n for n in args.only]
        bad = [n for n in want if n not in programs]
        if bad:
            sys.exit(f"unknown programs: {bad}")
        programs = [n for n in programs if n in want]

    scratch = tempfile.mkdtemp(prefix="ociv-", dir=args.scratch_parent)
    ctx = {"scratch": scratch, "bindir": os.path.join(args.build_dir, "bin"),
           "real_runtime": real_runtime, "runtime_cmd": real_runtime, "timeout": args.timeout,
           "token": os.path.basename(scratch) + f"-{os.getpid()}",
           "state_dirs": args.state_dir or DEFAULT_STATE_DIRS,
           "scratch_tmpdir": not args.system_tmpdir}
    argv_log = None
    if args.argv_log:
        argv_log = os.path.abspath(args.argv_log)
        ctx["runtime_cmd"] = make_wrapper(ctx, argv_log)

    started = datetime.datetime.now().isoformat(timespec="seconds")
    t0 = time.monotonic()
    # state roots the run makes (runc's first call makes /run/runc): removed at the end
    made_state_dirs = [d for d in ctx["state_dirs"] if not os.path.exists(d)]
    initial = snapshot(ctx)
    results, leaks = [], {}
    interrupted = False
    try:
        if args.jobs <= 1:
            for name in programs:
                before = snapshot(ctx)
                res = run_program(ctx, name)
                lk = cleanup(ctx, before, name)
                if lk:
                    leaks[name] = lk
                shutil.rmtree(os.path.join(scratch, "runs", name), ignore_errors=True)
                results.append(res)
                log(f"  {name:40s} ok {res['ok']:4d}  not ok {res['not_ok']:3d}  {res['status']}  {res['seconds']}s")
        else:
            with concurrent.futures.ThreadPoolExecutor(args.jobs) as ex:
                futs = {ex.submit(run_program, ctx, n): n for n in programs}
                for fut in concurrent.futures.as_completed(futs):
                    res = fut.result()
                    results.append(res)
                    log(f"  {res['name']:40s} ok {res['ok']:4d}  not ok {res['not_ok']:3d}  {res['status']}")
            results.sort(key=lambda r: r["name"])
            lk = cleanup(ctx, initial, "all programs (--jobs > 1)")
            if lk:
                leaks["(all, jobs>1)"] = lk
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted: cleaning up")
    finally:
        final = cleanup(ctx, initial, "final")
        if final:
            leaks["(final)"] = final
        runs = os.path.join(scratch, "runs")
        if os.path.isdir(runs):
            # bundles still mounted would make rmtree descend into them: unmount first
            for _, mp, _ in sorted(mounts(), key=lambda m: -len(m[1])):
                if mp.startswith(scratch + "/"):
                    run(["umount", "-l", mp])
        if not args.keep_scratch:
            shutil.rmtree(scratch, ignore_errors=True)
        # a fresh check after everything: must be empty
        residual = {}
        after = snapshot(ctx)
        init_ids = {m[0] for m in initial["mounts"]}
        residual["mounts"] = [mp for i, mp, _ in after["mounts"]
                              if i not in init_ids and suite_mount(ctx, mp)]
        residual["cgroups"] = sorted(d for d in after["cgroups"] - initial["cgroups"]
                                     if suite_cgroup(d))
        residual["state"] = sorted(s for s in after["state"] - initial["state"]
                                   if suite_state(ctx, s))
        residual["containers"] = suite_containers(ctx, initial["containers"])
        residual["processes"] = [f"{p} {c}" for p, c in suite_processes(ctx)]
        residual["scratch_left"] = os.path.exists(scratch)
        for d in made_state_dirs:  # last: "runtime list" in snapshot() makes them again
            try:
                os.rmdir(d)
            except OSError:
                pass
        residual = {k: v for k, v in residual.items() if v}
    total_secs = round(time.monotonic() - t0, 1)

    tot_ok = sum(r["ok"] for r in results)
    tot_nok = sum(r["not_ok"] for r in results)
    tot_skip = sum(r["skip"] for r in results)
    w = max([len(r["name"]) for r in results] + [7])
    print(f"{'program':{w}s} {'ok':>5s} {'not ok':>6s} {'skip':>5s} {'secs':>6s}  status")
    for r in results:
        print(f"{r['name']:{w}s} {r['ok']:5d} {r['not_ok']:6d} {r['skip']:5d} {r['seconds']:6.1f}  {r['status']}")
    print(f"runtime {real_runtime}{' (private ns, tmpfs on ' + UNIFIED + ')' if args.private_unified else ''}; "
          f"{len(results)} programs in {total_secs}s; skips (counted as ok): {tot_skip}")
    if leaks:
        print("state the suite left behind (removed by this script):")
        for prog, lk in leaks.items():
            for k, v in lk.items():
                print(f"  {prog}: {k}: {v if len(v) <= 6 else v[:6] + ['...']}")
    print("residual state after cleanup: " + (json.dumps(residual) if residual else "none"))
    st_pass = sum(r["strict_pass"] for r in results)
    st_fail = sum(r["strict_fail"] for r in results)
    print(f"STRICT pass {st_pass} / fail {st_fail}  (SKIP lines not counted; each 0-test "
          f"program = 1, failed if it printed an error diagnostic)")
    print(f"TOTAL ok {tot_ok} / not ok {tot_nok}")

    argv_summary = summarize_argv(argv_log, scratch) if argv_log else None
    if args.json:
        data = {"runtime": real_runtime, "runtime_version": runtime_version(real_runtime),
                "runtime_cmd_given_to_suite": ctx["runtime_cmd"],
                "private_unified_tmpfs": args.private_unified, "ns_setup": ns_setup,
                "started": started, "seconds": total_secs, "timeout": args.timeout,
                "jobs": args.jobs, "system_tmpdir": args.system_tmpdir,
                "host": host_facts(), "build": binfo,
                "totals": {"ok": tot_ok, "not_ok": tot_nok, "skip": tot_skip,
                           "strict_pass": st_pass, "strict_fail": st_fail,
                           "programs": len(results)},
                "leaks": leaks, "residual_after_cleanup": residual,
                "interrupted": interrupted, "argv_log": argv_log, "argv_summary": argv_summary,
                "programs": results}
        with open(args.json, "w") as f:
            json.dump(data, f, indent=1)
        log(f"[json] {args.json}")
    return 1 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
