"""Share a trained model on the Hugging Face Hub and load it back by its repository id.

Run (after ``huggingface-cli login``)::

    python examples/push_to_hub.py runs/photos your-name/dife-photos [--private]

``MODEL`` is a model folder (``save_pretrained`` / ``dife train`` output), a
registry name or a hub id. The script

1. writes the folder the Hub will hold (``config.json``, ``model.safetensors``
   and a ``README.md`` model card with the fields given below) to ``--folder``;
2. uploads it with ``model.push_to_hub(repo_id)`` (the repository is created if needed);
3. loads it back with ``dife.DIFE.from_pretrained(repo_id)`` and checks that
   the downloaded model gives the same embedding as the local one.

The same upload from the shell: ``dife push FOLDER REPO_ID``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import dife

#: This script writes no figure of the site.
FIGURES: tuple[str, ...] = ()


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="model folder, registry name or hub id")
    ap.add_argument("repo_id", help="owner/name of the Hub repository")
    ap.add_argument("--folder", default="hub-upload", help="where to write the files that are uploaded")
    ap.add_argument("--private", action="store_true", help="create the repository as private")
    ap.add_argument("--training-data", default=None, help="model card: what the model was trained on")
    args = ap.parse_args(argv)

    model = dife.DIFE.from_pretrained(args.model)
    card = {"training_data": args.training_data or f"see {args.model}", "tags": ["faces", "animals"]}

    # 1. The files, written locally: check the model card before anything leaves the machine.
    folder = model.save_pretrained(args.folder, repo_id=args.repo_id, **card)
    print(f"wrote {sorted(p.name for p in Path(folder).iterdir())} to {folder}")

    # 2. Upload (the same three files, written again into a temporary folder and sent in one commit).
    url = model.push_to_hub(args.repo_id, private=args.private, **card)
    print(f"pushed to {url}")

    # 3. Anyone can now load it by its id.
    loaded = dife.DIFE.from_pretrained(args.repo_id)
    x = torch.rand(1, 3, model.config.input_size, model.config.input_size) * 2 - 1
    with torch.no_grad():
        same = bool(torch.equal(model(x), loaded(x)))
    summary = {"url": str(url), "folder": str(folder), "domains": list(loaded.domains), "identical": same}
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
