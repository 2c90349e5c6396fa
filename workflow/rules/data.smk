# Data: the campaign's labeled source (once per campaign) and the iteration-0 split (per seed).


localrules:
    split_dataset,
    share_initial,


rule share_initial:
    """A strategy's iteration 0 is the seed's: the split, the test set and the iteration-0 model(s) and
    metrics, trained and evaluated once per seed, copied (reflinks where the file system has them). Not
    hard links: Snakemake touches every output after its job, and through a hard link that touch would
    make the seed's files, and every other strategy's copy, look newer than what was made from them."""
    input:
        f"{SEED}/{{shared}}",
    output:
        f"{RUN}/{{shared}}",
    log:
        f"{RUN}/logs/share_initial/{{shared}}.log",
    conda:
        ENV_CORE
    wildcard_constraints:
        shared=SHARED_FILES,
    shell:
        "cp --reflink=auto {input:q} {output:q} > {log:q} 2>&1"


rule prepare_transfer:
    """An extra test set (dataset.transfer), imported once per campaign."""
    output:
        f"{DATA}/transfer_{{transfer}}.h5",
    log:
        f"{DATA}/logs/prepare_transfer_{{transfer}}.log",
    params:
        source=INPUTS.transfer_source,
        data_dir=untracked(PARAMS.data_dir_flag),
        every=CAMPAIGN.dataset.transfer_every,
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        ENV_CORE
    shell:
        "oedal import {params.source:q} --out {output:q} --require-labels --every {params.every}"
        " {params.data_dir} > {log:q} 2>&1"


if CAMPAIGN.dataset.imported() is None:  # explore without dataset.test: the sampling MD makes the test set

    rule prepare_dataset:
        """Langevin MD pool with its labels (`oedal sample --labels`): pool, test set and replay source."""
        output:
            SOURCE,
        log:
            f"{DATA}/logs/prepare_dataset.log",
        params:
            settings=PARAMS.sampling(),
        threads: 1
        resources:
            mem_mb=2000,
            runtime=60,
        conda:
            ENV_SAMPLE
        shell:
            "oedal sample --settings {params.settings:q} --labels --out {output:q} --threads {threads}"
            " > {log:q} 2>&1"

else:

    rule prepare_dataset:
        """A named data set (ethanol_1000K ...) or a file, imported into the structure store (an exploration
        campaign's test set: dataset.test)."""
        output:
            SOURCE,
        log:
            f"{DATA}/logs/prepare_dataset.log",
        params:
            source=CAMPAIGN.dataset.imported(),
            data_dir=untracked(PARAMS.data_dir_flag),  # where the file is, not what it holds
            format=CAMPAIGN.dataset.format,
        threads: 1
        resources:
            mem_mb=4000,
            runtime=30,
        conda:
            ENV_CORE
        shell:
            "oedal import {params.source:q} --out {output:q} --format {params.format:q} --require-labels"
            " {params.data_dir} > {log:q} 2>&1"


if CAMPAIGN.exploring:

    rule split_dataset:
        """Iteration 0 of an exploration campaign, once per seed: training and validation sets from the
        labeled rattled starts, the test set from the sampling MD; no pool (the walkers make it)."""
        input:
            initial=f"{DATA}/initial.h5",
            source=SOURCE,
        output:
            train=f"{INIT}/train.h5",
            valid=f"{INIT}/valid.h5",
            status=f"{INIT}/status.json",
            test=f"{SEED}/test.h5",
        log:
            f"{INIT}/logs/split_dataset.log",
        params:
            settings=PARAMS.split(),
            seed=PARAMS.split_seed,
            out_dir=INIT,
        threads: 1
        conda:
            ENV_CORE
        shell:
            "oedal split --source {input.initial:q} --test-source {input.source:q} --out-dir {params.out_dir:q}"
            " --test {output.test:q} --settings {params.settings:q} --seed {params.seed} > {log:q} 2>&1"

else:

    rule split_dataset:
        """Iteration 0: initial training set, validation set, unlabeled pool and the held-out test set,
        once per seed (SEED/iter_000, SEED/test.h5): every strategy of a seed starts from the same split."""
        input:
            source=SOURCE,
        output:
            train=f"{INIT}/train.h5",
            valid=f"{INIT}/valid.h5",
            pool=f"{INIT}/pool.h5",
            status=f"{INIT}/status.json",
            test=f"{SEED}/test.h5",
        log:
            f"{INIT}/logs/split_dataset.log",
        params:
            settings=PARAMS.split(),  # less what the merge reads
            seed=PARAMS.split_seed,
            out_dir=INIT,
        threads: 1
        resources:
            mem_mb=2000,
            runtime=10,
        conda:
            ENV_CORE
        shell:
            "oedal split --source {input.source:q} --out-dir {params.out_dir:q} --test {output.test:q}"
            " --settings {params.settings:q} --seed {params.seed} > {log:q} 2>&1"
