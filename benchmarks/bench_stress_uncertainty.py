"""Does the stress uncertainty of a cell (oedal.oed.uncertainty: ∂σ/∂w scored under the model's posterior, mapped
to GPa on the validation cells) tell which cells' stresses the model gets wrong, better than the energy score that
the walkers and the selection use? Measured on the models of the materials campaign (config/explore_si.yaml,
after `make materials` or its snakemake step) against its independent GPAW test set. Not a test.

    python benchmarks/bench_stress_uncertainty.py [--results results]

For every finished iteration of every seed: the uncertainty refitted from the iteration's own train.h5 and
valid.h5 (as `oedal train` fits it), then on the 48 test cells
* Spearman r of the stress score s̄_σ with the cell's stress RMS error (six components; the ranking of the
  predicted stress error where the fitted map rises, p > 0),
* Spearman r of the energy score s_λ (QS1) with the same errors: what the stress term adds,
* the miscalibration area of N(0, predicted²) for each stress component (0 perfect, 0.5 worst),
* the mean predicted and observed stress RMS (GPa).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def measure(iteration: Path, test) -> dict | None:
    """The figures of one iteration's model on ``test`` (None: no stress map could be fitted)."""
    from oedal.data.store import read_store
    from oedal.gmnn.evaluation import GPA, predict
    from oedal.gmnn.model import load_model
    from oedal.oed import calibration
    from oedal.oed.sensitivities import VOIGT, energy_sensitivities, stress_sensitivities
    from oedal.oed.uncertainty import fit_uncertainty, stress_rms

    model = load_model(iteration / "model.pt")
    head = fit_uncertainty(model, read_store(iteration / "train.h5"), read_store(iteration / "valid.h5"))
    if head.stress_error_map is None:
        return None
    observed = stress_rms(model, test)  # (n,) GPa
    s_stress = head.stress_scores(stress_sensitivities(model, test))  # (n,) the map's argument
    s_energy = head.structure(energy_sensitivities(model, test))["s"]
    predicted = calibration.ErrorMap(*head.stress_error_map)(s_stress)  # (n,) GPa
    components = ((predict(model, test, stress=True).stress - test.stress) / GPA)[:, VOIGT[0], VOIGT[1]]  # (n, 6)
    return {"n_valid_cells": len(read_store(iteration / "valid.h5").n_atoms),
            "map_p": head.stress_error_map[1], "spearman_stress": calibration.spearman(s_stress, observed),
            "spearman_energy_score": calibration.spearman(s_energy, observed),
            "miscalibration": calibration.miscalibration_area(np.repeat(predicted, 6), components.ravel()),
            "predicted_GPa": float(predicted.mean()), "observed_GPa": float(observed.mean())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", type=Path, default=ROOT / "results")
    args = p.parse_args()
    import torch

    from oedal.data.store import read_store

    torch.set_num_threads(1)
    run = args.results / "explore_si" / "qs1-greedy"
    test = read_store(args.results / "explore_si_data" / "si_test.h5")
    rows = []
    print(f"stress uncertainty on {len(test.n_atoms)} GPAW test cells; models of {run}")
    print("seed iter  valid cells  map p  Spearman(s̄_σ, stress err)  Spearman(energy score, stress err)  "
          "miscal. area  predicted / observed GPa")
    for iteration in sorted(run.glob("seed*/iter_*")):
        if not (iteration / "model.pt").exists() or not (iteration / "metrics.json").exists():
            continue
        row = measure(iteration, test)
        if row is None:
            print(f"{iteration.parent.name} {iteration.name}: fewer than 3 validation cells with stress")
            continue
        rows.append(row)
        print(f"{iteration.parent.name:>5} {iteration.name[-3:]}  {row['n_valid_cells']:>11}  "
              f"{row['map_p']:>5.2f}  {row['spearman_stress']:>25.2f}  {row['spearman_energy_score']:>34.2f}  "
              f"{row['miscalibration']:>12.3f}  {row['predicted_GPa']:.2f} / {row['observed_GPa']:.2f}")
    if rows:
        mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
        better = sum(r["spearman_stress"] > r["spearman_energy_score"] for r in rows)
        print(f"mean over {len(rows)} models: Spearman r {mean['spearman_stress']:.2f} (stress uncertainty) against "
              f"{mean['spearman_energy_score']:.2f} (energy score), higher in {better} of {len(rows)}; "
              f"miscalibration area {mean['miscalibration']:.3f}")


if __name__ == "__main__":
    main()
