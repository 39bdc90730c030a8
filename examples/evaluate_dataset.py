"""Evaluate keypoint transfer across species on a labelled dataset (yours, or AP-10K / MAFL / WFLW / AnimalWeb).

Run::

    python examples/evaluate_dataset.py [--data FACES] [--format auto] [--model NAME_OR_PATH]
                                        [--pairs 10] [--out docs/images/evaluate_dataset]

``--data`` defaults to the environment variable ``DIFE_DEV_DATA``. Dataset
layouts (``--format``; ``dife.eval.read_dataset`` reads them all into face
crops with image-side keypoint names):

==============  ===============================================  ==============================
format          ``--data``                                       options
==============  ===============================================  ==============================
``faces``       a folder with ``annotations.json`` + images      (``auto`` finds it)
``ap10k``       the COCO JSON file (``ap10k-test-split1.json``)  ``--image-dir``
``animal_pose`` the ``keypoints.json`` file                      ``--image-dir``
``mafl``        ``list_landmarks_align_celeba.txt``              ``--image-dir``, ``--split``
``wflw``        ``list_98pt_rect_attr_test.txt``                 ``--image-dir``
``animalweb``   the folder of images + ``.pts`` files            (``auto`` finds it)
==============  ===============================================  ==============================

Pairs are drawn per species group (human -> dog, human -> cat, dog -> cat, ...)
with a fixed seed; every pair's shared keypoints are carried from the source
to the target and the errors are measured in pixels of a 70x70 image (the
paper's metric), relative to the inter-ocular distance, and as PCK. The model
is compared with ``identity`` (copy each point's relative position), a strong
baseline on aligned crops. Writes to ``--out``: ``report.md`` (markdown
tables), ``summary.json``, ``results.json`` (unless ``--no-results-json``) and, with ``--panels N``, ``panels/*.png`` of the
best and worst pairs (those show dataset images: do not publish them unless
the dataset's terms allow it).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import dife
from dife.eval import DIFEMethod, evaluate, markdown_report, read_dataset, resolve_method, write_json, write_panels

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE.parent / "docs" / "images" / "evaluate_dataset"
#: Files this script writes into ``--out`` (no pictures: panels are opt-in).
FIGURES: tuple[str, ...] = ()


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--data",
        default=os.environ.get("DIFE_DEV_DATA"),
        help="dataset path (see the table above; default: $DIFE_DEV_DATA)",
    )
    ap.add_argument("--format", default="auto", help="faces, ap10k, animal_pose, mafl, wflw, animalweb or auto")
    ap.add_argument("--image-dir", default=None, help="image folder of ap10k / animal_pose / mafl / wflw files")
    ap.add_argument("--split", default=None, help="MAFL split list, e.g. testing.txt")
    ap.add_argument("--model", default=None, help="registry name, folder or hub id (default: the default model)")
    ap.add_argument("--pairs", type=int, default=10, help="pairs per species group")
    ap.add_argument("--protocol", nargs="+", default=["aligned"], help="crop protocols: aligned, jittered")
    ap.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples of the 95%% intervals")
    ap.add_argument("--panels", type=int, default=0, help="best / worst pairs per PNG panel (0: none)")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="output folder")
    ap.add_argument("--no-results-json", action="store_true", help="skip results.json (every pair's errors)")
    args = ap.parse_args(argv)
    if not args.data:
        ap.error("give --data (a labelled dataset, see the table above) or set DIFE_DEV_DATA")
    out = Path(args.out)

    # 1. Read the dataset: the same call for every layout, only the format and options change.
    options = {k: v for k, v in (("image_dir", args.image_dir), ("split", args.split)) if v is not None}
    samples = read_dataset(args.data, format=args.format, **options)
    species = sorted({s.species for s in samples})
    print(f"{len(samples)} faces of {species} in {args.data}")

    # 2. The methods: a DIFE model and the identity baseline.
    model = dife.DIFE.from_pretrained(args.model) if args.model else dife.get_default_model()
    methods = [DIFEMethod(model, name="dife"), resolve_method("identity")]

    # 3. Evaluate: fixed-seed pairs per group, each method on each crop protocol.
    result, views = evaluate(
        samples, methods, protocols=args.protocol, counts=args.pairs, n_boot=args.bootstrap, seed=0, progress=print
    )

    # 4. Reports: markdown tables, JSON, optional panels.
    out.mkdir(parents=True, exist_ok=True)
    title = f"Keypoint transfer, {args.pairs} pairs per group ({Path(args.data).name})"
    (out / "report.md").write_text(markdown_report(result, title=title))
    if not args.no_results_json:
        write_json(result, out / "results.json")
    if args.panels > 0:
        write_panels(result, views, out / "panels", k=args.panels)

    summary = {
        "faces": len(samples),
        "species": species,
        "pairs": result.pair_counts(),
        "err70": {
            protocol: {name: run.summary["all"].stats["err70"].mean for name, run in runs.items()}
            for protocol, runs in result.runs.items()
        },
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary["err70"], indent=2))
    print(f"wrote report.md, results.json and summary.json to {out}")
    return summary


if __name__ == "__main__":
    main()
