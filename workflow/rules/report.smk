# The campaign's summary table and learning curves.


include: "report_helpers.smk"


localrules:
    summarize_campaign,
    plot_learning_curve,


rule summarize_campaign:
    """One row per strategy, seed and iteration (N_train, labels spent, test and transfer errors, how each
    model was trained, selection time), the paired comparison of every strategy with random over the
    seeds (ratios with intervals) and the verdict."""
    input:
        metrics=summary_inputs(*metrics_files()),
        status=summary_inputs("status.json"),
    output:
        summary=f"{RESULTS}/{{campaign}}/summary.csv",
        comparison=f"{RESULTS}/{{campaign}}/comparison.csv",
        verdict=f"{RESULTS}/{{campaign}}/verdict.txt",
    log:
        f"{RESULTS}/{{campaign}}/logs/summarize_campaign.log",
    params:
        runs=run_specs,
        last=LAST,
        transfer=transfer_flags,
    threads: 1
    conda:
        ENV_CORE
    shell:
        "oedal summary --run {params.runs:q} --iterations {params.last} {params.transfer} --out {output.summary:q}"
        " --comparison {output.comparison:q} --verdict {output.verdict:q} > {log:q} 2>&1"


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
