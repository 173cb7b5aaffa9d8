"""Wall time of README command 1's job (`python -m training.fit zoo/quickstart.yaml`) per backend.

    python benchmarks/quickstart.py --reps 3 --out benchmarks/results/quickstart.json

Each rep is a fresh process, as a user runs it (imports, data, tracing, 200 epochs with early stopping,
the final IWAE evaluation, the PNG grids); the figure is the median wall time, with the test NLL of the
run's metrics.json. The backends alternate within each rep so they share the machine's state alike.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from machine import cpu_name  # noqa: E402  (benchmarks/ is sys.path[0] when run as a script)
from zoo import atomic  # noqa: E402


def one_run(backend):
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "training.fit", "zoo/quickstart.yaml", "--run-dir", str(run_dir)],
                       cwd=ROOT, check=True, capture_output=True, env={**os.environ, "KERAS_BACKEND": backend})
        seconds = time.perf_counter() - start
        metrics = json.loads((run_dir / "metrics.json").read_text())
        epochs = len((run_dir / "history.csv").read_text().splitlines()) - 1
    return {"seconds": seconds, "nll": metrics["nll"], "negative_elbo": metrics.get("negative_elbo"), "epochs": epochs}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="tensorflow,jax,torch")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    backends = args.backends.split(",")
    runs = {b: [] for b in backends}
    for rep in range(args.reps):
        for backend in backends:
            runs[backend].append(one_run(backend))
            print(backend, rep, runs[backend][-1], flush=True)
    results = {b: {"runs": r, "median_seconds": statistics.median(x["seconds"] for x in r),
                   "nll": r[0]["nll"], "negative_elbo": r[0]["negative_elbo"], "epochs": r[0]["epochs"]}
               for b, r in runs.items()}
    out = {"machine": cpu_name(), "cpus": os.cpu_count(), "reps": args.reps,
           "results": results}
    atomic.write_text(Path(args.out), json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
