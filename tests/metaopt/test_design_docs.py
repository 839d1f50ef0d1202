"""DESIGN.md and README.md state facts about the code that the code decides: DESIGN.md's
generated blocks (module map, member list) are current, and the README's member list names
exactly the registered zoo members."""
import re

from metaopt import zoo

from design_facts import ROOT, render  # noqa: I001


def test_design_md_generated_blocks_are_current():
    text = (ROOT / "DESIGN.md").read_text()
    assert "<!-- generated: module map -->" in text and "<!-- generated: member list -->" in text
    assert render(text) == text, "stale: run python tests/support/design_facts.py --write"


def test_readme_member_list_is_the_registry():
    text = (ROOT / "README.md").read_text()
    start = text.index("Members (lower-case ids):")
    paragraph = text[start:text.index("\n\n", start)]
    ids = {w for chunk in re.findall(r"`([^`]*)`", paragraph) for w in chunk.split()
           if re.fullmatch(r"[a-z0-9_]+", w)}
    assert ids == set(zoo.names()), (sorted(set(zoo.names()) - ids), sorted(ids - set(zoo.names())))
