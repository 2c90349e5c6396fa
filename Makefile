# oedal — two commands for a fresh machine:  `make run`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# A fresh machine gets the CPU wheel of torch; bring your own CUDA build with
#   make venv TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
# or install torch into the venv yourself before `make venv` (a satisfied range installs nothing more).
TORCH  ?= torch==2.13.0
CORES  ?= 2
CONFIG ?= config/config.yaml
RUNLOG ?= .snakemake/make-run.log

.PHONY: venv gpaw materials run test lint bench clean

$(BIN)/oedal: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[all]"
	touch $(BIN)/oedal

venv: $(BIN)/oedal

# GPAW, the periodic DFT oracle of config/explore_si.yaml (oracle kind gpaw): PyPI ships its source, built
# here against Debian's libxc and OpenBLAS (about 80 s), and its PAW setups as a wheel (gpaw-data).
GPAW_DEBS := gcc libc6-dev libxc-dev libopenblas-dev
gpaw: venv
	@$(BIN)/python -c "import gpaw" 2>/dev/null && echo "gpaw is installed" || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -q --no-install-recommends $(GPAW_DEBS) >/dev/null \
	      || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends $(GPAW_DEBS) >/dev/null; }; \
	  fi; \
	  $(BIN)/python -m pip install -q -e ".[gpaw]" \
	    || { echo "make gpaw: the build needs the Debian packages $(GPAW_DEBS) (apt-get install, as root)"; exit 1; }; }

# The materials campaign (config/explore_si.yaml: silicon from one crystal, GPAW labels, stress learned) and its
# comparison with random frames of a CHGNet MD pool labeled by the same oracle; the last lines are the figures.
MATERIALS_LOG ?= .snakemake/materials.log
materials: gpaw
	@mkdir -p $(dir $(MATERIALS_LOG))
	@echo "materials campaign on $(CORES) cores; follow with: tail -f $(MATERIALS_LOG)"
	@{ $(BIN)/python benchmarks/si_materials.py testset \
	  && $(BIN)/snakemake --cores $(CORES) --configfile config/explore_si.yaml --printshellcmds \
	  && $(BIN)/python benchmarks/si_materials.py random --workers $(CORES); } > $(MATERIALS_LOG) 2>&1 || { \
	  echo "failed; the last lines of $(MATERIALS_LOG):"; tail -n 40 $(MATERIALS_LOG); exit 1; }
	@$(BIN)/python benchmarks/si_materials.py report

# Snakemake's job blocks go to $(RUNLOG); the console gets where each run stands, the verdict and the
# report's path at the end, or the log's tail when a job failed.
run: venv
	@mkdir -p $(dir $(RUNLOG))
	@echo "running $(CONFIG) on $(CORES) cores; follow with: tail -f $(RUNLOG)  or  $(BIN)/oedal status --config $(CONFIG)"
	@$(BIN)/snakemake --cores $(CORES) --configfile $(CONFIG) --printshellcmds > $(RUNLOG) 2>&1 || { \
	  echo "snakemake failed; the last lines of $(RUNLOG):"; tail -n 40 $(RUNLOG); exit 1; }
	@$(BIN)/oedal status --config $(CONFIG) --verdict

test: venv
	$(BIN)/python -m pytest -q

lint: venv
	$(BIN)/snakemake --lint

bench: venv
	$(BIN)/python benchmarks/bench_model.py

clean:
	rm -rf results .snakemake
