# Two entry points for a new machine: `make run` (install + the main job: the quick leaderboard) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch is pinned first: on this workplace's machines 2.13.0 is a local CPU wheel; elsewhere pip fetches
# 2.13.0 normally, or any torch that satisfies pyproject.toml if that release is unavailable.
TORCH ?= torch==2.13.0
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export HF_EVALUATE_OFFLINE ?= 1
MODEL ?= results/backbones/default
PROMPT ?= The meaning of life is

.PHONY: install run generate test bench leaderboard leaderboard-full clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)" || $(PY) -m pip install -q torch
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

# Where the leaderboards write: runs/leaderboard (ignored by git) by default; `make run OUT=results` publishes.
OUT ?= runs/leaderboard

# The main job: every task on the committed default backbone -> $(OUT)/leaderboard_quick.*
run: leaderboard

leaderboard: install
	$(VENV)/bin/gpt2suite leaderboard --config configs/leaderboard/quick.yaml --out $(OUT)

# The full-data run (many hours on 2 cores as two processes; resumable: run it again after an interruption)
# -> results/leaderboard.* (published). Baselines, full fine-tuning, LoRA and the extractive summarizer first.
FIRST_METHODS = baseline:majority baseline:tfidf-lr baseline:best-sentence baseline:best-sentence-span \
  baseline:copy-source baseline:lead-k finetune:full finetune:lora finetune:extractive-lora finetune:extractive-full
leaderboard-full: install
	OUT=results FIRST="$(FIRST_METHODS)" scripts/leaderboard_parallel.sh configs/leaderboard/full.yaml \
	  "sst2 trec multi30k-en-de multi30k-en-fr scitldr wikitext2" "bbc-news squad"

generate: install
	$(VENV)/bin/gpt2suite generate --model $(MODEL) --prompt "$(PROMPT)" --max-new-tokens 60 --seed 0

test: install
	$(PY) -m pytest -q

# Every CPU benchmark, one after another (about 13 minutes on 2 cores; run it on a quiet machine)
bench: install
	$(PY) bench/generate.py
	$(PY) bench/generate.py --threads 1
	$(PY) bench/generate.py --batch 8 --repeats 9
	$(PY) bench/train_throughput.py --rounds 9
	$(PY) bench/train_throughput.py --rounds 7 --compile blocks
	$(PY) bench/train_throughput.py --rounds 7 --compile model
	$(PY) bench/fewshot.py
	$(PY) bench/zeroshot_lm_eval.py
	$(PY) bench/zeroshot_lm_eval.py --shots 4

clean:
	rm -rf $(VENV) build *.egg-info
