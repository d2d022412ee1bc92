# Fetch the pallet (local folder/archive, file:// URL, HEPData DOI/URL/record) and pick the analysis.


def fetch_inputs(wildcards):
    source = CFG.pallet["source"]
    return [local_path(source)] if is_local(source) else []


def fetch_args() -> str:
    args = []
    for key, flag in (("resource", "--resource"), ("analysis", "--analysis"),
                      ("hepdata_url", "--hepdata-url"), ("doi_url", "--doi-url"),
                      ("cache_dir", "--cache-dir")):
        if CFG.pallet.get(key):
            args += [flag, repr(str(CFG.pallet[key]))]
    if CFG.pallet.get("offline"):
        args.append("--offline")
    return " ".join(args)


rule fetch:
    """Download/verify/extract the pallet; the manifest names the workspace and patches."""
    input:
        fetch_inputs,
    output:
        manifest=f"{R}/pallet.json",
    params:
        source=lambda wc: repr(CFG.pallet["source"]),
        args=lambda wc: fetch_args(),
        pallet=lambda wc: section_param("pallet"),
    log:
        f"{R}/logs/fetch.log",
    shell:
        "recastfit {QUIET} fetch {params.source} --dest {R}/pallet --manifest {output.manifest} "
        "{params.args} > {log} 2>&1"
