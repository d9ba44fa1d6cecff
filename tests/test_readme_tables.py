"""The README's generated tables: the published sets' table is the manifest's, row for
row, and the marker rewrite replaces only what lies between its markers."""
import json
from pathlib import Path

import pytest

from benchmarks import zoo_table
from benchmarks.readme import replace_between

ROOT = Path(__file__).resolve().parent.parent


def test_published_sets_table_is_the_manifests():
    table = zoo_table.readme_table(ROOT / "weights")
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    records = json.loads((ROOT / "weights" / "manifest.json").read_text())["records"]
    assert len(rows) == sum(r["dataset"] == "fashion_mnist" for r in records.values())
    bireal18 = records["birealnet18.fashion_mnist"]
    assert (f"| `birealnet18.fashion_mnist` | `birealnet_adam` | 6 | {zoo_table._cost_per_epoch(bireal18)} | "
            f"{bireal18['metrics']['top1']:.2f}% | {bireal18['metrics']['top5']:.2f}% | "
            "11.19M (10.99M) | 2.74M |") in rows
    below = [key for key, r in records.items() if r["dataset"] == "fashion_mnist"
             and r["costs"]["binary_params"] and r["metrics"]["top1"] < zoo_table.GOAL_TOP1]
    assert f"Binary sets below the 90% goal ({len(below)}): " in table
    assert all(f"`{key}` {records[key]['metrics']['top1']:.2f}%" in table for key in below)
    assert any(row.startswith("| `reactnet18.fashion_mnist` | `reactnet_two_step` | 2+2 |") for row in rows)
    assert any(row.endswith("| 225.16M (64x64) |") for row in rows)  # dorefanet's input
    bireal = [row.split("`")[1] for row in rows if row.startswith("| `birealnet")]
    assert bireal == [f"birealnet{d}.fashion_mnist" for d in (18, 34, 50, 101, 152)][:len(bireal)]
    readme = (ROOT / "README.md").read_text()
    assert f"{zoo_table.README_START}\n{table}\n{zoo_table.README_END}" in readme, \
        "README's published sets differ from the manifest: run python benchmarks/zoo_table.py"


def test_storage_table_is_the_weights_folders():
    table = zoo_table.storage_table(ROOT / "weights")
    readme = (ROOT / "README.md").read_text()
    assert f"{zoo_table.STORAGE_START}\n{table}\n{zoo_table.STORAGE_END}" in readme, \
        "README's storage table differs from weights/: run python benchmarks/zoo_table.py"
    files = list((ROOT / "weights").glob("*.h5"))
    assert table.endswith(f"{len(files)} weight files, "
                          f"{sum(p.stat().st_size for p in files) / 1e6:.1f} MB in `weights/`")


def test_cost_per_epoch_is_the_records_measured_training_time():
    record = {"training": {"epochs": 8, "seconds": 1920.0, "seconds_per_epoch": 240.0,
                           "hardware": {"cpus": 2, "gpus": 0}}}
    assert zoo_table._cost_per_epoch(record) == "4.0 (2 CPUs)"
    record["training"]["hardware"] = None  # a run older than the hardware field
    assert zoo_table._cost_per_epoch(record) == "4.0"
    assert zoo_table._cost_per_epoch({}) == "-"  # published before training times were kept


def test_replace_between_rewrites_only_the_marked_part(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("top\n<!-- a -->\nold\n<!-- b -->\nbottom\n")
    replace_between(readme, "<!-- a -->", "<!-- b -->", "new")
    replace_between(readme, "<!-- a -->", "<!-- b -->", "new")  # idempotent
    assert readme.read_text() == "top\n<!-- a -->\nnew\n<!-- b -->\nbottom\n"
    readme.write_text("<!-- b -->\n<!-- a -->\n")
    with pytest.raises(ValueError, match="has no markers"):
        replace_between(readme, "<!-- a -->", "<!-- b -->", "new")
    assert readme.read_text() == "<!-- b -->\n<!-- a -->\n"
