# Selection of the batch (greedy or top OED, random, qbc); m is planned per iteration (common.smk).


rule select_batch:
    """m structures of the pool (unlabeled) to send to the oracle."""
    input:
        pool=f"{ITER}/pool.h5",
        scores=f"{ITER}/scores.h5",
    output:
        f"{ITER}/selected.h5",
    log:
        f"{ITER}/logs/select_batch.log",
    benchmark:
        f"{ITER}/benchmarks/select.tsv"
    params:
        settings=select_json,
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        ENV_CORE
    shell:
        "oedal select --scores {input.scores} --pool {input.pool} --out {output}"
        " --settings {params.settings:q} > {log} 2>&1"
