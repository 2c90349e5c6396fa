"""Shipped configs, the generated schema and the conda environments stay in step with the code."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from oedal.errors import SettingsError
from oedal.campaign.settings import CampaignSettings
from oedal.campaign.plan import plan_batches, validate_campaign

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted((ROOT / "config").glob("*.yaml"))
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.json"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_configs_exist():
    assert {p.name for p in CONFIGS} >= {"config.yaml", "tiny.yaml", "ethanol_gmnn.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_validates(path):
    campaign = validate_campaign(yaml.safe_load(path.read_text()), str(path))
    assert plan_batches(campaign), f"{path.name}: no selection round planned"
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(yaml.safe_load(path.read_text()), json.loads(SCHEMA.read_text()))


def test_schema_equals_generated():
    generated = subprocess.run([sys.executable, "-m", "oedal", "schema"], capture_output=True, text=True, check=True)
    assert json.loads(generated.stdout) == json.loads(SCHEMA.read_text()), (
        "workflow/schemas/config.schema.json is stale: run `oedal schema --out workflow/schemas/config.schema.json`"
    )


def test_schema_rejects_unknown_keys():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA.read_text())
    with pytest.raises(jsonschema.ValidationError, match="epoch"):
        jsonschema.validate({"training": {"epoch": 3}}, schema)


@pytest.mark.parametrize(
    "config, key",
    [
        ({"training": {"epoch": 3}}, "training.epoch"),
        ({"split": {"n_train": -1}}, "split.n_train"),
        ({"strategies": ["qs9-greedy"]}, "strategies"),
        ({"oracle": {"kind": "vasp"}}, "oracle.kind"),
        ({"score": {"strategy": "qs2"}}, "score.strategy"),
        ({"stop": {"max_train": 10}, "split": {"n_train": 50}}, "stop.max_train"),
        ({"dataset": {"source": "sample"}, "sampling": {"potential": {"kind": "emt"}}, "oracle": {"kind": "xtb"}},
         "sampling.potential"),
        ({"dataset": {"source": "sample", "test": "t.h5"}, "oracle": {"kind": "xtb"}}, "dataset.test"),
        ({"reference_potentials": [{"kind": "emt"}, {"kind": "emt"}]}, "reference_potentials"),
        ({"final_from_scratch": True}, "final_from_scratch"),
        ({"training": {"warm_shrink": 1.5}}, "training.warm_shrink"),
        ({"dataset": {"source": "explore"}, "oracle": {"kind": "xtb"}, "strategies": ["qs1-greedy"],
          "explore": {"random_pool": "md"}}, "explore.random_pool"),
        ({"explore": {"random_pool": "pool"}}, "explore.random_pool"),
    ],
)
def test_bad_config_names_the_key(config, key):
    with pytest.raises(SettingsError, match=re.escape(key)):
        validate_campaign(config)


def test_valid_redraw_default_follows_the_oracle():
    assert CampaignSettings(oracle={"kind": "replay"}).redraw_valid
    assert not CampaignSettings(oracle={"kind": "xtb"}).redraw_valid
    assert CampaignSettings(oracle={"kind": "xtb"}, split={"valid_redraw": True}).redraw_valid


def _pip_requirements(env: Path) -> dict[str, str]:
    spec = yaml.safe_load(env.read_text())
    pip = next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict) and "pip" in d)
    return dict(_requirement(line) for line in pip)


def _requirement(line: str) -> tuple[str, str]:
    """``name[extra] >= 1.0`` → (name, ">=1.0")."""
    match = re.match(r"^([A-Za-z0-9_.\-]+)(\[[^\]]*\])?\s*(.*)$", line)
    assert match, f"cannot parse requirement {line!r}"
    return match.group(1).lower(), match.group(3).replace(" ", "")


@pytest.mark.parametrize(
    "env, extras",
    [("core.yaml", ["workflow"]), ("xtb.yaml", []), ("pyscf.yaml", []), ("materials.yaml", ["materials"])],
)
def test_conda_env_in_step_with_pyproject(env, extras):
    """A valid environment file with every runtime dependency of pyproject (and the named extras) at the
    same version spec, and not oedal itself (no index serves it: the post-deploy script installs it)."""
    spec = yaml.safe_load((ROOT / "envs" / env).read_text())
    assert set(spec) == {"name", "channels", "dependencies"} and spec["name"].startswith("oedal")
    assert any(str(d).startswith("python=") for d in spec["dependencies"]) and "pip" in spec["dependencies"]
    have = _pip_requirements(ROOT / "envs" / env)
    project = PYPROJECT["project"]
    wanted = [_requirement(r) for r in project["dependencies"]]
    for extra in extras:
        wanted += [_requirement(r) for r in project["optional-dependencies"][extra]]
    for name, spec in wanted:
        if name in ("snakemake", "snakemake-executor-plugin-slurm"):
            continue  # the env runs the jobs; Snakemake itself runs outside it
        assert name in have, f"envs/{env}: {name} missing (pyproject: {name}{spec})"
        assert have[name] == spec, f"envs/{env}: {name}{have[name]} differs from pyproject {name}{spec}"
    assert "oedal" not in have, f"envs/{env}: oedal is on no index; envs/{env.replace('.yaml', '.post-deploy.sh')} installs it"


@pytest.mark.parametrize("env", ["core", "xtb", "pyscf", "materials"])
def test_conda_post_deploy_installs_this_checkout(env, tmp_path):
    """Snakemake runs envs/NAME.post-deploy.sh in the new environment: it installs the checkout that the
    workflow names in OEDAL_CHECKOUT (editable, no dependencies), and says what is missing otherwise."""
    script = ROOT / "envs" / f"{env}.post-deploy.sh"
    assert script.is_file() and script.read_text().startswith("#!/usr/bin/env bash")
    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "python").write_text(f'#!/bin/sh\necho "$@" > {tmp_path / "args"}\n')
    (stub / "python").chmod(0o755)
    env_vars = {"PATH": f"{stub}:/usr/bin:/bin", "OEDAL_CHECKOUT": str(ROOT)}
    subprocess.run(["bash", str(script)], env=env_vars, check=True)
    assert (tmp_path / "args").read_text().split() == ["-m", "pip", "install", "--no-deps", "--editable", str(ROOT)]
    missing = subprocess.run(["bash", str(script)], env={"PATH": env_vars["PATH"]}, capture_output=True, text=True)
    assert missing.returncode != 0 and "OEDAL_CHECKOUT" in missing.stderr
    common = (ROOT / "workflow" / "rules" / "common.smk").read_text()
    assert "OEDAL_CHECKOUT=str(Path(workflow.basedir).resolve())" in common  # the workflow names the checkout


@pytest.mark.parametrize("env, extra_packages", [("xtb.yaml", ["tblite"]), ("pyscf.yaml", ["pyscf", "pyscf-dispersion"])])
def test_oracle_envs_match_the_oracles_extra(env, extra_packages):
    have = _pip_requirements(ROOT / "envs" / env)
    oracles = dict(_requirement(r) for r in PYPROJECT["project"]["optional-dependencies"]["oracles"])
    for name in extra_packages:
        assert have.get(name) == oracles[name], f"envs/{env}: {name} should be {oracles[name]}"


@pytest.mark.parametrize("profile", ["local", "slurm"])
def test_profiles_parse(profile):
    settings = yaml.safe_load((ROOT / "profiles" / profile / "config.yaml").read_text())
    assert isinstance(settings, dict)
    if profile == "slurm":
        assert settings["executor"] == "slurm"
        assert settings["slurm-status-command"] == "squeue"
