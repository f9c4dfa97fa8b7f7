# Two commands do everything on a fresh machine (Python >= 3.10; set PYTHON=python3.11 to choose):
#   make demo   set up .venv, generate the embedded synthetic corpus, train, decode the held-out voices, print WER
#   make test   set up .venv and run the test suite (make lint: ruff check + format check)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint fsdd clean-exp

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade --quiet pip
	$(BIN)/python -m pip install --quiet -e ".[corpus,test,tensorboard,serve,export]"
	touch $(STAMP)

demo: $(STAMP)
	ASR=$(BIN)/asr bash recipes/synth/run.sh

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The FSDD recipe needs the FSDD recordings (FSDD_DIR, default ../shared/data/fsdd).
fsdd: $(STAMP)
	ASR=$(BIN)/asr bash recipes/fsdd/run.sh

clean-exp:
	rm -rf exp
