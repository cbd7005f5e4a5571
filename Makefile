# labkit: one virtual environment (.venv), three things to do with it.
#   make lab     install everything into .venv and open the course in JupyterLab
#   make test    install everything into .venv and run the whole test suite (fast mode)
#   make course  execute every notebook headless; executed copies, HTML and figures under build/
#   make report  redraw the report figures from saved metrics (benchmarks/results, runs/), no training
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.labkit-installed
# Jupyter refuses to run as root unless told; containers and cloud machines often are root.
ROOT_FLAG = $(if $(filter 0,$(shell id -u)),--allow-root,)

.PHONY: lab test course report exercises bench clean install

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --progress-bar off -e '.[test]'
	touch $(STAMP)

lab: $(STAMP)
	$(BIN)/jupyter lab $(ROOT_FLAG) --ServerApp.root_dir="$(CURDIR)" --LabApp.default_url=/lab/tree/notebooks

test: $(STAMP)
	LABKIT_FAST=$${LABKIT_FAST:-1} $(BIN)/python -m pytest

course: $(STAMP)
	$(BIN)/python -m labkit.course --out build

report: $(STAMP)
	$(BIN)/python -m labkit.report --run runs --out build/figures

exercises: $(STAMP)
	$(BIN)/python -m labkit make-exercises

clean:
	rm -rf build .pytest_cache
