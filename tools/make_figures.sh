#!/usr/bin/env bash
# Regenerate every figure of the documentation site with the current default model.
#   DIFE_DEV_DATA=FACES bash tools/make_figures.sh   (from anywhere; FACES: the labelled development faces
#                                                   that the evaluation figure is measured on)
# Each script writes into docs/images/<script name>/ (docs/images/transfer.jpg for the home page).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
$PY examples/transfer_keypoints.py -o docs/images/transfer.jpg
$PY examples/transfer_species.py --out docs/images/transfer_species
$PY examples/face_parsing.py --out docs/images/face_parsing
$PY examples/overlay_assets.py --out docs/images/overlay_assets
$PY examples/photos.py --out docs/images/photos
$PY examples/train_from_photos.py --warps-only --figures docs/images/train_from_photos
$PY examples/train_paper_recipe.py --demo --overwrite --out "${TMPDIR:-/tmp}/dife-demo-paper-recipe" --figures docs/images/train_paper_recipe
$PY examples/evaluate_dataset.py --pairs 10 --no-results-json --out docs/images/evaluate_dataset
