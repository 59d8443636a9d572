"""The README's file map lists every module of the project and nothing else (README.md "File map").

A map entry is a row of the table under the `## File map` heading (or a list item there) whose first cell starts
with one or more backticked paths, e.g. ``| `moe_ts/` | ... |``, ``| **`moe_ts/io/`** | ... |`` or
``- `eval/report.py`, `eval/plots.py`: ...``; a path ending in `/` is a folder. On disk, every `.py` file under
the scanned folders counts except `__init__.py` and `__main__.py` (a package's row stands for them), and every
folder holding such a file must have a row of its own. Entries outside the scanned folders (configs/, data/, ...)
only have to exist.
"""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
# The project's packages (tests/test_layering.py's PACKAGES) and the script folders beside them.
SCANNED = ("kernels", "moe_ts", "data_prep", "pretrain", "eval", "finetune", "distill", "cli", "tools", "benchmarks")
NOT_LISTED = ("__init__.py", "__main__.py")
HEADING = re.compile(r"^##\s+File map\s*$", re.IGNORECASE)
# One or more backticked paths at the start of an entry, each maybe in bold, separated by commas / spaces.
LEADING_PATHS = re.compile(r"^(?:\*\*|__)?`[^`]+`(?:\*\*|__)?(?:\s*(?:,|and|&)?\s*(?:\*\*|__)?`[^`]+`(?:\*\*|__)?)*")


def file_map_section(text: str) -> list[str]:
    """The lines between the `## File map` heading and the next heading of the same or a higher level."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if HEADING.match(line)), None)
    assert start is not None, "README.md has no '## File map' section"
    section = []
    for line in lines[start + 1:]:
        if re.match(r"^#{1,2}\s", line):
            break
        section.append(line)
    return section


def map_entries(text: str) -> list[str]:
    """Every path the file map lists, in order (repeats kept, so duplicates can be reported)."""
    entries: list[str] = []
    in_code = False
    for raw in file_map_section(text):
        line = raw.strip()
        if line.startswith("```"):
            in_code = not in_code
            continue
        if in_code or not line:
            continue
        if line.startswith("|"):
            key = line.strip("|").split("|", 1)[0].strip()  # the first cell
        elif re.match(r"^[-*+]\s", line):
            key = line[2:].strip()
        else:
            continue  # prose around the map
        found = LEADING_PATHS.match(key)
        if found:
            entries.extend(p.strip().removeprefix("./") for p in re.findall(r"`([^`]+)`", found.group(0)))
    return entries


def modules_on_disk(root: Path = ROOT) -> set[str]:
    """Every .py file (but __init__ / __main__) and every folder holding .py files under the scanned folders."""
    found: set[str] = set()
    for top in SCANNED:
        for path in (root / top).rglob("*.py"):
            rel = path.relative_to(root)
            if "__pycache__" in rel.parts or any(part.startswith(".") for part in rel.parts):
                continue
            found.update(parent.as_posix() + "/" for parent in rel.parents if parent != Path("."))
            if path.name not in NOT_LISTED:
                found.add(rel.as_posix())
    return found


def differences(text: str, root: Path = ROOT) -> list[str]:
    """One line per module missing from the map, per map entry that does not exist, per entry listed twice."""
    entries = map_entries(text)
    listed = set(entries)
    on_disk = modules_on_disk(root)
    problems = [f"not in the README's file map: {p}" for p in sorted(on_disk - listed)]
    for p in sorted(listed - on_disk):
        path = root / p.rstrip("/")
        if not (path.is_dir() if p.endswith("/") else path.is_file()):
            problems.append(f"in the README's file map but not in the tree: {p}")
        elif p.split("/")[0] in SCANNED and p.endswith(".py"):  # __init__.py / __main__.py: the package's row
            problems.append(f"in the README's file map, but its package's row stands for it: {p}")
    problems += [f"listed twice in the README's file map: {p}" for p in sorted({p for p in entries
                                                                                  if entries.count(p) > 1})]
    return problems


def test_parser_reads_tables_and_lists():
    text = "\n".join([
        "# x", "## File map", "", "Prose that names `not/an/entry.py` in passing.", "",
        "| path | what |", "|---|---|",
        "| **`pkg/`** | the package |", "| `pkg/a.py` | a |", "|  `pkg/b.py`, `pkg/c.py`  | b and c |",
        "| `pkg/sub/` | described in `pkg/elsewhere.py` |",
        "- `pkg/sub/d.py`: d", "* **`other/`** — other", "```", "pkg/ignored.py", "```",
        "## Next", "| `pkg/after.py` | outside the section |",
    ])
    assert map_entries(text) == ["pkg/", "pkg/a.py", "pkg/b.py", "pkg/c.py", "pkg/sub/", "pkg/sub/d.py", "other/"]


def test_differences_name_missing_stale_and_repeated_entries(tmp_path):
    (tmp_path / "moe_ts" / "io").mkdir(parents=True)
    for name in ("moe_ts/__init__.py", "moe_ts/model.py", "moe_ts/new.py", "moe_ts/io/__init__.py",
                 "moe_ts/io/hub.py"):
        (tmp_path / name).write_text("")
    text = "## File map\n| `moe_ts/` | |\n| `moe_ts/model.py` | |\n| `moe_ts/model.py` | |\n| `moe_ts/gone.py` | |\n" \
           "| `moe_ts/io/hub.py` | |\n"
    assert differences(text, tmp_path) == [
        "not in the README's file map: moe_ts/io/",
        "not in the README's file map: moe_ts/new.py",
        "in the README's file map but not in the tree: moe_ts/gone.py",
        "listed twice in the README's file map: moe_ts/model.py",
    ]


def test_file_map_matches_the_tree():
    problems = differences(README.read_text(encoding="utf-8"))
    assert not problems, "README.md's file map and the tree differ:\n" + "\n".join(problems)
