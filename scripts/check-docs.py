#!/usr/bin/env python3
"""Checks the built documentation site (mdbook's HTML in BOOK_DIR) for broken links.

Every relative link and asset reference of every page must resolve to a file of the build, and a `#fragment` to
an element id of its target page. Links to the repository (REPO_URL/blob|tree/main/PATH) must name a file or
folder that exists in this checkout, so pages can point at code without linking out of date. Other absolute
URLs are not fetched (the check runs offline). The README's relative links must name existing files too. Exit
status 1 lists every broken link.
"""

from __future__ import annotations

import re
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlparse

REPO_URL = "https://github.com/sealcast/sealcast/"


class Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        if a.get("name") and tag == "a":
            self.ids.add(a["name"])
        for attr in ("href", "src"):
            if a.get(attr) and not (tag == "link" and a.get("rel") in ("preconnect", "dns-prefetch")):
                self.links.append(a[attr])


def parse(path: Path) -> Page:
    p = Page()
    p.feed(path.read_text(encoding="utf-8"))
    return p


def main(book: Path, repo: Path) -> int:
    pages = {p.resolve(): parse(p) for p in book.rglob("*.html")}
    if not pages:
        print(f"check-docs: no HTML pages in {book}", file=sys.stderr)
        return 1
    broken: list[str] = []
    checked = 0
    for path, page in sorted(pages.items()):
        # print.html repeats every page with rewritten links; the per-page files are checked instead.
        if path.name in ("print.html", "404.html") or path.parent.name == "toc":
            continue
        for link in page.links:
            url, frag = urldefrag(link)
            parsed = urlparse(url)
            where = f"{path.relative_to(book.resolve())}: {link}"
            if link.startswith(REPO_URL):
                parts = urlparse(link).path.split("/")[3:]  # /sealcast/sealcast/blob/main/PATH
                if not parts or parts[0] not in ("blob", "tree", "edit"):
                    continue  # the repository's own pages (issues, the home page)
                if len(parts) < 3 or parts[1] != "main":
                    broken.append(f"{where} (not a path on the main branch)")
                    continue
                checked += 1
                if parts[0] != "edit" and not (repo / unquote("/".join(parts[2:]))).exists():
                    broken.append(f"{where} (no such file in the repository)")
                continue
            if parsed.scheme or parsed.netloc or link.startswith(("mailto:", "javascript:")):
                continue
            checked += 1
            target = path if url == "" else (path.parent / unquote(parsed.path)).resolve()
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                broken.append(f"{where} (no such file)")
                continue
            if frag and target.suffix == ".html":
                ids = pages[target].ids if target in pages else parse(target).ids
                if unquote(frag) not in ids:
                    broken.append(f"{where} (no element with id {frag!r})")
    # The README links into the site's sources: those files must exist.
    readme = repo / "README.md"
    for m in re.finditer(r"\]\(([^)#\s]+)(#[^)\s]*)?\)", readme.read_text(encoding="utf-8")):
        link = m.group(1)
        if urlparse(link).scheme:
            continue
        checked += 1
        if not (repo / unquote(link)).exists():
            broken.append(f"README.md: {link} (no such file)")
    for b in broken:
        print(f"check-docs: broken link: {b}", file=sys.stderr)
    print(f"check-docs: {len(pages)} pages, {checked} links checked, {len(broken)} broken")
    return 1 if broken else 0


if __name__ == "__main__":
    root = Path(__file__).resolve().parent.parent
    book = Path(sys.argv[1]) if len(sys.argv) > 1 else root / "target" / "book"
    sys.exit(main(book, root))
