# The campaign's summary table and learning curves.


include: "report_helpers.smk"


localrules:
    summarize_campaign,
    plot_learning_curve,


rule summarize_campaign:
    """One row per strategy, seed and iteration: N_train, labels spent, test errors, selection time."""
    input:
        metrics=summary_inputs("metrics.json"),
        status=summary_inputs("status.json"),
    output:
        f"{RESULTS}/{{campaign}}/summary.csv",
    log:
        f"{RESULTS}/{{campaign}}/logs/summarize_campaign.log",
    params:
        runs=run_specs,
        last=LAST,
    threads: 1
    conda:
        ENV_CORE
    shell:
        "oedal summary --run {params.runs:q} --iterations {params.last} --out {output:q} > {log:q} 2>&1"


rule plot_learning_curve:
    """Test force MAE/RMSE/MAXE against the training-set size, mean ± std over seeds."""
    input:
        f"{RESULTS}/{{campaign}}/summary.csv",
    output:
        report(f"{RESULTS}/{{campaign}}/learning_curve.png", category="learning curves"),
    log:
        f"{RESULTS}/{{campaign}}/logs/plot_learning_curve.log",
    threads: 1
    conda:
        ENV_CORE
    script:
        "../scripts/plot_learning_curve.py"
