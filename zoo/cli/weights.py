"""``zoo download``, ``zoo cache list|clear``, ``zoo publish`` and ``zoo predict``.

Added to the ``zoo`` group by zoo/cli/__init__.py. Data goes to stdout, progress to stderr; a ZooError is one
``Error:`` line on stderr and exit status 2 (ZooCommand).
"""
from __future__ import annotations

import json

import click

from zoo.cli._common import POSITIVE, zoo_command, ZooGroup, exit_on_sigterm, format_option, table
from zoo.settings import EVAL_BATCH_SIZE


def _human(size) -> str:
    if size is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024.0
    return str(size)


def _specs_for(names):
    """``NAME``, ``NAME.TAG`` or a wildcard over models with weights -> weight specs."""
    from zoo import api as zoo
    from zoo.errors import WeightsError
    from zoo.hub.spec import get_spec, split_tag

    specs = []
    for item in names:
        name, tag = split_tag(item)
        if any(c in name for c in "*?["):
            models = zoo.list_models(name, pretrained=True)
            if not models:
                raise WeightsError(f"No model with published weights matches {name!r} "
                                   f"(`zoo list --pretrained`).")
        else:
            models = [zoo.get_entry(name).name]
        for model in models:
            entry = zoo.get_entry(model)
            if tag is not None:
                specs.append(get_spec(entry, tag))
                continue
            if not entry.weights:
                raise WeightsError(f"{entry.name} has no published weights (`zoo list --pretrained`).")
            specs += [entry.weights[t] for t in sorted(entry.weights)]
    return specs


@zoo_command("download")
@click.argument("names", nargs=-1, required=True, metavar="NAME[.TAG]...")
@click.option("--files", "which", type=click.Choice(["all", "top", "notop"]), default="all",
              show_default=True, help="Which files of each weight set.")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="Cache root (default: $ZOO_HOME, else ~/.cache/zoo).")
@format_option
def download(names, which, cache_dir, fmt):
    """Fetch and verify published weights (every tag of NAME, or NAME.TAG; wildcards allowed).

    Files already present and verified (cache, ZOO_CACHE_PATH, weights/) are not
    downloaded again. ZOO_MIRROR replaces the download URLs; ZOO_OFFLINE=1 only checks.
    """
    from zoo import api  # noqa: F401  (the weight sets attached to their entries)
    from zoo.hub.cache import fetch

    rows = []
    for spec in _specs_for(names):
        for include_top in {"all": (True, False), "top": (True,), "notop": (False,)}[which]:
            if not include_top and spec.notop is None:
                continue
            path = fetch(spec, include_top=include_top, cache_dir=cache_dir)
            wf = spec.file(include_top)
            rows.append({"weights": spec.key, "file": "top" if include_top else "notop",
                         "name": wf.file, "sha256": wf.sha256, "path": str(path)})
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
    else:
        click.echo(table([(r["weights"], r["file"], r["sha256"][:12], r["path"]) for r in rows],
                          ("weights", "file", "sha256", "path")))


@click.group("cache", cls=ZooGroup)
def cache():
    """The weights cache ($ZOO_HOME, else ~/.cache/zoo): list or clear it."""


@cache.command("list")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="Cache root (default: $ZOO_HOME, else ~/.cache/zoo).")
@format_option
def cache_list(cache_dir, fmt):
    """Cached weight files, their weight set and whether they verify."""
    from zoo import api  # noqa: F401  (the records that name the cached files)
    from zoo.hub.cache import cached_files
    from zoo.settings import cache_root, cache_search_path as search_path

    rows = cached_files(cache_dir)
    if fmt == "json":
        click.echo(json.dumps({"cache_dir": str(cache_root(cache_dir)),
                               "search_path": [str(p) for p in search_path()],
                               "files": rows}, indent=2))
        return
    click.echo(f"cache: {cache_root(cache_dir) / 'weights'}", err=True)
    click.echo(table([(r["weights"] or "-", r["file"], _human(r["size"]), r["status"]) for r in rows],
                      ("weights", "file", "size", "status")))


