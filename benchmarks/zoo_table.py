"""The zoo's results table and Pareto plot.

For every published Fashion-MNIST weight set (``weights/results.csv``, else the
records of ``weights/manifest.json``): test top-1 / top-5 measured here, params and
OPs at the trained input; beside it the ImageNet top-1 that the entry's paper
*reports* (registry ``reported`` metadata, never measured here) with the OPs of the
architecture counted here at 224x224. Writes ``zoo_table.md``, ``zoo_table.csv`` and
``zoo_pareto.png`` (left: Fashion-MNIST top-1 vs OPs with the Pareto front; right:
the reported ImageNet numbers, labelled as such), and rewrites the README's table of
published sets (with each set's measured training minutes per epoch and the binary sets
below the goal) and its table of weight storage.

Usage::

    .venv/bin/python benchmarks/zoo_table.py [--output-dir benchmarks/results] [--no-imagenet-ops]

It reads whatever is published when it runs; re-run it after ``zoo publish``.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import zoo  # noqa: E402  (Keras 2 before TensorFlow)
from benchmarks.readme import replace_between  # noqa: E402

DATASET = "fashion_mnist"
COLUMNS = ["model", "tag", "fmnist_top1", "fmnist_top5", "params", "binary_params", "ops",
           "input_shape", "recipe", "imagenet_top1_reported", "imagenet_top5_reported",
           "imagenet_source", "imagenet_ops_224", "paper"]


def log(message):
    print(message, file=sys.stderr, flush=True)


def _shape(value):
    if isinstance(value, str):
        return value
    return "x".join(str(d) for d in value)


def published_rows(weights_dir: Path):
    """One row per published Fashion-MNIST set: results.csv first, manifest records after."""
    rows = {}
    results = weights_dir / "results.csv"
    if results.is_file():
        for r in csv.DictReader(results.open()):
            if r.get("dataset") != DATASET:
                continue
            rows[(r["model"], r["tag"])] = {
                "model": r["model"], "tag": r["tag"], "fmnist_top1": float(r["top1"]),
                "fmnist_top5": float(r["top5"]) if r.get("top5") else None,
                "params": int(r["params"]), "binary_params": int(r["binary_params"]),
                "ops": float(r["ops"]), "input_shape": r["input_shape"], "recipe": r.get("recipe", ""),
            }
    manifest = weights_dir / "manifest.json"
    if manifest.is_file():
        records = json.loads(manifest.read_text()).get("records", {})
        for record in records.values():
            key = (record.get("model"), record.get("tag"))
            metrics, costs = record.get("metrics") or {}, record.get("costs") or {}
            if record.get("dataset") != DATASET or key in rows or "top1" not in metrics:
                continue
            rows[key] = {
                "model": key[0], "tag": key[1], "fmnist_top1": float(metrics["top1"]),
                "fmnist_top5": metrics.get("top5"), "params": costs.get("params"),
                "binary_params": costs.get("binary_params"), "ops": costs.get("ops"),
                "input_shape": _shape(record.get("input_shape", "")),
                "recipe": (record.get("recipe") or {}).get("name", ""),
            }
    return [row for row in rows.values() if row["model"] in zoo.MODELS]


README_START = "<!-- published sets: written by `python benchmarks/zoo_table.py` -->"
README_END = "<!-- end of published sets -->"


GOAL_TOP1 = 90.0  # the zoo's goal for a binary Fashion-MNIST set (test top-1, %)


def _natural(key: str):  # birealnet18, 34, 50, 101, 152
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", key)]


def _cost_per_epoch(record) -> str:
    """Measured training minutes per epoch (test evaluation included) and the cores they
    ran on, from the record's ``training`` (sets published before it was recorded: -)."""
    training = record.get("training") or {}
    if not training.get("seconds_per_epoch"):
        return "-"
    cpus = (training.get("hardware") or {}).get("cpus")
    return f"{training['seconds_per_epoch'] / 60:.1f}" + (f" ({cpus} CPUs)" if cpus else "")


