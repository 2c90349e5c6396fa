"""The campaign report: one self-contained HTML page (inline PNG figures, no scripts, no network) with
the verdict first, then learning curves, a close look at each strategy's models, cost and provenance.

Made by rule report_campaign at the end of a campaign and by ``oedal report`` at any moment: what
does not exist yet is skipped and noted on the page.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from oedal.campaign.tree import REPORT
from oedal.errors import OedalError
from oedal.files import atomic_path, check_outputs
from oedal.report import figures
from oedal.report.collect import CampaignResults
from oedal.report.runs import Run
from oedal.report.html import esc, fmt, image, page, section, table

log = logging.getLogger(__name__)
BASELINE = "random"
CURVE_COLUMNS = ("n_train", "labels_spent", "labels_failed") + tuple(
    figures.metric_column(k, s) for k, s in figures.ERROR_PANELS) + ("cpu_hours",)


def key_comparisons(comparison: list[dict]) -> list[dict]:
    """Per strategy, x (n_train, labels_spent) and force metric: the comparison row at the largest x both
    curves reach (the row verdict_lines speaks about) and, where fewer seeds got there (mid-run), also the
    row at the largest x that the most seeds reached. With several training seeds per set, the
    comparison of their geometric means (``seeds_*``) stands for the set."""
    from oedal.campaign.statistics import FORCE_METRICS, SEEDS

    seeded = any(row["metric"].startswith(SEEDS) for row in comparison)
    metrics = [SEEDS + m for m in FORCE_METRICS] if seeded else list(FORCE_METRICS)
    groups: dict[tuple, list[dict]] = {}
    for row in comparison:
        if row["metric"] in metrics and row["n"]:
            groups.setdefault((row["strategy"], row["x"], row["metric"]), []).append(row)
    out = []
    for key in sorted(groups, key=lambda k: (k[0], k[1] != "n_train", metrics.index(k[2]))):
        rows = sorted(groups[key], key=lambda r: r["x_value"])
        most = max(r["n"] for r in rows)
        widest = [r for r in rows if r["n"] == most][-1]
        out += [rows[-1]] if widest is rows[-1] else [widest, rows[-1]]
    return out


def _metric_name(metric: str) -> str:
    """``forces_mae_kcal/mol/A`` → ``force MAE (kcal/mol/Å)``; ``seeds_…``: ``…, mean of training seeds``."""
    from oedal.campaign.statistics import SEEDS

    kind, stat, unit = metric.removeprefix(SEEDS).split("_", 2)
    name = f"{'force' if kind == 'forces' else kind} {stat.upper()} ({unit.replace('/A', '/Å')})"
    return name + (", mean of training seeds" if metric.startswith(SEEDS) else "")


def _beyond_spread(row: dict) -> str:
    """Whether the interval of the ratio excludes 1 (statistics.Verdict.beyond_spread)."""
    from oedal.campaign.statistics import as_verdict

    return {None: "unknown (one seed)", True: "yes", False: "no"}[as_verdict(row).beyond_spread]


def _verdict_item(record) -> str:
    """A verdict record as a list item: green where the strategy is better beyond the seed-to-seed spread,
    red where it is worse beyond it, grey within the spread, with one seed, or a note."""
    from oedal.campaign.statistics import Verdict

    kind = "spread"
    if isinstance(record, Verdict) and record.beyond_spread:
        kind = "better" if record.better else "worse"
    return f'<li class="{kind}">{esc(record.sentence())}</li>'


def verdict_section(records: list, comparison: list[dict]) -> str:
    """The verdict (oedal.campaign.statistics.verdict_records: warnings loud, the transfer test sets folded)
    and the key ratios with their intervals over seeds."""
    from oedal.campaign.statistics import Note, Verdict

    warnings = "".join(f'<div class="warning">{esc(r.text)}</div>' for r in records
                       if isinstance(r, Note) and r.kind == "warning")
    kept = [r for r in records if not (isinstance(r, Note) and r.kind == "warning")]
    main = [_verdict_item(r) for r in kept if not (isinstance(r, Verdict) and r.transfer)]
    transfer = [_verdict_item(r) for r in kept if isinstance(r, Verdict) and r.transfer]
    verdicts = f'<ul class="verdict">{"".join(main)}</ul>' if main else '<p class="note">no comparison yet</p>'
    if transfer:
        verdicts += (f"<details><summary>on the transfer test sets ({len(transfer)})</summary>"
                     f'<ul class="verdict">{"".join(transfer)}</ul></details>')
    rows = key_comparisons(comparison)
    body = table(["strategy", "compared at", "value", "error", f"ratio {BASELINE}/strategy", "low", "high",
                  "seeds", "p", "beyond the seed-to-seed spread?"],
                 [[r["strategy"], r["x"].replace("_", " "), r["x_value"], _metric_name(r["metric"]), r["ratio"],
                   r["low"], r["high"], r["n"], r["p_value"], _beyond_spread(r)] for r in rows],
                 keys=["strategy", "at", "x_value", "error", "ratio", "low", "high", "n", "p_value", "beyond"],
                 table_id="key-ratios",
                 row_attrs=[{k: r[k] for k in ("strategy", "metric", "x", "x_value")} for r in rows])
    explain = (f'<p class="muted">ratio = error({BASELINE}) / error(strategy) over paired seeds (&gt; 1: the strategy '
               "has the lower test error); 95 % Student-t interval of the geometric mean over seeds; "
               "at equal labels spent the strategy's curve is interpolated at the baseline's points.</p>")
    return section("Verdict", warnings + verdicts + (body if rows else "") + explain, "verdict")


def curves_section(rows: list[dict], figs: dict[str, bytes | None]) -> str:
    """Learning curves against training-set size, labels spent and CPU hours, and their numbers."""
    parts = []
    for x in ("n_train", "labels_spent", "cpu_hours"):
        figs[f"learning_curves_{x}"] = figures.learning_curves(rows, x)
        parts.append(f"<h3>against {esc(figures.X_LABELS[x])}</h3>" + image(figs[f"learning_curves_{x}"], f"curves {x}"))
    columns = [c for c in CURVE_COLUMNS if any(c in r for r in rows)]
    numbers = table(["strategy", "seed", "iteration", *columns],
                    [[r["strategy"], r["seed"], r["iteration"], *(r.get(c) for c in columns)] for r in rows],
                    keys=["strategy", "seed", "iteration", *columns], table_id="summary",
                    row_attrs=[{k: r[k] for k in ("strategy", "seed", "iteration")} for r in rows])
    note = ('<p class="muted">Test-set errors (energies kcal/mol, forces kcal/mol/Å), mean ± standard deviation '
            "over seeds; CPU hours: the benchmarked jobs of the iterations before each model plus its training.</p>")
    return section("Learning curves", note + "".join(parts)
                   + f"<details><summary>numbers ({len(rows)} rows)</summary>{numbers}</details>", "curves")


def _first_runs(results: CampaignResults) -> list[Run]:
    """Per strategy, its first seed with a finished iteration."""
    out: dict[str, Run] = {}
    for run in results.runs:
        if run.complete and run.strategy not in out:
            out[run.strategy] = run
    return list(out.values())


def _guarded(what: str, build) -> str:
    """``build()``'s HTML, or a note that says why it could not be made (a report never fails on one part)."""
    try:
        return build()
    except (OedalError, OSError, ValueError, KeyError, RuntimeError) as err:
        log.warning("%s: %s", what, err)
        return f'<p class="note">{esc(what)}: not available ({esc(err)})</p>'


