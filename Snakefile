# recastfit: `snakemake --cores N contour` from the repository root (see README.md).
include: "workflows/Snakefile"
