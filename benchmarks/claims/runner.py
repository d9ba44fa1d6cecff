"""Run each (claim, arm, seed) not yet in the results file, as subprocesses of the real
``zoo`` CLI, and append one JSON line per finished run.

The results file is the only state that counts: a line is appended (one ``write`` on
an ``O_APPEND`` file, then ``fsync``) only when every step of the run has finished, so
a run killed half-way leaves nothing and is redone next time. Steps write into
``runs/claims/CLAIM/ARM/seedN/STEP`` (``runs/claims/CLAIM/_shared/STEP`` for a step
shared by all seeds); a step that finished keeps ``claims_step.json`` there and is not
run again with the same arguments; a step directory without it (or with other
arguments) is removed and the step rerun (an unfinished ``zoo search`` directory is
kept: the search resumes from it). A command that another claim or arm already ran
with the same arguments and seed (the default Bi-Real-18 arm is in four claims) is not
run again: its result is reused (``runs/claims/_commands`` indexes them).
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

from benchmarks.claims import stats
from benchmarks.claims.commands import fill, override_budget
from benchmarks.claims.rows import Arm, Claim

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results" / "claims.jsonl"
WORK = ROOT / "runs" / "claims"
STEP_DONE = "claims_step.json"
MAX_SEEDS = 5
ZOO = [sys.executable, "-c", "from zoo.cli import main; main()"]  # `zoo` of this checkout


def read_results(path: Path = RESULTS) -> List[Dict[str, Any]]:
    """Every complete record of ``path`` (a torn last line of a killed writer is skipped)."""
    if not Path(path).exists():
        return []
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and {"claim", "arm", "seed", "metrics"} <= set(record):
            records.append(record)
    return records


def append_result(path: Path, record: Mapping[str, Any]) -> None:
    """Append ``record`` as one line with a single write (O_APPEND), then fsync."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        if os.fstat(fd).st_size:  # a torn last line of a killed writer must not swallow this one
            with open(path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    line = b"\n" + line
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def budget_id(claim: Claim, overrides: Mapping[str, Optional[int]]) -> str:
    """What a record's numbers were measured at: only records at a claim's current budget count."""
    extra = ", ".join(f"{k}={v}" for k, v in sorted(overrides.items()) if v is not None)
    return claim.budget.describe() + (f" [override {extra}]" if extra else "")


def finished(records: Iterable[Mapping[str, Any]], claim: Claim, budget: str) -> Dict[str, set]:
    """arm name -> seeds with a record for ``claim`` at ``budget``."""
    done: Dict[str, set] = {arm.name: set() for arm in claim.arms}
    for record in records:
        if record["claim"] == claim.key and record.get("budget") == budget and record["arm"] in done:
            done[record["arm"]].add(int(record["seed"]))
    return done


def metric_values(records, claim: Claim, arm: str, metric: str, budget: str) -> List[float]:
    """One value per seed (the first record of a seed counts)."""
    seen, values = set(), []
    for record in records:
        if (record["claim"], record["arm"], record.get("budget")) != (claim.key, arm, budget):
            continue
        if record["seed"] in seen or metric not in record["metrics"]:
            continue
        seen.add(record["seed"])
        values.append(float(record["metrics"][metric]))
    return values


def seeds_wanted(claim: Claim, records, budget: str) -> int:
    """``claim.seeds`` (3), or 5 once a comparison's margin lies within 2 std."""
    for comparison in claim.comparisons:
        a = metric_values(records, claim, comparison.better, comparison.metric, budget)
        b = metric_values(records, claim, comparison.baseline, comparison.metric, budget)
        if min(len(a), len(b)) >= claim.seeds and stats.needs_more_seeds(a, b):
            return max(claim.seeds, MAX_SEEDS)
    return claim.seeds


def _last_json(text: str) -> Dict[str, Any]:
    """The JSON object a ``zoo ... --format json`` command printed last on stdout (it
    runs to the end; anything printed before it is skipped)."""
    lines = text.splitlines(keepends=True)
    for index, line in enumerate(lines):
        if line.startswith("{"):
            try:
                return json.loads("".join(lines[index:]))
            except json.JSONDecodeError:
                continue
    raise ValueError("no JSON object at the end of stdout")


def _command_key(argv: Sequence[str], out: Path) -> List[str]:
    """``argv`` with its own output directory blanked: equal keys are the same run."""
    return [a.replace(str(out), "{out}") for a in argv]


def _same_command(argv: Sequence[str], out: Path, work: Path) -> Path:
    digest = hashlib.sha1(json.dumps(_command_key(argv, out)).encode()).hexdigest()[:20]
    return work / "_commands" / f"{digest}.json"


def _done_elsewhere(argv: Sequence[str], out: Path, work: Path) -> Optional[Dict[str, Any]]:
    """The finished step of another claim or arm that ran this very command (e.g. the
    default Bi-Real-18 arm that several claims share), if it is still there."""
    index = _same_command(argv, out, work)
    if not index.exists():
        return None
    other = Path(json.loads(index.read_text())["out"])
    if other == out or not (other / STEP_DONE).exists():
        return None
    saved = json.loads((other / STEP_DONE).read_text())
    if _command_key(saved["argv"], other) != _command_key(argv, out):
        return None
    return {**saved, "same_as": str(other)}


def _write_json(path: Path, payload: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=str))
    os.replace(tmp, path)


