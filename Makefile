# vlmdrive: `make demo` and `make test` are the only commands a user types;
# both depend on `setup`, which is idempotent and quick once done.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
OUT     ?= outputs

.PHONY: setup demo test test-all test-slow lint bench train train-heads data eval-model finetune eval-finetune clean

setup: $(STAMP)

# torch is installed first and pinned to the CPU build on this disk (torch==2.13.0);
# a torch range resolved by another package would otherwise pull several GB of CUDA wheels.
# Everything else installs at the exact versions of constraints.txt (see its header).
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev,carla,distributed,bench]"
	touch $(STAMP)

demo: setup
	$(BIN)/vlmdrive demo --out $(OUT)/demo

test: setup
	$(BIN)/pytest -q -m "not slow"

test-all: setup
	$(BIN)/pytest -q

# The end-to-end tests `make test` leaves out (Ray workers, all training stages; ~1 min)
test-slow: setup
	$(BIN)/pytest -q -m slow

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy sim scenarios agent rl_finetune vlmdrive benchmarks

bench: setup
	$(BIN)/python benchmarks/bench_sim.py
	$(BIN)/python benchmarks/bench_eval.py
	$(BIN)/python benchmarks/bench_tracking.py
	$(BIN)/python benchmarks/bench_agent.py
	$(BIN)/python benchmarks/bench_finetune.py

# The shipped model from scratch, in two rounds:
# 1. expert data (train suite, with recovery perturbations; the eval suite held out for
#    open-loop metrics) -> round-1 model (configs/tiny_round1.yaml, runs/round1/checkpoint);
# 2. a DAgger round: the round-1 model drives 60 % of every episode (4 s segments), the
#    expert labels every frame (data/dagger) -> the shipped model on both (configs/tiny.yaml).
TRAIN_EPISODES  ?= 160
EVAL_EPISODES   ?= 30
DAGGER_EPISODES ?= 120
data: setup
	test -d data/train || $(BIN)/vlmdrive collect --suite scenarios/library/train --episodes $(TRAIN_EPISODES) --out data/train --seed 0 --workers 2 --perturb 0.2 --quiet
	test -d data/eval || $(BIN)/vlmdrive collect --suite scenarios/library/eval --episodes $(EVAL_EPISODES) --out data/eval --seed 1 --workers 2 --quiet

train: data
	test -f runs/round1/checkpoint/model.safetensors || $(BIN)/vlmdrive train --config configs/tiny_round1.yaml
	test -d data/dagger || $(BIN)/vlmdrive collect --suite scenarios/library/train --episodes $(DAGGER_EPISODES) --out data/dagger --seed 2 --workers 2 --dagger configs/agent_dagger.yaml --dagger-beta 0.6 --quiet
	$(BIN)/vlmdrive train --config configs/tiny.yaml

# The perception-heads experiments (not the shipped model): the shipped checkpoint with a
# detection head and a lane head added for the safety guard. HEADS_CONFIG picks the recipe:
# configs/tiny_heads.yaml fine-tunes everything (~21 min), configs/tiny_heads_frozen.yaml
# trains the new heads alone on the frozen features (~12 min; the planner stays the
# shipped one). The lane labels need data collected by this version of `collect`:
# data/lanes/{train,eval} repeat the data/train and data/eval commands; data/dagger (from
# `make train`) trains everything but the lanes.
HEADS_CONFIG ?= configs/tiny_heads.yaml
train-heads: data
	test -d data/dagger || { echo "data/dagger is missing: run make train first"; exit 1; }
	test -d data/lanes/train || $(BIN)/vlmdrive collect --suite scenarios/library/train --episodes $(TRAIN_EPISODES) --out data/lanes/train --seed 0 --workers 2 --perturb 0.2 --quiet
	test -d data/lanes/eval || $(BIN)/vlmdrive collect --suite scenarios/library/eval --episodes $(EVAL_EPISODES) --out data/lanes/eval --seed 1 --workers 2 --quiet
	$(BIN)/vlmdrive train --config $(HEADS_CONFIG)

# Closed loop on the held-out eval suite (EVAL_SUITE; the default is its first variation of
# every scenario, 14 routes — suite.yaml has all 55): the expert, the guarded agent, the
# unguarded agent and the agent with the full VLM in the loop (configs/agent_vlm.yaml) in
# the same run, then the speed benchmark; all land in the model card.
EVAL_SUITE ?= scenarios/library/eval/suite_quick.yaml
eval-model: setup
	$(BIN)/vlmdrive eval --agent expert --suite $(EVAL_SUITE) --out $(OUT)/eval-expert/results.json --workers 2 --quiet
	$(BIN)/vlmdrive eval --agent agent/leaderboard_agent.py --agent-config configs/agent.yaml --suite $(EVAL_SUITE) --out $(OUT)/eval-agent/results.json --workers 2 --quiet
	$(BIN)/vlmdrive eval --agent agent/leaderboard_agent.py --agent-config configs/agent_no_guard.yaml --suite $(EVAL_SUITE) --out $(OUT)/eval-agent-no-guard/results.json --workers 2 --quiet
	$(BIN)/vlmdrive eval --agent agent/leaderboard_agent.py --agent-config configs/agent_vlm.yaml --suite $(EVAL_SUITE) --out $(OUT)/eval-agent-vlm/results.json --workers 2 --quiet
	$(BIN)/python benchmarks/bench_agent.py --json > $(OUT)/bench_agent.json
	$(BIN)/vlmdrive model-card checkpoints/vlmdrive-tiny --agent-results $(OUT)/eval-agent/results.json --vlm-results $(OUT)/eval-agent-vlm/results.json --unguarded-results $(OUT)/eval-agent-no-guard/results.json --expert-results $(OUT)/eval-expert/results.json --speed $(OUT)/bench_agent.json

# A short closed-loop PPO fine-tuning job from the shipped checkpoint (configs/finetune.yaml:
# 2 envs, 64-step rollouts, the shield on; a few minutes on 2 cores). The result,
# $(FINETUNE_OUT)/checkpoint, loads in the Leaderboard agent (`checkpoint: ...`).
FINETUNE_STEPS ?= 2048
FINETUNE_OUT   ?= runs/finetune-short
finetune: setup
	$(BIN)/vlmdrive finetune --config configs/finetune.yaml --init checkpoints/vlmdrive-tiny --suite scenarios/library/train --total-steps $(FINETUNE_STEPS) --envs 2 --out $(FINETUNE_OUT)

# The fine-tuned checkpoint against the imitation one it started from, on the held-out
# eval suite, same seed, the safety guard on for both (configs/agent_finetuned.yaml reads
# $(FINETUNE_OUT)/checkpoint = runs/finetune-short/checkpoint; run `make finetune` first).
eval-finetune: setup
	$(BIN)/vlmdrive eval --agent agent/leaderboard_agent.py --agent-config configs/agent.yaml --suite $(EVAL_SUITE) --out $(OUT)/eval-imitation/results.json --workers 2 --quiet
	$(BIN)/vlmdrive eval --agent agent/leaderboard_agent.py --agent-config configs/agent_finetuned.yaml --suite $(EVAL_SUITE) --out $(OUT)/eval-finetuned/results.json --workers 2 --quiet

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache .mypy_cache .ruff_cache
