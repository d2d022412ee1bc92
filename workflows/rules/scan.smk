# Scans without a grid (pMSSM-style), beside `contour`:
#     snakemake --cores N scan --configfile workflows/config/scan-example.yaml
# The config's `scan:` section names the yields table and the analyses (see the schema). The rules
# call the library (`run:`), so no config value ever reaches a shell. Finished fits live in
# <output>/<scan.name>/results.sqlite: after an interruption (even kill -9) the same command fits
# only the rows that are missing.
import json as _scan_json

from recastfit.errors import RecastfitError as _ScanError
from recastfit.scan.config import parse_scan_config as _parse_scan_config

_SCAN_CONFIG_FILES = [str(f) for f in getattr(workflow, "overwrite_configfiles", None) or []]
_SCAN_CONFIG_NAME = _SCAN_CONFIG_FILES[-1] if _SCAN_CONFIG_FILES else "config.yaml"

if "scan" in config:
    try:
        SCAN = _parse_scan_config(dict(config), file=_SCAN_CONFIG_NAME)
    except _ScanError as _err:
        raise WorkflowError(f"recastfit: invalid scan configuration: {_err}") from None
    _SCAN_DIR = str(SCAN.out_dir)
    _SCAN_WORKSPACES = sorted({str(a.workspace) for a in SCAN.analyses})

    rule scan:
        """Fit every row of the yields table through the runner; best analysis, excluded, summary."""
        input:
            yields=str(SCAN.yields),
            workspaces=_SCAN_WORKSPACES,
        output:
            points=f"{_SCAN_DIR}/points.parquet",
            cls=f"{_SCAN_DIR}/cls.parquet",
            summary=f"{_SCAN_DIR}/summary.json",
        params:
            # editing the scan, fit or backend section reruns the rule (stored fits are reused)
            sections=_scan_json.dumps({k: config.get(k) for k in ("scan", "fit", "backend")}, sort_keys=True),
        threads: 256  # Snakemake lowers it to --cores
        log:
            f"{_SCAN_DIR}/logs/scan.log",
        run:
            import contextlib

            from recastfit.scan import run_scan

            with open(log[0], "w") as _log, contextlib.redirect_stderr(_log):
                _outcome = run_scan(SCAN, cores=threads, quiet=False)
            print(_outcome.line())  # failed or invalid rows are results (listed in the summary)

    if SCAN.example is not None:

        rule scan_example:
            """Offline example input: the demo background workspace and a synthetic yields table."""
            output:
                yields=str(SCAN.yields),
                workspaces=_SCAN_WORKSPACES,
            run:
                from recastfit.scan.example import write_example

                for _ws in output.workspaces:
                    write_example(
                        output.yields, _ws, rows=SCAN.example.get("rows", 2000), seed=SCAN.example.get("seed", 0)
                    )

else:

    rule scan:
        """Without a `scan:` section there is nothing to scan: say so."""
        log:
            "results/logs/scan.log",
        run:
            raise WorkflowError(
                f"recastfit: {_SCAN_CONFIG_NAME} has no 'scan:' section; "
                "try --configfile workflows/config/scan-example.yaml"
            )
