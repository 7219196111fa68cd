# The two commands of the README. Each creates .venv (Python 3.10+) if it is missing and installs the package.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.ivus-tf-installed
# The convert extra (torch + torchvision, for python -m ivus_tf.convert and its tests) as CPU builds, so pip never
# pulls the CUDA wheels: from PyTorch's CPU index, or a "+cpu" torch pip already finds (a local wheel). Where neither
# is reachable the install says so and the convert tests skip with that reason.
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_CPU ?= torch==2.13.0+cpu torchvision==0.28.0

.PHONY: demo test test-fast lint figures bench clean jax-env

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[cpu,test,export]"
	$(PY) -m pip install --quiet --disable-pip-version-check --retries 0 --timeout 60 \
	    --extra-index-url $(TORCH_CPU_INDEX) $(TORCH_CPU) \
	  || echo "note: no CPU build of $(TORCH_CPU) found; python -m ivus_tf.convert and its tests need it (docs/convert.md)"
	touch $(STAMP)

# The main job: phantom -> TFRecords (cached) -> multi-task training -> test metrics and TensorBoard command.
demo: $(STAMP)
	$(PY) -m ivus_tf.train --scheme multitask --config configs/quickstart.yaml --out runs/quickstart

# The full suite (CI: .ci/run). test-fast is the edit loop: every module's fast tests, without those marked slow
# (trained runs, exports in fresh processes, multi-worker clusters; DEVELOPERS.md).
test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

# A second environment with Keras on the JAX backend (no TensorFlow): the models, losses and metrics are keras.ops
# code, and tests/test_losses.py and tests/test_models_deeplab.py run them there when IVUS_TF_JAX_PYTHON names its
# python (CI does; elsewhere they skip with that reason).
JAX_VENV ?= .venv-jax
jax-env: $(JAX_VENV)/.installed
$(JAX_VENV)/.installed:
	test -x $(JAX_VENV)/bin/python || $(PYTHON) -m venv $(JAX_VENV)
	$(JAX_VENV)/bin/pip install --quiet --disable-pip-version-check "jax[cpu]" "keras>=3.15,<3.16" numpy scipy \
	    opencv-python-headless pyyaml
	touch $@

lint: $(STAMP)
	$(PY) -m ruff check .

figures: $(STAMP)
	$(PY) tools/render_phantom_figure.py --out docs/phantom_frames.png --shifted-out docs/phantom_shifted.png

bench: $(STAMP)
	$(PY) bench/bench_builder.py
	$(PY) bench/bench_pipeline.py

clean:
	rm -rf $(VENV) $(JAX_VENV) runs build *.egg-info
