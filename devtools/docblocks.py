"""The parts of the documentation a generator writes from the code.

A generated block is the text of a docs page between two HTML comments (Markdown keeps them out
of the rendered page). Its generator writes it (``python -m devtools.docs``, ``make docs``) and a
test compares it with what the code gives now, so a page can never disagree with the code it
documents. Standard library only: ``devtools.upstream.suites``, which ``noxfile.py`` imports,
declares its block here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: The documentation site's pages (``mkdocs.yml``'s ``docs_dir``).
DOCS = Path(__file__).resolve().parent.parent / "docs"


@dataclass(frozen=True)
class GeneratedBlock:
    """The lines of ``page`` between the line ``begin`` and the line ``end``."""

    page: Path
    begin: str
    end: str

    def _bounds(self, text: str) -> tuple[int, int]:
        try:
            start = text.index(f"{self.begin}\n") + len(self.begin) + 1
            return start, text.index(f"\n{self.end}", start - 1) + 1
        except ValueError:
            raise ValueError(
                f"{self.page.relative_to(DOCS.parent)} has no block between {self.begin!r} "
                f"and {self.end!r}"
            ) from None

    def content(self) -> str:
        """What the page holds between the markers now."""
        text = self.page.read_text()
        start, end = self._bounds(text)
        return text[start:end]

    def write(self, content: str) -> None:
        """Replace what is between the markers with ``content`` (which ends with a newline)."""
        if not content.endswith("\n"):
            raise ValueError("a generated block ends with a newline")
        text = self.page.read_text()
        start, end = self._bounds(text)
        self.page.write_text(text[:start] + content + text[end:])
