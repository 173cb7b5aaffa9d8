"""Latency of the exported `sample` signature in a fresh process, per preset, export backend and batch size.

    python benchmarks/serving_latency.py --out benchmarks/results/serving-latency.json
        [--presets quickstart_digits,vamp_vae_mnist10k,vamp_convhvae_mnist10k] [--backends tensorflow,jax]
        [--batches 1,16,256] [--repeats 7]

Each preset is exported with `python -m exports.saved_model` under each backend (TensorFlow traces the model,
JAX converts it with jax2tf), then a new Python process that imports only TensorFlow loads the SavedModel
and calls `sample(num_samples=batch, seed=i)`: the first call per batch size is reported separately (graph
optimisation, and XLA compilation of a jax2tf graph for that shape; what TF Serving's warmup records
absorb), then the median, min and max of `repeats` further calls. The machine's load average is
recorded, since its CPU is shared.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from machine import cpu_name  # noqa: E402  (benchmarks/ is sys.path[0] when run as a script)
from zoo import atomic  # noqa: E402

TIMER = textwrap.dedent("""
    import json, statistics, sys, time
    t0 = time.perf_counter()
    import tensorflow as tf
    export_dir, batches, repeats = sys.argv[1], [int(b) for b in sys.argv[2].split(",")], int(sys.argv[3])
    t1 = time.perf_counter()
    sample = tf.saved_model.load(export_dir).signatures["sample"]
    t2 = time.perf_counter()
    rows = []
    for batch in batches:
        times = []
        for i in range(repeats + 1):
            start = time.perf_counter()
            images = sample(num_samples=tf.constant(batch), seed=tf.constant(i))["images"].numpy()
            times.append(time.perf_counter() - start)
        assert images.shape[0] == batch
        steady = times[1:]
        rows.append({"batch": batch, "first_call_s": times[0], "median_s": statistics.median(steady),
                     "min_s": min(steady), "max_s": max(steady), "repeats": repeats,
                     "median_ms_per_image": 1000 * statistics.median(steady) / batch})
    print(json.dumps({"import_tensorflow_s": t1 - t0, "load_s": t2 - t1, "rows": rows}))
""")


def export(preset, backend, base):
    env = {**os.environ, "KERAS_BACKEND": backend}
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "exports.saved_model", preset, str(base)], cwd=ROOT, env=env,
                            capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"export of {preset} on {backend} failed:\n{result.stderr[-3000:]}")
    return time.perf_counter() - start


def measure(export_dir, batches, repeats, workdir):
    script = Path(workdir) / "timer.py"
    script.write_text(TIMER)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "KERAS_BACKEND")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    result = subprocess.run([sys.executable, "-I", str(script), str(export_dir), ",".join(map(str, batches)),
                             str(repeats)], cwd=workdir, env=env, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"timing {export_dir} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="quickstart_digits,vamp_vae_mnist10k,vamp_convhvae_mnist10k")
    parser.add_argument("--backends", default="tensorflow,jax")
    parser.add_argument("--batches", default="1,16,256")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    import tensorflow as tf

    report = {"cpu": cpu_name(), "cpu_count": os.cpu_count(), "tensorflow": tf.__version__,
              "load_average_before": os.getloadavg(), "repeats": args.repeats, "results": []}
    with tempfile.TemporaryDirectory() as workdir:
        for preset in args.presets.split(","):
            for backend in args.backends.split(","):
                base = Path(workdir) / backend
                export_seconds = export(preset, backend, base)
                timing = measure(base / preset / "1", batches, args.repeats, workdir)
                entry = {"preset": preset, "export_backend": backend, "export_s": export_seconds, **timing,
                         "load_average": os.getloadavg()}
                report["results"].append(entry)
                for row in timing["rows"]:
                    print(f"{preset:24s} {backend:10s} batch {row['batch']:4d}: median {1000 * row['median_s']:8.1f} ms "
                          f"(first call {1000 * row['first_call_s']:8.1f} ms)", flush=True)
    atomic.write_text(args.out, json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
