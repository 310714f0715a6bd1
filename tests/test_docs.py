"""Every link to docs/*.md in the source and in the docs themselves resolves.

A link is ``docs/NAME.md`` in src/ (docstrings, comments, help texts) or ``](NAME.md)`` in
docs/, optionally with ``#anchor``: NAME.md must exist in docs/, and the anchor must be the
GitHub slug of one of its headings. Mutants killed: a renamed or deleted doc, a renamed
heading, a link to a doc that was never written (the 17 dangling links this replaced).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SRC_LINK = re.compile(r"docs/([A-Za-z0-9_.-]+\.md)(#[A-Za-z0-9_-]+)?")
DOC_LINK = re.compile(r"\]\(([A-Za-z0-9_.-]+\.md)(#[A-Za-z0-9_-]+)?\)")


def slug(heading: str) -> str:
    """GitHub's anchor of a markdown heading: lower case, punctuation dropped, '-' for ' '."""
    s = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return s.replace(" ", "-")


def anchors(doc: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6} +(.+?) *$", text, flags=re.M)}


def links() -> list[tuple[str, str, str]]:
    """(where, NAME.md, anchor or '') of every docs link in src/ and docs/."""
    found = []
    for f in sorted((ROOT / "src").rglob("*.py")):
        for m in SRC_LINK.finditer(f.read_text()):
            found.append((str(f.relative_to(ROOT)), m.group(1), (m.group(2) or "")[1:]))
    for f in sorted(DOCS.glob("*.md")):
        for m in DOC_LINK.finditer(f.read_text()):
            found.append((str(f.relative_to(ROOT)), m.group(1), (m.group(2) or "")[1:]))
    return found


def test_slug():
    assert slug("Learned features (optional)") == "learned-features-optional"
    assert slug("Small images: PNG, JPEG, flat TIFF") == "small-images-png-jpeg-flat-tiff"
    assert slug("OME-Zarr") == "ome-zarr"


def test_source_links_docs():
    # the scan itself must see the links (a broken regex would pass every check below)
    where = {w for w, _, _ in links()}
    assert "src/gigapatch/diffusion/denoiser.py" in where
    assert "src/gigapatch/metrics/swd.py" in where


@pytest.mark.parametrize("where,name,anchor", links())
def test_link_resolves(where, name, anchor):
    doc = DOCS / name
    assert doc.is_file(), f"{where} links docs/{name}, which does not exist"
    if anchor:
        assert anchor in anchors(doc), \
            f"{where} links docs/{name}#{anchor}: no such heading ({sorted(anchors(doc))})"
