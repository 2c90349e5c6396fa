"""The results reader: one summary row per strategy, seed and iteration from a campaign's files, and the
campaign's summary table, paired comparison and verdict (oedal.campaign.statistics) written from them.

A row holds the sizes and labels of the iteration's status.json, the test errors of its model(s) (metrics
files, oedal.gmnn.evaluation; transfer test sets under their ``transfer_X_`` prefix; with training seeds
the geometric means ``seeds_*``), the errors on its own labeled picks (``labeled_*``), its walkers' counts
(``explore_*``) and the wall time of its jobs (the Snakemake benchmark files).
"""

from __future__ import annotations

import logging
from pathlib import Path

from oedal.campaign.records import Status, read_json
from oedal.campaign.tree import (EXPLORE_COUNTS, METRICS, METRICS_LABELED, STATUS, benchmark, iter_name, member_metrics,
                                 shared_iteration)
from oedal.files import atomic_path

log = logging.getLogger(__name__)


def _benchmark_seconds(path: Path) -> float | None:
    """Wall time (column ``s``) of a Snakemake benchmark file, None when missing."""
    if not path.exists():
        return None
    lines = path.read_text().splitlines()
    if len(lines) < 2:
        return None
    header, values = lines[0].split("\t"), lines[1].split("\t")
    return float(values[header.index("s")]) if "s" in header else None


