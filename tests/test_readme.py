"""The README's reference tables are the tool's own output (`recastfit config keys|limits`), and its
commands are the ones CI runs. Rewrite the tables with `python -m tests.test_readme`."""

from __future__ import annotations

import re
from pathlib import Path

from recastfit.cli.config import keys_table, limits_table

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
TABLES = {"keys": keys_table, "limits": limits_table}


def _block(text: str, name: str) -> str:
    match = re.search(rf"<!-- {name}:start -->\n(.*?)<!-- {name}:end -->", text, re.S)
    assert match, f"README.md has no <!-- {name}:start/end --> block"
    return match.group(1).strip()


def sync() -> None:
    text = README.read_text()
    for name, table in TABLES.items():
        text = re.sub(
            rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)",
            lambda m, t=table: m.group(1) + t() + "\n" + m.group(2),
            text,
            flags=re.S,
        )
    README.write_text(text)


def test_readme_tables_are_generated() -> None:
    text = README.read_text()
    for name, table in TABLES.items():
        assert _block(text, name) == table().strip(), f"run `python -m tests.test_readme` ({name} table)"


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    command = 'pip install -e ".[test]" && python -m pytest -q'
    assert command in ci and command in README.read_text()


if __name__ == "__main__":
    sync()
