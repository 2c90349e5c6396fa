# Labeling: scatter the request over a fixed number of shards, label each shard as its own job
# (through the label cache; protected outputs, retries, failures recorded), gather, and merge into the
# next iteration.
# Your own oracle: replace rule label_shard (contract in docs/oracles.md).


localrules:
    shard_selection,
    gather_labels,
    merge_labels,


rule shard_selection:
    """Stop decision (target error, I ≤ 1) and scatter of selected + redrawn validation structures."""
    input:
        unpack(INPUTS.shard),
    output:
        shards=expand(f"{ITER}/shards/unlabeled_{{shard}}.h5", shard=SHARDS, allow_missing=True),
        request=f"{ITER}/request.json",
    log:
        f"{ITER}/logs/shard_selection.log",
    params:
        stop=PARAMS.stop(),
        metrics=optional_flag("metrics", "--metrics"),
        scores=optional_flag("scores", "--scores"),
        explore=optional_flag("explore", "--explore"),
        n_valid=PARAMS.n_valid,
        seed=PARAMS.valid_seed,
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        ENV_CORE
    shell:
        "oedal shard --selected {input.selected:q} --pool {input.pool:q} --status {input.status:q}"
        " {params.metrics} {params.scores} {params.explore} --stop {params.stop:q} --n-valid {params.n_valid} --seed {params.seed}"
        " --request {output.request:q} --out {output.shards:q} > {log:q} 2>&1"


rule label_shard:
    """One shard through the oracle: labeled + failed structures with the same ids. Every result goes
    to the label cache as it is made and is looked up there first, so a rerun, forced or not, computes
    no label twice; an existing labeled file is never overwritten."""
    input:
        unpack(INPUTS.label),
    output:
        labeled=protected(f"{ITER}/shards/labeled_{{shard}}.h5"),
        failed=protected(f"{ITER}/shards/failed_{{shard}}.h5"),
    log:
        f"{ITER}/logs/label_shard_{{shard}}.log",
    benchmark:
        f"{ITER}/benchmarks/label_{{shard}}.tsv"
    params:
        settings=PARAMS.oracle,  # the level of theory; threads and the knobs below change no label
        cache=untracked(LABEL_CACHE),
        journal=untracked(CAMPAIGN.labeling.cache_journal),
        max_attempts=untracked(CAMPAIGN.oracle.max_attempts),
    retries: CAMPAIGN.labeling.retries
    threads: CAMPAIGN.oracle.threads
    resources:
        **LABEL_RESOURCES,
    conda:
        ENV_ORACLE
    shell:
        "oedal label --in {input.shard:q} --out {output.labeled:q} --failed {output.failed:q}"
        " --oracle-settings {params.settings:q} --cache {params.cache:q} --cache-journal {params.journal:q}"
        " --max-attempts {params.max_attempts} --threads {threads} > {log:q} 2>&1"


rule gather_labels:
    """This iteration's labeled.h5 and failed.h5 (with reasons) from its shards."""
    input:
        labeled=expand(f"{ITER}/shards/labeled_{{shard}}.h5", shard=SHARDS, allow_missing=True),
        failed=expand(f"{ITER}/shards/failed_{{shard}}.h5", shard=SHARDS, allow_missing=True),
    output:
        labeled=f"{ITER}/labeled.h5",
        failed=f"{ITER}/failed.h5",
    log:
        f"{ITER}/logs/gather_labels.log",
    threads: 1
    conda:
        ENV_CORE
    shell:
        "oedal gather --labeled {input.labeled:q} --out {output.labeled:q}"
        " --failed {input.failed:q} --failed-out {output.failed:q} > {log:q} 2>&1"


rule merge_labels:
    """Iteration i from i−1: training set + labeled batch, pool − requested, validation kept or redrawn."""
    input:
        train=previous("train.h5"),
        valid=previous("valid.h5"),
        pool=previous("pool.h5"),
        status=previous("status.json"),
        request=previous("request.json"),
        labeled=previous("labeled.h5"),
    output:
        **MERGE_OUTPUTS,
    log:
        f"{ITER}/logs/merge_labels.log",
    params:
        prev_dir=INPUTS.previous_dir,
        out_dir=ITER,
        flags=PARAMS.merge_flags(),
    wildcard_constraints:
        iter=r"(?!000)\d{3}",
        strategy=OWN_POOL,
    threads: 1
    conda:
        ENV_CORE
    shell:
        "oedal merge --prev-dir {params.prev_dir:q} --out-dir {params.out_dir:q} {params.flags}"
        " > {log:q} 2>&1"
