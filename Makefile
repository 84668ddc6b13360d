# The README's two commands. Everything they need is installed here, so both
# work on a fresh Debian/Ubuntu machine with Python 3.11 and nothing else.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test install system-deps slurm clean

demo: install
	$(PY) -m synscale.launch studies/digits_sweep.toml
	$(PY) tools/fit_curves.py runs/digits_sweep --suggest

# Two xdist workers: about half the serial suite's time is waiting (on Slurm's
# scheduler, on timeouts the fault tests provoke), so the Slurm tests run one
# after another in one worker (xdist_group "slurm": one cluster) while the
# other runs the CPU-bound ones. The tests marked "memory" (two CLIP-L ranks:
# most of a 24 GB machine) run after, alone.
TEST_WORKERS ?= 2

test: install slurm
	$(PY) -m ruff check .
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup -m "not memory"; first=$$?; \
	$(PY) -m pytest -q -m memory; exit $$(( first || $$? ))

# A real single-machine Slurm for the integration tests (root installs and
# starts it; without root those tests say so and skip).
slurm:
	@if [ "$$(id -u)" -eq 0 ]; then bash slurm/local-cluster.sh start; \
	else echo "not root: the local Slurm is not started; its integration tests will skip"; fi

install: $(STAMP)

$(STAMP): pyproject.toml Makefile tools/system_deps.sh
	bash tools/system_deps.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	# FFCV's setup.py imports numpy and pkg-config at build time, so the build
	# runs in this venv (no isolation) after its build inputs are present.
	$(PY) -m pip install -q numpy setuptools wheel
	$(PY) -m pip install -q --no-build-isolation -e '.[test]'
	touch $(STAMP)

system-deps:
	bash tools/system_deps.sh

clean:
	rm -rf $(VENV) runs
