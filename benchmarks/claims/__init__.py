"""Does it reproduce? Each seed paper's central claim, re-run at small scale with seeds.

- :mod:`benchmarks.claims.rows`: the claims as data (arms as ``zoo`` commands, budgets);
- :mod:`benchmarks.claims.runner`: runs what is missing, appends to ``claims.jsonl``;
- :mod:`benchmarks.claims.table`: ``claims.md`` and ``claims.png`` from the stored results;
- :mod:`benchmarks.claims.stats`: mean, std, Welch's interval, verdicts.

``python -m benchmarks.claims run [CLAIM ...]`` then ``python -m benchmarks.claims table``.
"""