def pool_scores_html(run: Run, i: int, figs: dict[str, bytes | None]) -> str:
    """The pool's score distribution of iteration ``i`` with σ_th marked, and how many are informative."""
    import numpy as np

    from oedal.data import keys
    from oedal.oed.scoring import read_scores

    scores = read_scores(run.iter_dir(i) / "scores.h5")
    threshold = float(scores["attrs"]["threshold"])
    informative = int(np.sum(np.asarray(scores[keys.INFORMATIVENESS]) > 1.0))
    name = f"scores_{run.strategy}_seed{run.seed}_iter{i:03d}"
    figs[name] = figures.score_histogram(np.asarray(scores[keys.SCORE]), threshold,
                                         f"{run.strategy} seed {run.seed}, iteration {i}: pool scores")
    return (f"<p>pool of iteration {i}: {len(scores[keys.SCORE])} structures, σ_th = {fmt(threshold)} "
            f"({esc(scores['attrs'].get('threshold_kind', ''))} over the training set), "
            f"{informative} informative (I &gt; 1)</p>" + image(figs[name], name))


def correlation_html(run: Run, i: int, figs: dict[str, bytes | None]) -> str:
    """The score of every test structure against its force error under the model of iteration ``i``."""
    from oedal.report.models import score_errors

    found = score_errors(run, i)
    name = f"score_error_{run.strategy}_seed{run.seed}_iter{i:03d}"
    figs[name] = figures.score_error_scatter(
        found.scores, found.errors, f"{run.strategy} seed {run.seed}, iteration {i}: "
        f"Pearson r {found.pearson:.2f}, Spearman r {found.spearman:.2f}")
    numbers = table(["strategy", "seed", "iteration", "test structures", "Pearson r", "Spearman r"],
                    [[run.strategy, run.seed, i, len(found.scores), found.pearson, found.spearman]],
                    keys=["strategy", "seed", "iteration", "n", "pearson", "spearman"],
                    table_id=f"correlation-{run.strategy}")
    return numbers + image(figs[name], name)


