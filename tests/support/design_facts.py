"""The facts DESIGN.md and README.md state about the code, computed from the code: the module
map of ``metaopt`` (each module's or package's first docstring line) and the zoo's member list
(the registry). ``python tests/support/design_facts.py --write`` rewrites DESIGN.md's generated
blocks; ``tests/metaopt/test_design_docs.py`` fails when they are stale."""
from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"(<!-- generated: (?P<name>[a-z ]+) -->\n)(?P<body>.*?)(<!-- end -->)", re.S)


def _summary(path: Path, width: int = 76) -> str:
    """The docstring's first sentence, markup removed, shortened."""
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", doc.strip().split("\n\n")[0].replace("\n", " "))
    text = text.replace("``", "").split(". ")[0].rstrip(".")
    return text if len(text) <= width else text[:width - 3].rstrip() + "..."


def module_map() -> str:
    """One line per module / subpackage of ``metaopt``: its path and docstring summary."""
    pkg = ROOT / "metaopt"
    rows = []
    for path in sorted(pkg.iterdir()):
        if path.name.startswith("_") and path.name != "__init__.py" or path.name == "__pycache__":
            continue
        if path.is_dir() and (path / "__init__.py").exists():
            rows.append((f"metaopt/{path.name}/", _summary(path / "__init__.py")))
        elif path.suffix == ".py" and path.name != "__init__.py":
            rows.append((f"metaopt/{path.name}", _summary(path)))
    width = max(len(p) for p, _ in rows)
    return "```\n" + "\n".join(f"{p:<{width}}  {s}" for p, s in rows) + "\n```\n"


def member_list() -> str:
    """The zoo's ids, from the registry."""
    sys.path.insert(0, str(ROOT))
    from metaopt import zoo

    return "`" + " ".join(zoo.names()) + "`\n"


GENERATORS = {"module map": module_map, "member list": member_list}


def render(text: str) -> str:
    """``text`` with every generated block rewritten."""
    return BLOCK.sub(lambda m: m.group(1) + GENERATORS[m.group("name")]() + m.group(4), text)


if __name__ == "__main__" and "--write" in sys.argv:
    for name in ("DESIGN.md",):
        path = ROOT / name
        path.write_text(render(path.read_text()))
