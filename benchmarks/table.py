"""Render benchmarks/results/speed-*.json as the Markdown table in the README.

    python benchmarks/table.py benchmarks/results/speed-*.json
"""

import json
import sys


def fmt(value, digits=2):
    return "-" if value is None else f"{value:.{digits}f}"


def main(paths):
    print("| backend | model / prior | s / epoch | x MLP VAE standard | GFLOP/s | fraction of matmul rate | "
          "IWAE S=5000: images, s | IWAE fraction of matmul rate |")
    print("|---|---|---|---|---|---|---|---|")
    for path in paths:
        report = json.load(open(path))
        matmul = sorted(report["matmul_gflops_per_s"])[len(report["matmul_gflops_per_s"]) // 2]
        for key, r in report["results"].items():
            iwae = r.get("iwae")
            iwae_cell = f"{iwae['images']}, {iwae['seconds']:.1f}" if iwae else "-"
            print(f"| {report['backend']} | {key} | {fmt(r['epoch_seconds'])} | {fmt(r.get('epoch_over_vae_standard'), 1)} | "
                  f"{fmt(r['epoch_gflops_per_s'], 0)} | {fmt(r['fraction_of_matmul_rate'])} | {iwae_cell} | "
                  f"{fmt(iwae['fraction_of_matmul_rate']) if iwae else '-'} |")
        print(f"| {report['backend']} | dense 2048^3 matmul | | | {matmul:.0f} | 1.00 | | |")


if __name__ == "__main__":
    main(sys.argv[1:])
