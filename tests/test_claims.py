"""benchmarks/claims: the statistics, verdicts and table on fixed numbers, the runner
with a stand-in for the CLI, and every claim's commands against the real CLI parser.
No training."""
import json
import sys

import pytest

from benchmarks.claims import runner, stats, table
from benchmarks.claims.commands import check_step, fill, override_budget
from benchmarks.claims.rows import CLAIMS, Arm, Budget, Claim, Comparison, Step, get_claim
from zoo.api import get_entry
from zoo.training.recipes import get_recipe


def test_mean_and_sample_std():
    assert stats.mean([80.0, 81.0, 82.0]) == 81.0
    assert stats.std([80.0, 81.0, 82.0]) == pytest.approx(1.0)
    assert stats.std([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]) == pytest.approx(2.13808993)
    assert stats.std([5.0]) == 0.0


@pytest.mark.parametrize("df, expected", [(1, 12.7062047), (2, 4.3026527), (4, 2.7764451),
                                          (10, 2.2281389), (7.5, 2.3326), (1000, 1.9623391)])
def test_t_quantile_matches_tables(df, expected):
    assert stats.t_quantile(0.975, df) == pytest.approx(expected, rel=2e-4)


def test_welch_interval_by_hand():
    # equal variances 1, n = 3 each: se = sqrt(2/3), Welch df = 4, t = 2.776445
    diff = stats.welch([80.0, 81.0, 82.0], [78.0, 79.0, 80.0])
    half = 2.7764451 * (2.0 / 3.0) ** 0.5
    assert diff.delta == pytest.approx(2.0)
    assert diff.df == pytest.approx(4.0)
    assert (diff.low, diff.high) == pytest.approx((2.0 - half, 2.0 + half), rel=1e-5)
    # unequal variances: df from Welch-Satterthwaite
    a, b = [1.0, 2.0, 3.0, 4.0], [10.0, 10.5, 11.0]
    va, vb = stats.std(a) ** 2 / 4, stats.std(b) ** 2 / 3
    diff = stats.welch(a, b)
    assert diff.df == pytest.approx((va + vb) ** 2 / (va ** 2 / 3 + vb ** 2 / 2))
    with pytest.raises(ValueError):
        stats.welch([1.0], [2.0, 3.0])
    assert stats.welch([1.0, 1.0], [0.0, 0.0]) == stats.Difference(1.0, 1.0, 1.0, None)


def test_verdicts():
    reproduced = stats.welch([85.0, 85.5, 86.0], [80.0, 80.5, 81.0])
    assert (reproduced.low, reproduced.high) == pytest.approx((3.8665, 6.1335), abs=1e-3)
    assert stats.verdict(reproduced) == stats.REPRODUCED
    assert stats.verdict(stats.welch([80.0, 80.5, 81.0], [85.0, 85.5, 86.0])) == stats.NOT_REPRODUCED
    assert stats.verdict(stats.welch([80.0, 81.0, 82.0], [78.0, 79.0, 80.0])) == stats.INCONCLUSIVE
    assert stats.verdict(None) == stats.TOO_FEW
    # parity within 0.5 pt: -0.1 [-0.33, +0.13] is reproduced, -2 [-2.23, -1.77] is not
    parity = stats.welch([80.0, 80.1, 80.2], [80.1, 80.2, 80.3])
    assert stats.verdict(parity, margin=-0.5) == stats.REPRODUCED
    assert stats.verdict(parity, margin=0.0) == stats.INCONCLUSIVE
    worse = stats.welch([78.1, 78.2, 78.3], [80.1, 80.2, 80.3])
    assert stats.verdict(worse, margin=-0.5) == stats.NOT_REPRODUCED
    # a tie the interval pins down: not reproduced once a minimal effect is asked for
    assert stats.verdict(parity, min_effect=0.5) == stats.NOT_REPRODUCED


def test_five_seeds_when_the_margin_is_within_two_std():
    assert stats.needs_more_seeds([80.0, 81.0, 82.0], [79.0, 80.0, 81.0])  # 1 < 2 x 1
    assert not stats.needs_more_seeds([85.0, 85.5, 86.0], [80.0, 80.5, 81.0])
    assert not stats.needs_more_seeds([80.0], [79.0])


