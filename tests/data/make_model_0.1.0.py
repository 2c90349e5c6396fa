"""Write a small model file with oedal 0.1.0 (before the gmnn/oed/campaign layout) and the energies and forces it predicts."""
import json, sys
import numpy as np, torch
from oedal.data import load_dataset
from oedal.settings import ModelSettings, TrainingSettings, DescriptorSettings
from oedal.training import train_model
from oedal.model import save_model
from oedal.evaluation import predict
out = sys.argv[1]
s = load_dataset("ethanol_1000K", data_dir="/work/shared/data", limit=40)
train, valid, test = s.subset(np.arange(20)), s.subset(np.arange(20, 30)), s.subset(np.arange(30, 40))
ms = ModelSettings(descriptor=DescriptorSettings(r_cut=4.0, n_basis=5, n_radial=3), hidden=[16, 8])
res = train_model(train, valid, ms, TrainingSettings(epochs=3, batch_size=8, seed=1, threads=1))
save_model(res.model, out + "/model_0.1.0.pt", history=res.history, best_epoch=res.best_epoch, stopped=res.stopped)
p = predict(res.model, test)
json.dump({"ids": test.ids.tolist(), "energy_eV": p.energy.tolist(), "forces_eV_per_A": p.forces.tolist(),
           "made_by": "oedal 0.1.0 at a72e80b (flat layout): /tmp/make_fixture.py, ethanol_1000K frames 0-39"},
          open(out + "/model_0.1.0.json", "w"))
print(p.energy[:3])
