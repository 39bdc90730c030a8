"""Import the authors' released checkpoint (``human+dog.pth``, ``human+dog+cat.pth``) and save it as a dife model.

Run::

    python examples/import_official.py human+dog.pth --out models/dife-official-human-dog [--domains human dog]

Download the file by hand from the authors' repository
(https://github.com/kingsj0405/DIFE). It is read with
``torch.load(weights_only=True)``, so no pickled code runs; keys ``hg.*`` and
``transformer.*`` are renamed, the widths and the number of domains are
inferred from the tensors and the weights load strictly. The script then
saves the model with ``save_pretrained`` (``config.json``,
``model.safetensors``, ``README.md``), loads the folder back, checks that the
two give the same embedding, and carries the astronaut's landmarks to the cat
with it (``--figure transfer.jpg``). The same import from the shell:
``dife convert-official human+dog.pth OUTDIR``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import dife

HERE = Path(__file__).resolve().parent
IMAGES = HERE / "images"
#: This script writes no figure of the site (it needs the authors' file).
FIGURES: tuple[str, ...] = ()


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", help="the authors' .pth file")
    ap.add_argument("--out", required=True, help="folder to save the converted model to")
    ap.add_argument("--domains", nargs="+", default=None, help="converter names in order (default: the paper's)")
    ap.add_argument("--figure", default=None, help="also write the human -> cat transfer picture here")
    args = ap.parse_args(argv)

    # 1. Import: architecture and domains are read from the checkpoint itself.
    model = dife.DIFE.from_official(args.checkpoint, domains=tuple(args.domains) if args.domains else None)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{args.checkpoint}: domains {model.domains}, {n_params / 1e6:.2f} M parameters")

    # 2. Save as a dife model folder and load it back: from now on it is an ordinary model.
    folder = model.save_pretrained(args.out)
    again = dife.DIFE.from_pretrained(folder)
    x = torch.rand(1, 3, model.config.input_size, model.config.input_size) * 2 - 1
    with torch.no_grad():
        diff = float((model(x) - again(x)).abs().max())

    # 3. Use it.
    meta = json.loads((IMAGES / "astronaut.json").read_text())
    points = list(meta["keypoints"].values())
    pts, scores = dife.transfer_keypoints(
        IMAGES / "astronaut.jpg", IMAGES / "chelsea.jpg", points, src_box=meta["box"], model=again, return_scores=True
    )
    if args.figure:
        panel = dife.draw_matches(IMAGES / "astronaut.jpg", IMAGES / "chelsea.jpg", points, pts, scores=scores)
        Path(args.figure).parent.mkdir(parents=True, exist_ok=True)
        panel.convert("RGB").save(args.figure, quality=90)

    summary = {
        "folder": str(folder),
        "files": sorted(p.name for p in Path(folder).iterdir()),
        "domains": list(again.domains),
        "parameters": n_params,
        "max_abs_diff": diff,
        "keypoints": [[round(float(x), 2), round(float(y), 2)] for x, y in pts],
    }
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
