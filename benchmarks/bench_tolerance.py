"""How far a result computed again moves with the machine's settings: the figures behind tests/tolerances.py.
Not a test.

    python benchmarks/bench_tolerance.py

The model file of tests/test_registries.py predicts its ten recorded structures in subprocesses under other
torch thread counts, kernel backends and CPU instruction sets (ATEN_CPU_CAPABILITY, MKL_ENABLE_INSTRUCTIONS,
NPY_DISABLE_CPU_FEATURES: what a machine without AVX-512 would run); printed: the largest difference from the
recorded values in ulps of the summed quantity (tests/tolerances.py: the energy's float32 output-layer terms,
each atom's pair forces), against the tolerance the tests allow (tolerances.ULPS).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {
    "default": {},
    "torch threads 1": {"OMP_NUM_THREADS": "1"},
    "kernels torch": {"OEDAL_KERNELS": "torch"},
    "ATen default (no AVX)": {"ATEN_CPU_CAPABILITY": "default"},
    "ATen avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "no AVX-512 anywhere, 1 thread": {"ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
                                      "NPY_DISABLE_CPU_FEATURES": "AVX512F AVX512CD AVX512_SKX AVX512_CLX AVX512_CNL "
                                      "AVX512_ICL AVX512_SPR", "OMP_NUM_THREADS": "1"},
}
PREDICT = """
import json, sys, numpy as np
sys.path.insert(0, "tests")
from oedal.data import load_dataset
from oedal.gmnn.evaluation import predict
from oedal.gmnn.model import load_model
rec = json.load(open("tests/data/model_0.1.0.json"))
model = load_model("tests/data/model_0.1.0.pt")
s = load_dataset("ethanol_1000K", data_dir="../shared/data", limit=300).subset(np.asarray(rec["ids"]))
p = predict(model, s)
print(json.dumps({"energy": p.energy.tolist(), "forces": np.asarray(p.forces).tolist()}))
"""


def main() -> int:
    sys.path.insert(0, str(ROOT / "tests"))
    from tolerances import ULPS, force_scale, network_energy_scale, tolerance

    from oedal.data import load_dataset
    from oedal.gmnn.model import load_model

    rec = json.loads((ROOT / "tests" / "data" / "model_0.1.0.json").read_text())
    model = load_model(ROOT / "tests" / "data" / "model_0.1.0.pt")
    test = load_dataset("ethanol_1000K", data_dir=ROOT.parent / "shared" / "data", limit=300).subset(
        np.asarray(rec["ids"]))
    e_ulp = tolerance(network_energy_scale(model, test), np.float32, 1)  # (n,) eV per ulp
    f_ulp = tolerance(force_scale(model, test), np.float32, 1)  # (n_atoms, 1) eV/Å per ulp
    e0, f0 = np.array(rec["energy_eV"]), np.array(rec["forces_eV_per_A"])
    print(f"{'setting':32s} {'energy: max |dE| eV':>20s} {'ulps':>6s} {'forces: max |dF| eV/Å':>22s} {'ulps':>6s}")
    for name, extra in SETTINGS.items():
        out = subprocess.run([sys.executable, "-c", PREDICT], cwd=ROOT, env={**os.environ, **extra},
                             capture_output=True, text=True, check=True).stdout
        got = json.loads(out.strip().splitlines()[-1])
        de, df = np.abs(np.array(got["energy"]) - e0), np.abs(np.array(got["forces"]) - f0)
        print(f"{name:32s} {de.max():20.3g} {(de / e_ulp).max():6.2f} {df.max():22.3g} {(df / f_ulp).max():6.2f}")
    print(f"tests allow {ULPS} ulps (tests/tolerances.py); the test before this release allowed 1e-9 eV absolute")
    return 0


if __name__ == "__main__":
    sys.exit(main())
