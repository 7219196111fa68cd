# The two commands of the README. Each creates .venv (Python 3.10+) if it is missing and installs the package.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.ivus-tf-installed

.PHONY: demo test figures bench clean

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[cpu,test,export]"
	touch $(STAMP)

# The main job: phantom -> TFRecords (cached) -> multi-task training -> test metrics and TensorBoard command.
demo: $(STAMP)
	$(PY) -m ivus_tf.train --scheme multitask --config configs/quickstart.yaml --out runs/quickstart

test: $(STAMP)
	$(PY) -m pytest -q

figures: $(STAMP)
	$(PY) tools/render_phantom_figure.py --out docs/phantom_frames.png --shifted-out docs/phantom_shifted.png

bench: $(STAMP)
	$(PY) bench/bench_builder.py
	$(PY) bench/bench_pipeline.py

clean:
	rm -rf $(VENV) runs build *.egg-info
