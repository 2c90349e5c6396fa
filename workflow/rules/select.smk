# Selection of the batch (greedy or top OED, random, qbc); m is planned per iteration (common.smk).
# Random runs need no scores.h5 (no score_pool job): pool ids from pool.h5, training set excluded.


rule select_batch:
    """m structures of the pool (unlabeled) to send to the oracle."""
    input:
        unpack(INPUTS.select),
    output:
        f"{ITER}/selected.h5",
    log:
        f"{ITER}/logs/select_batch.log",
    benchmark:
        f"{ITER}/benchmarks/select.tsv"
    params:
        settings=PARAMS.select,
        scores=optional_flag("scores", "--scores"),
        exclude=optional_flag("train", "--exclude"),
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        ENV_CORE
    shell:
        "oedal select {params.scores} {params.exclude} --pool {input.pool:q} --out {output:q}"
        " --settings {params.settings:q} > {log:q} 2>&1"
