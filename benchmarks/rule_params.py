"""What Snakemake would compare to decide a rerun, for every job of a campaign: the check that a change of the
workflow glue reruns nothing of an existing campaign. Not a test.

    python benchmarks/rule_params.py config/tiny.yaml > new.jsonl
    python benchmarks/rule_params.py config/tiny.yaml --tree ../old > old.jsonl   # another checkout
    python benchmarks/rule_params.py config/tiny.yaml --compare ../old              # both, and the differences

For each job of the whole unrolled loop (forceall), keyed by its first output path: the rule's shell
template (Snakemake's ``code`` rerun trigger) and the set of its tracked params as Snakemake stores them
(``params`` trigger: repr of every param not derived from input, output, threads or resources). The rule's
name is printed but not compared: Snakemake keeps no record of it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def dump(config: Path, results: Path) -> list[dict]:
    """Every job of the campaign ``config`` (results under ``results``): output, rule, shell template, params."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, DAGSettings, OutputSettings, ResourceSettings

    with SnakemakeApi(OutputSettings(quiet={"all"})) as api:
        wf = api.workflow(resource_settings=ResourceSettings(cores=1),
                          config_settings=ConfigSettings(configfiles=[config], config={"results_dir": str(results)}),
                          snakefile=Path("Snakefile"), workdir=Path.cwd())
        dag_api = wf.dag(dag_settings=DAGSettings(forceall=True))
        workflow = dag_api.workflow_api._workflow
        workflow._prepare_dag(forceall=True, ignore_incomplete=True, lock_warn_only=True, nolock=True)
        workflow._build_dag()
        persistence = workflow.persistence
        rows = []
        for job in workflow.dag.jobs:
            rows.append({"output": str(job.output[0]).replace(str(results), "RESULTS") if job.output else job.rule.name,
                         "rule": job.rule.name, "shell": job.rule.shellcmd,
                         "params": [p.replace(str(results), "RESULTS") for p in persistence._params(job)]})
    return sorted(rows, key=lambda r: r["output"])


def dump_tree(tree: Path, config: Path) -> list[dict]:
    """:func:`dump` run in checkout ``tree`` (its own src first on the path), in a subprocess."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PYTHONPATH": str(tree / "src")}
        out = subprocess.run([sys.executable, str(Path(__file__).resolve()), str(config.resolve()), "--results",
                              tmp], cwd=tree, env=env, capture_output=True, text=True, check=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def compare(old: list[dict], new: list[dict]) -> int:
    """Print every job whose shell template or params differ, or that one side lacks; returns their count."""
    a, b = {r["output"]: r for r in old}, {r["output"]: r for r in new}
    bad = 0
    for key in sorted(set(a) | set(b)):
        if key not in a or key not in b:
            print(f"only in {'new' if key in b else 'old'}: {key}")
            bad += 1
            continue
        for field in ("shell", "params"):
            if a[key][field] != b[key][field]:
                print(f"{key} ({a[key]['rule']} -> {b[key]['rule']}): {field} differs\n  old {a[key][field]}\n"
                      f"  new {b[key][field]}")
                bad += 1
    print(f"{len(b)} jobs compared, {bad} differences")
    return bad


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--results", type=Path, default=None, help="results_dir to plan in (default: a temporary one)")
    parser.add_argument("--tree", type=Path, default=None, help="dump in this checkout instead")
    parser.add_argument("--compare", type=Path, default=None, metavar="OLD_TREE", help="compare this checkout with OLD_TREE")
    args = parser.parse_args()
    if args.compare is not None:
        return 1 if compare(dump_tree(args.compare, args.config), dump_tree(ROOT, args.config)) else 0
    if args.tree is not None:
        rows = dump_tree(args.tree, args.config)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            rows = dump(args.config, args.results or Path(tmp))
    for row in rows:
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
