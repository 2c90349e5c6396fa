"""The campaign report: one self-contained HTML page (inline PNG figures, no scripts, no network) with
the verdict first, then learning curves, the class views (errors per class, the selection map, the threshold
study: DESIGN §11), a close look at each strategy's models, cost and provenance.

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


def references_table(references: dict[str, dict]) -> str:
    """The reference potentials' errors on the test set (mean over seeds), in the learning curves' columns."""
    columns = [c for c in CURVE_COLUMNS if any(c in f for f in references.values())]
    return ("<h3>reference potentials on the test set</h3>"
            + table(["potential", *columns], [[name, *(f.get(c) for c in columns)] for name, f in references.items()],
                    keys=["potential", *columns], table_id="reference-potentials")
            + '<p class="muted">energies aligned per element first (a universal potential\'s energy zero is not the '
            "oracle's: oedal.oracles.baseline); the dashed lines in the curves.</p>")


def curves_section(rows: list[dict], figs: dict[str, bytes | None], references: dict[str, dict] | None = None) -> str:
    """Learning curves against training-set size, labels spent and CPU hours (each reference potential a dashed
    line), and their numbers."""
    parts = [references_table(references)] if references else []
    for x in ("n_train", "labels_spent", "cpu_hours"):
        figs[f"learning_curves_{x}"] = figures.learning_curves(rows, x, references)
        parts.append(f"<h3>against {esc(figures.X_LABELS[x])}</h3>" + image(figs[f"learning_curves_{x}"], f"curves {x}"))
    columns = [c for c in CURVE_COLUMNS if any(c in r for r in rows)]
    numbers = table(["strategy", "seed", "iteration", *columns],
                    [[r["strategy"], r["seed"], r["iteration"], *(r.get(c) for c in columns)] for r in rows],
                    keys=["strategy", "seed", "iteration", *columns], table_id="summary",
                    row_attrs=[{k: r[k] for k in ("strategy", "seed", "iteration")} for r in rows])
    note = ('<p class="muted">Test-set errors (energies kcal/mol, forces kcal/mol/Å; for cells also meV/atom and '
            "stress GPa), mean ± standard deviation "
            "over seeds; CPU hours: the benchmarked jobs of the iterations before each model plus its training.</p>")
    return section("Learning curves", note + "".join(parts)
                   + f"<details><summary>numbers ({len(rows)} rows)</summary>{numbers}</details>", "curves")


def _column_name(metric: str) -> str:
    """A per-class column for people: ``energy_rmse_kcal/mol`` → ``energy RMSE (kcal/mol)``; the counts above
    1 kcal/mol(/Å) → ``energy error > 1 kcal/mol (structures)``, ``max force component error > …``."""
    from oedal.report.classes import ABOVE

    if metric == ABOVE["energy"]:
        return "energy error > 1 kcal/mol (structures)"
    if metric == ABOVE["forces"]:
        return "max force component error > 1 kcal/mol/Å (structures)"
    return _metric_name(metric)


def _class_error_table(errors: list[dict], metrics: list[str], labels: dict[str, str], table_id: str) -> str:
    """Per class and strategy: seeds, training-set size, test structures and ``metrics`` (means over seeds)."""
    keys = ["class", "strategy", "seeds", "n_train", "n_structures", *metrics]
    return table(["class", "strategy", "seeds", "training structures", "test structures",
                  *map(_column_name, metrics)],
                 [[labels[r["class"]], *(r[k] for k in keys[1:])] for r in errors], keys=keys, table_id=table_id,
                 row_attrs=[{"class": r["class"], "strategy": r["strategy"]} for r in errors])


def class_errors_html(rows: list[dict], comparison: list[dict], figs: dict[str, bytes | None]) -> str:
    """Test errors per class at the last iteration every strategy reached (DESIGN §11): means over seeds in
    kcal/mol(/Å) and eV(/Å), counts above 1 kcal/mol(/Å), and the ratio random/strategy with its interval."""
    from oedal.report.classes import (ABOVE, class_errors, class_label, class_metrics, class_names, class_ratios,
                                      common_iteration)

    classes = class_names(rows)
    if not classes:
        return '<p class="note">no errors per class (the test set has no classes, or no model was evaluated yet)</p>'
    it = common_iteration(rows)
    labels = {c: class_label(c) for c in classes}
    metrics = class_metrics(rows, classes)
    errors = class_errors(rows, classes, it, metrics)
    compared = [m for m in metrics if m not in ABOVE.values()]
    ratios = class_ratios(comparison, rows, classes, it, compared, BASELINE)
    figs["class_errors"] = figures.class_error_bars(errors, classes, [m for m in compared if "_mae_" not in m], labels)
    ev = class_metrics(rows, classes, "eV", counts=False)
    ratio_table = table(["class", "strategy", "error", f"ratio {BASELINE}/strategy", "low", "high", "seeds",
                         "beyond the seed-to-seed spread?"],
                        [[labels[r["class"]], r["strategy"], _metric_name(r["error"]), r["ratio"], r["low"], r["high"],
                          r["n"], _beyond_spread(r)] for r in ratios],
                        keys=["class", "strategy", "error", "ratio", "low", "high", "n", "beyond"],
                        table_id="class-ratios",
                        row_attrs=[{"class": r["class"], "strategy": r["strategy"], "metric": r["error"]}
                                   for r in ratios])
    note = (f'<p class="muted">Models of iteration {it}, the last every strategy finished; mean over seeds. '
            "Energies per structure in kcal/mol, forces per component in kcal/mol/Å (1 kcal/mol = 0.0434 eV; the "
            f"same errors in eV below); ratio = error({BASELINE}) / error(strategy) at the same training-set "
            "size, 95 % interval over paired seeds.</p>")
    return (note + image(figs["class_errors"], "class_errors")
            + _class_error_table(errors, metrics, labels, "class-errors")
            + (ratio_table if ratios else f'<p class="note">no comparison with {BASELINE} per class</p>')
            + "<details><summary>the same errors in eV and eV/Å</summary>"
            + _class_error_table(class_errors(rows, classes, it, ev), ev, labels, "class-errors-ev") + "</details>")


def selection_html(results: CampaignResults, figs: dict[str, bytes | None]) -> str:
    """Per strategy and iteration: the share of each class among the picks, the pool's composition, and the mean
    size of the picks (means over seeds)."""
    from oedal.report.classes import class_label
    from oedal.report.selection import picks_by_class, share_rows

    classes, flat = share_rows(picks_by_class(results.runs))
    if not flat:
        return '<p class="note">no iteration has picked yet</p>'
    labels = {c: class_label(c) for c in classes}
    share = [f"share_{c}" for c in classes]
    pool = [f"pool_share_{c}" for c in classes]
    means = figures.seed_means(flat, ("strategy", "iteration"), ["n_picked", "mean_n_atoms", "pool_mean_n_atoms",
                                                                *share, *pool])
    figs["picks_by_class"] = figures.pick_composition(means, classes, labels)
    figs["pick_sizes"] = figures.pick_sizes(means)
    keys = ["strategy", "iteration", "seeds", "n_picked", "mean_n_atoms", "pool_mean_n_atoms", *share]
    picks = table(["strategy", "iteration", "seeds", "picks", "atoms per pick", "atoms per pool structure",
                   *(f"share {labels[c]}" for c in classes)], [[r[k] for k in keys] for r in means], keys=keys,
                  table_id="picks-by-class",
                  row_attrs=[{"strategy": r["strategy"], "iteration": r["iteration"]} for r in means])
    first = [r for r in means if r["iteration"] == min(m["iteration"] for m in means if m["strategy"] == r["strategy"])]
    pools = table(["strategy", "iteration", *(f"pool share {labels[c]}" for c in classes)],
                  [[r["strategy"], r["iteration"], *(r[k] for k in pool)] for r in first],
                  keys=["strategy", "iteration", *pool], table_id="pool-by-class")
    note = ('<p class="muted">Picks: the structures each iteration selected (request.json) from its pool (pool.h5); '
            "shares of the picks by class, mean over seeds; the bar \"pool\" is the pool's own composition at the "
            "first iteration.</p>")
    return (note + image(figs["picks_by_class"], "picks_by_class") + image(figs["pick_sizes"], "pick_sizes") + picks
            + "<h3>the pool's composition</h3>" + pools)


def threshold_html(results: CampaignResults, figs: dict[str, bytes | None]) -> str:
    """Per strategy with scores and iteration: the share of its picks with I > 1 and their mean I, for σ_th = median
    and mean of the training scores (means over seeds)."""
    from oedal.report.selection import threshold_study

    flat = [row._asdict() for row in threshold_study(results.runs)]
    if not flat:
        return '<p class="note">no scored iteration has picked yet (random scores nothing)</p>'
    columns = ["sigma_th", "n_picked", "share_informative", "mean_informativeness", "pool_share_informative"]
    means = figures.seed_means(flat, ("strategy", "iteration", "kind", "used"), columns)
    figs["threshold_study"] = figures.threshold_panels(means)
    keys = ["strategy", "iteration", "kind", "used", "seeds", *columns]
    numbers = table(["strategy", "iteration", "σ_th over the training scores", "used by the campaign", "seeds",
                     "σ_th", "picks", "picks with I > 1 (share)", "mean I of the picks", "pool with I > 1 (share)"],
                    [[r[k] for k in keys] for r in means], keys=keys, table_id="threshold-study",
                    row_attrs=[{k: r[k] for k in ("strategy", "iteration", "kind")} for r in means])
    note = ('<p class="muted">I = score / σ_th (section 3.3) with the scores of each iteration\'s pool (scores.h5, '
            "before any greedy update) and σ_th = the median or the mean of the training structures' scores, both "
            "computed whichever the campaign used; mean over seeds.</p>")
    return note + image(figs["threshold_study"], "threshold_study") + numbers


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
        f"Pearson r {found.pearson:.2f}, Spearman r {found.spearman:.2f}", found.quantity)
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
    figs[name] = figures.parity_and_histogram(pred.force_ref, pred.force_pred,
                                              f"{run.strategy} seed {run.seed}, iteration {run.last} (last model)",
                                              pred.energy_ref, pred.energy_pred)
    if len(pred.force_ref) == 0:  # energy-only data
        mae = float(np.mean(np.abs(pred.energy_pred - pred.energy_ref)))
        return (f"<p>last model (iteration {run.last}) on {len(pred.energy_ref)} test structures: energy MAE "
                f'<span data-key="parity_energy_mae" data-value="{mae!r}">{fmt(mae)}</span> kcal/mol</p>'
                + image(figs[name], name))
    mae = float(np.mean(np.abs(pred.force_pred - pred.force_ref)))
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
    picks = section("Selection map", _guarded("selection map", lambda: selection_html(results, figs)), "selection")
    study = section("Threshold study", _guarded("threshold study", lambda: threshold_html(results, figs)), "threshold")
    classes = section("Errors per class",
                      _guarded("errors per class", lambda: class_errors_html(rows, comparison, figs)), "class-errors")
    body = "\n".join([head, verdict_section(verdict, comparison), curves_section(rows, figs, results.potentials), classes, picks, study,
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
