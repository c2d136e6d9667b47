"""The documentation: the README's size and links, the site's strict build, its generated pages.

The site (``mkdocs.yml``, ``docs/``) is built as ``make test`` builds it (``--strict``), in
process into a temporary directory; a copy with one mistake at a time proves that the build
fails on it. The README is not part of the site, so its own links are checked here.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from markdown.extensions.toc import slugify
from mkdocs.commands.build import build
from mkdocs.config import load_config
from mkdocs.exceptions import Abort

from devtools import docs
from devtools.docblocks import DOCS, GeneratedBlock
from devtools.plan import report
from devtools.upstream import suites
from infra.config_keys import Choice, Section, reference_tables
from infra.config_tables import SECTIONS
from tests.support import ROOT, shared_stack_runs

README_MAX_LINES = 200

#: ``[text](target)`` outside code, the target without a title.
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def prose(markdown: str) -> str:
    """The text outside fenced code blocks and code spans."""
    text = re.sub(r"^```.*?^```", "", markdown, flags=re.M | re.S)
    return re.sub(r"`[^`\n]*`", "", text)


def anchors(page: Path) -> set[str]:
    """The heading ids MkDocs gives ``page`` (the toc extension's default slugify, of the
    heading's text: code spans keep their text, lose their backticks)."""
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.M | re.S)
    headings = re.findall(r"^#{1,6} (.+)$", text, flags=re.M)
    return {slugify(re.sub(r"`([^`]*)`", r"\1", heading), "-") for heading in headings}


def dangling_links(markdown_file: Path) -> list[str]:
    """The relative links of ``markdown_file`` whose file, or heading, does not exist."""
    broken = []
    for target in LINK.findall(prose(markdown_file.read_text())):
        if re.match(r"^[a-z]+:", target):
            continue  # https:, mailto:: not ours to check
        path, _, anchor = target.partition("#")
        resolved = (markdown_file.parent / path).resolve() if path else markdown_file
        found = resolved.exists()
        if not found or (anchor and resolved.suffix == ".md" and anchor not in anchors(resolved)):
            broken.append(target)
    return broken


def build_site(config_file: Path, site_dir: Path) -> None:
    build(load_config(str(config_file), site_dir=str(site_dir)))


@pytest.fixture
def site_copy(tmp_path: Path) -> Path:
    """A copy of mkdocs.yml and docs/ to break; returns the copy's mkdocs.yml."""
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    shutil.copytree(DOCS, tmp_path / "docs")
    return tmp_path / "mkdocs.yml"


def test_the_readme_is_at_most_200_lines() -> None:
    lines = (ROOT / "README.md").read_text().count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines: move the rest into docs/"


@pytest.mark.parametrize("name", ["README.md", "CONTRIBUTING.md"])
def test_every_relative_link_outside_the_site_resolves(name: str) -> None:
    assert dangling_links(ROOT / name) == []


def test_the_link_check_finds_a_missing_file_and_a_missing_heading(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "page.md").write_text("# A page\n\n## Its part\n")
    readme = tmp_path / "README.md"
    readme.write_text(
        "[ok](docs/page.md) [ok](docs/page.md#its-part) [web](https://example.com/x)\n"
        "`[code](not-a-link.md)`\n"
        "[gone](docs/gone.md) [no heading](docs/page.md#no-such-part)\n"
    )
    assert dangling_links(readme) == ["docs/gone.md", "docs/page.md#no-such-part"]


def test_the_site_builds_strict(tmp_path: Path) -> None:
    build_site(ROOT / "mkdocs.yml", tmp_path / "site")
    assert (tmp_path / "site" / "reference" / "outputs" / "index.html").exists()


@pytest.mark.parametrize(
    "mistake",
    [
        "a link to a page that does not exist",
        "a link to a heading that does not exist",
        "a page missing from the nav",
        "an absolute link",
    ],
)
def test_the_strict_build_fails_on(mistake: str, site_copy: Path, tmp_path: Path) -> None:
    docs_dir = site_copy.parent / "docs"
    page = docs_dir / "explanation" / "liveness.md"
    if mistake == "a page missing from the nav":
        (docs_dir / "orphan.md").write_text("# Orphan\n")
    else:
        link = {
            "a link to a page that does not exist": "[gone](no-such-page.md)",
            "a link to a heading that does not exist": "[gone](guarantees.md#no-such-heading)",
            "an absolute link": "[gone](/explanation/guarantees/)",
        }[mistake]
        page.write_text(page.read_text() + f"\n{link}\n")
    with pytest.raises(Abort, match="in strict mode"):
        build_site(site_copy, tmp_path / "site")


def test_the_outputs_page_is_what_the_program_exports() -> None:
    with shared_stack_runs():
        table = docs.outputs_table()
    assert docs.OUTPUTS_BLOCK.content() == table, (
        "docs/reference/outputs.md is out of date: run make docs"
    )


def test_the_configuration_page_is_the_key_tables() -> None:
    """The reference's key tables are infra/config_tables.py's: the rows the loaders read by."""
    assert docs.CONFIGURATION_BLOCK.content() == reference_tables(SECTIONS), (
        "docs/reference/configuration.md is out of date: run make docs"
    )


def test_a_key_table_cell_shows_an_error_text_as_it_is() -> None:
    """An allowed text is an error's text: a pipe must not end its cell, an underscore or a star
    must not turn into emphasis."""
    row = Choice(name="mode", choices=("X86_64", "a|b", "*"), meaning="M | N.")
    table = reference_tables([Section(path="s", intro="S.", rows=(row,))])
    assert "| `s.mode` | string | none |  | X86\\_64, a\\|b, \\* | M \\| N. |" in table


def test_every_generated_block_has_its_markers_on_its_page() -> None:
    blocks = [
        docs.OUTPUTS_BLOCK,
        report.COST_BLOCK,
        suites.EXCLUSIONS_BLOCK,
        docs.CONFIGURATION_BLOCK,
    ]
    for block in blocks:
        assert block.content().endswith("\n"), block.page


def test_a_generated_block_is_replaced_between_its_markers_only(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Page\n\nbefore\n<!-- b -->\nold\nrows\n<!-- e -->\nafter\n")
    block = GeneratedBlock(page=page, begin="<!-- b -->", end="<!-- e -->")
    assert block.content() == "old\nrows\n"
    block.write("new\n")
    assert page.read_text() == "# Page\n\nbefore\n<!-- b -->\nnew\n<!-- e -->\nafter\n"
    block.write("new\n")
    assert page.read_text().count("new") == 1


def test_a_page_without_the_markers_is_named(tmp_path: Path) -> None:
    page = DOCS / "index.md"
    block = GeneratedBlock(page=page, begin="<!-- nowhere -->", end="<!-- end -->")
    with pytest.raises(ValueError, match=r"docs/index.md has no block"):
        block.content()
