# FreeCure for ComfyUI: the README's commands.
#   make test   bootstrap the pinned test environments (.venv/ + .comfyui/ for ComfyUI 0.3.75, and .matrix/<version>/
#               for each newer ComfyUI snapshot in ../shared/comfyui), then run every test once per ComfyUI version
#               (scripts/test_matrix.sh; ARGS="tests/core -x" narrows it, FREECURE_COMFYUI=0.33.0 picks one version)
#   make demo   run the face-parsing workflow headless (python -m freecure_core.run, embedded ComfyUI) on tiny
#               models, writing images, the runner's record.json and a report to out/demo/; COMFYUI=0.33.0 runs it
#               on that ComfyUI snapshot's environment (.matrix/0.33.0, set up by make venv)
#   make bench  print the engine's cost and speed figures and the README's performance table for this machine
#               (bench/bench_report.py; not a test)
PY := .venv/bin/python
ifdef COMFYUI
DEMO := COMFYUI_PATH=$(CURDIR)/.matrix/$(COMFYUI)/ComfyUI .matrix/$(COMFYUI)/venv/bin/python
else
DEMO := $(PY)
endif

.PHONY: venv test demo bench
venv:
	bash scripts/bootstrap.sh

test: venv
	bash scripts/test_matrix.sh $(ARGS)

demo: venv
	HF_HUB_OFFLINE=1 $(DEMO) scripts/demo.py --out out/demo

bench: venv
	HF_HUB_OFFLINE=1 $(PY) bench/bench_report.py --out out/bench_report.md