def _flat_metrics(metrics: dict, prefix: str = "") -> dict:
    """Numeric leaves of metrics.json, nested keys joined by '_', and how the model was trained
    (``training_*``: epochs, budget, best epoch, why it stopped, seconds, warm start)."""
    flat: dict = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flat_metrics(value, name + "_"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[name] = value
        elif name.startswith("training_") and value is not None:
            flat[name] = value
    return flat


def _errors(d: Path, extra: dict[str, str], k: int = 0) -> dict:
    """Model k's errors in iteration folder ``d``: the test set's, then ``{prefix}_`` those of ``extra``
    (how the model was trained is said once, with the test set's)."""
    row = _flat_metrics(read_json(d / member_metrics(METRICS, k)))
    for prefix, name in extra.items():
        row.update({key: v for key, v in _flat_metrics(read_json(d / member_metrics(name, k)), prefix=f"{prefix}_").items()
                    if not key.startswith(f"{prefix}_training_")})
    return row


def _seed_columns(d: Path, extra: dict[str, str], first: dict, members: int) -> dict:
    """``seeds_*`` columns (oedal.campaign.statistics.training_seed_columns) over the ``members`` models
    of one iteration; ``first`` = model 0's errors."""
    from oedal.campaign.statistics import metrics_in, training_seed_columns

    models = [first] + [_errors(d, extra, k) for k in range(1, members)]
    return training_seed_columns(models, metrics_in(models))


def iteration_row(strategy: str, seed: int, run_dir: str | Path, it: int, extra: dict[str, str],
                  members: int = 1) -> dict:
    """The summary row of iteration ``it`` of one run (the module docstring says what it holds)."""
    d = Path(run_dir) / iter_name(it)
    status = Status.read(d / STATUS)
    row = {"strategy": strategy, "seed": seed, "iteration": it, "n_train": status.n_train, "n_valid": status.n_valid,
           "n_pool": status.n_pool, "labels_spent": status.labels_spent, "labels_failed": status.labels_failed,
           "stopped": bool(status.stopped)}
    errors = _errors(d, extra)
    row.update(errors)
    if members > 1:
        row.update(_seed_columns(d, extra, errors, members))
    if (d / METRICS_LABELED).exists():  # this model on the frames it picked, once labeled
        labeled = _flat_metrics(read_json(d / METRICS_LABELED), prefix="labeled_")
        row.update({k: v for k, v in labeled.items() if not k.startswith("labeled_training_")})
    if (d / EXPLORE_COUNTS).exists():  # this model's walkers: accurate / candidate / stopped
        row.update(_flat_metrics(read_json(d / EXPLORE_COUNTS), prefix="explore_"))
    row.update(_job_seconds(d, shared_iteration(run_dir, it)))
    return row


def summary_rows(run_dirs: list[tuple[str, int, str | Path]], iterations: int,
                 extra: dict[str, str] | None = None, members: int = 1) -> list[dict]:
    """One row per (strategy, seed, iteration) of ``run_dirs`` for iterations 0 … ``iterations``
    (:func:`iteration_row`); ``extra``: column prefix → another metrics file of every iteration (transfer
    test sets); ``members`` > 1 (training seeds): the geometric mean and spread of every error over the
    models trained on the same set (``seeds_*``)."""
    return [iteration_row(strategy, seed, run_dir, it, extra or {}, members)
            for strategy, seed, run_dir in run_dirs for it in range(iterations + 1)]


def _job_seconds(d: Path, shared: Path) -> dict:
    """Selection and training wall time (s) of an iteration from its job benchmarks (iteration 0's
    training ran once per seed, in ``shared``)."""
    times = [_benchmark_seconds(benchmark(d, kind)) for kind in ("score", "select")]
    known = [t for t in times if t is not None]
    train = _benchmark_seconds(benchmark(d, "train"))
    if train is None:
        train = _benchmark_seconds(benchmark(shared, "train"))
    return {"selection_s": round(sum(known), 3) if known else None, "train_s": train}


def _write_csv(rows: list[dict], out: str | Path) -> None:
    import csv

    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


POTENTIAL_METRICS = ("forces_mae_kcal/mol/A", "forces_rmse_kcal/mol/A", "energy_per_atom_mae_meV/atom",
                     "stress_mae_GPa")
"""What a reference potential's line in the verdict compares (where both it and the models have them)."""


def read_potentials(paths) -> dict[str, list[dict]]:
    """Reference potential name → its figures on each seed's test set (``oedal baseline`` files ``paths``)."""
    found: dict[str, list[dict]] = {}
    for path in paths:
        figures = read_json(path)
        found.setdefault(str(figures.get("potential", Path(path).stem)), []).append(figures)
    return found


def potential_lines(rows: list[dict], potentials: list[str | Path]) -> list[str]:
    """One verdict line per reference potential (``oedal baseline`` files, one per seed's test set): its errors
    (mean over seeds) and, per strategy, how many times lower the final models' are (geometric mean over seeds
    of each model's error on its own seed's test set)."""
    import numpy as np

    from oedal.campaign import statistics

    found = read_potentials(potentials)
    last = max((int(r["iteration"]) for r in rows), default=0)
    final = [r for r in rows if int(r["iteration"]) == last]
    lines = []
    for name, runs in found.items():
        metrics = [m for m in POTENTIAL_METRICS if all(m in f for f in runs)]
        parts = [f"{m.replace('_', ' ')} {np.mean([f[m] for f in runs]):.3g}" for m in metrics]
        aligned = " (energies aligned per element)" if all(f.get("energy_aligned") for f in runs) else ""
        line = f"reference potential {name}{aligned} on the test set: " + ", ".join(parts)
        for strategy in dict.fromkeys(str(r["strategy"]) for r in final):
            ratios = []
            for m in metrics:
                model = [float(r[m]) for r in final if r["strategy"] == strategy and r.get(m) is not None]
                if model and min(model) > 0:
                    ratio = np.mean([f[m] for f in runs]) / float(np.exp(np.mean(np.log(model))))
                    ratios.append(f"{statistics.short_name(m)} ×{ratio:.2f}")
            if ratios:
                line += f"; {strategy}'s final models are lower by " + ", ".join(ratios)
        lines.append(line)
    return lines


def cost_line(rows: list[dict], md_pool: str | Path) -> str:
    """The verdict's line on what each run paid (an exploration campaign whose random run picks from an MD pool,
    explore.random_pool md): labels spent per seed (the last iteration's, mean over seeds) per strategy, and the MD
    steps that made the pool (its ``md_steps`` attribute), each a call of the MD's potential."""
    import numpy as np

    from oedal.data.store import StoreReader

    with StoreReader(md_pool) as reader:
        attrs = reader.attrs
    last: dict[tuple[str, int], dict] = {}
    for r in sorted(rows, key=lambda r: int(r["iteration"])):
        last[str(r["strategy"]), int(r["seed"])] = r
    spent = {s: float(np.mean([float(r["labels_spent"]) for (name, _), r in last.items() if name == s]))
             for s in dict.fromkeys(name for name, _ in last)}
    return ("labels spent per seed: " + ", ".join(f"{s} {n:.0f}" for s, n in spent.items())
            + f"; random's MD pool took {int(attrs['md_steps'])} MD steps beyond its labels ({attrs['content']}: "
            "each a call of that potential; the walkers run on the model)")


def write_summary(run_dirs: list[tuple[str, int, str | Path]], iterations: int, out: str | Path,
                  comparison: str | Path | None = None, verdict: str | Path | None = None,
                  baseline: str = "random", extra: dict[str, str] | None = None, members: int = 1,
                  potentials: list[str | Path] = (), md_pool: str | Path | None = None) -> list[dict]:
    """Write the campaign's summary table (CSV) and, when asked, the paired comparison of every strategy
    with ``baseline`` (oedal.campaign.statistics: ratios with intervals over seeds, CSV) and the verdict
    (one sentence per strategy and force metric, a line per reference potential in ``potentials`` (its
    `oedal baseline` files), with ``md_pool`` what each run paid (:func:`cost_line`), and a warning when a
    wall-clock limit cut a training); returns the summary rows."""
    from oedal.campaign import statistics

    rows = summary_rows(run_dirs, iterations, extra, members)
    _write_csv(rows, out)
    if comparison is not None:
        _write_csv(statistics.compare_strategies(rows, baseline, statistics.metrics_in(rows)), comparison)
    if verdict is not None:
        lines = statistics.verdict_lines(rows, baseline) + potential_lines(rows, list(potentials))
        if md_pool is not None:
            lines.append(cost_line(rows, md_pool))
        with atomic_path(verdict) as tmp:
            tmp.write_text("\n".join(lines) + "\n")
        for line in lines:
            (log.warning if line.startswith("WARNING") else log.info)("%s", line)
    return rows
