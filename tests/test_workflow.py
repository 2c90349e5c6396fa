"""The Snakemake workflow: lint, dry runs of the unrolled loop, a real two-iteration campaign on
config/tiny.yaml (replay oracle, 200 GM-NN ethanol structures), partial reruns and targets, config
errors before any job, and reproducible selections. Snakemake runs in a subprocess from the
repository root; results go to a temporary directory through the `results_dir` config key."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml

from workflow_helpers import ROOT, SNAKEMAKE, TINY, run_snakemake  # noqa: F401  (smk_env, tiny_run: conftest.py)
STRATEGIES = ("qs1-greedy", "random")
LAST = 2  # config/tiny.yaml: two selection rounds → iterations 0, 1, 2

pytestmark = pytest.mark.slow


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


def dry_run_outputs(env: dict, results: Path, *args: str, config: Path = TINY) -> list[tuple[str, list[str]]]:
    """(rule, output files) of every job a dry run would execute."""
    proc = run_snakemake(env, results, "--dry-run", *args, config=config)
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", proc.stdout + proc.stderr):
        head = re.match(r"(?:local)?rule (\w+):", block)
        if head:
            out = re.search(r"^\s+output: (.*)$", block, flags=re.M)
            jobs.append((head.group(1), out.group(1).split(", ") if out else []))
    return jobs


def edited_config(tmp_path: Path, name: str = "edited.yaml", **sections) -> Path:
    """config/tiny.yaml with some keys of some sections changed (``iterations=3`` style per section)."""
    config = yaml.safe_load(TINY.read_text())
    for section, values in sections.items():
        config[section] = {**config.get(section, {}), **values} if isinstance(values, dict) else values
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return path


def label_log_counts(results: Path) -> list[tuple[int, int]]:
    """(from the cache, oracle calls) of every label_shard log under ``results``."""
    counts = []
    for log in sorted(results.glob("**/logs/label_shard_*.log")):
        found = re.findall(r"(\d+) from the cache, (\d+) oracle calls", log.read_text())
        assert found, log.read_text()[-2000:]
        counts.append(tuple(int(x) for x in found[-1]))
    return counts


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


@pytest.mark.parametrize("config", ["tiny.yaml", "config.yaml", "ethanol_gmnn.yaml", "explore_ethanol.yaml",
                                    "explore_malonaldehyde.yaml"])
def test_dry_run_lists_every_iteration_of_every_strategy(smk_env, tmp_path, config):
    from oedal.campaign.plan import plan_batches, validate_campaign

    path = ROOT / "config" / config
    campaign = validate_campaign(yaml.safe_load(path.read_text()))
    last = len(plan_batches(campaign))
    jobs = dry_run_jobs(smk_env, tmp_path, config=path)
    trained = {(w["strategy"], int(w["seed"]), int(w["iter"])) for r, w in jobs if r == "train_model" and not w["k"]}
    selected = {(w["strategy"], int(w["seed"]), int(w["iter"])) for r, w in jobs if r == "select_batch"}
    runs = [(s, seed) for s in campaign.strategies for seed in campaign.seeds]
    assert trained == {(s, seed, i) for s, seed in runs for i in range(1, last + 1)}
    # iteration 0 is one model per seed, shared by every strategy (copied into each strategy)
    initial = sorted(int(w["seed"]) for r, w in jobs if r == "train_initial_model" and not w["k"])
    assert initial == sorted(campaign.seeds)
    shared = {(w["strategy"], int(w["seed"])) for r, w in jobs if r == "share_initial"}
    assert shared == set(runs)
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


@pytest.mark.parametrize("final_from_scratch", [False, True])
def test_a_warm_started_campaign_trains_its_planned_last_round_from_scratch_when_asked(smk_env, tmp_path,
                                                                                       final_from_scratch):
    """warm_start: every round after the first starts from its predecessor; with final_from_scratch the
    planned last one (stop.iterations: 2) does not, and nothing else changes."""
    config = yaml.safe_load(TINY.read_text())
    config.update(warm_start=True, strategies=["qs1-greedy"], **({"final_from_scratch": True} if final_from_scratch
                                                                 else {}))
    path = tmp_path / "warm.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = run_snakemake(smk_env, tmp_path / "results", "--dry-run", "--printshellcmds", config=path)
    trains = re.findall(r"^\s*(?:Shell command: )?(oedal train .*)$", proc.stdout + proc.stderr, flags=re.M)
    warm = {re.search(r"iter_(\d{3})/model\.pt", c).group(1): "--warm-start " in c for c in trains}
    assert warm == {"000": False, "001": True, "002": not final_from_scratch}, trains


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
                     "summary", "record", "report"}, verbs
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
        gpu_rules = ("train_model", "train_initial_model", "score_pool", "evaluate_model", "evaluate_initial_model")
        if rule and rule.group(1) in gpu_rules:
            assert ("gpu=1" in block) == use_gpu, block
        elif rule and rule.group(1) == "label_shard":
            assert "gpu=1" not in block, block


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the CPU fallback of a GPU job")
def test_a_gpu_job_without_a_gpu_says_so_and_gives_the_cpu_numbers(smk_env, tiny_run, tmp_path):
    """resources.use_gpu on a machine without CUDA: one warning line per log, the CPU's numbers."""
    results = tmp_path / "results"
    first = iter_dir(results, "qs1-greedy", 0)
    run_snakemake(smk_env, results, str(first / "metrics.json"), str(first / "scores.h5"), config=_gpu_config(tmp_path))
    shared = results / "tiny" / "seed0" / "iter_000"  # iteration 0 is trained and evaluated once per seed
    for log in (shared / "logs" / "train_model.log", first / "logs" / "score_pool.log", shared / "logs" / "evaluate_model.log"):
        job, text = log.stem, log.read_text()
        assert text.count("no CUDA device here: running on the CPU") == 1, (job, text)
    cpu = json.loads((iter_dir(tiny_run, "qs1-greedy", 0) / "metrics.json").read_text())
    gpu = json.loads((first / "metrics.json").read_text())
    assert gpu["forces_mae_kcal/mol/A"] == cpu["forces_mae_kcal/mol/A"]


