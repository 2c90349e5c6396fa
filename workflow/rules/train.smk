# Training (one model per iteration; K for query by committee or training_seeds) and evaluation on the
# test set.
# Once the campaign has stopped (status.json), `oedal train --carry-from` copies the previous model
# instead of training. --device follows resources.use_gpu (common.smk).


include: "train_helpers.smk"


TRAIN_SHELL = (
    "oedal train --train {input.train:q} --valid {input.valid:q} --out {output.model:q} --status {input.status:q}"
    " {params.carry_from} --model-settings {params.model:q} --settings {params.training:q} {params.warm_start}"
    " --device {resources.device:q} --threads {threads} > {log:q} 2>&1"
)


rule train_initial_model:
    """Iteration 0, member 0, once per seed (every strategy of the seed shares it: rule share_initial)."""
    input:
        train=f"{INIT}/train.h5",
        valid=f"{INIT}/valid.h5",
        status=f"{INIT}/status.json",
    output:
        model=f"{INIT}/model.pt",
    log:
        f"{INIT}/logs/train_model.log",
    benchmark:
        f"{INIT}/benchmarks/train.tsv"
    params:
        model=settings_json("model"),
        training=training_json,
        warm_start="",
        carry_from="",
    threads: CAMPAIGN.resources.train_threads
    resources:
        **TRAIN_RESOURCES,
    conda:
        ENV_CORE
    shell:
        TRAIN_SHELL


use rule train_initial_model as train_initial_member with:
    output:
        model=f"{INIT}/model_k{{member}}.pt",
    log:
        f"{INIT}/logs/train_member_k{{member}}.log",
    benchmark:
        f"{INIT}/benchmarks/train_k{{member}}.tsv"


rule train_model:
    """Member 0 (model.pt): GM-NN trained from scratch (or warm-started) on this iteration's set."""
    wildcard_constraints:
        iter=r"(?!000)\d{3}",
    input:
        unpack(train_inputs),
    output:
        model=f"{ITER}/model.pt",
    log:
        f"{ITER}/logs/train_model.log",
    benchmark:
        f"{ITER}/benchmarks/train.tsv"
    params:
        model=settings_json("model"),
        training=training_json,
        warm_start=warm_start_flag,
        carry_from=optional_flag("previous", "--carry-from"),
    threads: CAMPAIGN.resources.train_threads
    resources:
        **TRAIN_RESOURCES,
    conda:
        ENV_CORE
    shell:
        TRAIN_SHELL


rule train_member:
    """Member k ≥ 1 (model_k{k}.pt), the same set with another seed: for query by committee, or a
    training seed (training_seeds) whose errors average out one model's training noise."""
    wildcard_constraints:
        iter=r"(?!000)\d{3}",
    input:
        unpack(train_inputs),
    output:
        model=f"{ITER}/model_k{{member}}.pt",
    log:
        f"{ITER}/logs/train_member_k{{member}}.log",
    benchmark:
        f"{ITER}/benchmarks/train_k{{member}}.tsv"
    params:
        model=settings_json("model"),
        training=training_json,
        warm_start=warm_start_flag,
        carry_from=optional_flag("previous", "--carry-from"),
    threads: CAMPAIGN.resources.train_threads
    resources:
        **TRAIN_RESOURCES,
    conda:
        ENV_CORE
    shell:
        TRAIN_SHELL


rule evaluate_initial_model:
    """Test-set errors of the seed's iteration-0 model (shared by every strategy of the seed)."""
    input:
        model=f"{INIT}/model.pt",
        test=f"{SEED}/test.h5",
    output:
        f"{INIT}/metrics.json",
    log:
        f"{INIT}/logs/evaluate_model.log",
    threads: 1
    resources:
        **EVALUATE_RESOURCES,
    conda:
        ENV_CORE
    shell:
        "oedal evaluate --model {input.model:q} --data {input.test:q} --out {output:q} --device {resources.device:q}"
        " > {log:q} 2>&1"


use rule evaluate_initial_model as evaluate_initial_transfer with:
    input:
        model=f"{INIT}/model.pt",
        test=f"{DATA}/transfer_{{transfer}}.h5",
    output:
        f"{INIT}/metrics_transfer_{{transfer}}.json",
    log:
        f"{INIT}/logs/evaluate_transfer_{{transfer}}.log",


use rule evaluate_initial_model as evaluate_transfer with:
    input:
        model=f"{ITER}/model.pt",
        test=f"{DATA}/transfer_{{transfer}}.h5",
    output:
        f"{ITER}/metrics_transfer_{{transfer}}.json",
    log:
        f"{ITER}/logs/evaluate_transfer_{{transfer}}.log",
    wildcard_constraints:
        iter=r"(?!000)\d{3}",


# training_seeds K > 1: models k = 1 … K−1 (rule train_member, their own seeds) are tested as model.pt is.
use rule evaluate_initial_model as evaluate_initial_member with:
    input:
        model=f"{INIT}/model_k{{member}}.pt",
        test=f"{SEED}/test.h5",
    output:
        f"{INIT}/metrics_k{{member}}.json",
    log:
        f"{INIT}/logs/evaluate_model_k{{member}}.log",


use rule evaluate_initial_model as evaluate_initial_member_transfer with:
    input:
        model=f"{INIT}/model_k{{member}}.pt",
        test=f"{DATA}/transfer_{{transfer}}.h5",
    output:
        f"{INIT}/metrics_transfer_{{transfer}}_k{{member}}.json",
    log:
        f"{INIT}/logs/evaluate_transfer_{{transfer}}_k{{member}}.log",


use rule evaluate_initial_model as evaluate_member with:
    input:
        model=f"{ITER}/model_k{{member}}.pt",
        test=f"{RUN}/test.h5",
    output:
        f"{ITER}/metrics_k{{member}}.json",
    log:
        f"{ITER}/logs/evaluate_model_k{{member}}.log",
    wildcard_constraints:
        iter=r"(?!000)\d{3}",


use rule evaluate_initial_model as evaluate_member_transfer with:
    input:
        model=f"{ITER}/model_k{{member}}.pt",
        test=f"{DATA}/transfer_{{transfer}}.h5",
    output:
        f"{ITER}/metrics_transfer_{{transfer}}_k{{member}}.json",
    log:
        f"{ITER}/logs/evaluate_transfer_{{transfer}}_k{{member}}.log",
    wildcard_constraints:
        iter=r"(?!000)\d{3}",


rule evaluate_model:
    """Test-set errors of member 0 (energy and force MAE/RMSE/MAXE, eV and kcal/mol)."""
    wildcard_constraints:
        iter=r"(?!000)\d{3}",
    input:
        model=f"{ITER}/model.pt",
        test=f"{RUN}/test.h5",
    output:
        f"{ITER}/metrics.json",
    log:
        f"{ITER}/logs/evaluate_model.log",
    threads: 1
    resources:
        **EVALUATE_RESOURCES,
    conda:
        ENV_CORE
    shell:
        "oedal evaluate --model {input.model:q} --data {input.test:q} --out {output:q} --device {resources.device:q}"
        " > {log:q} 2>&1"


localrules:
    evaluate_labeled,  # seconds on a few dozen frames: not worth a cluster job's queue wait


rule evaluate_labeled:
    """How this iteration's model did on the frames it picked (selected.h5; not the redrawn validation
    structures), once the oracle labeled them: its errors there and the calibration of its uncertainty on newly labeled frames (Spearman r of score and force
    error, miscalibration area of the error map; columns labeled_* of the summary). Empty when the
    iteration labeled nothing."""
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
