#!/usr/bin/env python
"""Train a zoo model: the same command as `zoo train` (see `python train.py --help`)."""
from zoo.cli.training import train

if __name__ == "__main__":
    train.main(prog_name="train.py")