# ------------------------------------------------------------------------------------------------
# A real two-iteration campaign
# ------------------------------------------------------------------------------------------------


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
    # each model on the frames it picked, once labeled: their number, and its errors there recomputed
    assert (selecting["labeled_n_structures"] == m).all() and table["labeled_n_structures"].isna().sum() == 2
    from oedal.gmnn.evaluation import error_metrics
    from oedal.gmnn.model import load_model

    d = iter_dir(results, "random", 1)
    labeled = read_store(d / "labeled.h5")  # the picks and the redrawn validation structures: the picks only
    picks = labeled.subset(np.flatnonzero(np.isin(labeled.ids, read_ids(d / "selected.h5"))))
    again = error_metrics(load_model(d / "model.pt"), picks)["forces_mae_kcal/mol/A"]
    row = table[(table["strategy"] == "random") & (table["iteration"] == 1)].iloc[0]
    assert row["labeled_forces_mae_kcal/mol/A"] == pytest.approx(again, rel=1e-6)
    assert (results / "tiny" / "learning_curve.png").stat().st_size > 1000
    assert (results / "tiny" / "report.html").stat().st_size > 10000  # tests/test_report.py looks inside
    assert json.loads((results / "tiny" / "campaign.json").read_text())["last_iteration"] == LAST


def test_every_label_is_computed_once_and_lives_in_the_cache(tiny_run):
    """The campaign's label cache ({results_dir}/labels.sqlite) holds every oracle result once; the oracle
    calls of all labeling jobs add up to its rows."""
    import sqlite3

    from oedal.data.store import StoreReader

    with sqlite3.connect(tiny_run / "labels.sqlite") as con:
        rows = con.execute("SELECT structure, ok FROM labels").fetchall()
    hashes = set()
    for path in tiny_run.glob("tiny/*/seed0/iter_*/shards/*labeled_*.h5"):
        with StoreReader(path) as reader:
            hashes |= {h.decode() for h in reader.hashes}
    assert {h for h, ok in rows if ok} == hashes and len(rows) == len({h for h, _ in rows})
    assert sum(calls for _, calls in label_log_counts(tiny_run)) == len(rows)


