"""Print the README's layout section from the tree: every module of the package with the first
sentence of its docstring, then the other top-level folders and their files.

    python scripts/readme_layout.py           # print it
    python scripts/readme_layout.py --write   # replace the block between the layout markers in README.md

``tests/test_house.py`` checks that README.md holds exactly this text.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- layout: begin (python scripts/readme_layout.py --write) -->", "<!-- layout: end -->"
OTHER_FOLDERS = ("recipes", "examples", "benchmarks", "scripts")
WIDTH = 118


def summary(path: Path, room: int = WIDTH - 44) -> str:
    """The docstring's first sentence, cut at a word to fit ``room`` characters."""
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    sentence = " ".join(doc.split()).split(". ")[0].rstrip(".").replace("``", "`")
    if len(sentence) <= room:
        return sentence
    return sentence[: room - 4].rsplit(" ", 1)[0] + " ..."


def package_lines(folder: Path, depth: int) -> list[str]:
    lines = []
    for path in sorted(folder.iterdir(), key=lambda p: (p.is_dir(), p.name)):
        name = path.relative_to(ROOT).as_posix()
        if path.is_dir() and (path / "__init__.py").is_file():
            lines += package_lines(path, depth + 1)
        elif path.suffix == ".py":
            lines.append(f"{name:<43} {summary(path)}".rstrip())
    return lines


def other_lines() -> list[str]:
    lines = []
    for folder in OTHER_FOLDERS:
        files = sorted(p.relative_to(ROOT / folder).as_posix() for p in (ROOT / folder).rglob("*")
                       if p.is_file() and "__pycache__" not in p.parts and p.suffix in {".py", ".yaml", ".md"})
        text, row = [], f"{folder + '/':<44}"
        for item in files:
            if len(row) + len(item) + 1 > WIDTH:
                text.append(row.rstrip())
                row = " " * 44
            row += item + " "
        text.append(row.rstrip())
        lines += text
    lines.append(f"{'tests/':<44}pytest; conftest.py builds the offline hub cache of tiny real-architecture models")
    return lines


def layout() -> str:
    return "\n".join([BEGIN, "```", *package_lines(ROOT / "tunejury_align", 0), *other_lines(), "```", END])


def main() -> int:
    text = layout()
    if "--write" not in sys.argv[1:]:
        print(text)
        return 0
    readme = ROOT / "README.md"
    content = readme.read_text()
    if BEGIN not in content or END not in content:
        raise SystemExit(f"README.md has no layout markers ({BEGIN} ... {END})")
    start, end = content.index(BEGIN), content.index(END) + len(END)
    readme.write_text(content[:start] + text + content[end:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
