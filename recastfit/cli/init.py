"""`recastfit init DIR`: a ready workflow folder (Snakefile + config) for installed users."""

from __future__ import annotations

import argparse
import shutil
from importlib import resources
from pathlib import Path

from recastfit.errors import RecastfitError

ROOT_SNAKEFILE = '''# recastfit: `snakemake --cores N contour` from this folder (see the README).
include: "workflows/Snakefile"


rule all:
    """No target given: the files of the `contour` target (included rules are never the default)."""
    localrule: True
    input:
        lambda wc: all_contours(),
'''

WORKFLOW_FILES = ("Snakefile", "rules", "config", "schemas", "scripts", "report", "envs", "profiles")


def init_workflow(dest: Path, *, force: bool = False) -> list[Path]:
    """Copy the packaged workflow into ``dest``: ``Snakefile``, ``workflows/`` and the yadage ``specs/``."""
    dest = Path(dest)
    src = resources.files("recastfit.workflow")
    target = dest / "workflows"
    if target.exists() and not force:
        raise RecastfitError(f"{target} already exists (use --force to overwrite)")
    target.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        with resources.as_file(src.joinpath(name)) as path:
            if path.is_dir():
                shutil.copytree(
                    path, target / name, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__")
                )
            else:
                shutil.copy2(path, target / name)
    with resources.as_file(resources.files("recastfit.specs")) as specs:
        shutil.copytree(
            specs,
            dest / "specs",
            dirs_exist_ok=True,
            ignore=shutil.ignore_patterns("__pycache__", "__init__.py"),
        )
    root = dest / "Snakefile"
    root.write_text(ROOT_SNAKEFILE)
    link = dest / "profiles"  # Snakemake finds the workflow profile (rerun-incomplete) here by itself
    if not link.exists() and not link.is_symlink():
        link.symlink_to(Path("workflows") / "profiles", target_is_directory=True)
    return [root, target, dest / "specs"]


def run(args: argparse.Namespace) -> int:
    for path in init_workflow(Path(args.dir), force=args.force):
        print(f"wrote {path}")
    print(f"next: cd {args.dir} && snakemake --cores 2 contour")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("init", help="write a ready workflow folder (Snakefile + config) into DIR")
    p.add_argument("dir", help="folder to create or fill")
    p.add_argument("--force", action="store_true", help="overwrite an existing workflows/ folder")
    p.set_defaults(func=run)