def test_more_iterations_and_runtime_knobs_rerun_nothing_that_exists(smk_env, tiny_run, tmp_path):
    """stop.iterations 2 → 3 and every knob that changes no output (oracle threads and attempts, the label
    cache's place and journal, training threads, the scoring chunk size, the data folder, resources): the
    dry run plans only jobs whose outputs are missing, and the summary that gains a row."""
    data_dir = str((ROOT / yaml.safe_load(TINY.read_text())["dataset"]["data_dir"]).resolve())
    config = edited_config(
        tmp_path, stop={"iterations": 3}, oracle={"kind": "replay", "threads": 2, "max_attempts": 3},
        labeling={"shards": 2, "retries": 3, "cache": str(tmp_path / "elsewhere.sqlite"), "cache_journal": "delete"},
        training={"epochs": 5, "batch_size": 8, "patience": 5, "threads": 2}, score={"chunk_size": 7},
        dataset={"source": "ethanol_1000K", "data_dir": data_dir},
        resources={"train_threads": 2, "score_threads": 2, "label_mem_mb": 3000, "train_runtime": 20})
    jobs = dry_run_outputs(smk_env, tiny_run, config=config)
    assert {rule for rule, _ in jobs} >= {"select_batch", "label_shard", "merge_labels", "train_model"}
    existing = [(rule, f) for rule, outputs in jobs for f in outputs if Path(f).exists()]
    # campaign.json records every setting (so the report shows them): it and what reads it are rewritten
    assert {rule for rule, _ in existing} <= {"summarize_campaign", "plot_learning_curve", "record_campaign",
                                               "report_campaign"}, existing
    planned = {(rule, re.search(r"iter_(\d{3})", o[0]).group(1)) for rule, o in jobs if o and "iter_" in o[0]}
    assert {it for _, it in planned} == {"002", "003"}, planned  # iteration 2 now selects; 3 is new


def test_rerunning_one_iteration_reruns_what_follows_and_nothing_before(smk_env, tiny_run):
    """`--forcerun iter_001/model.pt`: that training and every later step of that run, nothing else."""
    model = iter_dir(tiny_run, "qs1-greedy", 1) / "model.pt"
    jobs = dry_run_jobs(smk_env, tiny_run, "--rerun-triggers", "mtime", "--forcerun", str(model))
    assert ("train_model", {"campaign": "tiny", "strategy": "qs1-greedy", "seed": "0", "iter": "001", "k": ""}) in jobs
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
    assert jobs == [("train_model", {"campaign": "tiny", "strategy": "qs1-greedy", "seed": "0", "iter": "001", "k": ""})]


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


# ------------------------------------------------------------------------------------------------
# Labels are never computed twice: forced reruns, kill -9 of jobs and of Snakemake itself
# ------------------------------------------------------------------------------------------------


def test_training_seeds_added_to_a_finished_campaign_train_and_test_only_the_new_models(smk_env, tiny_run, tmp_path):
    """training_seeds: 2 on the finished tiny campaign: the dry run plans a second model per iteration (its
    own seed; iteration 0's once per seed, shared) and its test, and of what exists only the summary and what
    reads it; once run, summary.csv holds the geometric mean and log spread of the two models' errors
    (recomputed here from their metrics files), and the verdict compares those means. (It adds files to
    tiny_run.)"""
    import pandas as pd

    config = edited_config(tmp_path, training_seeds=2)
    jobs = dry_run_outputs(smk_env, tiny_run, config=config)
    rules = {rule for rule, _ in jobs}
    assert {"train_initial_model", "train_model", "evaluate_initial_model", "evaluate_model"} <= rules
    assert rules <= {"all", "train_initial_model", "train_model", "evaluate_initial_model", "evaluate_model",
                     "share_initial", "summarize_campaign", "record_campaign", "plot_learning_curve",
                     "report_campaign"}, rules
    existing = {rule for rule, outputs in jobs for f in outputs if Path(f).exists()}
    assert existing <= {"summarize_campaign", "plot_learning_curve", "record_campaign", "report_campaign"}
    run_snakemake(smk_env, tiny_run, config=config)
    table = pd.read_csv(tiny_run / "tiny" / "summary.csv")
    key = "forces_mae_kcal/mol/A"
    for strategy in STRATEGIES:
        for i in range(LAST + 1):
            d = iter_dir(tiny_run, strategy, i)
            a, b = (json.loads((d / name).read_text())[key] for name in ("metrics.json", "metrics_k1.json"))
            assert a != b  # another initialisation, another model
            row = table[(table["strategy"] == strategy) & (table["iteration"] == i)].iloc[0]
            assert row["seeds_n"] == 2 and row[key] == pytest.approx(a)
            assert row["seeds_" + key] == pytest.approx(math.sqrt(a * b), rel=1e-9)
            assert row["seeds_sdlog_" + key] == pytest.approx(abs(math.log(a / b)) / math.sqrt(2), rel=1e-9)
    shared = [(iter_dir(tiny_run, s, 0) / "model_k1.pt").read_bytes() for s in STRATEGIES]
    assert shared[0] == shared[1]  # iteration 0 is trained once per seed
    verdict = (tiny_run / "tiny" / "verdict.txt").read_text()
    assert "forces mae (geometric mean over training seeds)" in verdict
    assert "training seeds: 2 models per selected set" in verdict
    assert "force MAE (kcal/mol/Å), mean of training seeds" in (tiny_run / "tiny" / "report.html").read_text()


