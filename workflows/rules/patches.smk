# New-signal yields (or published patches) -> one validated pyhf PatchSet.


rule patches:
    """Build `signal_patchset.json` (pyhf PatchSet) from the configured signal source."""
    input:
        manifest=f"{A}/pallet.json",
        signal=signal_inputs,
    output:
        f"{A}/signal_patchset.json",
    params:
        signal=section("signal"),
        grid=section("grid"),
    log:
        f"{A}/logs/patches.log",
    benchmark:
        f"{A}/benchmarks/patches.tsv"
    conda:
        ENV
    script:
        STEP