def readme_table(weights_dir: Path) -> str:
    """The README's table of published Fashion-MNIST sets, from the manifest's records:
    recipe and epochs per stage, training minutes per epoch, test top-1/top-5, params
    (binary) and OPs at the input the set was trained at; then the binary sets below the
    zoo's goal."""
    records = json.loads((weights_dir / "manifest.json").read_text()).get("records", {})
    lines = ["| weight set | recipe | epochs | min/epoch | top-1 | top-5 | params (binary) | OPs at 28x28 |",
             "|---|---|---|---|---|---|---|---|"]
    below = []
    for key, record in sorted(records.items(), key=lambda item: _natural(item[0])):
        if record.get("dataset") != DATASET or "top1" not in (record.get("metrics") or {}):
            continue
        metrics, costs, recipe = record["metrics"], record.get("costs") or {}, record.get("recipe") or {}
        epochs = "+".join(str(stage["epochs"]) for stage in recipe.get("stages") or []) or "-"
        binary = costs.get("binary_params") or 0
        params = f"{costs['params'] / 1e6:.2f}M " + (f"({binary / 1e6:.2f}M)" if binary else "(real-valued)")
        height, width = record["input_shape"][:2]
        size = "" if (height, width) == (28, 28) else f" ({height}x{width})"
        lines.append(f"| `{key}` | `{recipe.get('name', '-')}` | {epochs} | {_cost_per_epoch(record)} | "
                     f"{metrics['top1']:.2f}% | {metrics['top5']:.2f}% | {params} | "
                     f"{costs['ops'] / 1e6:.2f}M{size} |")
        if binary and metrics["top1"] < GOAL_TOP1:
            below.append(f"`{key}` {metrics['top1']:.2f}%")
    lines += ["", f"Binary sets below the {GOAL_TOP1:.0f}% goal ({len(below)}): "
              + (", ".join(below) if below else "none") + "."]
    return "\n".join(lines)


STORAGE_START = "<!-- weight storage: written by `python benchmarks/zoo_table.py` -->"
STORAGE_END = "<!-- end of weight storage -->"