def test_forcerun_of_a_labeled_iteration_recomputes_no_label(smk_env, tiny_run):
    """`--forcerun` of iteration 1's labeling jobs deletes and reruns them (as root the protected outputs
    protect nothing; a non-root user is emulated by making them writable): every label comes from the
    cache, no oracle call, the same labels. (Last in this file: it rewrites files of tiny_run.)"""
    d = iter_dir(tiny_run, "qs1-greedy", 1)
    shards = [d / "shards" / f"labeled_{k}.h5" for k in range(2)]
    before = [read_ids(p) for p in shards], [np.asarray(__import__("oedal").data.read_store(p).energy) for p in shards]
    if os.geteuid() != 0:
        for path in shards + [d / "shards" / f"failed_{k}.h5" for k in range(2)]:
            path.chmod(0o644)
    run_snakemake(smk_env, tiny_run, str(d / "labeled.h5"), "--forcerun", *map(str, shards))
    counts = label_log_counts(d)
    assert len(counts) == 2 and all(calls == 0 and cached > 0 for cached, calls in counts), counts
    from oedal.data import read_store

    assert [read_ids(p).tolist() for p in shards] == [ids.tolist() for ids in before[0]]
    for path, energy in zip(shards, before[1]):
        np.testing.assert_array_equal(read_store(path).energy, energy)


def labeling_config(tmp_path: Path, log: Path, name: str = "labels.yaml", **oracle) -> Path:
    """Random strategy only (no training needed up to iteration 1's labels), a counting EMT oracle that
    takes 30 ms per structure, the validation set redrawn: 28 structures to label per iteration."""
    calculator = {"kind": "ase", "calculator": "counting_calculator:counting_emt",
                  "calculator_kwargs": {"log": str(log), "delay": 0.03, **oracle}}
    return edited_config(tmp_path, name, strategies=["random"], oracle=calculator,
                         split={"n_train": 20, "n_valid": 20, "n_test": 60, "n_pool": 100, "valid_redraw": True})


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children of children ...), from /proc."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    out, frontier = [], [pid]
    while frontier:
        children = [p for p, parent in parents.items() if parent in frontier]
        out += children
        frontier = children
    return out


def labelers(pid: int) -> list[int]:
    """The `oedal label` processes below ``pid`` (not the shells that started them)."""
    found = []
    for p in descendants(pid):
        try:
            argv = Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"label" in argv and any(a.endswith(b"oedal") for a in argv):
            found.append(p)
    return found