def _claim(budget=Budget(epochs=1, limit=128)):
    def arm(name, *extra):
        return Arm(name, (Step("train", ("train", "birealnet18", *budget.args(), *extra,
                                         "--seed", "{seed}", "--output", "{out}",
                                         "--format", "json")),), label=name.upper())
    return Claim(key="toy", paper="Toy (0000.00000)", claim="A beats B",
                 arms=(arm("a"), arm("b", "--lr", "0.01")),
                 comparisons=(Comparison("a", "b"),), budget=budget, note="a toy")


def _records(claim, a, b, budget=None):
    budget = budget or runner.budget_id(claim, {})
    return ([{"claim": claim.key, "arm": "a", "seed": i, "metrics": {"top1": v}, "budget": budget}
             for i, v in enumerate(a)]
            + [{"claim": claim.key, "arm": "b", "seed": i, "metrics": {"top1": v}, "budget": budget}
               for i, v in enumerate(b)])


def test_table_on_fixed_numbers(tmp_path):
    claim = _claim()
    records = _records(claim, [80.0, 81.0, 82.0], [78.0, 79.0, 80.0])
    # a record at another budget and a second record of a seed do not count
    records += [{"claim": "toy", "arm": "a", "seed": 3, "metrics": {"top1": 10.0}, "budget": "x"},
                {"claim": "toy", "arm": "a", "seed": 0, "metrics": {"top1": 10.0},
                 "budget": runner.budget_id(claim, {})}]
    (summary,) = table.summarize(claim, records)
    assert (summary.better.mean, summary.better.std, summary.better.n) == (81.0, 1.0, 3)
    assert summary.verdict == stats.INCONCLUSIVE
    text = table.markdown([claim], records, "CMD")
    assert "A: 81.00 ± 1.00 (n=3)" in text and "B: 79.00 ± 1.00 (n=3)" in text
    assert "+2.00 [-0.27, +4.27]" in text and "| inconclusive |" in text
    assert "1 epochs on 128 training images" in text and "`CMD`" in text
    reproduced = table.markdown([claim], _records(claim, [85.0, 85.5, 86.0], [80.0, 80.5, 81.0]), "C")
    assert "+5.00 [+3.87, +6.13] | reproduced |" in reproduced
    not_reproduced = table.markdown([claim], _records(claim, [80.0, 80.5, 81.0], [85.0, 85.5, 86.0]), "C")
    assert "| not reproduced |" in not_reproduced
    empty = table.markdown([claim], [], "C")
    assert "A: not run" in empty and "| not run |" in empty
    png = table.plot([claim, claim], records, tmp_path / "claims.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_readme_table_is_rewritten_between_its_markers(tmp_path):
    claim = _claim()
    readme = tmp_path / "README.md"
    readme.write_text(f"# top\n{table.README_START}\nold rows\n{table.README_END}\nbelow\n")
    rows = table.readme_table([claim], _records(claim, [85.0, 85.5, 86.0], [80.0, 80.5, 81.0]))
    table.update_readme(readme, rows)
    table.update_readme(readme, rows)  # idempotent
    text = readme.read_text()
    assert "old rows" not in text and text.startswith("# top\n") and text.endswith("below\n")
    assert text.count("| toy | A: 85.50 ± 0.50 (n=3) | B: 80.50 ± 0.50 (n=3) | "
                      "+5.00 [+3.87, +6.13] | reproduced |") == 1
    readme.write_text("no markers\n")
    with pytest.raises(ValueError, match="no claims-table markers"):
        table.update_readme(readme, rows)
    assert readme.read_text() == "no markers\n"  # left as it was


def test_results_file_appends_whole_lines_and_skips_a_torn_one(tmp_path):
    path = tmp_path / "claims.jsonl"
    runner.append_result(path, {"claim": "toy", "arm": "a", "seed": 0, "metrics": {"top1": 1.0}})
    with open(path, "a") as f:
        f.write('{"claim": "toy", "arm": "b", "se')  # a writer killed mid-line
    runner.append_result(path, {"claim": "toy", "arm": "a", "seed": 1, "metrics": {"top1": 2.0}})
    records = runner.read_results(path)
    assert [(r["arm"], r["seed"]) for r in records] == [("a", 0), ("a", 1)]
    assert runner.read_results(tmp_path / "missing.jsonl") == []


# a stand-in for `zoo`: prints the JSON of a finished run; top-1 = 80 + seed (+ 5 for --lr 0.01)
_FAKE_ZOO = (
    "import json, sys\n"
    "argv = sys.argv[1:]\n"
    "assert argv[0] == 'train' and '{' not in ' '.join(argv), argv\n"
    "seed = int(argv[argv.index('--seed') + 1])\n"
    "print('some log line')\n"
    "print(json.dumps({'top1': 80.0 + seed + (5.0 if '--lr' in argv else 0.0),"
    " 'epochs': int(argv[argv.index('--epochs') + 1])}, indent=2))\n"
)


def test_runner_resumes_and_builds_the_table(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "ZOO", [sys.executable, "-c", _FAKE_ZOO])
    claim, results, work = _claim(), tmp_path / "claims.jsonl", tmp_path / "work"
    assert runner.run_claims([claim], results=results, work=work) == 6
    records = runner.read_results(results)
    assert sorted((r["arm"], r["seed"]) for r in records) == [(a, s) for a in "ab" for s in range(3)]
    assert {r["arm"]: r["metrics"]["top1"] for r in records if r["seed"] == 2} == {"a": 82.0, "b": 87.0}
    assert records[0]["commands"][0].startswith("zoo train birealnet18 --epochs 1 --limit 128")
    assert (work / "toy" / "a" / "seed0" / "train" / runner.STEP_DONE).exists()
    # nothing is missing: a second sitting runs nothing; a lost record is redone from its step
    assert runner.run_claims([claim], results=results, work=work) == 0
    lines = results.read_text().splitlines()
    results.write_text("\n".join(lines[:-1]) + "\n")
    assert runner.run_claims([claim], results=results, work=work) == 1
    # b is 5 points better with std 1: the claim "a beats b" is not reproduced; 3 seeds suffice
    (summary,) = table.summarize(claim, runner.read_results(results))
    assert summary.difference.delta == pytest.approx(-5.0) and summary.verdict == stats.NOT_REPRODUCED
    assert runner.seeds_wanted(claim, runner.read_results(results), runner.budget_id(claim, {})) == 3
    # a new budget: every run again, none from the steps done at the old one
    longer = _claim(Budget(epochs=2, limit=128))
    assert runner.run_claims([longer], results=results, work=work) == 6
    step = json.loads((work / "toy" / "b" / "seed1" / "train" / runner.STEP_DONE).read_text())
    assert step["argv"][:3] == ["train", "birealnet18", "--epochs"] and step["argv"][3] == "2"
    assert step["result"]["epochs"] == 2
    # a budget override is another budget: its records are kept apart
    smoke = tmp_path / "smoke.jsonl"
    assert runner.run_claims([claim], seeds=1, results=smoke, work=tmp_path / "w2",
                             overrides={"epochs": 2, "limit": 64}) == 2
    (record, _) = runner.read_results(smoke)
    assert "--epochs 2 --limit 64" in record["commands"][0]
    assert record["budget"].endswith("[override epochs=2, limit=64]")
    assert table.summarize(claim, runner.read_results(smoke))[0].better.n == 0


def test_five_seeds_are_run_when_the_margin_is_within_two_std(tmp_path, monkeypatch):
    noisy = _FAKE_ZOO.replace("80.0 + seed + (5.0", "80.0 + 3 * seed + (1.0")
    monkeypatch.setattr(runner, "ZOO", [sys.executable, "-c", noisy])
    claim, results = _claim(), tmp_path / "claims.jsonl"
    assert runner.run_claims([claim], results=results, work=tmp_path / "w") == 10
    assert runner.seeds_wanted(claim, runner.read_results(results), runner.budget_id(claim, {})) == 5


def test_fill_and_override():
    argv = fill(("train", "x", "--arch", "{step[search][arch]}", "--seed", "{seed}", "--output",
                 "{out}", "--teacher", "{step[teacher][out]}"), 4, "/o",
                {"search": {"arch": "1-2"}, "teacher": {"out": "/t"}})
    assert argv == ["train", "x", "--arch", "1-2", "--seed", "4", "--output", "/o", "--teacher", "/t"]
    assert override_budget(["train", "x", "--epochs", "8"], {"epochs": 1, "eval_limit": 32}) == [
        "train", "x", "--epochs", "1", "--eval-limit", "32"]
    assert override_budget(["search", "spos", "--limit", "9", "--supernet-epochs", "2"],
                           {"limit": 1, "epochs": 1}) == [
        "search", "spos", "--limit", "1", "--supernet-epochs", "1"]
    assert override_budget(["search", "spos", "--supernet-epochs", "0"], {"epochs": 1}) == [
        "search", "spos", "--supernet-epochs", "0"]
    assert override_budget(["evaluate", "x", "--limit", "9"], {"limit": 1}) == ["evaluate", "x", "--limit", "9"]


def test_claims_cover_every_row_of_the_issue():
    keys = [c.key for c in CLAIMS]
    assert keys == ["bireal_shortcut", "bireal_approxsign", "bireal_magnitude", "bireal_pretrain",
                    "reactnet_rsign_rprelu", "reactnet_distill", "bop", "spos", "metapruning",
                    "bmes", "attentive_cutmix", "unmix_moco", "unmix_simclr"]
    for claim in CLAIMS:
        assert claim.seeds >= 3 and claim.dataset == "fashion_mnist"
        names = {arm.name for arm in claim.arms}
        for comparison in claim.comparisons:
            assert {comparison.better, comparison.baseline} <= names
        for arm in claim.arms:
            assert "--format" in arm.steps[-1].argv  # the last step prints its metrics as JSON
    assert {c.metric for c in get_claim("unmix_moco").comparisons} == {"knn_top1", "linear_top1"}


@pytest.mark.parametrize("claim", CLAIMS, ids=lambda c: c.key)
def test_every_arm_is_a_valid_zoo_command(claim):
    for arm in claim.arms:
        for step in arm.steps:
            params = check_step(step)
            if step.argv[0] == "train" and step is arm.steps[-1]:  # the measured run
                assert params["epochs"] == claim.budget.epochs
                assert params["limit"] == claim.budget.limit
                assert params["seed"] == 0 and params["image_size"] == 28
                # the budget's stage count (its steps, its label) is the recipe's
                recipe = get_recipe(params["recipe"] or get_entry(params["name"]).default_recipe)
                assert len(recipe.stages) == claim.budget.stages, (claim.key, recipe.name)


def test_a_bad_arm_is_caught_by_the_check():
    import click

    from zoo.errors import ZooError

    with pytest.raises(click.UsageError):
        check_step(Step("train", ("train", "birealnet18", "--epoch", "1")))
    with pytest.raises(ZooError, match="setting"):
        check_step(Step("train", ("train", "birealnet18", "--set", "no_such_setting=1")))
    with pytest.raises(ValueError, match="shortcut"):
        check_step(Step("train", ("train", "birealnet18", "--set",
                                  'model_overrides={"shortcut":"per_three_convs"}')))
    with pytest.raises(ZooError):
        check_step(Step("search", ("search", "no_such_search")))


def test_metapruning_limit_is_the_uniform_networks_flops():
    from zoo.models import metapruning as mp
    from zoo.search.metapruning import MetaPruningSpace
    from benchmarks.claims import rows

    space = MetaPruningSpace("v1", 1.0, (28, 28, 3), 10)
    genes = tuple(mp.RATIO_PERCENTS.index(int(p)) for p in rows.METAPRUNING_UNIFORM.split("-"))
    assert space.cost(genes) == rows.METAPRUNING_UNIFORM_FLOPS
    assert space.cost(genes) / space.full_cost() == pytest.approx(0.61, abs=0.01)  # 0.76 ** 2 + first conv, head


def test_a_command_two_claims_share_runs_once(tmp_path, monkeypatch):
    counting = _FAKE_ZOO + ("import os\n"
                            "open(os.environ['CLAIMS_FAKE_LOG'], 'a').write(' '.join(argv) + '\\n')\n")
    monkeypatch.setattr(runner, "ZOO", [sys.executable, "-c", counting])
    monkeypatch.setenv("CLAIMS_FAKE_LOG", str(tmp_path / "calls.txt"))
    first = _claim()
    second = Claim(key="toy2", paper="p", claim="c", budget=first.budget, note="",
                   arms=(first.arm("a"), first.arm("b")), comparisons=first.comparisons)
    assert runner.run_claims([first, second], seeds=1, results=tmp_path / "r.jsonl",
                             work=tmp_path / "w") == 4
    calls = (tmp_path / "calls.txt").read_text().splitlines()
    assert len(calls) == 2  # toy2's arms are toy's commands: their results are reused
    records = runner.read_results(tmp_path / "r.jsonl")
    assert {(r["claim"], r["arm"]): r["metrics"]["top1"] for r in records} == {
        ("toy", "a"): 80.0, ("toy", "b"): 85.0, ("toy2", "a"): 80.0, ("toy2", "b"): 85.0}
    step = json.loads((tmp_path / "w" / "toy2" / "a" / "seed0" / "train" / runner.STEP_DONE).read_text())
    assert step["same_as"] == str(tmp_path / "w" / "toy" / "a" / "seed0" / "train")
