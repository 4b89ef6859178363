"""The repository holds together on its own: its docs link only to what it contains (files and
their anchors), nothing refers to files outside it, and the tests share code through their
helper modules rather than by importing each other."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent

# Written in two pieces so that this file does not match itself.
OUTSIDE = ("../" + "shared", "shared/" + "reference", "/work/" + "coord", "api-" + "notes")

# Markdown read by operators and contributors.
DOCS = sorted(
    [
        ROOT / "README.md",
        ROOT / "CONTRIBUTING.md",
        ROOT / "CHANGELOG.md",
        *(ROOT / "docs").rglob("*.md"),
    ]
)

# The folders of the repository: a `span` starting with one of them names a file of it.
TOP_DIRS = (
    "benchmarks/",
    "deploy/",
    "docs/",
    "grafana/",
    "homeassistant/",
    "smsp_exporter/",
    "tests/",
)
# Files the docs name that exist only once made (by ./dev.sh bench).
MADE_LATER = {"benchmarks/results/latest.json"}

FENCE = re.compile(r"^```.*?^```", re.S | re.M)
LINK = re.compile(r"!?\[(?:[^\]`]|`[^`]*`)*\]\(([^)\s]+)\)")
SPAN = re.compile(r"`([^`\s]+)`")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.M)


def tracked_files() -> list[Path]:
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=30
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: no list of tracked files")
    return [ROOT / name for name in out.decode().split("\0") if name]


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: link targets and code marks dropped, lowercase, anything
    but letters, digits, '_', '-' and spaces removed, spaces made '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for heading in HEADING.findall(text):
        base = slug(heading)
        name, n = base, 0
        while name in found:  # GitHub numbers repeated headings: name, name-1, name-2…
            n += 1
            name = f"{base}-{n}"
        found.add(name)
    return found


def broken_links(path: Path) -> list[str]:
    """Every relative link of the Markdown file `path` that names no file of the repository, or
    an anchor its target file does not have."""
    problems = []
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    for target in LINK.findall(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:…
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path.resolve()
        if ROOT.resolve() not in dest.parents and dest != ROOT.resolve():
            problems.append(f"{target}: outside the repository")
        elif not dest.exists():
            problems.append(f"{target}: no such file")
        elif anchor and (dest.suffix != ".md" or anchor not in anchors(dest)):
            problems.append(f"{target}: no such anchor")
    return problems


def missing_paths(path: Path) -> list[str]:
    """Every `code span` of `path` that names a file of the repository (it starts with one of
    its folders) which does not exist: a file moved or renamed without its docs."""
    problems = []
    for span in SPAN.findall(path.read_text(encoding="utf-8")):
        if not span.startswith(TOP_DIRS) or span in MADE_LATER or "…" in span or "<" in span:
            continue
        file_part, _, anchor = span.partition("#")
        if "*" in file_part:
            if not list(ROOT.glob(file_part)):
                problems.append(f"{span}: matches no file")
        elif not (ROOT / file_part).exists():
            problems.append(f"{span}: no such file")
        elif anchor and anchor not in anchors(ROOT / file_part):
            problems.append(f"{span}: no such anchor")
    return problems


def test_nothing_refers_outside_the_repository():
    offenders = []
    for path in tracked_files():
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
            continue
        offenders += [f"{path.relative_to(ROOT)}: {word}" for word in OUTSIDE if word in text]
    assert offenders == []


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(path):
    assert broken_links(path) == []


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_file_the_docs_name_exists(path):
    assert missing_paths(path) == []


def test_the_link_checker_sees_broken_links_and_anchors(tmp_path, monkeypatch):
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "b.md").write_text("# B\n\n## Same\n\n## Same\n\n## `/probe`: x\n")
    page = tmp_path / "README.md"
    page.write_text(
        "[ok](docs/b.md#same-1) [ok](docs/b.md#probe-x) [ok](#a) [web](https://x.org/#y)\n"
        "[gone](docs/c.md) [no anchor](docs/b.md#same-2) [up](../elsewhere.md)\n"
        "`docs/b.md` `docs/c.md` `docs/*.md` `docs/*.txt` `docs/b.md#b`\n\n# A\n"
        "```\n[in a code block](nowhere.md)\n```\n"
    )
    assert broken_links(page) == [
        "docs/c.md: no such file",
        "docs/b.md#same-2: no such anchor",
        "../elsewhere.md: outside the repository",
    ]
    assert missing_paths(page) == ["docs/c.md: no such file", "docs/*.txt: matches no file"]


def test_the_docs_slugs_follow_github():
    assert slug("Sharding tags over several exporters: `/probe`") == (
        "sharding-tags-over-several-exporters-probe"
    )
    assert slug("Error 404: api_code_404 or http_404") == "error-404-api_code_404-or-http_404"
    assert slug("What `date` means for a Waiting message") == (
        "what-date-means-for-a-waiting-message"
    )


def test_test_modules_do_not_import_each_other():
    """Shared test code lives in tests/helpers.py (and the subject helpers: running,
    monitoring…); fixtures in conftest.py, which pytest finds by itself. A test module
    importing another runs that module's tests' imports and hides where a helper lives."""
    offenders = []
    for path in sorted((ROOT / "tests").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                module = node.module or ""
                if node.level == 0 and not module.startswith("tests."):
                    continue
                names = [module.removeprefix("tests.")] if module else []
                names += [alias.name for alias in node.names] if not module else []
            elif isinstance(node, ast.Import):
                names = [
                    a.name.removeprefix("tests.") for a in node.names if a.name[:6] == "tests."
                ]
            else:
                continue
            for name in names:
                first = name.split(".")[0]
                if first.startswith("test_") or (first == "conftest" and path.stem != "conftest"):
                    offenders.append(f"{path.name}:{node.lineno} imports {name}")
    assert offenders == []
