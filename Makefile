# FreeCure for ComfyUI: the README's commands.
#   make test   bootstrap .venv/ and .comfyui/ (pinned), then run every test
#   make demo   run the face-parsing workflow headless (python -m freecure_core.run, embedded ComfyUI) on tiny
#               models, writing images, the runner's record.json and a report to out/demo/
#   make bench  print the engine's cost and speed figures and the README's performance table for this machine
#               (bench/bench_report.py; not a test)
PY := .venv/bin/python

.PHONY: venv test demo bench
venv:
	bash scripts/bootstrap.sh

test: venv
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q tests

demo: venv
	HF_HUB_OFFLINE=1 $(PY) scripts/demo.py --out out/demo

bench: venv
	HF_HUB_OFFLINE=1 $(PY) bench/bench_report.py --out out/bench_report.md
