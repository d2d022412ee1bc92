# CLs = 0.05 lines (observed, expected, +-1 and +-2 sigma) and the figure.


def contour_args() -> str:
    args = ["--mirror", CFG.contour.get("mirror", "auto")]
    if CFG.contour.get("reference"):
        args += ["--reference", repr(CFG.contour["reference"])]
    if CFG.contour.get("title"):
        args += ["--title", repr(CFG.contour["title"])]
    return " ".join(args)


rule draw_contour:
    """Interpolate CLs over the grid; write contour.json/.yaml and contour.png/.pdf."""
    input:
        f"{R}/results.json",
    output:
        json=f"{R}/contour.json",
        yaml=f"{R}/contour.yaml",
        png=f"{R}/contour.png",
        pdf=f"{R}/contour.pdf",
    params:
        args=lambda wc: contour_args(),
        contour=lambda wc: section_param("contour"),
    log:
        f"{R}/logs/contour.log",
    shell:
        "recastfit {QUIET} contour {input} --json {output.json} --yaml {output.yaml} "
        "--png {output.png} --pdf {output.pdf} {params.args} > {log} 2>&1"
