# detr-lightning developer entry points. Every target uses the project venv.
PY      ?= .venv/bin/python
EXP     ?= shapes
ARGS    ?=
CKPT    ?=
LAUNCHER ?=
RUNS    ?=
OUT     ?=
INPUT   ?=
# make test: pytest-xdist workers (auto: one per core; 0: one process)
TEST_WORKERS ?= auto
# Hydra's parser takes no override after a flag: -m / --multirun in ARGS go before the overrides.
# The flags are cut out of ARGS as text: make's word functions (filter-out) would collapse the
# runs of spaces inside a quoted value ("paths.shapes_dir='/a  b'") to one.
space := $() $()
without_flag = $(if $(findstring $(space)$(1)$(space),$(2)),$(call without_flag,$(1),$(subst \
	$(space)$(1)$(space),$(space),$(2))),$(2))
MULTIRUN  = $(filter -m --multirun,$(ARGS))
OVERRIDES = $(call without_flag,--multirun,$(call without_flag,-m,$(space)$(ARGS)$(space)))

.PHONY: install test test-slow lint format bench bench-convergence data train eval predict \
	visualize export sweep report clean

install:
	bash scripts/install.sh

test:
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

test-slow:
	$(PY) -m pytest -q -m slow -o addopts="--import-mode=importlib -p no:cacheprovider"

lint:
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

format:
	$(PY) -m ruff format . && $(PY) -m ruff check --fix .

bench:
	$(PY) benchmarks/run_all.py $(ARGS)

bench-convergence:
	$(PY) benchmarks/convergence.py $(ARGS)

# The shapes data (make train makes it on first use); ARGS: --force (regenerate), --train N, --val N
data:
	$(PY) -m detr_lightning.data.shapes --out data/shapes $(ARGS)

train:
	$(PY) -m detr_lightning.train $(MULTIRUN) experiment=$(EXP) $(OVERRIDES)

# A path as one Hydra value (KEY='PATH', quoted for the shell and for Hydra's grammar): a space,
# a non-ASCII letter, `=` or `,` in CKPT, INPUT or OUT would otherwise split it or fail to parse.
hydra_path = "$(1)='$(2)'"

# Weights of eval and predict: CKPT (a .ckpt, or last: the newest last.ckpt of EXP's runs), or in
# ARGS ckpt_path=.., model.pretrained=<official .pth> (predict: also onnx=<exported .onnx>).
# A key quoted for the shell, as the README shows for paths with spaces ("ckpt_path='/a b.ckpt'"),
# counts too; the check below tests whether WEIGHTS is empty, not its text, which may hold quotes.
WEIGHT_KEYS = ckpt_path=% model.pretrained=% +model.pretrained=% onnx=%
WEIGHTS = $(CKPT)$(filter $(WEIGHT_KEYS) $(addprefix ",$(WEIGHT_KEYS)) $(addprefix ',$(WEIGHT_KEYS)),\
	$(OVERRIDES))

eval:
	@test -n "$(if $(WEIGHTS),given)" || { echo 'usage: make eval CKPT=<run dir>/checkpoints/last.ckpt [EXP=..] [ARGS=..] (CKPT=last: the newest run of EXP; no CKPT: ARGS=model.pretrained=<official .pth>)'; exit 2; }
	$(PY) -m detr_lightning.eval $(MULTIRUN) experiment=$(EXP) $(if $(CKPT),$(call hydra_path,ckpt_path,$(CKPT))) \
		$(OVERRIDES)

# Predictions (predictions.json, images.json, drawn/*.png) on INPUT (an image or a folder; none:
# the evaluation split). CKPT: a .ckpt; or ARGS="model.pretrained=detr-r50-e632da11.pth" EXP=r50.
predict:
	@test -n "$(if $(WEIGHTS),given)" || { echo 'usage: make predict CKPT=<run dir>/checkpoints/last.ckpt [INPUT=image or folder] [EXP=..] [OUT=dir] [ARGS=..] (CKPT=last: the newest run of EXP; no CKPT: ARGS=model.pretrained=<official .pth> or ARGS="backend=onnxruntime onnx=<.onnx>")'; exit 2; }
	$(PY) -m detr_lightning.predict $(MULTIRUN) experiment=$(EXP) $(if $(CKPT),$(call hydra_path,ckpt_path,$(CKPT))) \
		$(if $(INPUT),$(call hydra_path,input,$(INPUT))) $(if $(OUT),$(call hydra_path,output_dir,$(OUT))) $(OVERRIDES)

# The paper's attention pictures (encoder self-attention, decoder cross-attention) of INPUT.
visualize:
	@test -n "$(INPUT)" || { echo 'usage: make visualize CKPT=path.ckpt INPUT=image [EXP=..] [OUT=dir]'; exit 2; }
	$(PY) -m detr_lightning.visualize $(MULTIRUN) experiment=$(EXP) $(if $(CKPT),$(call hydra_path,ckpt_path,$(CKPT))) \
		$(call hydra_path,input,$(INPUT)) $(if $(OUT),$(call hydra_path,output_dir,$(OUT))) $(OVERRIDES)

# ONNX model (verified against PyTorch with ONNX Runtime); OUT: the .onnx path.
export:
	$(PY) -m detr_lightning.export $(MULTIRUN) experiment=$(EXP) $(if $(CKPT),$(call hydra_path,ckpt_path,$(CKPT))) \
		format=onnx $(if $(OUT),$(call hydra_path,output,$(OUT))) $(OVERRIDES)

sweep:
	$(PY) -m detr_lightning.train -m experiment=$(EXP) $(if $(LAUNCHER),hydra/launcher=$(LAUNCHER)) \
		$(OVERRIDES)

# Compare runs: report.md (AP table, overrides) + PNGs. RUNS: run dirs and/or sweep folders.
report:
	@test -n "$(RUNS)" || { echo 'usage: make report RUNS="multirun/<exp>/<time> outputs/<exp>/<time> ..." [OUT=dir]'; exit 2; }
	$(PY) -m detr_lightning.report $(RUNS) $(if $(OUT),--out $(OUT))

clean:
	rm -rf outputs multirun wandb lightning_logs
