# CLs = 0.05 lines (observed, expected, +-1 and +-2 sigma), the figure and the HEPData tables.


rule draw_contour:
    """Interpolate CLs over the grid; write contour.json/.yaml and contour.png/.pdf."""
    input:
        results=f"{A}/results.json",
        manifest=f"{A}/pallet.json",
    output:
        json=f"{A}/contour.json",
        yaml=f"{A}/contour.yaml",
        png=report(f"{A}/contour.png", caption="../report/contour.rst", category="Contours"),
        pdf=f"{A}/contour.pdf",
        submission=f"{A}/hepdata/submission.yaml",
    params:
        contour=section("contour"),
    log:
        f"{A}/logs/contour.log",
    benchmark:
        f"{A}/benchmarks/contour.tsv"
    conda:
        ENV
    script:
        STEP


rule overlay:
    """Every analysis's observed and expected lines on one figure (runs with `analyses: [...]`)."""
    input:
        [f"{OUT}/{name}/contour.json" for name in CFGS],
    output:
        report(f"{OUT}/overlay.png", caption="../report/overlay.rst", category="Contours"),
    log:
        f"{OUT}/logs/overlay.log",
    conda:
        ENV
    script:
        STEP
