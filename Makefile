# Two commands for a fresh clone: `make demo` (prepare → pretrain → zero-shot eval) and `make test`.
# Each creates/updates .venv and installs what is missing first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO   ?= runs/demo
export TRITON_INTERPRET := 1
export DS_ACCELERATOR   := cpu
export WANDB_MODE       ?= offline
export HF_HUB_OFFLINE   := 1
export HF_DATASETS_OFFLINE := 1

.PHONY: install demo test clean-demo

$(STAMP): setup.py constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	DS_BUILD_OPS=0 $(BIN)/pip install -q -c constraints.txt torch==2.13.0
	DS_BUILD_OPS=0 $(BIN)/pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	WANDB_MODE=disabled $(BIN)/python -m pytest -q

demo: $(STAMP)
	@mkdir -p $(DEMO)
	@echo "== 1/4 prepare: real train parts + synthetic series -> $(DEMO)/corpus"
	@s=$$(date +%s); $(BIN)/moe-ts prepare --out $(DEMO)/corpus --synthetic-count 1000 --kernelsynth-count 1000 --seed 0 \
	  && echo "prepare: $$(( $$(date +%s) - s )) s" | tee $(DEMO)/timings.txt
	@echo "== 2/4 pretrain: configs/tiny.yaml (fixed wall-clock budget)"
	@s=$$(date +%s); $(BIN)/moe-ts pretrain --config configs/tiny.yaml --data $(DEMO)/corpus --out $(DEMO)/run --resume \
	  && echo "pretrain: $$(( $$(date +%s) - s )) s" | tee -a $(DEMO)/timings.txt
	@echo "== 3/4 zero-shot eval: Monash suite (datasets available offline)"
	@s=$$(date +%s); $(BIN)/moe-ts eval --checkpoint $(DEMO)/run/final --suite monash --out $(DEMO)/eval \
	  --num-samples 100 \
	  && echo "eval: $$(( $$(date +%s) - s )) s" | tee -a $(DEMO)/timings.txt
	@echo "== 4/4 zero-shot eval: LSF suite (held out of the corpus), every 96th window"
	@s=$$(date +%s); $(BIN)/moe-ts eval --checkpoint $(DEMO)/run/final --suite lsf --out $(DEMO)/eval_lsf \
	  --num-samples 50 --lsf-stride 96 \
	  && echo "eval lsf: $$(( $$(date +%s) - s )) s" | tee -a $(DEMO)/timings.txt
	@cat $(DEMO)/timings.txt
	@echo "checkpoint: $(DEMO)/run/final  (MoiraiMoEModel.from_pretrained('$(DEMO)/run/final'))"

clean-demo:
	rm -rf $(DEMO)