@cache.command("clear")
@click.argument("model", required=False)
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="Cache root (default: $ZOO_HOME, else ~/.cache/zoo).")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def cache_clear(model, cache_dir, yes):
    """Delete cached weight files (all, or those of MODEL). Read-only folders are never touched."""
    from zoo import api as zoo
    from zoo.hub.cache import clear_cache
    from zoo.settings import cache_root

    if model is not None:
        model = zoo.get_entry(model).name
    target = cache_root(cache_dir) / "weights" / (model or "")
    if not yes:
        click.confirm(f"Delete the cached weights in {target}?", abort=True, err=True)
    removed = clear_cache(model, cache_dir)
    for path in removed:
        click.echo(path)
    click.echo(f"removed {len(removed)} file(s) from {target}", err=True)


@zoo_command("publish")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--tag", required=True, help="Tag of the new weight set, e.g. fashion_mnist.")
@click.option("--release-dir", type=click.Path(file_okay=False), default=None,
              help="Where the h5 files go (default: the manifest's folder, weights/).")
@click.option("--base-url", default=None,
              help="Download URL base, or a template with {model} {tag} {file} "
                   "(default: this project's GitHub release).")
@click.option("--manifest", type=click.Path(dir_okay=False), default=None,
              help="Manifest to add the record to (default: $ZOO_MANIFEST, else weights/manifest.json).")
@click.option("--eval-limit", type=POSITIVE, default=None, help="Evaluate on the first N test images only.")
@click.option("--batch-size", type=POSITIVE, default=EVAL_BATCH_SIZE, show_default=True)
@click.option("--notes", default=None, help="Free text stored in the record.")
@click.option("--supersede", is_flag=True,
              help="Replace the published MODEL.TAG with this retrained run, if it scores at least "
                   "as well; the old record is kept under \"supersedes\", its files removed.")
@format_option
def publish(run_dir, tag, release_dir, base_url, manifest, eval_limit, batch_size, notes, supersede,
            fmt):
    """Publish a `zoo train` run as weight set MODEL.TAG: one packed h5 file named with its
    sha256, test metrics, costs, recipe and versions in the manifest."""
    from zoo.hub.spec import manifest_path
    from zoo.publish import publish as publish_run

    exit_on_sigterm()  # an interrupted publish removes what it wrote
    spec = publish_run(run_dir, tag, release_dir=release_dir, base_url=base_url, manifest=manifest,
                       eval_limit=eval_limit, batch_size=batch_size, notes=notes,
                       supersede=supersede)
    if fmt == "json":
        click.echo(json.dumps({spec.key: spec.to_dict()}, indent=2))
        return
    metrics = spec.metrics
    click.echo(f"{spec.key}: top-1 {metrics['top1']:.2f}%  top-5 {metrics['top5']:.2f}% "
               f"({metrics['examples']} {metrics['split']} images)")
    for wf in spec.files():
        click.echo(f"  {wf.file}  sha256 {wf.sha256}  {_human(wf.size)}")
        click.echo(f"    upload to: {wf.urls[0] if wf.urls else '-'}")
    if spec.supersedes:
        old = spec.supersedes[0]
        click.echo(f"  replaces {', '.join(f['file'] for f in old['files'].values() if f)} "
                   f"(top-1 {old['metrics']['top1']:.2f}%)")
    click.echo(f"  record {'replaced' if spec.supersedes else 'added'} in {manifest_path(manifest)}")


@zoo_command("predict")
@click.argument("name", metavar="NAME[.TAG]")
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--weights", default=None,
              help="Weight set tag (default: NAME's only one), or an h5 file / run directory.")
@click.option("--dataset", default=None,
              help="With a weights file: the dataset it was trained on (default: from config.json).")
@click.option("--top", type=POSITIVE, default=5, show_default=True, help="How many classes per image.")
@format_option
def predict(name, images, weights, dataset, top, fmt):
    """Classify image files (PNG, JPEG, GIF, BMP): the top classes with probabilities."""
    from zoo.predict import predict as run_predict

    results, source = run_predict(name, images, weights=weights, top=top, dataset=dataset)
    records = [{"image": str(image), "weights": source,
                "predictions": [{"label": label, "probability": prob} for label, prob in rows]}
               for image, rows in zip(images, results)]
    if fmt == "json":
        click.echo(json.dumps(records, indent=2))
        return
    lines = []
    for record in records:
        lines.append(f"{record['image']}  ({record['weights']})")
        width = max(len(p["label"]) for p in record["predictions"])
        lines += [f"  {p['label'].ljust(width)}  {100 * p['probability']:6.2f}%"
                  for p in record["predictions"]]
    click.echo("\n".join(lines))
