# The campaign's settings record, summary table, learning curves and report page.


localrules:
    record_campaign,
    summarize_campaign,
    plot_learning_curve,


rule record_campaign:
    """The resolved campaign settings and their plan (campaign.json), run before anything else, so that
    `oedal report` and `oedal status` know them while the campaign runs."""
    output:
        TREE.file(CAMPAIGN_FILE),
    log:
        f"{TREE.root}/logs/record_campaign.log",
    params:
        campaign=PARAMS.campaign_json(),
    priority: 100
    threads: 1
    conda:
        ENV_CORE
    shell:
        "oedal record --campaign {params.campaign:q} --out {output:q} > {log:q} 2>&1"


rule evaluate_reference_potential:
    """A reference potential's errors on a seed's test set (reference_potentials, e.g. CHGNet: `oedal baseline`,
    energies aligned per element), set beside the trained models' in the verdict and the report."""
    input:
        f"{SEED}/test.h5",
    output:
        TREE.potential("{seed}", "{potential}"),
    log:
        f"{SEED}/logs/potential_{{potential}}.log",
    params:
        settings=PARAMS.reference_potential,
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        potential_environment
    shell:
        "oedal baseline --oracle-settings {params.settings:q} --data {input:q} --out {output:q} --threads {threads}"
        " > {log:q} 2>&1"


rule summarize_campaign:
    """One row per strategy, seed and iteration (N_train, labels spent, test and transfer errors, how each
    model was trained, selection time), the paired comparison of every strategy with random over the
    seeds (ratios with intervals) and the verdict."""
    input:
        metrics=INPUTS.every_iteration(*INPUTS.metrics_names(), last=LAST),
        status=INPUTS.every_iteration("status.json", last=LAST),
        labeled=INPUTS.every_iteration("metrics_labeled.json", last=LAST - 1),  # the last iteration labels nothing
        potentials=PARAMS.potential_files,
        md_pool=[TREE.md_pool] if CAMPAIGN.md_pool else [],  # what the random run's pool cost (explore.random_pool md)
    output:
        summary=TREE.file(SUMMARY),
        comparison=TREE.file(COMPARISON),
        verdict=TREE.file(VERDICT),
    log:
        f"{TREE.root}/logs/summarize_campaign.log",
    params:
        runs=PARAMS.run_specs,
        last=LAST,
        transfer=PARAMS.summary_flags,  # transfer metrics and reference potentials (the key predates the latter)
        training_seeds=CAMPAIGN.training_seeds,
    threads: 1
    conda:
        ENV_CORE
    shell:
        "oedal summary --run {params.runs:q} --iterations {params.last} {params.transfer} --out {output.summary:q}"
        " --comparison {output.comparison:q} --verdict {output.verdict:q} --training-seeds {params.training_seeds}"
        " > {log:q} 2>&1"


rule plot_learning_curve:
    """Test force MAE/RMSE/MAXE against the training-set size, mean ± std over seeds."""
    input:
        TREE.file(SUMMARY),
    output:
        report(
            TREE.file(LEARNING_CURVE),
            caption="../report/learning_curve.rst",
            category="learning curves",
        ),
    log:
        f"{TREE.root}/logs/plot_learning_curve.log",
    threads: 1
    conda:
        ENV_CORE
    script:
        "../scripts/plot_learning_curve.py"


rule report_campaign:
    """One self-contained HTML page: the verdict first, learning curves, errors per class, each strategy's picks
    by class and size, the threshold study, pool scores and score–error correlation, the last models on the test
    set, cost and provenance; its figures also as PNG files."""
    input:
        summary=TREE.file(SUMMARY),
        comparison=TREE.file(COMPARISON),
        verdict=TREE.file(VERDICT),
        campaign=TREE.file(CAMPAIGN_FILE),
    output:
        html=report(
            TREE.file(REPORT), caption="../report/report.rst", category="report"
        ),
        figures=report(
            directory(TREE.file(REPORT_FIGURES)),
            patterns=["{name}.png"],
            caption="../report/figures.rst",
            category="report figures",
        ),
    log:
        f"{TREE.root}/logs/report_campaign.log",
    params:
        folder=INPUTS.campaign_folder,
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        ENV_CORE
    shell:
        "oedal report {params.folder:q} --out {output.html:q} --figures {output.figures:q} > {log:q} 2>&1"