def storage_table(weights_dir: Path) -> str:
    """A markdown table of every set whose files are in ``weights_dir``: format, binary
    weights, bits per binary weight (scales counted), file size against its minimum
    (binary weights at 1 bit, real parameters at 32), and the folder's total."""
    from zoo.hub import packed

    records = json.loads((weights_dir / "manifest.json").read_text())["records"]
    lines = ["| set | format | binary weights | bits/binary weight | size | minimum | x min |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for key, record in sorted(records.items()):
        paths = [weights_dir / f["file"] for f in record["files"].values() if f]
        if not all(path.is_file() for path in paths):
            continue  # a set downloaded from elsewhere (larq-zoo's ImageNet files)
        size = sum(path.stat().st_size for path in paths)
        costs = record.get("costs") or {}
        binary = int(costs.get("binary_params") or 0)
        minimum = binary / 8 + 4 * (int(costs.get("params") or 0) - binary)
        if packed.is_packed(paths[0]):
            stats = packed.summary(paths[0])
            kind, bits = "packed", f"{stats['bits_per_binary_weight']:.4f}" if binary else "-"
        else:
            kind, bits = f"Keras h5 ({len(paths)} files)", "32 (float)"
        lines.append(f"| `{key}` | {kind} | {binary:,} | {bits} | {size / 1e6:.2f} MB | "
                     f"{minimum / 1e6:.2f} MB | {size / minimum:.2f} |")
    files = list(weights_dir.glob("*.h5"))
    lines.append(f"\n{len(files)} weight files, {sum(p.stat().st_size for p in files) / 1e6:.1f} MB "
                 f"in `{weights_dir.name}/`")
    return "\n".join(lines)


def add_reported(rows, imagenet_ops: bool):
    for row in rows:
        entry = zoo.get_entry(row["model"])
        reported = (entry.reported or {}).get("imagenet2012", {})
        row["imagenet_top1_reported"] = reported.get("top1")
        row["imagenet_top5_reported"] = reported.get("top5")
        row["imagenet_source"] = reported.get("source", entry.paper.venue if entry.paper else "")
        row["paper"] = f"arXiv {entry.paper.arxiv}" if entry.paper else ""
        row["imagenet_ops_224"] = None
        if imagenet_ops and row["imagenet_top1_reported"] is not None:
            log(f"counting {row['model']} at 224x224 ...")
            row["imagenet_ops_224"] = zoo.info(row["model"])["costs"]["ops"]
    return rows


def pareto_front(points):
    """Indices of the points no other point beats on both axes (lower OPs, higher top-1)."""
    front = []
    for i, (ops, acc) in enumerate(points):
        dominated = any((o <= ops and a >= acc) and (o < ops or a > acc)
                        for j, (o, a) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def _fmt(value, spec=""):
    if value is None or value == "":
        return "-"
    return format(value, spec) if spec else str(value)


def write_table(rows, out_dir: Path):
    with (out_dir / "zoo_table.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k) for k in COLUMNS})
    lines = [
        "| model | weights | Fashion-MNIST top-1 (measured) | top-5 | params | binary params | "
        "OPs at trained input | input | ImageNet top-1, **reported by the paper** | "
        "OPs at 224x224 (counted here) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| `{row['model']}` | {row['tag']} | {row['fmnist_top1']:.2f}% | {_fmt(row['fmnist_top5'], '.2f')} | "
            f"{_fmt(row['params'] and row['params'] / 1e6, '.2f')}M | "
            f"{_fmt(row['binary_params'] and row['binary_params'] / 1e6, '.2f')}M | "
            f"{_fmt(row['ops'] and row['ops'] / 1e6, '.2f')}M | {row['input_shape']} | "
            f"{_fmt(row['imagenet_top1_reported'], '.1f')}{' (' + row['imagenet_source'] + ')' if row['imagenet_top1_reported'] is not None else ''} | "
            f"{_fmt(row['imagenet_ops_224'] and row['imagenet_ops_224'] / 1e8, '.3f')}{'e8' if row['imagenet_ops_224'] else ''} |")
    (out_dir / "zoo_table.md").write_text("\n".join(lines) + "\n")


def plot(rows, out_dir: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    points = [(row["ops"], row["fmnist_top1"]) for row in rows if row["ops"]]
    labelled = [row for row in rows if row["ops"]]
    front = pareto_front(points)
    for i, row in enumerate(labelled):
        on_front = i in front
        left.scatter(row["ops"] / 1e6, row["fmnist_top1"], s=60, zorder=3,
                     color="tab:red" if on_front else "tab:blue")
        name = row["model"] if row["tag"] == "fashion_mnist" else f"{row['model']}.{row['tag']}"
        left.annotate(name, (row["ops"] / 1e6, row["fmnist_top1"]),
                      textcoords="offset points", xytext=(5, 4), fontsize=8)
    if len(front) > 1:
        left.plot([points[i][0] / 1e6 for i in front], [points[i][1] for i in front], "--",
                  color="tab:red")
    left.scatter([], [], color="tab:red", label="on the Pareto front")
    left.scatter([], [], color="tab:blue", label="dominated (more OPs, lower top-1)")
    left.legend(loc="lower right", fontsize=8)
    left.set_xscale("log")  # from sub-million (QuickNet-Small) to hundreds of millions (DoReFa)
    left.set_xlabel("OPs at the trained input (millions, log scale; FLOPs + BOPs/64)")
    left.set_ylabel("Fashion-MNIST test top-1 (%)")
    left.set_title("Fashion-MNIST, measured here (published weights)")
    left.grid(alpha=0.3)

    reported = [row for row in rows if row["imagenet_top1_reported"] is not None]
    for row in reported:
        x = (row["imagenet_ops_224"] or float("nan")) / 1e8
        right.scatter(x, row["imagenet_top1_reported"], marker="s", s=60, color="tab:gray", zorder=3)
        right.annotate(row["model"], (x, row["imagenet_top1_reported"]), textcoords="offset points",
                       xytext=(5, 4), fontsize=8)
    right.set_xlabel("OPs at 224x224 (x1e8, counted here)")
    right.set_ylabel("ImageNet top-1 (%), REPORTED by the papers")
    right.set_title("ImageNet: reported by the papers, not measured here")
    right.grid(alpha=0.3)
    if not reported:
        right.text(0.5, 0.5, "no reported ImageNet numbers", ha="center", transform=right.transAxes)
    fig.suptitle("zoo: published weight sets (left) and their papers' ImageNet claims (right)")
    fig.tight_layout()
    path = out_dir / "zoo_pareto.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description="Results table and Pareto plot of the zoo.")
    parser.add_argument("--weights-dir", type=Path, default=ROOT / "weights")
    parser.add_argument("--output-dir", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--no-imagenet-ops", action="store_true",
                        help="Skip counting OPs at 224x224 (builds each model once).")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md",
                        help="README whose published-sets and storage tables are rewritten "
                             "(between their markers).")
    args = parser.parse_args(argv)
    replace_between(args.readme, README_START, README_END, readme_table(args.weights_dir))
    replace_between(args.readme, STORAGE_START, STORAGE_END, storage_table(args.weights_dir))
    rows = published_rows(args.weights_dir)
    if not rows:
        sys.exit(f"No published {DATASET} weight sets in {args.weights_dir} (results.csv / manifest.json).")
    rows = add_reported(rows, imagenet_ops=not args.no_imagenet_ops)
    rows.sort(key=lambda r: (r["ops"] or 0, -r["fmnist_top1"]))
    args.output_dir.mkdir(parents=True, exist_ok=True)
    write_table(rows, args.output_dir)
    png = plot(rows, args.output_dir)
    print((args.output_dir / "zoo_table.md").read_text())
    print(f"wrote {args.output_dir / 'zoo_table.md'}, {args.output_dir / 'zoo_table.csv'}, {png} "
          f"and the published sets' and storage tables in {args.readme}")


if __name__ == "__main__":
    main()
