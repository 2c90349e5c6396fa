#!/usr/bin/env bash
# Snakemake (--sdm conda) runs this inside each new environment of envs/*.yaml: it installs the oedal of
# this checkout, which no package index serves, editable, so that jobs run the checkout's code. The
# workflow sets OEDAL_CHECKOUT to the checkout's folder (workflow/rules/common.smk); the dependencies come
# from the environment file, hence --no-deps.
set -euo pipefail
if [ -z "${OEDAL_CHECKOUT:-}" ] || [ ! -f "${OEDAL_CHECKOUT}/pyproject.toml" ]; then
    echo "envs/core.post-deploy.sh: OEDAL_CHECKOUT must name the oedal checkout (the Snakefile sets it)" >&2
    exit 1
fi
python -m pip install --no-deps --editable "${OEDAL_CHECKOUT}"
