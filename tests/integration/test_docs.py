"""Every command in README.md and docs/*.md runs, as it stands, and shows what the page shows.

The convention, for whoever writes a page (docs/development.md says it too):

- A fenced block marked `console` is a transcript. Each line that starts with
  `$ ` is a command (a line that starts with `> ` after it continues it, as
  the shell's PS2 shows a here-document); the lines up to the next `$ ` are
  its output, stdout and stderr together. Output is compared line by line
  after runs of blanks are made one and trailing blanks dropped. In the shown
  output `...` (or `…`) stands for any text within a line, a line of only
  `...` for any number of lines, and a lowercase word in angle brackets
  (`<id>`, `<time>`, `<short id>`) for any text within a line. A command must
  exit 0, unless the next command is `echo $?`, which then shows its status.
- A block marked `sh` is a script: it runs under `set -e` in a subshell and
  must exit 0; its output is not compared.
- A block marked `pycon` is a Python session (`>>> ` and `... ` lines, then
  what each shows): doctest runs it, with ELLIPSIS (`...` stands for any
  text) and NORMALIZE_WHITESPACE, by `mc-python`, this checkout's Python
  with minicontainer importable, in the page's directory; it must pass whole.
- Any other block (`text`, `toml`, `json`, none) is not run.
- `<!-- doc-test: not run: REASON -->` on the line before a block keeps it
  from running; the reason is required. `<!-- doc-test: as user -->` runs it
  as an ordinary user instead of root: test_rootless.py's
  test_the_rootless_page_runs_as_the_user does, with its user, through
  run_as_user below.

Each page is one session: its blocks run in order, by one bash, in an empty
directory of the test's own, as root, with this checkout's `minicontainer`
first on PATH (a wrapper that runs `sys.executable REPO/minicontainer.py`,
never the installed copy) and `sudo` a wrapper that runs its arguments (the
test is root already; a real sudo would find /usr/local/bin's minicontainer
through its secure_path). The shell's output goes to a file, not a pipe: a
container made by `create` keeps the descriptors it was given. Afterwards the
page must have left no container in its state directory, and its directory
is removed.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from helpers import CLI, REPO, remove_state, wait_for

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
RUN = {"console", "sh", "pycon"}
MARKER = re.compile(r"<!--\s*doc-test:\s*(.*?)\s*-->")
PLACEHOLDER = re.compile(r"(\.\.\.|…|<[a-z][a-z0-9 _-]*>)")
PAGE_TIMEOUT = 300


@dataclass
class Block:
    page: Path
    line: int  # of the opening fence, counted from 1
    lang: str
    text: str
    marker: str = ""

    @property
    def where(self):
        return f"{self.page.relative_to(REPO)}:{self.line}"

    @property
    def runs(self):
        return self.lang in RUN and not self.marker.startswith("not run")

    @property
    def as_user(self):
        return self.marker == "as user"


@dataclass
class Step:
    block: Block
    command: str
    shown: list = field(default_factory=list)  # None: not compared


def blocks(page):
    """The fenced blocks of a page, each with the doc-test marker on the line before it."""
    found, lines, i = [], page.read_text().splitlines(), 0
    while i < len(lines):
        fence = re.match(r"^(`{3,})(\S*)\s*$", lines[i])
        if not fence:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == fence.group(1)), None)
        assert end is not None, f"{page.relative_to(REPO)}:{i + 1}: a block that never ends"
        before = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marker = MARKER.fullmatch(before.strip())
        found.append(Block(page, i + 1, fence.group(2), "\n".join(lines[i + 1:end]),
                           marker.group(1) if marker else ""))
        i = end + 1
    return found


def steps(block):
    """A block's commands with the output each shows (None for a script)."""
    if block.lang == "sh":
        return [Step(block, f"( set -e\n{block.text}\n)", None)]
    if block.lang == "pycon":  # doctest prints nothing when every example holds
        return [Step(block, "mc-python -m doctest -o ELLIPSIS -o NORMALIZE_WHITESPACE /dev/stdin"
                            f" <<'__PYCON__'\n{block.text}\n__PYCON__", [])]
    found = []
    for line in block.text.splitlines():
        if line.startswith("$ "):
            found.append(Step(block, line[2:]))
        elif line.startswith("> ") and found and not found[-1].shown:
            found[-1].command += "\n" + line[2:]
        else:
            assert found, f"{block.where}: a console block must start with a `$ ` command"
            found[-1].shown.append(line)
    return found


