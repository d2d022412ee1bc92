# New-signal yields (or published patches) -> one validated pyhf PatchSet.


def signal_inputs(wildcards):
    kind = CFG.signal["type"]
    if kind == "recast":
        return recast_yields()
    # every local file the source reads (yields file, efficiency-map folder, cross sections, ...)
    paths = [str(CFG.signal[k]) for k in ("path", "xsec") if CFG.signal.get(k)]
    return [local_path(p) for p in paths if is_local(p) and "{point}" not in p]


rule patches:
    """Build `signal_patchset.json` (pyhf PatchSet) from the configured signal source."""
    input:
        manifest=f"{R}/pallet.json",
        signal=signal_inputs,
    output:
        f"{R}/signal_patchset.json",
    params:
        signal=lambda wc: section_param("signal"),
        grid=lambda wc: section_param("grid"),
    log:
        f"{R}/logs/patches.log",
    shell:
        "recastfit {QUIET} patches --config {RESOLVED_CONFIG} --manifest {input.manifest} "
        "--out {output} > {log} 2>&1"
