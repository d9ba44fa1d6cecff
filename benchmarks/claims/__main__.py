"""``python -m benchmarks.claims list | run [CLAIM ...] | table``."""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from benchmarks.claims.rows import CLAIMS, get_claim
from benchmarks.claims.runner import RESULTS, ROOT, WORK, read_results, run_claims

TABLE_COMMAND = "python -m benchmarks.claims table"
README = ROOT / "README.md"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.claims", description=__doc__)
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="the claims, their arms and budgets")
    run = sub.add_parser("run", help="run every (claim, arm, seed) not in the results yet")
    run.add_argument("claims", nargs="*", help="claim keys (default: all, in table order)")
    run.add_argument("--seeds", type=int, default=None,
                     help="seeds per arm (default: 3, or 5 where the margin is within 2 std)")
    run.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    run.add_argument("--results", type=Path, default=RESULTS)
    run.add_argument("--work", type=Path, default=WORK, help="run directories of the steps")
    for option in ("epochs", "limit", "eval-limit"):
        run.add_argument(f"--{option}", type=int, default=None,
                         help=f"override every train/pretrain step's --{option} (smoke runs; "
                              "needs --results other than the default)")
    table = sub.add_parser("table", help="write claims.md and claims.png from the results")
    table.add_argument("--results", type=Path, default=RESULTS)
    table.add_argument("--output", type=Path, default=RESULTS.with_suffix(".md"))
    table.add_argument("--readme", type=Path, default=README,
                       help="README whose claims table is rewritten (default: the repository's)")
    args = parser.parse_args(argv)

    if args.action == "list":
        for claim in CLAIMS:
            print(f"{claim.key}: {claim.claim} [{claim.budget.describe()}]")
            for arm in claim.arms:
                print(f"  {arm.name}: " + " ; ".join("zoo " + shlex.join(s.argv) for s in arm.steps))
        return 0
    if args.action == "table":
        from benchmarks.claims.table import write_table

        write_table(CLAIMS, read_results(args.results), args.output,
                    args.output.with_suffix(".png"), TABLE_COMMAND, readme=args.readme)
        print(f"wrote {args.output}, {args.output.with_suffix('.png')} and the table in "
              f"{args.readme}", file=sys.stderr)
        return 0
    overrides = {"epochs": args.epochs, "limit": args.limit, "eval_limit": args.eval_limit}
    if any(v is not None for v in overrides.values()) and args.results.resolve() == RESULTS:
        parser.error("budget overrides are for smoke runs: pass --results OTHER.jsonl")
    try:
        claims = [get_claim(key) for key in args.claims] if args.claims else list(CLAIMS)
    except KeyError as error:
        parser.error(str(error.args[0]))
    done = run_claims(claims, seeds=args.seeds, results=args.results, work=args.work,
                      overrides=overrides, dry_run=args.dry_run)
    print(f"[claims] {done} run(s) appended to {args.results}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
