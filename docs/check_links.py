"""Check the built site's internal links: every relative ``href`` and ``src`` in every page
must name a file of the build, and every ``#anchor`` an ``id`` in its page.

Usage: ``python docs/check_links.py docs/_build/html`` (``make docs`` runs it). Links to
other sites are not followed (the build and CI are offline); they are counted.
Exits 1 and lists the broken links if there are any.
"""

from __future__ import annotations

import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit


class _Page(HTMLParser):
    """The links (``href``, ``src``) and the ``id``s of one HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value is None:
                continue
            if name in ("href", "src"):
                self.links.append(value)
            elif name == "id" or (name == "name" and tag == "a"):
                self.ids.add(value)


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def broken_links(site: Path) -> tuple[list[str], int, int]:
    """``(broken, internal, external)``: each broken link as ``page: link (why)``, and how
    many internal and external links were seen."""
    pages = {path.resolve(): _parse(path) for path in site.rglob("*.html")}
    broken, internal, external = [], 0, 0
    for path, page in pages.items():
        for link in page.links:
            parts = urlsplit(link)
            if parts.scheme or parts.netloc or link.startswith(("mailto:", "javascript:")):
                external += 1
                continue
            internal += 1
            target = (path.parent / unquote(parts.path)).resolve() if parts.path else path
            if target.is_dir():
                target = target / "index.html"
            where = f"{path.relative_to(site.resolve())}: {link}"
            if not target.exists():
                broken.append(f"{where} (no such file)")
            elif parts.fragment and target.suffix == ".html":
                ids = pages[target].ids if target in pages else _parse(target).ids
                if unquote(parts.fragment) not in ids:
                    broken.append(f"{where} (no id {parts.fragment!r} in that page)")
    return broken, internal, external


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    site = Path(argv[1])
    if not (site / "index.html").exists():
        print(f"{site} has no index.html: build the site first (make docs)", file=sys.stderr)
        return 2
    broken, internal, external = broken_links(site)
    for line in broken:
        print(f"broken link: {line}")
    print(
        f"{internal} internal links checked, {len(broken)} broken; {external} external not followed"
    )
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
