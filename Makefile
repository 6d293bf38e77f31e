# Two commands: `make lab` (open the notebooks) and `make test` (run the test suite).
# Both create the virtual environment .venv/ on first use (a few minutes), then are fast.
# `make tour` executes the tour notebook headless (HDIT_HEADLESS=1: interactive cells draw their
# default figure, no widget round trip) into runs/tour.html.
# `make book` executes every notebook (cpu profile) into a static HTML book, build/book/index.html.
# `make bench-gpu` runs every GPU benchmark (benchmarks/README.md) into benchmarks/results/.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.hdit-edu-installed
# `make test` runs the suite on two pytest-xdist workers (one per core of a 2-core CI machine);
# PYTEST_WORKERS=0 runs it in one process. --dist loadgroup: the tests of one xdist_group run
# on one worker, one after the other (the true-size runs, 2-10 GiB each).
PYTEST_WORKERS ?= 2
# JupyterLab refuses to run as root without --allow-root; a machine without a display gets
# --no-browser (the URL with its token is printed). Extra flags: make lab LAB_ARGS="--port 9999"
LAB_FLAGS := $(if $(filter 0,$(shell id -u)),--allow-root) $(if $(DISPLAY),,--no-browser) $(LAB_ARGS)

.PHONY: lab test tour book bench-gpu

$(STAMP): pyproject.toml requirements/constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c requirements/constraints.txt -e ".[notebooks,dev]"
	@touch $(STAMP)

lab: $(STAMP)
	$(PY) -m ipykernel install --user --name hdit-edu --display-name "Python (hdit-edu)"
	$(VENV)/bin/jupyter lab notebooks/00_tour.ipynb $(LAB_FLAGS)

test: $(STAMP)
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

tour: $(STAMP)
	@mkdir -p runs
	HDIT_PROFILE=cpu HDIT_HEADLESS=1 $(VENV)/bin/jupyter nbconvert --to html --execute \
		--ExecutePreprocessor.timeout=1200 notebooks/00_tour.ipynb --output-dir runs --output tour
	@echo "wrote runs/tour.html"

# Every notebook executed in the cpu profile and rendered with nbconvert (tools/build_book.py):
# build/book/index.html (contents in the paper's order) and one page per notebook.
book: $(STAMP)
	$(PY) tools/build_book.py --out build/book --profile cpu

# The GPU benchmarks of issue 9, one after the other (about 30-60 minutes on an H100). Each
# writes benchmarks/results/<name>-cuda-<gpu>-<date>.json; set HDIT_K_DIFFUSION_SRC to a
# k-diffusion clone to add the reference side by side.
bench-gpu: $(STAMP)
	$(PY) benchmarks/scaling.py --device cuda --max-res 2048
	$(PY) benchmarks/train_throughput.py --gpu
	$(PY) benchmarks/sampling_speed.py --device cuda
	$(PY) benchmarks/profile_step.py --device cuda --config imagenet128 --batch-size 64
