# Hypothesis tests for every patch; finished points live in results.sqlite, so a re-run
# (after adding grid points, or after an interruption) fits only what is missing.


rule fit:
    """CLs at mu_test (observed + expected band) per point -> `results.json`."""
    input:
        manifest=f"{R}/pallet.json",
        patchset=f"{R}/signal_patchset.json",
    output:
        f"{R}/results.json",
    params:
        fit=lambda wc: section_param("fit"),
        backend=lambda wc: section_param("backend"),
    threads: workflow.cores
    log:
        f"{R}/logs/fit.log",
    shell:
        "recastfit {QUIET} fit --config {RESOLVED_CONFIG} --manifest {input.manifest} "
        "--patchset {input.patchset} --out {output} --cores {threads} 2> >(tee {log} >&2)"
