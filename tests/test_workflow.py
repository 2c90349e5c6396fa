"""The Snakemake workflow: lint, dry runs of the unrolled loop, a real two-iteration campaign on
config/tiny.yaml (replay oracle, 200 GM-NN ethanol structures), partial reruns and targets, config
errors before any job, and reproducible selections. Snakemake runs in a subprocess from the
repository root; results go to a temporary directory through the `results_dir` config key."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
TINY = ROOT / "config" / "tiny.yaml"
STRATEGIES = ("qs1-greedy", "random")
LAST = 2  # config/tiny.yaml: two selection rounds → iterations 0, 1, 2

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def smk_env(tmp_path_factory) -> dict:
    """The environment of the Snakemake subprocess.

    The Slurm executor plugin asks `scontrol show config` for MinJobAge when Snakemake starts; on a
    machine with the Slurm client but no reachable controller that waits 10 s per invocation. These
    tests use the local executor, so a stub `scontrol` that fails at once goes first on PATH."""
    stub = tmp_path_factory.mktemp("stub")
    (stub / "scontrol").write_text("#!/bin/sh\nexit 1\n")
    (stub / "scontrol").chmod(0o755)
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(stub), str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def run_snakemake(env: dict, results: Path, *args: str, config: Path = TINY, check: bool = True):
    cmd = [*SNAKEMAKE, "--configfile", str(config), "--config", f"results_dir={results}", "--cores", "2", *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def dry_run_jobs(env: dict, results: Path, *args: str, config: Path = TINY) -> list[tuple[str, dict]]:
    """(rule, wildcards) of every job a dry run would execute."""
    proc = run_snakemake(env, results, "--dry-run", *args, config=config)
    jobs: list[tuple[str, dict]] = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", proc.stdout + proc.stderr):
        head = re.match(r"(?:local)?rule (\w+):", block)
        if not head:
            continue
        wc = re.search(r"^\s+wildcards: (.*)$", block, flags=re.M)
        wildcards = dict(item.split("=", 1) for item in wc.group(1).split(", ")) if wc else {}
        jobs.append((head.group(1), wildcards))
    return jobs


def read_ids(path: Path) -> np.ndarray:
    from oedal.data.store import read_store

    return np.asarray(read_store(path).ids)


def iter_dir(results: Path, strategy: str, i: int, campaign: str = "tiny", seed: int = 0) -> Path:
    return results / campaign / strategy / f"seed{seed}" / f"iter_{i:03d}"


# ------------------------------------------------------------------------------------------------
# Without running anything
# ------------------------------------------------------------------------------------------------


def test_lint_is_clean(smk_env, tmp_path):
    proc = run_snakemake(smk_env, tmp_path, "--lint", check=False)
    out = proc.stdout + proc.stderr
    assert "Lints for" not in out, out
    assert proc.returncode == 0, out


@pytest.mark.parametrize("config", ["tiny.yaml", "config.yaml", "ethanol_gmnn.yaml"])
def test_dry_run_lists_every_iteration_of_every_strategy(smk_env, tmp_path, config):
    from oedal.campaign.plan import plan_batches, validate_campaign

    path = ROOT / "config" / config
    campaign = validate_campaign(yaml.safe_load(path.read_text()))
    last = len(plan_batches(campaign))
    jobs = dry_run_jobs(smk_env, tmp_path, config=path)
    trained = {(w["strategy"], int(w["seed"]), int(w["iter"])) for r, w in jobs if r == "train_model"}
    selected = {(w["strategy"], int(w["seed"]), int(w["iter"])) for r, w in jobs if r == "select_batch"}
    runs = [(s, seed) for s in campaign.strategies for seed in campaign.seeds]
    assert trained == {(s, seed, i) for s, seed in runs for i in range(last + 1)}
    assert selected == {(s, seed, i) for s, seed in runs for i in range(last)}
    shards = [r for r, w in jobs if r == "label_shard"]
    assert len(shards) == len(runs) * last * campaign.labeling.shards
    scored = {(w["strategy"], int(w["seed"]), int(w["iter"])) for r, w in jobs if r == "score_pool"}
    # random runs score nothing: `oedal select --method random` reads the pool ids from pool.h5
    assert scored == {key for key in selected if key[0] != "random"}
    assert not any(w.get("strategy") == "random" for r, w in jobs if r == "score_pool")
    assert sum(r == "summarize_campaign" for r, _ in jobs) == 1


@pytest.mark.parametrize(
    "change, key",
    [
        ({"training": {"epoch": 5}}, "epoch"),
        ({"split": {"n_train": 0}}, "split.n_train"),
        ({"strategies": ["qs1-greedy", "qs7"]}, "strategies"),
        ({"labeling": {"shards": "two"}}, "labeling.shards"),
        ({"training": {"device": "cuda"}}, "training.device"),  # the device follows resources.use_gpu
    ],
)
def test_bad_config_stops_before_any_job(smk_env, tmp_path, change, key):
    config = yaml.safe_load(TINY.read_text())
    for section, value in change.items():
        if isinstance(value, dict):
            config[section] = {**config.get(section, {}), **value}
        else:
            config[section] = value
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(config))
    results = tmp_path / "results"
    proc = run_snakemake(smk_env, results, config=bad, check=False)
    assert proc.returncode != 0
    assert key in proc.stderr + proc.stdout, proc.stderr[-3000:]
    assert not results.exists(), "a job ran despite the bad config"


def _hostile_config(tmp_path: Path, data_dir: str) -> Path:
    """tiny.yaml with every optional flag of a shell line in use (warm start, qbc committee, stop
    target, data_dir) and the given ``data_dir``."""
    config = yaml.safe_load(TINY.read_text())
    config["dataset"] = {**config["dataset"], "data_dir": data_dir}
    config["strategies"] = ["qs1-greedy", "random", "qbc"]
    config["committee"] = 2
    config["warm_start"] = True
    config["stop"] = {**config["stop"], "target": 0.001}
    path = tmp_path / "hostile.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_every_path_and_string_in_a_shell_line_is_quoted(smk_env, tmp_path):
    """A results_dir and a data_dir full of shell syntax: in every command of the unrolled loop
    (dry run), each path stays one word and no `touch` becomes a command of its own."""
    results = tmp_path / "res dir; touch INJECTED $(touch INJECTED2)"  # (`--config` would read " #" as a comment)
    data_dir = "data dir; touch INJECTED3 #"
    proc = run_snakemake(smk_env, results, "--dry-run", "--printshellcmds",
                         config=_hostile_config(tmp_path, data_dir))
    commands = re.findall(r"^\s*(?:Shell command: )?(oedal \w+ .*)$", proc.stdout + proc.stderr, flags=re.M)
    verbs = {c.split()[1] for c in commands}
    assert verbs == {"import", "split", "train", "evaluate", "score", "select", "shard", "label", "gather", "merge",
                     "summary"}, verbs
    for command in commands:
        words = shlex.split(command)
        assert "touch" not in words, command
        for word in words:
            if "res dir" in word and not word.startswith("{"):  # JSON settings hold paths too: quoted whole
                path = re.sub(r"^[\w-]+:\d+:", "", word)  # oedal summary --run STRATEGY:SEED:RUN_DIR
                assert path.startswith(f"{results}/"), (word, command)
        if " import " in f" {command} ":
            assert words[words.index("--data-dir") + 1] == data_dir, command
    flags = " ".join(commands)
    assert "--warm-start " in flags and "--carry-from " in flags and "--metrics " in flags and "--exclude " in flags
    assert re.search(r"--model '[^']+' --model '", flags)  # the committee, each model quoted


@pytest.mark.parametrize("template", ["x; touch {marker} #", "x$(touch {marker})"])
def test_an_injected_data_dir_runs_no_command(smk_env, tmp_path, shared_data, template):
    """dataset.data_dir = "x; touch MARKER #": the import job gets it as one folder name (missing; the
    data set is then found through $OEDAL_DATA_DIR) and the command after the `;` never runs."""
    marker = tmp_path / "INJECTED"
    results = tmp_path / "results"
    config = _hostile_config(tmp_path, template.format(marker=marker))
    env = {**smk_env, "OEDAL_DATA_DIR": str(shared_data / "gmnn_ethanol")}
    source = results / "tiny" / "data" / "source.h5"
    proc = run_snakemake(env, results, str(source), config=config, check=False)
    assert not marker.exists()
    assert proc.returncode == 0 and source.is_file(), proc.stderr[-3000:]


def _gpu_config(tmp_path: Path) -> Path:
    config = yaml.safe_load(TINY.read_text())
    config["resources"] = {**config.get("resources", {}), "use_gpu": True}
    config["strategies"] = ["qs1-greedy"]
    path = tmp_path / "gpu.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("use_gpu", [False, True])
def test_one_gpu_knob_sets_the_device_of_train_score_and_evaluate(smk_env, tmp_path, use_gpu):
    config = _gpu_config(tmp_path) if use_gpu else TINY
    proc = run_snakemake(smk_env, tmp_path / "results", "--dry-run", "--printshellcmds", config=config)
    out = proc.stdout + proc.stderr
    commands = re.findall(r"^\s*(?:Shell command: )?(oedal (?:train|score|evaluate) .*)$", out, flags=re.M)
    assert {c.split()[1] for c in commands} == {"train", "score", "evaluate"}, out[-3000:]
    device = "cuda" if use_gpu else "cpu"
    assert all(f"--device {device} " in c for c in commands), commands
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", out):
        rule = re.match(r"(?:local)?rule (\w+):", block)
        if rule and rule.group(1) in ("train_model", "score_pool", "evaluate_model"):
            assert ("gpu=1" in block) == use_gpu, block
        elif rule and rule.group(1) == "label_shard":
            assert "gpu=1" not in block, block


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the CPU fallback of a GPU job")
def test_a_gpu_job_without_a_gpu_says_so_and_gives_the_cpu_numbers(smk_env, tiny_run, tmp_path):
    """resources.use_gpu on a machine without CUDA: one warning line per log, the CPU's numbers."""
    results = tmp_path / "results"
    first = iter_dir(results, "qs1-greedy", 0)
    run_snakemake(smk_env, results, str(first / "metrics.json"), str(first / "scores.h5"), config=_gpu_config(tmp_path))
    for job in ("train_model", "score_pool", "evaluate_model"):
        text = (first / "logs" / f"{job}.log").read_text()
        assert text.count("no CUDA device here: running on the CPU") == 1, (job, text)
    cpu = json.loads((iter_dir(tiny_run, "qs1-greedy", 0) / "metrics.json").read_text())
    gpu = json.loads((first / "metrics.json").read_text())
    assert gpu["forces_mae_kcal/mol/A"] == cpu["forces_mae_kcal/mol/A"]