def run_step(argv: Sequence[str], out: Path, log: Path, dry_run: bool = False,
             work: Path = WORK) -> Dict[str, Any]:
    """Run ``zoo ARGV`` unless it finished before, here or (the same command) in another
    claim or arm; its JSON output plus ``out``, the run directory."""
    done = out / STEP_DONE
    saved = json.loads(done.read_text()) if done.exists() else None
    if saved is not None and saved["argv"] == list(argv):
        return {**saved["result"], "out": saved.get("same_as", str(out))}
    print("  $ zoo " + " ".join(shlex.quote(a) for a in argv), file=sys.stderr, flush=True)
    if dry_run:
        return {"out": str(out), "dry_run": True}
    # an interrupted step starts again (a search resumes); a step done with other
    # arguments (the budget changed) is thrown away
    if out.exists() and (saved is not None or argv[0] != "search"):
        shutil.rmtree(out)
    other = _done_elsewhere(argv, out, work)
    if other is not None:
        print(f"    (the same command finished in {other['same_as']}: its result is reused)",
              file=sys.stderr, flush=True)
        _write_json(done, {"argv": list(argv), "seconds": 0.0, "result": other["result"],
                           "same_as": other["same_as"]})
        return {**other["result"], "out": other["same_as"]}
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    with open(log, "w") as err:
        proc = subprocess.run([*ZOO, *argv], stdout=subprocess.PIPE, stderr=err, text=True,
                              cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"`zoo {argv[0]}` failed with status {proc.returncode}; see {log}")
    result = _last_json(proc.stdout)
    _write_json(done, {"argv": list(argv), "seconds": round(time.time() - started, 1),
                       "result": result})
    _write_json(_same_command(argv, out, work), {"out": str(out)})
    return {**result, "out": str(out)}


def run_arm(claim: Claim, arm: Arm, seed: int, *, work: Path = WORK,
            overrides: Mapping[str, Optional[int]] = None, dry_run: bool = False
            ) -> Optional[Dict[str, Any]]:
    """Every step of ``arm`` at ``seed``; the record to append (None on a dry run)."""
    overrides = overrides or {}
    steps: Dict[str, Any] = {}
    commands, started, result = [], time.time(), {}
    for step in arm.steps:
        step_seed = 0 if step.shared else seed
        base = work / claim.key / ("_shared" if step.shared else f"{arm.name}/seed{seed}")
        out = base / step.name
        argv = override_budget(fill(step.argv, step_seed, str(out), steps), overrides)
        commands.append("zoo " + " ".join(shlex.quote(a) for a in argv))
        result = run_step(argv, out, base / f"{step.name}.log", dry_run, work)
        steps[step.name] = result
    if dry_run:
        return None
    metrics = sorted({c.metric for c in claim.comparisons})
    missing = [m for m in metrics if m not in result]
    if missing:
        raise RuntimeError(f"{claim.key}/{arm.name}: the last step printed no {missing}")
    return {"claim": claim.key, "arm": arm.name, "seed": seed,
            "metrics": {m: float(result[m]) for m in metrics},
            "budget": budget_id(claim, overrides), "commands": commands,
            "seconds": round(time.time() - started, 1),
            "finished": datetime.datetime.now().isoformat(timespec="seconds")}


def run_claims(claims: Sequence[Claim], *, seeds: Optional[int] = None, results: Path = RESULTS,
               work: Path = WORK, overrides: Optional[Mapping[str, Optional[int]]] = None,
               dry_run: bool = False) -> int:
    """Run what is missing, seed by seed (every arm of seed 0, then seed 1, ...), so an
    interrupted sitting leaves the arms balanced. Returns the number of runs done."""
    overrides = dict(overrides or {})
    count = 0
    for claim in claims:
        budget = budget_id(claim, overrides)
        seed = 0
        while True:
            records = read_results(results)
            wanted = seeds if seeds is not None else seeds_wanted(claim, records, budget)
            if seed >= wanted:
                break
            done = finished(records, claim, budget)
            for arm in claim.arms:
                if seed in done[arm.name]:
                    continue
                print(f"[claims] {claim.key} / {arm.name} / seed {seed} ({budget})",
                      file=sys.stderr, flush=True)
                record = run_arm(claim, arm, seed, work=work, overrides=overrides,
                                 dry_run=dry_run)
                if record is not None:
                    append_result(results, record)
                    count += 1
                    print(f"[claims]   -> {record['metrics']} in {record['seconds']:.0f}s",
                          file=sys.stderr, flush=True)
            seed += 1
    return count
