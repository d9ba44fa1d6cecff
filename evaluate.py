#!/usr/bin/env python
"""Evaluate a zoo model: the same command as `zoo evaluate` (see `python evaluate.py --help`)."""
from zoo.cli.training import evaluate

if __name__ == "__main__":
    evaluate.main(prog_name="evaluate.py")