def wait_gone(pids: list[int], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while any(Path(f"/proc/{p}").exists() and "zombie" not in Path(f"/proc/{p}/status").read_text(errors="ignore")
              for p in pids):
        assert time.monotonic() < deadline, "orphaned jobs did not finish"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def scattered(smk_env, tmp_path_factory) -> Path:
    """A results folder of `labeling_config` up to iteration 0's shards (nothing labeled yet); tests copy it."""
    root = tmp_path_factory.mktemp("scattered")
    config = labeling_config(root, root / "unused.txt")
    results = root / "results"
    run_snakemake(smk_env, results, str(iter_dir(results, "random", 0) / "request.json"), config=config)
    return results


def copy_of(results: Path, tmp_path: Path) -> Path:
    """A copy with the files' times (Snakemake keeps no record of it: only missing files are made)."""
    return Path(shutil.copytree(results, tmp_path / "results"))


def with_test_oracles(smk_env: dict) -> dict:
    """Jobs that import tests/counting_calculator.py."""
    return {**smk_env, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), smk_env.get("PYTHONPATH", "")])}


@pytest.mark.parametrize("victim", ["snakemake", "everything", "label job"])
def test_kill_9_during_labeling_computes_no_label_twice(smk_env, scattered, tmp_path, victim):
    """kill -9 at a random moment while iteration 0 is labeled (2 shards of 14), of Snakemake alone (its
    jobs go on as orphans), of Snakemake with its jobs (a node lost), or of one labeling job (Snakemake
    retries it); then `--unlock` and a rerun with the local profile's settings (rerun-incomplete). Every
    structure is labeled; the cache holds each label once; no finished label is computed again."""
    import sqlite3

    import counting_calculator

    env, results, log = with_test_oracles(smk_env), copy_of(scattered, tmp_path), tmp_path / "calls.txt"
    target = str(iter_dir(results, "random", 0) / "labeled.h5")
    cmd = [*SNAKEMAKE, "--configfile", str(labeling_config(tmp_path, log)), "--config", f"results_dir={results}",
           "--cores", "2", target]
    kill_after = int(np.random.default_rng(zlib.crc32(victim.encode())).integers(1, 27))  # oracle calls
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    while len(counting_calculator.calls(log)) < kill_after or (victim == "label job" and not labelers(proc.pid)):
        assert proc.poll() is None, "snakemake ended before the kill"
        time.sleep(0.005)
    jobs = descendants(proc.pid)
    if victim == "label job":
        os.kill(labelers(proc.pid)[0], signal.SIGKILL)
        assert proc.wait(timeout=300) == 0  # labeling.retries: the retry resumes from the cache
    else:
        os.killpg(proc.pid, signal.SIGKILL) if victim == "everything" else proc.send_signal(signal.SIGKILL)
        proc.wait()
        subprocess.run([*cmd[:-1], "--unlock"], cwd=ROOT, env=env, check=True, capture_output=True)
        rerun = subprocess.run([*cmd[:-3], "--profile", str(ROOT / "profiles" / "local"), target], cwd=ROOT, env=env,
                               capture_output=True, text=True, timeout=600)
        assert rerun.returncode == 0, rerun.stderr[-4000:]
        wait_gone(jobs)
    calls = counting_calculator.calls(log)
    assert len(read_ids(Path(target))) == 28 and len(set(i for _, i in calls)) == 28
    with sqlite3.connect(results / "labels.sqlite") as con:
        assert con.execute("SELECT COUNT(*), COUNT(DISTINCT structure), SUM(ok) FROM labels").fetchone() == (28, 28, 28)
    twice = len(calls) - 28  # a computation a kill interrupted after it finished, before its commit
    print(f"kill -9 of {victim} after {kill_after} oracle calls: {len(calls)} calls for 28 labels")
    assert twice <= {"snakemake": 0, "everything": 2, "label job": 1}[victim], (twice, kill_after)


