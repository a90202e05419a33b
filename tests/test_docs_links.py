"""Every relative link in the docs points to a file that exists and, with a `#anchor`, to a heading of that file.

Sections move between BENCHMARKS.md and HISTORY.md as results are superseded; a moved heading breaks its links
silently on GitHub, so the anchors are checked the way GitHub makes them.
"""

import functools
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The model card template is left out: its links point into the pushed checkpoint's repository.
DOCS = sorted(
    [ROOT / "README.md", ROOT / "BENCHMARKS.md", *ROOT.glob("docs/*.md"), *ROOT.glob("benchmarks/results/*.md")]
)
LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def github_anchor(heading: str) -> str:
    """GitHub's heading slug: lower case, punctuation other than '-' and '_' dropped, spaces to '-'."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@functools.cache  # a doc links to the same few files many times
def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text())
    return {github_anchor(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, re.MULTILINE)}


def test_github_anchor_matches_githubs_slugs():
    assert github_anchor("Does IE-CL beat a tuned SimCLR?") == "does-ie-cl-beat-a-tuned-simclr"
    assert github_anchor("SAIB's stance (validation)") == "saibs-stance-validation"
    assert github_anchor("2026-11-29: at temperature 0.2") == "2026-11-29-at-temperature-02"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc):
    broken = []
    for target in LINK.findall(FENCE.sub("", doc.read_text())):
        if re.match(r"[a-z]+:", target) or "{" in target:  # a URL, or a template placeholder
            continue
        file_part, _, anchor = target.partition("#")
        linked = (doc.parent / file_part).resolve() if file_part else doc
        if not linked.exists():
            broken.append(f"{target}: no file {linked.relative_to(ROOT)}")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target}: no heading with the anchor #{anchor} in {linked.relative_to(ROOT)}")
    assert not broken, f"broken links in {doc.relative_to(ROOT)}:\n" + "\n".join(broken)
