"""CPU/GPU speed of dife: `import dife` time and `embed` latency.

Run: ``python benchmarks/speed.py [--device cpu] [--repeats 7]``. Prints a
markdown table; medians of ``--repeats`` runs after one warm-up. The model is
the paper's architecture (13.2 M parameters with two converters; only the
encoder runs at inference), so the numbers do not depend on the weights.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time


def import_time(repeats: int) -> float:
    code = "import time; t = time.perf_counter(); import dife; print(time.perf_counter() - t)"
    runs = [
        float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
        for _ in range(repeats)
    ]
    return statistics.median(runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--batches", default="1,8,64")
    args = ap.parse_args()

    t_import = import_time(args.repeats)

    import numpy as np
    import torch

    import dife
    from dife.registry import get_entry  # noqa: F401  (registry must import)

    torch.manual_seed(0)
    model = dife.DIFE(dife.DIFEConfig()).eval().to(args.device)
    rows = [("`import dife`", "-", f"{t_import * 1000:.0f} ms", "-")]
    rng = np.random.default_rng(0)
    for b in (int(x) for x in args.batches.split(",")):
        imgs = torch.from_numpy(rng.random((b, 3, 96, 96), dtype=np.float32))
        dife.embed(imgs, model=model)  # warm-up
        times = []
        for _ in range(args.repeats):
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            t = time.perf_counter()
            dife.embed(imgs, model=model, batch_size=max(b, 1))
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
        med = statistics.median(times)
        rows.append((f"`embed` 96x96 faces, batch {b}", str(b), f"{med * 1000:.1f} ms", f"{b / med:.1f}"))
    print(f"device: {args.device}, torch {torch.__version__}, threads {torch.get_num_threads()}\n")
    print("| what | batch | median time | images/s |\n| --- | ---: | ---: | ---: |")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
