# Data: the campaign's labeled source (once per campaign) and the iteration-0 split (per seed).


localrules:
    split_dataset,


if CAMPAIGN.dataset.source == "sample":

    rule prepare_dataset:
        """Langevin MD pool with its labels (`oedal sample --labels`): pool, test set and replay source."""
        output:
            SOURCE,
        log:
            f"{DATA}/logs/prepare_dataset.log",
        params:
            settings=settings_json("sampling", exclude={"potential": set(RUNTIME_FIELDS)}),
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
        """A named data set (ethanol_1000K ...) or a file, imported into the structure store."""
        output:
            SOURCE,
        log:
            f"{DATA}/logs/prepare_dataset.log",
        params:
            source=CAMPAIGN.dataset.source,
            data_dir=untracked(CAMPAIGN.dataset.data_dir or ""),  # where the file is, not what it holds
            format=CAMPAIGN.dataset.format,
        threads: 1
        resources:
            mem_mb=4000,
            runtime=30,
        conda:
            ENV_CORE
        shell:
            "oedal import {params.source:q} --out {output:q} --format {params.format:q} --require-labels"
            " --data-dir {params.data_dir:q} > {log:q} 2>&1"


rule split_dataset:
    """Iteration 0: initial training set, validation set, unlabeled pool and the held-out test set.
    The seed depends on campaign and seed only, so every strategy starts from the same split."""
    input:
        source=SOURCE,
    output:
        train=f"{RUN}/iter_000/train.h5",
        valid=f"{RUN}/iter_000/valid.h5",
        pool=f"{RUN}/iter_000/pool.h5",
        status=f"{RUN}/iter_000/status.json",
        test=f"{RUN}/test.h5",
    log:
        f"{RUN}/iter_000/logs/split_dataset.log",
    params:
        settings=settings_json("split", exclude={"valid_redraw"}),  # read by the later steps
        seed=split_seed,
        out_dir=f"{RUN}/iter_000",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        ENV_CORE
    shell:
        "oedal split --source {input.source:q} --out-dir {params.out_dir:q} --test {output.test:q}"
        " --settings {params.settings:q} --seed {params.seed} > {log:q} 2>&1"