def parity_html(run: Run, figs: dict[str, bytes | None]) -> str:
    """Parity plots (forces, energies) and force-error histogram of the run's last model on its test set."""
    import numpy as np

    from oedal.report.models import test_predictions

    pred = test_predictions(run, run.last)
    name = f"parity_{run.strategy}_seed{run.seed}_iter{run.last:03d}"
    mae = float(np.mean(np.abs(pred.force_pred - pred.force_ref)))
    figs[name] = figures.parity_and_histogram(pred.force_ref, pred.force_pred,
                                              f"{run.strategy} seed {run.seed}, iteration {run.last} (last model)",
                                              pred.energy_ref, pred.energy_pred)
    return (f"<p>last model (iteration {run.last}) on {len(pred.energy_ref)} test structures: force MAE "
            f'<span data-key="parity_force_mae" data-value="{mae!r}">{fmt(mae)}</span> kcal/mol/Å</p>'
            + image(figs[name], name))


def models_section(results: CampaignResults, figs: dict[str, bytes | None], inspect: bool) -> str:
    """Per strategy (first seed): the last scored iteration's pool scores and score–error correlation,
    the last model's parity plot and error distribution."""
    from oedal.report.models import last_scored

    parts = []
    for run in _first_runs(results):
        parts.append(f"<h3>{esc(run.strategy)} (seed {run.seed})</h3>")
        scored = last_scored(run)
        if scored is None:
            parts.append('<p class="muted">no scores (this strategy scores nothing, or none finished yet)</p>')
        else:
            parts.append(_guarded("pool scores", lambda: pool_scores_html(run, scored, figs)))
            if inspect:
                parts.append(_guarded("score–error correlation", lambda: correlation_html(run, scored, figs)))
        if inspect:
            parts.append(_guarded("parity plot", lambda: parity_html(run, figs)))
    if not inspect:
        parts.append('<p class="note">models not evaluated (--no-models): no score–error correlation, no parity '
                     "plot</p>")
    return section("Models and scores", "".join(parts) or '<p class="note">no finished iteration yet</p>', "models")


