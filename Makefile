# detr-lightning developer entry points. Every target uses the project venv.
PY      ?= .venv/bin/python
EXP     ?= shapes
ARGS    ?=
CKPT    ?=
LAUNCHER ?=
RUNS    ?=
OUT     ?=

.PHONY: install test test-slow lint format bench bench-convergence data train eval sweep report clean

install:
	bash scripts/install.sh

test:
	$(PY) -m pytest -q

test-slow:
	$(PY) -m pytest -q -m slow -o addopts=""

lint:
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

format:
	$(PY) -m ruff format . && $(PY) -m ruff check --fix .

bench:
	$(PY) benchmarks/run_all.py

bench-convergence:
	$(PY) benchmarks/convergence.py $(ARGS)

data:
	$(PY) -m detr_lightning.data.shapes --out data/shapes

train:
	$(PY) -m detr_lightning.train experiment=$(EXP) $(ARGS)

eval:
	$(PY) -m detr_lightning.eval experiment=$(EXP) ckpt_path=$(CKPT) $(ARGS)

sweep:
	$(PY) -m detr_lightning.train -m experiment=$(EXP) $(if $(LAUNCHER),hydra/launcher=$(LAUNCHER)) $(ARGS)

# Compare runs: report.md (AP table, overrides) + PNGs. RUNS: run dirs and/or sweep folders.
report:
	@test -n "$(RUNS)" || { echo 'usage: make report RUNS="multirun/<exp>/<time> outputs/<exp>/<time> ..." [OUT=dir]'; exit 2; }
	$(PY) -m detr_lightning.report $(RUNS) $(if $(OUT),--out $(OUT))

clean:
	rm -rf outputs multirun wandb lightning_logs
