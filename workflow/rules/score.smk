# OED scores of the pool (QS1/QS2/QS3, or committee disagreement for qbc; random runs score nothing).
# --device follows resources.use_gpu (common.smk).


rule score_pool:
    """Scores and informativeness I of every pool structure (Fisher matrix from the training set)."""
    input:
        models=INPUTS.models,
        train=f"{ITER}/train.h5",
        pool=f"{ITER}/pool.h5",
    output:
        f"{ITER}/scores.h5",
    log:
        f"{ITER}/logs/score_pool.log",
    benchmark:
        f"{ITER}/benchmarks/score.tsv"
    params:
        settings=PARAMS.score,
        models=INPUTS.model_flags,
        chunk_size=untracked(CAMPAIGN.score.chunk_size),
    threads: CAMPAIGN.resources.score_threads
    resources:
        **SCORE_RESOURCES,
    conda:
        ENV_CORE
    shell:
        "oedal score {params.models} --train {input.train:q} --pool {input.pool:q} --out {output:q}"
        " --settings {params.settings:q} --chunk-size {params.chunk_size} --device {resources.device:q}"
        " --threads {threads} > {log:q} 2>&1"
