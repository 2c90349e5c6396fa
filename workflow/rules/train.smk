# Training and testing. Model k of an iteration ({k}: "" for model.pt, _k1, _k2, ... for model_k1.pt ...):
# a committee member for query by committee, or a training seed (training_seeds) whose errors average out
# one model's training noise. Iteration 0 is trained and tested once per seed (SEED/iter_000, copied into
# every strategy's run by share_initial). Once the campaign has stopped (status.json), `oedal train
# --carry-from` copies the previous model instead of training. --device follows resources.use_gpu.


rule train_model:
    """Model k of iteration i ≥ 1: a GM-NN trained from scratch (or warm-started) on this iteration's set."""
    wildcard_constraints:
        iter=r"(?!000)\d{3}",
    input:
        unpack(INPUTS.train),
    output:
        model=f"{ITER}/model{{k}}.pt",
    log:
        f"{ITER}/logs/train_model{{k}}.log",
    benchmark:
        f"{ITER}/benchmarks/train{{k}}.tsv"
    params:
        model=PARAMS.model(),
        training=PARAMS.training,
        warm_start=INPUTS.warm_start_flag,
        carry_from=optional_flag("previous", "--carry-from"),
    threads: CAMPAIGN.resources.train_threads
    resources:
        **TRAIN_RESOURCES,
    conda:
        ENV_CORE
    shell:
        "oedal train --train {input.train:q} --valid {input.valid:q} --out {output.model:q} --status {input.status:q}"
        " {params.carry_from} --model-settings {params.model:q} --settings {params.training:q} {params.warm_start}"
        " --device {resources.device:q} --threads {threads} > {log:q} 2>&1"


use rule train_model as train_initial_model with:
    input:
        train=f"{INIT}/train.h5",
        valid=f"{INIT}/valid.h5",
        status=f"{INIT}/status.json",
    output:
        model=f"{INIT}/model{{k}}.pt",
    log:
        f"{INIT}/logs/train_model{{k}}.log",
    benchmark:
        f"{INIT}/benchmarks/train{{k}}.tsv"
    params:
        model=PARAMS.model(),
        training=PARAMS.training,
        warm_start="",
        carry_from="",


rule evaluate_model:
    """Errors of model k of iteration i ≥ 1 on the test set or a transfer test set ({testset}: "" or
    _transfer_NAME): energy and force MAE/RMSE/MAXE, eV and kcal/mol, and how the uncertainty tracked them."""
    wildcard_constraints:
        iter=r"(?!000)\d{3}",
    input:
        model=f"{ITER}/model{{k}}.pt",
        test=INPUTS.test_set,
    output:
        f"{ITER}/metrics{{testset}}{{k}}.json",
    log:
        f"{ITER}/logs/evaluate_model{{testset}}{{k}}.log",
    threads: 1
    resources:
        **EVALUATE_RESOURCES,
    conda:
        ENV_CORE
    shell:
        "oedal evaluate --model {input.model:q} --data {input.test:q} --out {output:q} --device {resources.device:q}"
        " > {log:q} 2>&1"


use rule evaluate_model as evaluate_initial_model with:
    input:
        model=f"{INIT}/model{{k}}.pt",
        test=INPUTS.test_set,
    output:
        f"{INIT}/metrics{{testset}}{{k}}.json",
    log:
        f"{INIT}/logs/evaluate_model{{testset}}{{k}}.log",


localrules:
    evaluate_labeled,  # seconds on a few dozen frames: not worth a cluster job's queue wait


rule evaluate_labeled:
    """How this iteration's model did on the frames it picked (selected.h5; not the redrawn validation
    structures), once the oracle labeled them: its errors there and the calibration of its uncertainty on
    newly labeled frames (Spearman r of score and force error, miscalibration area of the error map;
    columns labeled_* of the summary). Empty when the iteration labeled nothing."""
    input:
        model=f"{ITER}/model.pt",
        labeled=f"{ITER}/labeled.h5",
        selected=f"{ITER}/selected.h5",
    output:
        f"{ITER}/metrics_labeled.json",
    log:
        f"{ITER}/logs/evaluate_labeled.log",
    threads: 1
    resources:
        **EVALUATE_RESOURCES,
    conda:
        ENV_CORE
    shell:
        "oedal evaluate --model {input.model:q} --data {input.labeled:q} --only-ids-of {input.selected:q}"
        " --out {output:q} --allow-empty --device {resources.device:q} > {log:q} 2>&1"
