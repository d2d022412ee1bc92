# One script for every rule: recastfit reads the job's names and paths as Python values (no shell).
# The guard matters: worker processes started with "spawn" re-import this file as __mp_main__.
if __name__ == "__main__":
    from recastfit.workflow_glue import run_step

    run_step(snakemake)  # noqa: F821 - injected by Snakemake's script: directive