def squeezed(lines):
    lines = [" ".join(line.split()) for line in lines]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def shown_pattern(shown):
    """A regular expression that the output, squeezed and joined, must match whole."""
    parts = []
    for line in squeezed(shown):
        if line in ("...", "…"):
            parts.append(r"(?:[^\n]*\n)*?")
            continue
        pieces = PLACEHOLDER.split(line)
        parts.append("".join(
            (".*?" if piece in ("...", "…") else ".+?") if i % 2 else re.escape(piece)
            for i, piece in enumerate(pieces)) + r"\n")
    return re.compile("".join(parts))


def matches(shown, output):
    text = "".join(line + "\n" for line in squeezed(output.splitlines()))
    return shown_pattern(shown).fullmatch(text) is not None


def groups(page):
    """The page's runnable steps, in runs of the same user: each run is one shell."""
    runs = []
    for block in blocks(page):
        if not block.runs:
            continue
        if not runs or runs[-1][0] != block.as_user:
            runs.append((block.as_user, []))
        runs[-1][1].extend(steps(block))
    return runs


def script(steps_):
    """One bash script for a session's steps: after each, a line with its
    number and status, then that status restored for the next one's `$?`."""
    lines = []
    for i, step in enumerate(steps_):
        lines.append(step.command)
        lines.append(f"__rc=$?; printf '\\n@@doc-test {i} %d@@\\n' \"$__rc\"; (exit \"$__rc\")")
    return "\n".join(lines) + "\n"


def run_session(steps_, work, env, **kwargs):
    """Run the steps by one bash in work: [(output, status)] for each one run
    (fewer when the shell died or timed out), and the whole output."""
    script_file = work.parent / f".{work.name}.doc-test.sh"
    script_file.write_text(script(steps_))
    script_file.chmod(0o644)
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(["bash", "--noprofile", "--norc", str(script_file)], cwd=work,
                                env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, **kwargs)
        try:
            proc.wait(timeout=PAGE_TIMEOUT)
        except subprocess.TimeoutExpired:
            pass
        # What the page left running in the shell's session (a command put in
        # the background with `&`) is a leftover: it is said, then killed.
        # Detached containers' monitors have sessions of their own.
        left = session_members(proc.pid)
        if left:
            os.killpg(proc.pid, 9)
        proc.wait()
        out.seek(0)
        whole = out.read().decode(errors="replace")
        if left:
            whole += f"\n@@doc-test left running: {left}@@\n"
    script_file.unlink()
    results, start = [], 0
    for found in re.finditer(r"\n@@doc-test (\d+) (\d+)@@\n", whole):
        results.append((whole[start:found.start()], int(found.group(2))))
        start = found.end()
    return results, whole


