"""Issue 21's inputs, tried on a checkout: what each step does with them. Not a test (the tests are in
tests/test_cache_trust.py, test_faults.py, test_isolated_atoms.py); this prints the behaviour of any checkout,
so that before and after can be set side by side:

    python benchmarks/repro_issue21.py                       # this checkout
    PYTHONPATH=../old/src python benchmarks/repro_issue21.py # another one (run from its venv where it differs)
"""
import json, sqlite3, subprocess, sys, tempfile
from pathlib import Path
import numpy as np, h5py, torch
from ase.build import molecule
from ase.calculators.emt import EMT
from oedal.data.store import write_store, read_store
from oedal.data.structures import Structures
from oedal.oracles import label_store, oracle_settings
D = Path(tempfile.mkdtemp()); OEDAL = [sys.executable, "-m", "oedal"]
def run(*a):
    r = subprocess.run([*OEDAL, *a], capture_output=True, text=True, cwd=D)
    err = r.stderr.strip().splitlines()
    return r.returncode, (err[-1] if err else "")[:160], "Traceback" in r.stderr
def frames(n, seed=0):
    rng = np.random.default_rng(seed); out = []
    for _ in range(n):
        a = molecule("CH3CH2OH"); a.positions += rng.normal(0, .05, a.positions.shape); out.append(a)
    return out
res = {}
# 3a edited shard
s = D/"s.h5"; write_store(s, Structures.from_atoms(frames(4), ids=np.arange(4)))
label_store(s, D/"l1.h5", None, oracle_settings(kind="emt"), cache=D/"c.sqlite")
with h5py.File(s, "a") as f: f["positions"][9] = f["positions"][9] + 0.4
label_store(s, D/"l2.h5", None, oracle_settings(kind="emt"), cache=D/"c.sqlite")
a = read_store(s).subset([1]).to_atoms()[0]; a.calc = EMT()
res["3a edited shard: label of structure 1 equals the fresh EMT energy"] = bool(abs(read_store(D/"l2.h5").energy[1] - a.get_potential_energy()) < 1e-9)
# 3b inf planted
c = D/"c2.sqlite"; s2 = D/"s2.h5"; write_store(s2, Structures.from_atoms(frames(2, 5), ids=np.arange(2)))
label_store(s2, D/"x.h5", None, oracle_settings(kind="emt"), cache=c)
with sqlite3.connect(c) as con:
    con.execute("DROP TRIGGER IF EXISTS labels_no_update")  # a planted value: past the append-only guard
    con.execute("UPDATE labels SET energy = ? WHERE row = 1", (float("inf"),))
try:
    label_store(s2, D/"y.h5", None, oracle_settings(kind="emt"), cache=c)
    res["3b inf planted in the cache: energies in labeled.h5"] = read_store(D/"y.h5").energy.tolist()
except Exception as e:
    res["3b inf planted"] = f"{type(e).__name__}: {str(e)[:120]}"
# 4 malformed shard
s4 = D/"s4.h5"; write_store(s4, Structures.from_atoms(frames(3), ids=np.arange(3)))
with h5py.File(s4, "a") as f:
    p = f["positions"][()]; del f["positions"]; f["positions"] = np.concatenate([p, np.zeros((len(p), 1))], 1)
res["4 positions (n,4): oedal label"] = run("label", "--in", str(s4), "--out", "l4.h5", "--failed", "f4.h5", "--oracle-settings", '{"kind": "emt"}')
# 6 NaN weights
tr = D/"tr.h5"; va = D/"va.h5"; write_store(tr, Structures.from_atoms(frames(20, 1), ids=np.arange(20)))
from oedal.oracles import label_store as L
L(tr, D/"trl.h5", None, oracle_settings(kind="emt"))
write_store(va, Structures.from_atoms(frames(8, 2), ids=np.arange(8)+100)); L(va, D/"val.h5", None, oracle_settings(kind="emt"))
run("train", "--train", str(D/"trl.h5"), "--valid", str(D/"val.h5"), "--out", "m.pt", "--epochs", "1", "--model-settings", '{"hidden":[8,8],"descriptor":{"r_cut":4.0,"n_radial":2,"n_basis":4}}')
pay = torch.load(D/"m.pt", weights_only=True); pay["state_dict"]["output.weight"][0, 0] = float("nan"); torch.save(pay, D/"nan.pt")
res["6 NaN weights: oedal evaluate"] = run("evaluate", "--model", "nan.pt", "--data", str(D/"val.h5"), "--out", "m.json")
if (D/"m.json").exists(): res["6 ... metrics forces MAE"] = json.loads((D/"m.json").read_text()).get("forces_mae_kcal/mol/A")
pay = torch.load(D/"m.pt", weights_only=True); pay["state_dict"]["mlp.0.weight"] = torch.zeros(9, pay["state_dict"]["mlp.0.weight"].shape[1]); torch.save(pay, D/"shape.pt")
res["8d weights not fitting: oedal evaluate"] = run("evaluate", "--model", "shape.pt", "--data", str(D/"val.h5"), "--out", "m2.json")
# 7 explore settings
res["7 temperatures [-5]: oedal explore"] = run("explore", "--model", "m.pt", "--settings", '{"temperatures": [-5.0], "steps": 10}', "--candidates", "c.h5", "--walkers", "w.json")
res["7 timestep 100 fs: oedal explore"] = run("explore", "--model", "m.pt", "--settings", '{"timestep": 100, "steps": 30, "temperatures":[300]}', "--candidates", "c2.h5", "--walkers", "w2.json")
# 8a corrupted h5
bad = D/"bad.h5"; write_store(bad, read_store(D/"val.h5"))
with h5py.File(bad) as f: info = f["positions"].id.get_chunk_info(0)
with open(bad, "r+b") as fh: fh.seek(info.byte_offset + info.size // 2); fh.write(bytes(range(200, 216)))
res["8a damaged store: oedal evaluate"] = run("evaluate", "--model", "m.pt", "--data", str(bad), "--out", "m3.json")
# 8b cache info on ASE db
import ase.db
with ase.db.connect(D/"x.db") as db: db.write(frames(1)[0])
before = {n for (n,) in sqlite3.connect(D/"x.db").execute("select name from sqlite_master where type='table'")}
res["8b cache info on an ASE db"] = run("cache", "info", str(D/"x.db"))
after = {n for (n,) in sqlite3.connect(D/"x.db").execute("select name from sqlite_master where type='table'")}
res["8b ... tables added"] = sorted(after - before)
for k, v in res.items(): print(f"{k}: {v}")