def cost_section(results: CampaignResults) -> str:
    """Time and peak memory per job kind (benchmark files); labels spent and failed; where each run stands."""
    from oedal.report.cost import job_costs
    from oedal.report.status import COLUMNS, HEADER, status_rows

    costs = job_costs(results.root)
    jobs = table(["job", "jobs", "wall s (total)", "wall s (mean)", "wall s (max)", "peak RSS MB", "CPU h"],
                 [list(c) for c in costs], keys=list(costs[0]._fields) if costs else None, table_id="job-costs")
    status = status_rows(results)
    runs = table(list(HEADER), [[r[k] for k in COLUMNS] for r in status], keys=list(COLUMNS), table_id="runs")
    return section("Cost and progress", "<h3>jobs (from benchmarks/*.tsv)</h3>"
                   + (jobs if costs else '<p class="note">no benchmark files yet</p>')
                   + "<h3>runs: labels spent and failed, stop decisions</h3>" + runs, "cost")


def provenance_section(results: CampaignResults) -> str:
    """The campaign settings, package versions, data checksums and the git revision."""
    from oedal.report.provenance import data_checksums, git_revision, package_versions

    versions = package_versions()
    sums = data_checksums(results.root)
    settings = results.settings
    config = (f"<pre>{esc(json.dumps(settings, indent=2, sort_keys=True))}</pre>" if settings is not None
              else '<p class="note">campaign settings not recorded (no campaign.json)</p>')
    body = (f"<p>workflow git revision: <code>{esc(git_revision())}</code>; report made "
            f"{esc(time.strftime('%Y-%m-%d %H:%M:%S %Z'))} from <code>{esc(results.root)}</code></p>"
            + table(["package", "version"], versions.items(), keys=["package", "version"], table_id="versions")
            + table(["data file", "sha256"], sums.items(), keys=["file", "sha256"], table_id="checksums")
            + f"<details><summary>campaign settings</summary>{config}</details>")
    return section("Provenance", body, "provenance")


def build_report(results: CampaignResults, inspect: bool = True) -> tuple[str, dict[str, bytes | None]]:
    """The page's HTML and its figures by name (PNG bytes; None where there was nothing to draw)."""
    from oedal.campaign import statistics

    rows = results.rows
    comparison = statistics.compare_strategies(rows, BASELINE, statistics.metrics_in(rows)) if rows else []
    verdict = statistics.verdict_records(rows, BASELINE) if rows else []
    figs: dict[str, bytes | None] = {}
    notes = results.notes()
    notes = (f'<div class="note"><ul>{"".join(f"<li>{esc(n)}</li>" for n in notes)}</ul></div>' if notes else "")
    head = (f"<h1>Campaign {esc(results.name)}</h1><p class=\"muted\">{len(results.runs)} runs, "
            f"{len(rows)} finished iterations</p>{notes}")
    body = "\n".join([head, verdict_section(verdict, comparison), curves_section(rows, figs),
                      models_section(results, figs, inspect), cost_section(results), provenance_section(results)])
    return page(f"oedal report: {results.name}", body), figs


def write_report(campaign_dir: str | Path, out: str | Path | None = None, *, inspect: bool = True,
                 figures_dir: str | Path | None = None) -> Path:
    """Write the report of a campaign folder (default ``{campaign_dir}/report.html``), atomically; with
    ``figures_dir``, its figures also as PNG files there. ``inspect``: evaluate and score with the models
    (parity plot, score–error correlation); returns the path written."""
    out = Path(out) if out is not None else Path(campaign_dir) / REPORT
    check_outputs(out, folders=(figures_dir,))  # before minutes of work, not after
    results = CampaignResults.read(campaign_dir)
    text, figs = build_report(results, inspect)
    with atomic_path(out) as tmp:
        tmp.write_text(text, encoding="utf-8")
    if figures_dir is not None:
        folder = Path(figures_dir)
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in figs.items():
            if data is not None:
                (folder / f"{name}.png").write_bytes(data)
    log.info("report -> %s (%d figures)", out, sum(v is not None for v in figs.values()))
    return out
