# Exploration campaigns (dataset.source: explore; DESIGN §9): the oracle labels rattled copies of the
# starts (iteration 0's training and validation sets); every iteration, MD walkers driven by that
# iteration's model make the pool (their candidates); the usual score → select → label → merge follows.
# The test set comes from the `sampling` MD with the oracle (prepare_dataset in data.smk). With
# explore.random_pool md the `random` run has no walkers: it picks at random from one MD pool of the starts
# (md_pool), the baseline exploration is compared with at equal labels.


localrules:
    gather_candidates,


rule initial_structures:
    """The initial structures: n_train + n_valid rattled copies of the starts, or frames of a short MD of
    them with the cheap sampling potential (explore.initial), labeled by the oracle through the label
    cache (a rerun computes nothing twice)."""
    output:
        unlabeled=f"{DATA}/initial_unlabeled.h5",
        labeled=protected(f"{DATA}/initial.h5"),
        failed=f"{DATA}/initial_failed.h5",
    log:
        f"{DATA}/logs/initial_structures.log",
    params:
        explore=PARAMS.explore_initial(),
        sampling=PARAMS.initial_sampling(),
        n=CAMPAIGN.split.n_train + CAMPAIGN.split.n_valid,
        oracle=PARAMS.oracle,
        cache=untracked(LABEL_CACHE),
        journal=untracked(CAMPAIGN.labeling.cache_journal),
        max_attempts=untracked(CAMPAIGN.oracle.max_attempts),
    threads: CAMPAIGN.oracle.threads
    resources:
        **LABEL_RESOURCES,
    conda:
        ENV_ORACLE
    shell:
        "(oedal initial --settings {params.explore:q} --sampling {params.sampling:q} --n {params.n}"
        " --out {output.unlabeled:q}"
        " && oedal label --in {output.unlabeled:q} --out {output.labeled:q} --failed {output.failed:q}"
        " --oracle-settings {params.oracle:q} --cache {params.cache:q} --cache-journal {params.journal:q}"
        " --max-attempts {params.max_attempts} --threads {threads}) > {log:q} 2>&1"


rule explore_shard:
    """One shard of walkers with this iteration's model (resumed from the previous iteration's walkers):
    its candidates and walker states. A killed job resumes from its checkpoint to the same candidates."""
    input:
        unpack(INPUTS.explore),
    output:
        candidates=f"{ITER}/explore/candidates_{{shard}}.h5",
        walkers=f"{ITER}/explore/walkers_{{shard}}.json",
    log:
        f"{ITER}/logs/explore_shard_{{shard}}.log",
    benchmark:
        f"{ITER}/benchmarks/explore_{{shard}}.tsv"
    params:
        settings=PARAMS.explore_walkers(),
        # the resume flag and, with resources.use_gpu, --device cuda: one token, so that the shell line of a
        # campaign made before the walkers could use a GPU is unchanged (Snakemake's code trigger reruns nothing)
        previous=INPUTS.walker_flags(GPU["device"]),
        seed=PARAMS.explore_seed,
        shards=CAMPAIGN.explore.shards,
        iteration=PARAMS.iteration,
    wildcard_constraints:
        strategy=OWN_POOL,
    threads: 1
    resources:
        **EXPLORE_RESOURCES,
    conda:
        ENV_CORE
    shell:
        "oedal explore --model {input.model:q} --settings {params.settings:q} {params.previous}"
        " --shard {wildcards.shard} --shards {params.shards} --seed {params.seed} --iteration {params.iteration}"
        " --candidates {output.candidates:q} --walkers {output.walkers:q} --status {input.status:q}"
        " --threads {threads} > {log:q} 2>&1"


rule gather_candidates:
    """The iteration's pool: every walker's candidates (greedy batch OED then picks among all of them, so
    near-identical frames of different walkers are not labeled together), and the walkers' counts."""
    input:
        candidates=expand(f"{ITER}/explore/candidates_{{shard}}.h5", shard=EXPLORE_SHARDS, allow_missing=True),
        walkers=expand(f"{ITER}/explore/walkers_{{shard}}.json", shard=EXPLORE_SHARDS, allow_missing=True),
    output:
        pool=f"{ITER}/pool.h5",
        summary=f"{ITER}/explore.json",
    log:
        f"{ITER}/logs/gather_candidates.log",
    wildcard_constraints:
        strategy=OWN_POOL,
    params:
        converged=CAMPAIGN.explore.converged,
    threads: 1
    conda:
        ENV_CORE
    shell:
        "oedal gather-candidates --candidates {input.candidates:q} --walkers {input.walkers:q}"
        " --converged {params.converged} --out {output.pool:q} --summary {output.summary:q} > {log:q} 2>&1"


if CAMPAIGN.md_pool:

    localrules:
        start_md_pool,
        merge_md_labels,

    rule md_pool:
        """The random baseline's pool (explore.random_pool md): Langevin MD of every start at every walker
        temperature with the sampling potential, once per campaign and shared by its seeds; unlabeled (what the
        random run picks is labeled like any pick), its MD steps in the store's attributes (md_steps)."""
        output:
            TREE.md_pool,
        log:
            f"{DATA}/logs/md_pool.log",
        params:
            explore=PARAMS.md_pool_explore(),
            sampling=PARAMS.md_pool_sampling(),
            seed=PARAMS.md_pool_seed,
        threads: 1
        resources:
            mem_mb=2000,
            runtime=60,
        conda:
            ENV_SAMPLE
        shell:
            "oedal md-pool --settings {params.explore:q} --sampling {params.sampling:q} --seed {params.seed}"
            " --out {output:q} > {log:q} 2>&1"

    rule start_md_pool:
        """Iteration 0 of a random run: the campaign's MD pool (no walkers)."""
        input:
            TREE.md_pool,
        output:
            f"{ITER}/pool.h5",
        log:
            f"{ITER}/logs/start_md_pool.log",
        wildcard_constraints:
            strategy="random",
            iter="000",
        conda:
            ENV_CORE
        shell:
            "cp --reflink=auto {input:q} {output:q} > {log:q} 2>&1"

    use rule merge_labels as merge_md_labels with:
        output:
            **MERGE_OUTPUTS,
            pool=f"{ITER}/pool.h5",
        log:
            f"{ITER}/logs/merge_labels.log",
        params:
            prev_dir=INPUTS.previous_dir,
            out_dir=ITER,
            flags=PARAMS.merge_flags(keep_pool=True),
        wildcard_constraints:
            iter=r"(?!000)\d{3}",
            strategy="random",