def session_members(sid):
    """The live processes of a session, as (pid, command) pairs."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                command = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] not in (b"Z", b"X"):
            found.append((int(pid), command))
    return found


def check(steps_, results, whole):
    """Every difference between what the page shows and what ran, as text."""
    problems = []
    left = re.search(r"@@doc-test left running: (.*)@@", whole)
    if left:
        problems.append(f"{steps_[0].block.page.relative_to(REPO)}: left running: {left.group(1)}")
    if len(results) < len(steps_):
        step = steps_[len(results)]
        problems.append(f"{step.block.where}: the session ended at `{step.command}`"
                        f" (timed out after {PAGE_TIMEOUT} s, or the shell exited):\n{whole[-2000:]}")
    for i, (step, (output, status)) in enumerate(zip(steps_, results)):
        following = steps_[i + 1].command.strip() if i + 1 < len(steps_) else ""
        if status != 0 and following != "echo $?":
            problems.append(f"{step.block.where}: `{step.command}` exited {status}:\n{output}")
        elif step.shown is not None and not matches(step.shown, output):
            problems.append(f"{step.block.where}: `{step.command}` shows\n" + "\n".join(step.shown)
                            + f"\nbut printed\n{output}")
    return problems


def wrappers(directory, python, module, env=None):
    """`minicontainer` as this checkout's module, `mc-python` as a Python that
    imports it (for pycon blocks), and `sudo` as nothing."""
    directory.mkdir()
    env = dict(env or {})
    settings = "".join(f"{k}={v} " for k, v in env.items())
    path = ":".join(filter(None, [str(Path(module).parent), str(env.get("PYTHONPATH", ""))]))
    python_settings = "".join(f"{k}={v} " for k, v in dict(env, PYTHONPATH=path).items())
    (directory / "minicontainer").write_text(f"#!/bin/sh\nexec env {settings}{python} {module} \"$@\"\n")
    (directory / "mc-python").write_text(f"#!/bin/sh\nexec env {python_settings}{python} \"$@\"\n")
    (directory / "sudo").write_text("#!/bin/sh\nexec \"$@\"\n")
    for name in ("minicontainer", "mc-python", "sudo"):
        (directory / name).chmod(0o755)
    return directory


def clean_up_state(run_cli):
    """Remove whatever containers a failed page left (its own state directory only)."""
    listed = run_cli("ps", "-a", "-q")
    for id in listed.stdout.split():
        run_cli("rm", "-f", id)
    for id in run_cli("list", "-q").stdout.split():
        run_cli("delete", "--force", id)


# ---------------------------------------------------------------------------
# The convention itself, checked without running anything
# ---------------------------------------------------------------------------

def test_every_block_runs_or_says_why_not():
    """A runnable block is run unless a marker gives a reason; a marker names
    a known instruction; console blocks begin with a command."""
    not_run = []
    for page in PAGES:
        for block in blocks(page):
            if block.marker:
                assert block.marker == "as user" or re.fullmatch(r"not run: \S.{10,}", block.marker), \
                    f"{block.where}: unknown marker or no reason: {block.marker!r}"
                assert block.lang in RUN, f"{block.where}: a marker on a block that never runs"
            if block.lang in RUN and block.marker.startswith("not run"):
                not_run.append(block.where)
            if block.runs:
                assert steps(block), f"{block.where}: an empty block"
    # Few, and each with its reason: the set-up (CI runs it), the internet, the bench.
    assert len(not_run) <= 12, not_run


def test_the_comparison_allows_only_the_marked_parts():
    """`...`, `…` and `<word>` stand for text; everything else must be as shown.
    Controls: the same output with one changed word does not match."""
    shown = ["deployed 1 file (... bytes), 0 links", "<id>", "...", "Hello   from the container!"]
    output = "deployed 1 file (762432 bytes), 0 links\n" + "ab" * 32 + "\nx\ny\nHello from the container!\n"
    assert matches(shown, output)
    assert not matches(shown, output.replace("Hello", "Goodbye"))
    assert not matches(shown, output.replace("0 links", "1 links"))
    assert not matches(["<id>"], "")  # a placeholder stands for something
    assert matches(["a", "...", "b"], "a\nb\n") and not matches(["a", "b"], "a\nc\nb\n")
    assert matches(["1: lo: <LOOPBACK,UP> mtu"], "1: lo: <LOOPBACK,UP> mtu\n")
    assert not matches(["1: lo: <LOOPBACK,UP> mtu"], "1: lo: <BROADCAST> mtu\n")


def test_a_failing_command_fails_the_page_unless_its_status_is_shown(tmp_path):
    """The runner's own control: a wrong output, a non-zero status, a command
    never reached and a process left running are reported; `echo $?` after a
    failure is not."""
    page = tmp_path / "page.md"
    page.write_text("```console\n$ echo hi\nhi\n$ false\n$ echo $?\n1\n$ echo one\ntwo\n"
                    "$ sh -c 'exit 3'\n$ echo fine\nfine\n$ sleep 30 &\n$ exit 4\n$ echo never\n```\n")
    steps_ = [s for block in blocks(page) for s in steps(block)]
    steps_[0].block.page = REPO / "README.md"  # for `where` only
    work = tmp_path / "work"
    work.mkdir()
    results, whole = run_session(steps_, work, dict(os.environ))
    problems = check(steps_, results, whole)
    assert len(problems) == 4, problems
    assert "left running: [(" in problems[0] and "sleep 30" in problems[0], problems
    assert "the session ended at `exit 4`" in problems[1], problems
    assert "`echo one` shows" in problems[2] and "`sh -c 'exit 3'` exited 3" in problems[3], problems


# ---------------------------------------------------------------------------
# The pages
# ---------------------------------------------------------------------------

def root_sessions(page):
    """A page's sessions as root (`as user` blocks run in test_rootless.py)."""
    return [steps_ for as_user, steps_ in groups(page) if not as_user]


