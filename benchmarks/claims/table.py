"""``claims.md`` and ``claims.png`` from the stored results: per arm mean +- std, per
comparison the difference with Welch's 95% interval and a verdict, the budget per claim."""
from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from benchmarks.claims import stats
from benchmarks.claims.rows import Claim, Comparison
from benchmarks.claims.runner import budget_id, metric_values
from benchmarks.readme import replace_between

METRIC_LABELS = {"top1": "test top-1 (%)", "knn_top1": "kNN top-1 (%)",
                 "linear_top1": "linear-probe top-1 (%)"}


@dataclasses.dataclass(frozen=True)
class ArmSummary:
    arm: str
    label: str
    metric: str
    values: tuple

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> Optional[float]:
        return stats.mean(self.values) if self.values else None

    @property
    def std(self) -> Optional[float]:
        return stats.std(self.values) if self.values else None

    def text(self) -> str:
        if not self.values:
            return f"{self.label}: not run"
        return f"{self.label}: {self.mean:.2f} ± {self.std:.2f} (n={self.n})"


@dataclasses.dataclass(frozen=True)
class ComparisonSummary:
    claim: Claim
    comparison: Comparison
    better: ArmSummary
    baseline: ArmSummary
    difference: Optional[stats.Difference]
    verdict: str


def summarize_arm(claim: Claim, arm: str, metric: str, records, budget: str) -> ArmSummary:
    return ArmSummary(arm, claim.arm(arm).label or arm, metric,
                      tuple(metric_values(records, claim, arm, metric, budget)))


def summarize(claim: Claim, records: Sequence[Mapping[str, Any]],
              budget: Optional[str] = None) -> List[ComparisonSummary]:
    """One summary per comparison of ``claim``, from the records at ``budget`` (default:
    the claim's own budget without overrides)."""
    budget = budget_id(claim, {}) if budget is None else budget
    out = []
    for comparison in claim.comparisons:
        a = summarize_arm(claim, comparison.better, comparison.metric, records, budget)
        b = summarize_arm(claim, comparison.baseline, comparison.metric, records, budget)
        diff = stats.welch(a.values, b.values) if min(a.n, b.n) >= 2 else None
        out.append(ComparisonSummary(claim, comparison, a, b, diff,
                                     stats.verdict(diff, comparison.margin)))
    return out


def _difference_text(summary: ComparisonSummary) -> str:
    d = summary.difference
    if d is None:
        return "–"
    return f"{d.delta:+.2f} [{d.low:+.2f}, {d.high:+.2f}]"


def _claim_text(summary: ComparisonSummary) -> str:
    margin = summary.comparison.margin
    if margin < 0:
        return f"{summary.claim.claim} (within {-margin:g} pt)"
    return summary.claim.claim


def markdown(claims: Sequence[Claim], records: Sequence[Mapping[str, Any]], command: str) -> str:
    lines = [
        "# Does it reproduce?",
        "",
        "Each seed paper's central claim, re-run at small scale on Fashion-MNIST with several "
        "seeds. Per arm: mean ± standard deviation over seeds (n runs); difference: first arm "
        "minus second, with Welch's 95% interval; verdict: *reproduced* when the interval lies "
        "above the claimed margin, *not reproduced* when it lies below, otherwise "
        "*inconclusive at this budget*. Every number is a measured run stored in "
        "`benchmarks/results/claims.jsonl`; a claim without runs says *not run*.",
        "",
        f"Regenerate: `{command}`",
        "",
        "![one panel per claim: each arm's mean and std over seeds](claims.png)",
        "",
        "| claim | paper | metric | arm | baseline | difference [95% CI] | verdict | budget |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for claim in claims:
        for s in summarize(claim, records):
            lines.append(
                f"| {claim.key}: {_claim_text(s)} | {claim.paper} | "
                f"{METRIC_LABELS.get(s.comparison.metric, s.comparison.metric)} | "
                f"{s.better.text()} | {s.baseline.text()} | {_difference_text(s)} | "
                f"{s.verdict} | {claim.budget.describe()} |")
    lines += ["", "## Notes and commands", ""]
    for claim in claims:
        lines.append(f"- **{claim.key}**: {claim.note}.")
        for arm in claim.arms:
            commands = " then ".join("`zoo " + shlex.join(step.argv) + "`" for step in arm.steps)
            lines.append(f"  - {arm.name}: {commands}")
    return "\n".join(lines) + "\n"


def plot(claims: Sequence[Claim], records: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """One panel per claim: every arm's mean with its std as an error bar, per metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = 4
    rows = -(-len(claims) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.4 * rows), squeeze=False)
    for ax, claim in zip(axes.flat, claims):
        metrics = sorted({c.metric for c in claim.comparisons})
        budget = budget_id(claim, {})
        x, labels, any_values = 0, [], False
        for metric in metrics:
            for arm in claim.arms:
                s = summarize_arm(claim, arm.name, metric, records, budget)
                if s.values:
                    any_values = True
                    ax.bar(x, s.mean, yerr=s.std, capsize=4, color=f"C{claim.arms.index(arm)}")
                labels.append(arm.name + ("" if len(metrics) == 1 else f"\n{metric}")
                              + f"\nn={s.n}")
                x += 1
        ax.set_xlim(-0.6, len(labels) - 0.4)
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, fontsize=7, rotation=20)
        verdicts = "; ".join(s.verdict for s in summarize(claim, records))
        ax.set_title(f"{claim.key}\n{verdicts}", fontsize=9)
        ax.set_ylabel("top-1 (%)", fontsize=8)
        if any_values:
            lows = [v for r in records if r["claim"] == claim.key and r.get("budget") == budget
                    for v in r["metrics"].values()]
            ax.set_ylim(max(0.0, min(lows) - 3.0), min(100.0, max(lows) + 2.0))
        else:
            ax.text(0.5, 0.5, "not run yet", transform=ax.transAxes, ha="center", va="center")
    for ax in list(axes.flat)[len(claims):]:
        ax.axis("off")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


README_START = "<!-- claims table: written by `python -m benchmarks.claims table` -->"
README_END = "<!-- end of claims table -->"


def readme_table(claims: Sequence[Claim], records: Sequence[Mapping[str, Any]]) -> str:
    """The README's short table: one row per comparison (arms as mean ± std (n))."""
    lines = ["| claim | arm | baseline | difference [95% CI] | verdict |", "|---|---|---|---|---|"]
    for claim in claims:
        for s in summarize(claim, records):
            metric = "" if s.comparison.metric == "top1" else f" ({METRIC_LABELS[s.comparison.metric]})"
            lines.append(f"| {claim.key}{metric} | {s.better.text()} | {s.baseline.text()} | "
                         f"{_difference_text(s)} | {s.verdict} |")
    return "\n".join(lines)


def update_readme(readme: Path, table: str) -> None:
    """Replaces what lies between the README's two claims-table markers with ``table``."""
    try:
        replace_between(readme, README_START, README_END, table)
    except ValueError as error:
        raise ValueError(f"no claims-table markers: {error}") from None


def write_table(claims: Sequence[Claim], records, markdown_path: Path, png_path: Path,
                command: str, readme: Optional[Path] = None) -> None:
    markdown_path = Path(markdown_path)
    markdown_path.parent.mkdir(parents=True, exist_ok=True)
    markdown_path.write_text(markdown(claims, records, command))
    plot(claims, records, png_path)
    if readme is not None:
        update_readme(readme, readme_table(claims, records))