# ------------------------------------------------------------------------------------------------
# A real two-iteration campaign
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(smk_env, tmp_path_factory) -> Path:
    """The tiny campaign, run once, in a results_dir with a space in its name (every path of every
    shell line must be quoted for it to work)."""
    results = tmp_path_factory.mktemp("results") / "with space"
    run_snakemake(smk_env, results)
    return results


def test_tiny_campaign_end_to_end(tiny_run):
    from oedal.data.store import read_store

    results = tiny_run
    assert " " in str(results)  # a results_dir with a space works
    config = yaml.safe_load(TINY.read_text())
    n_train, m = config["split"]["n_train"], config["select"]["n"]
    for strategy in STRATEGIES:
        for i in range(LAST + 1):
            d = iter_dir(results, strategy, i)
            for name in ("train.h5", "valid.h5", "pool.h5", "model.pt", "metrics.json", "status.json"):
                assert (d / name).is_file(), d / name
            assert not read_store(d / "pool.h5").has_labels
            status = json.loads((d / "status.json").read_text())
            assert status["n_train"] == n_train + i * m - status["labels_failed"]
            assert not set(read_ids(d / "train.h5")) & set(read_ids(d / "pool.h5"))
            assert (d / "logs").is_dir()
        for i in range(LAST):
            d = iter_dir(results, strategy, i)
            for name in ("selected.h5", "labeled.h5", "failed.h5", "request.json"):
                assert (d / name).is_file(), d / name
            assert (d / "scores.h5").is_file() == (strategy != "random")  # random scores nothing
            assert len(read_ids(d / "selected.h5")) == m
            # the selection joined the next training set
            assert set(read_ids(d / "selected.h5")) <= set(read_ids(iter_dir(results, strategy, i + 1) / "train.h5"))
    # same split and same iteration-0 training set for every strategy
    a, b = (read_ids(iter_dir(results, s, 0) / "train.h5") for s in STRATEGIES)
    np.testing.assert_array_equal(a, b)

    import pandas as pd

    table = pd.read_csv(results / "tiny" / "summary.csv")
    assert len(table) == len(STRATEGIES) * (LAST + 1)
    assert {"strategy", "seed", "iteration", "n_train", "labels_spent", "selection_s"} <= set(table.columns)
    assert any("force" in c and "mae" in c for c in table.columns), list(table.columns)
    for _, rows in table.groupby("strategy"):
        assert rows.sort_values("iteration")["labels_spent"].is_monotonic_increasing
    selecting = table[table["iteration"] < LAST]
    assert selecting["selection_s"].notna().all()  # random: the select step alone
    assert (results / "tiny" / "learning_curve.png").stat().st_size > 1000


