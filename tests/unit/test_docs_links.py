"""The documentation's links lead somewhere: README.md and docs/*.md link only
to files and headings that exist, and `--help` names only pages that exist.
(tests/integration/test_docs.py runs the pages' commands.)"""
import re
import subprocess
from pathlib import Path

from helpers import CLI, REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(page):
    """The anchors GitHub makes for a page's headings: lower case, punctuation
    dropped, blanks as hyphens (code fences skipped)."""
    found, fenced = set(), False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        heading = re.match(r"#{1,6} (.*)", line)
        if heading and not fenced:
            found.add(re.sub(r"[^\w\- ]", "", heading.group(1).lower()).replace(" ", "-"))
    return found


def test_every_relative_link_leads_to_a_file_and_heading():
    broken = []
    for page in PAGES:
        for target in LINK.findall(page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue  # https: and the like: not checked here
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists():
                broken.append(f"{page.relative_to(REPO)}: {target}: no such file")
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                broken.append(f"{page.relative_to(REPO)}: {target}: no such heading")
    assert not broken, "\n".join(broken)


def test_every_docs_page_is_linked_from_the_readme():
    readme = (REPO / "README.md").read_text()
    unlinked = [page.name for page in PAGES[1:] if f"](docs/{page.name}" not in readme]
    assert not unlinked, unlinked


def test_the_help_names_only_pages_that_exist():
    shown = subprocess.run([*CLI, "--help"], capture_output=True, text=True, check=True).stdout
    named = re.findall(r"docs/[\w-]+\.md", " ".join(shown.split()))
    assert named, "--help names the docs/ pages"
    assert [name for name in named if not (REPO / name).exists()] == []
