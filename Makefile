# Two commands for a fresh clone: `make demo` (prepare → pretrain → zero-shot eval) and `make test`.
# Each creates/updates .venv and installs what is missing first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO   ?= runs/demo
# The statsforecast baselines cost CPU seconds per series (AutoETS on all 13 offline Monash sets: ~28 CPU-minutes,
# see benchmarks/classical_baselines.py), so the demo compares them with the model on a subsample, marked as such.
CLASSICAL_SERIES     ?= 16
CLASSICAL_LSF_WINDOWS ?= 2
# Torch threads of the demo's pretraining, which runs alone: two threads give about 1.4x the steps of one in
# the same 9 minutes (BENCHMARKS.md); configs/tiny.yaml keeps 1 for experiments that share the machine.
DEMO_THREADS ?= 2
export TRITON_INTERPRET := 1
export DS_ACCELERATOR   := cpu
export WANDB_MODE       ?= offline
export HF_HUB_OFFLINE   := 1
export HF_DATASETS_OFFLINE := 1

.PHONY: install demo test test-fast clean-demo

$(STAMP): setup.py constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	DS_BUILD_OPS=0 $(BIN)/pip install -q -c constraints.txt torch==2.13.0
	DS_BUILD_OPS=0 $(BIN)/pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# The full suite (what CI runs through .ci/run), ending with its 15 slowest tests.
test: $(STAMP)
	WANDB_MODE=disabled $(BIN)/python -m pytest -q --durations=15

# The suite without the tests marked slow (> ~10 s each) or dist (several processes): a few minutes on 2 cores.
test-fast: $(STAMP)
	WANDB_MODE=disabled $(BIN)/python -m pytest -q -m "not slow and not dist"

demo: $(STAMP)
	@mkdir -p $(DEMO)
	@echo "== 1/7 prepare: real train parts + synthetic series -> $(DEMO)/corpus"
	@s=$$(date +%s); $(BIN)/moe-ts prepare --out $(DEMO)/corpus --synthetic-count 1000 --kernelsynth-count 1000 --periodic-count 1000 --tsmixup-count 1000 --seed 0 \
	  && echo "prepare: $$(( $$(date +%s) - s )) s" | tee $(DEMO)/timings.txt
	@echo "== 2/7 pretrain: configs/tiny.yaml (fixed wall-clock budget)"
	@s=$$(date +%s); $(BIN)/moe-ts pretrain --config configs/tiny.yaml --data $(DEMO)/corpus --out $(DEMO)/run --resume \
	  --threads $(DEMO_THREADS) \
	  && echo "pretrain: $$(( $$(date +%s) - s )) s" | tee -a $(DEMO)/timings.txt
	@echo "== 3/7 zero-shot eval: Monash suite (datasets available offline)"
	@s=$$(date +%s); $(BIN)/moe-ts eval --checkpoint $(DEMO)/run/final --suite monash --out $(DEMO)/eval \
	  --num-samples 100 \
	  && echo "eval: $$(( $$(date +%s) - s )) s" | tee -a $(DEMO)/timings.txt
	@echo "== 4/7 zero-shot eval: LSF suite (held out of the corpus), every 96th window"
	@s=$$(date +%s); $(BIN)/moe-ts eval --checkpoint $(DEMO)/run/final --suite lsf --out $(DEMO)/eval_lsf \
	  --num-samples 50 --lsf-stride 96 \
	  && echo "eval lsf: $$(( $$(date +%s) - s )) s" | tee -a $(DEMO)/timings.txt
	@echo "== 5/7 model vs AutoETS / AutoTheta (statsforecast) on the same SUBSAMPLED instances: Monash, first $(CLASSICAL_SERIES) series per set"
	@s=$$(date +%s); $(BIN)/moe-ts eval --checkpoint $(DEMO)/run/final --suite monash --out $(DEMO)/eval_classical \
	  --num-samples 50 --max-series $(CLASSICAL_SERIES) --baselines snaive,naive,autoets,autotheta --n-jobs 2 --plot-series 0 \
	  && echo "eval classical monash: $$(( $$(date +%s) - s )) s" | tee -a $(DEMO)/timings.txt
	@echo "== 6/7 the same on LSF: stride 96, $(CLASSICAL_LSF_WINDOWS) windows per channel"
	@s=$$(date +%s); $(BIN)/moe-ts eval --checkpoint $(DEMO)/run/final --suite lsf --out $(DEMO)/eval_classical_lsf \
	  --num-samples 50 --lsf-stride 96 --max-windows $(CLASSICAL_LSF_WINDOWS) --baselines snaive,naive,autoets,autotheta \
	  --n-jobs 2 --plot-series 0 \
	  && echo "eval classical lsf: $$(( $$(date +%s) - s )) s" | tee -a $(DEMO)/timings.txt
	@echo "== 7/7 probes: synthetic series with a known best answer"
	@s=$$(date +%s); $(BIN)/moe-ts eval --checkpoint $(DEMO)/run/final --suite probes --out $(DEMO)/eval_probes \
	  --num-samples 50 --probe-series 3 --baselines snaive,naive,autoets,autotheta --n-jobs 2 --plot-series 1 > /dev/null \
	  && echo "eval probes: $$(( $$(date +%s) - s )) s" | tee -a $(DEMO)/timings.txt
	@$(BIN)/python -m eval.summary $(DEMO)/eval $(DEMO)/eval_lsf $(DEMO)/eval_classical $(DEMO)/eval_classical_lsf $(DEMO)/eval_probes
	@cat $(DEMO)/timings.txt
	@echo "checkpoint: $(DEMO)/run/final  (MoiraiMoEModel.from_pretrained('$(DEMO)/run/final'))"

clean-demo:
	rm -rf $(DEMO)

# The GPU path in one command, for the day a device is lent (< 8 min on one H100): gpu tests, MoE layer bf16 vs
# dense, training MFU, forecast throughput vs CPU, kernel correctness; record the table in BENCHMARKS.md.
# No install step: a device machine keeps its own CUDA torch (the CPU pins of `install` would replace it).
GPU_PYTHON ?= $(shell test -x $(BIN)/python && echo $(BIN)/python || echo python3)
.PHONY: gpu-check
gpu-check:
	TRITON_INTERPRET=0 DS_ACCELERATOR=cuda $(GPU_PYTHON) benchmarks/gpu_check.py \
	  --out benchmarks/results/gpu_check.json --md benchmarks/results/gpu_check.md
