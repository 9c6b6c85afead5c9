# SAR Seg — every target installs what it needs first (make setup is a no-op when all is there).
SHELL := /bin/bash
PY := .venv/bin/python
export QT_QPA_PLATFORM ?= offscreen

.PHONY: setup test demo lint format package bench clean models forecasters imagenet-encoder

setup:
	@bash scripts/setup.sh

test: setup
	$(PY) -m pytest -q -rs
	QT_QPA_PLATFORM=xcb xvfb-run -a $(PY) -m pytest -q -rs tests/gui -o qgis_gui_enabled=true

demo: setup
	$(PY) scripts/demo.py --out demo_output

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

format: setup
	.venv/bin/ruff format .
	.venv/bin/ruff check --fix .

package: setup
	$(PY) scripts/package.py --out dist

# Benchmarks print figures; Orfeo ToolBox (otb-bin) is the speckle and calibration baseline.
bench: setup
	@bash scripts/setup.sh otb-bin
	$(PY) bench/speckle.py
	$(PY) bench/segment.py
	$(PY) bench/forecast.py
	$(PY) bench/cluster.py
	$(PY) bench/import_s1.py
	$(PY) bench/flood.py
	$(PY) bench/batch.py

clean:
	rm -rf demo_output dist build .pytest_cache .ruff_cache

# Train, evaluate and export the bundled default models + MODEL_CARD.md (about 20 minutes on 2 cores).
models: setup
	$(PY) scripts/make_models.py
	$(PY) scripts/make_forecasters.py
	$(PY) scripts/export_imagenet_encoder.py

# Only the bundled forecasters and their MODEL_CARD.md section (a few minutes).
forecasters: setup
	$(PY) scripts/make_forecasters.py

# Only the bundled ImageNet EfficientNet-Lite0 RGB encoder and its MODEL_CARD.md section (no training, ~10 s).
imagenet-encoder: setup
	$(PY) scripts/export_imagenet_encoder.py