RUN_PAGES = [page for page in PAGES if root_sessions(page)]


@pytest.mark.parametrize("page", RUN_PAGES, ids=[str(page.relative_to(REPO)) for page in RUN_PAGES])
def test_the_page_runs_as_it_stands(page, tmp_path, state_dir):
    for attempt in range(3):
        problems = []
        for steps_ in root_sessions(page):
            problems += run_as_root(steps_, tmp_path, state_dir)
        # Another test's containers took the shared bridge on a subnet of
        # theirs while this page ran: its turn again, once they are gone.
        if not any("already serves" in problem for problem in problems):
            break
    assert not problems, "\n\n".join(problems)


def bridge_serves_the_default_subnet():
    """True unless other containers hold minicontainer's bridge on another
    subnet (another test's --subnet): then a page's `--network bridge` would
    be refused for a reason of theirs, not the page's."""
    import json
    try:
        with open("/run/minicontainer-network.json") as f:
            state = json.load(f)
        return state.get("subnet", "10.88.0.0/16") == "10.88.0.0/16" or not state.get("containers")
    except (OSError, ValueError, AttributeError):
        return True


def run_as_root(steps_, tmp_path, state_dir):
    if any("--network bridge" in step.command for step in steps_):
        wait_for(bridge_serves_the_default_subnet, 120)
    bin_dir = tmp_path / "bin"
    if not bin_dir.exists():
        wrappers(bin_dir, sys.executable, REPO / "minicontainer.py")
    work = Path(tempfile.mkdtemp(prefix="work-", dir=tmp_path))
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
               LC_ALL="C.UTF-8", MINICONTAINER_STATE=str(state_dir), NO_PROXY="127.0.0.1,localhost",
               no_proxy="127.0.0.1,localhost")  # curl to a published port goes to it, not to a proxy
    env.pop("MINICONTAINER_ROOT", None)

    def run_cli(*args):
        return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=60)
    try:
        results, whole = run_session(steps_, work, env)
        problems = check(steps_, results, whole)
        left = run_cli("ps", "-a", "-q").stdout.split() + run_cli("list", "-q").stdout.split()
        if left:
            problems.append(f"{steps_[0].block.page.relative_to(REPO)}: containers left: {left}")
        return problems
    finally:
        clean_up_state(run_cli)
        shutil.rmtree(work)


def run_as_user(steps_, user):
    """The steps as test_rootless's user (its User), in a directory of its own
    under the user's copy of this checkout: the problems found."""
    bin_dir = Path(tempfile.mkdtemp(prefix="bin-", dir=user.base))
    bin_dir.rmdir()
    wrappers(bin_dir, user.python, user.base / "minicontainer.py",  # the user's copy of it
             {"PYTHONPATH": user.base / "site", **user.python_env})
    work = Path(tempfile.mkdtemp(prefix="work-", dir=user.base))
    os.chown(work, user.uid, user.gid)
    work.chmod(0o700)
    user.work = work
    env = dict(user.env(), PATH=f"{bin_dir}:/usr/local/bin:/usr/bin:/bin", LC_ALL="C.UTF-8")
    try:
        results, whole = run_session(steps_, work, env, user=user.uid, group=user.gid, extra_groups=[])
        problems = check(steps_, results, whole)
        if not wait_for(lambda: not user.live_processes(), 5):
            problems.append(f"processes of the user left: {user.live_processes()}")
        state = user.state_dir()
        if state.exists() and [p for p in state.iterdir() if p.name != ".lock"]:
            problems.append(f"containers of the user left: {list(state.iterdir())}")
        return problems
    finally:
        for pid in user.live_processes():
            os.kill(pid, 9)
        remove_state(user.state_dir())
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(bin_dir, ignore_errors=True)