def test_rerunning_one_iteration_reruns_what_follows_and_nothing_before(smk_env, tiny_run):
    """`--forcerun iter_001/model.pt`: that training and every later step of that run, nothing else."""
    model = iter_dir(tiny_run, "qs1-greedy", 1) / "model.pt"
    jobs = dry_run_jobs(smk_env, tiny_run, "--rerun-triggers", "mtime", "--forcerun", str(model))
    assert ("train_model", {"campaign": "tiny", "strategy": "qs1-greedy", "seed": "0", "iter": "001"}) in jobs
    touched = {(w.get("strategy"), w.get("iter")) for r, w in jobs if w.get("iter")}
    assert touched == {("qs1-greedy", "001"), ("qs1-greedy", "002")}, touched
    rules = {r for r, _ in jobs}
    assert {"score_pool", "select_batch", "label_shard", "merge_labels", "summarize_campaign"} <= rules
    assert not rules & {"prepare_dataset", "split_dataset"}


def test_a_deleted_model_is_rebuilt_alone(smk_env, tiny_run):
    """Deleting a model and asking for it runs that one job (later files stay as they are)."""
    model = iter_dir(tiny_run, "qs1-greedy", 1) / "model.pt"
    backup = model.with_suffix(".bak")
    shutil.copy2(model, backup)
    model.unlink()
    try:
        jobs = dry_run_jobs(smk_env, tiny_run, str(model), "--rerun-triggers", "mtime")
    finally:
        shutil.move(backup, model)
    assert jobs == [("train_model", {"campaign": "tiny", "strategy": "qs1-greedy", "seed": "0", "iter": "001"})]


