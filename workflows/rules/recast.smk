# Preserved-analysis re-runs: one yadage run per grid point (signal.type == "recast"), each in its own
# work dir <output>/<analysis>/recast/<point>/, writing <output>/<analysis>/yields/<point>.json.
# Point names are checked by recastfit.names (letters, digits, '_.+-') and reach yadage as data.
if RECAST:

    rule recast:
        """Run the preserved analysis (yadage spec signal.spec) for one grid point."""
        input:
            spec=_recast_spec_files,
        output:
            f"{A}/yields/{{point}}.json",
        wildcard_constraints:
            point="|".join(re.escape(p) for pts in RECAST.values() for p in pts),
        params:
            signal=section("signal"),
            workdir=lambda wc: f"{OUT}/{wc.analysis}/recast/{wc.point}",
        log:
            f"{A}/logs/recast/{{point}}.log",
        conda:
            ENV
        script:
            STEP
