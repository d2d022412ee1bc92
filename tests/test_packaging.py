"""The wheel must carry every sub-package and the workflow files that `recastfit init` copies."""

from __future__ import annotations

import tomllib

from tests.conftest import ROOT


def test_every_subpackage_is_listed_in_pyproject() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "recastfit").rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    assert on_disk <= listed, f"add to [tool.setuptools].packages: {sorted(on_disk - listed)}"
    assert {"recastfit.workflow", "recastfit.specs"} <= listed


def test_workflow_package_data_covers_the_rules() -> None:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    patterns = data["recastfit.workflow"]
    assert "rules/*.smk" in patterns and "Snakefile" in patterns
    assert list((ROOT / "workflows" / "rules").glob("*.smk"))