def test_a_shard_where_every_structure_fails_stops_the_campaign(smk_env, scattered, tmp_path):
    """The labeling job exits non-zero after writing what it has; Snakemake stops with its message."""
    results = copy_of(scattered, tmp_path)
    config = labeling_config(tmp_path, tmp_path / "calls.txt", fail=True)
    proc = run_snakemake(with_test_oracles(smk_env), results, str(iter_dir(results, "random", 0) / "labeled.h5"),
                         "--show-failed-logs", config=config, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "oedal label: error: every structure of" in out, out[-4000:]
    assert "this calculator always fails" in out
    assert not (iter_dir(results, "random", 0) / "labeled.h5").exists()


# ------------------------------------------------------------------------------------------------
# An exploration campaign (dataset.source: explore)
# ------------------------------------------------------------------------------------------------


def test_an_exploration_campaigns_test_file_is_imported_instead_of_the_sampling_md(smk_env, tmp_path):
    config = yaml.safe_load((ROOT / "tests" / "data" / "tiny_explore.yaml").read_text())
    config["dataset"]["test"] = "given/test set.h5"
    path = tmp_path / "explore_with_test.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = run_snakemake(smk_env, tmp_path / "results", "-n", "-p", config=path)
    assert "oedal import 'given/test set.h5'" in proc.stdout and "oedal sample" not in proc.stdout


@pytest.mark.parametrize("use_gpu", [False, True])
def test_the_gpu_knob_sets_the_device_of_the_walkers(smk_env, tmp_path, use_gpu):
    """resources.use_gpu: every explore_shard job asks for a GPU and runs `oedal explore --device cuda`; without
    it, the CPU."""
    config = yaml.safe_load((ROOT / "tests" / "data" / "tiny_explore.yaml").read_text())
    config["resources"] = {**config.get("resources", {}), "use_gpu": use_gpu}
    path = tmp_path / "explore_gpu.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = run_snakemake(smk_env, tmp_path / "results", "-n", "-p", config=path)
    out = proc.stdout + proc.stderr
    blocks = [b for b in re.split(r"\n(?=(?:local)?rule \w+:)", out) if b.startswith("rule explore_shard:")]
    assert blocks and all(("gpu=1" in b) == use_gpu for b in blocks), out[-3000:]
    commands = re.findall(r"^\s*(?:Shell command: )?(oedal explore .*)$", out, flags=re.M)
    # the CPU is `oedal explore`'s default: no flag, so a campaign's shell lines stay those it was made with
    assert commands and all(("--device cuda " in c) == use_gpu and ("--device" in c) == use_gpu for c in commands)


def test_an_exploration_campaign_labels_what_its_walkers_found(smk_env, tmp_path):
    """Rattled starts labeled → model → walkers → their candidates are the pool → greedy picks → labeled →
    the next training set; the walkers' counts reach status.json and the summary; labels never twice. The
    random run has no walkers: it picks from the MD pool, which shrinks by its picks, and the verdict compares."""
    import csv

    from oedal.data.store import read_store

    config = ROOT / "tests" / "data" / "tiny_explore.yaml"
    results = tmp_path / "results"
    run_snakemake(smk_env, results, config=config)
    run = results / "tiny_explore" / "qs1-greedy" / "seed0"
    first, second = run / "iter_000", run / "iter_001"
    pool, selected = read_store(first / "pool.h5"), read_store(first / "selected.h5")
    counts = json.loads((first / "explore.json").read_text())
    walkers = [json.loads((first / "explore" / f"walkers_{k}.json").read_text()) for k in (0, 1)]
    assert counts["walkers"] == sum(len(w["walkers"]) for w in walkers) == 4  # 1 start × 2 T × 2 walkers
    assert counts["waiting"] == 2 and json.loads((second / "explore.json").read_text())["waiting"] == 0  # the ramp
    assert counts["candidates"] == len(pool) > 0
    assert set(selected.ids) <= set(pool.ids) and len(selected) <= 6
    from oedal.campaign.merge import validation_picks

    (train0, valid0), (train1, valid1) = ((read_store(d / "train.h5"), read_store(d / "valid.h5")) for d in (first, second))
    new = np.setdiff1d(np.concatenate([train1.ids, valid1.ids]), np.concatenate([train0.ids, valid0.ids]))
    assert set(new) == set(selected.ids) and np.all(new >= 10**9)  # walker frames: (iteration + 1)·10⁹ + walker·10⁵ + check
    assert len(valid1) - len(valid0) == len(validation_picks(len(selected), 0.2))  # split.valid_share of exploration
    status = json.loads((second / "status.json").read_text())
    assert status["explore"] == counts and status["labels_spent"] == 16 + 8 + len(selected)
    with open(results / "tiny_explore" / "summary.csv") as fh:
        rows = list(csv.DictReader(fh))
    first_row = next(r for r in rows if r["strategy"] == "qs1-greedy" and r["iteration"] == "0")
    assert float(first_row["explore_candidates"]) == len(pool)
    # the random run: no walkers; the campaign's MD pool (2 temperatures × 10 frames), less what it picked
    from oedal.campaign.explore.starts import MD_POOL_IDS
    from oedal.campaign.tree import Tree

    baseline = results / "tiny_explore" / "random" / "seed0"
    assert not (baseline / "iter_000" / "explore").exists() and not (baseline / "iter_000" / "explore.json").exists()
    md = read_store(Tree.of(results, "tiny_explore").md_pool)
    assert len(md) == 20 and set(md.ids) == set(range(MD_POOL_IDS, MD_POOL_IDS + 20))
    picked = read_store(baseline / "iter_000" / "selected.h5")
    assert len(picked) == 6 and set(picked.ids) <= set(md.ids)
    assert set(read_store(baseline / "iter_001" / "pool.h5").ids) == set(md.ids) - set(picked.ids)
    assert json.loads((baseline / "iter_001" / "status.json").read_text())["labels_spent"] == 16 + 8 + 6
    verdict = (results / "tiny_explore" / "verdict.txt").read_text()
    assert re.search(r"^qs1-greedy vs random at labels spent \d+: forces mae", verdict, re.M), verdict
    spent = json.loads((run / "iter_002" / "status.json").read_text())["labels_spent"]
    assert (f"labels spent per seed: qs1-greedy {spent}, random 36; random's MD pool took 140 MD steps "  # 2 × (20 + 10·5)
            "beyond its labels (MD of the starts with ase at 300, 600 K") in verdict, verdict
    # a forced rerun of the walkers of iteration 0: the same candidates (labels: test_label_cache.py)
    import sqlite3

    def n_labels() -> int:
        with sqlite3.connect(results / "labels.sqlite") as db:
            return db.execute("SELECT COUNT(*) FROM labels").fetchone()[0]

    # the reference potential (Lennard-Jones) on the test set, its line in the verdict and its table in the report
    from oedal.data.store import read_store as read
    from oedal.oracles.baseline import baseline_metrics
    from oedal.oracles.registry import get_oracle, oracle_settings

    reference = json.loads((results / "tiny_explore" / "seed0" / "potential_ase.json").read_text())
    lj = get_oracle(oracle_settings(kind="ase", calculator="ase.calculators.lj:LennardJones"))
    again = baseline_metrics(lj, read(results / "tiny_explore" / "seed0" / "test.h5"))
    assert reference["forces_mae_kcal/mol/A"] == pytest.approx(again["forces_mae_kcal/mol/A"], rel=1e-9)
    verdict = (results / "tiny_explore" / "verdict.txt").read_text()
    found = re.search(r"reference potential .* forces mae kcal/mol/A ([\d.]+),.*; qs1-greedy's final models are lower "
                      r"by forces mae ×([\d.]+)", verdict)
    assert found, verdict
    with open(results / "tiny_explore" / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    last = max(int(r["iteration"]) for r in rows)
    final = [float(r["forces_mae_kcal/mol/A"]) for r in rows
             if int(r["iteration"]) == last and r["strategy"] == "qs1-greedy"]
    ratio = reference["forces_mae_kcal/mol/A"] / float(np.exp(np.mean(np.log(final))))  # against the geometric mean
    assert float(found.group(1)) == pytest.approx(reference["forces_mae_kcal/mol/A"], rel=5e-3)  # printed to 3 digits
    assert float(found.group(2)) == pytest.approx(ratio, rel=5e-3, abs=5e-3)  # printed to 2 decimals
    assert 'id="reference-potentials"' in (results / "tiny_explore" / "report.html").read_text()

    before = n_labels()
    picks = sum(len(json.loads(p.read_text())["selected_ids"])
                for p in (results / "tiny_explore").glob("*/seed0/iter_*/request.json"))
    assert before == 16 + 8 + picks  # the rattled starts and the picks of every round of both runs
    proc = run_snakemake(smk_env, results, str(first / "pool.h5"), "--forcerun", "explore_shard", config=config)
    assert "explore_shard" in proc.stdout + proc.stderr
    again = read_store(first / "pool.h5")
    assert np.array_equal(again.ids, pool.ids) and np.array_equal(again.positions, pool.positions)
    assert n_labels() == before