def test_a_target_builds_only_what_it_needs(smk_env, tmp_path):
    target = iter_dir(tmp_path, "random", 1) / "selected.h5"
    jobs = dry_run_jobs(smk_env, tmp_path, str(target))
    assert {w.get("strategy") for _, w in jobs} <= {"random", None}
    assert {w.get("iter") for _, w in jobs} <= {"000", "001", None}
    rules = [r for r, _ in jobs]
    assert "summarize_campaign" not in rules and "all" not in rules
    # random selection needs neither scores nor the models they come from
    assert "score_pool" not in rules and "train_model" not in rules
    assert "evaluate_model" not in rules  # test errors are not needed for a selection
    assert "select_batch" in rules and "merge_labels" in rules


def test_same_seed_same_selections(smk_env, tiny_run, tmp_path):
    target = iter_dir(tmp_path, "qs1-greedy", 1) / "selected.h5"
    run_snakemake(smk_env, tmp_path, str(target))
    for i in range(2):
        first = read_ids(iter_dir(tiny_run, "qs1-greedy", i) / "selected.h5")
        second = read_ids(iter_dir(tmp_path, "qs1-greedy", i) / "selected.h5")
        np.testing.assert_array_equal(first, second)


def test_reaching_the_target_error_stops_the_campaign(smk_env, tmp_path):
    """stop.target met at iteration 0: the next iteration labels nothing and carries the model over."""
    config = yaml.safe_load(TINY.read_text())
    config["stop"] = {**config["stop"], "target": 1000.0}  # kcal/mol/Å: met by any model
    config["strategies"] = ["qs1-greedy"]
    path = tmp_path / "stop.yaml"
    path.write_text(yaml.safe_dump(config))
    results = tmp_path / "results"
    run_snakemake(smk_env, results, str(iter_dir(results, "qs1-greedy", 1) / "model.pt"), config=path)
    first = iter_dir(results, "qs1-greedy", 0)
    request = json.loads((first / "request.json").read_text())
    assert request["stop"] and "target reached" in request["reason"]
    assert len(read_ids(first / "labeled.h5")) == 0
    for i in (1,):
        d = iter_dir(results, "qs1-greedy", i)
        status = json.loads((d / "status.json").read_text())
        assert status["stopped"] and status["labels_spent"] == 40 and status["n_train"] == 20
        assert (d / "model.pt").read_bytes() == (first / "model.pt").read_bytes()
