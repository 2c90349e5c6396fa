"""QS2 force sensitivities on the torch route (the GPU path; here the CPU), best of three: 1,000 ethanol frames
and a 216-atom diamond cell, with the default model (r_c 4 Å). Not a test.

    python benchmarks/bench_qs2_torch.py
    PYTHONPATH=../old/src python benchmarks/bench_qs2_torch.py     # another checkout, to compare (alternate them)
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from ase.build import bulk

from oedal.data import load_dataset
from oedal.data.structures import Structures
from oedal.gmnn.kernels import using
from oedal.gmnn.model import GMNN
from oedal.oed.sensitivities import all_sensitivities
from oedal.settings import DescriptorSettings, ModelSettings

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(2)
    sets = {"ethanol x1000": load_dataset("ethanol_1000K", data_dir=SHARED, limit=1000),
            "diamond 216 atoms": Structures.from_atoms([bulk("C", "diamond", a=3.567, cubic=True).repeat((3, 3, 3))])}
    model = GMNN(ModelSettings(descriptor=DescriptorSettings(r_cut=4.0)), [1, 6, 8])
    best: dict[str, float] = {}
    with using("torch"):
        all_sensitivities(model, sets["ethanol x1000"].subset(np.arange(50)))  # warm up
        for name, structures in list(sets.items()) * 3:
            start = time.perf_counter()
            all_sensitivities(model, structures)
            best[name] = min(best.get(name, np.inf), time.perf_counter() - start)
    print("QS2 sensitivities, torch route, 2 threads: " + ", ".join(f"{k} {v:.3f} s" for k, v in best.items()))


if __name__ == "__main__":
    main()
