# Hypothesis tests, split into fit.jobs Snakemake jobs (scatter) and merged (gather). Each job fits
# a stable share of the points (by patch digest) into its own store; points already in
# results.sqlite are not refitted, so a re-run after an interruption fits only what is missing.
# Declared threads/resources let --executor slurm|htcondor|... place the jobs.


rule fit_part:
    """CLs at mu_test (observed + expected band) for one share of the points."""
    input:
        manifest=f"{A}/pallet.json",
        patchset=f"{A}/signal_patchset.json",
    output:
        f"{A}/parts/{{part}}.json",
    wildcard_constraints:
        part=r"\d+-of-\d+",
    params:
        fit=section("fit"),
        backend=section("backend"),
    threads: lambda wc: CFGS[wc.analysis].run.threads
    resources:
        mem_mb=lambda wc, threads: CFGS[wc.analysis].run.max_memory_mb * max(1, threads),
        runtime=lambda wc, attempt: 60 * attempt,
    log:
        f"{A}/logs/fit_{{part}}.log",
    benchmark:
        f"{A}/benchmarks/fit_{{part}}.tsv"
    conda:
        ENV
    script:
        STEP


rule gather:
    """Merge the jobs' stores into results.sqlite and write results.json (every point, ok or failed)."""
    input:
        manifest=f"{A}/pallet.json",
        patchset=f"{A}/signal_patchset.json",
        parts=fit_parts,
    output:
        f"{A}/results.json",
    log:
        f"{A}/logs/gather.log",
    conda:
        ENV
    script:
        STEP
