# Fetch the pallet (local folder/archive, file:// URL, HEPData DOI/URL/record) and pick the analysis.
# A local rule: compute nodes often have no network.


rule fetch:
    """Download/verify/extract the pallet; the manifest names the workspace and patches."""
    input:
        fetch_inputs,
    output:
        manifest=f"{A}/pallet.json",
    params:
        dest=lambda wc: f"{OUT}/{wc.analysis}/pallet",
        pallet=section("pallet"),
    log:
        f"{A}/logs/fetch.log",
    benchmark:
        f"{A}/benchmarks/fetch.tsv"
    conda:
        ENV
    script:
        STEP
