# recastfit: `snakemake --cores N contour` from the repository root (see README.md).
include: "workflows/Snakefile"


rule all:
    """No target given: the files of the `contour` target (included rules are never the default)."""
    localrule: True
    input:
        lambda wc: all_contours(),
