"""Self-supervised pre-training of zoo backbones: MoCo v2, SimCLR, BYOL, with or without Un-Mix.

``zoo pretrain NAME --ssl moco|simclr|byol [--unmix]`` trains the ``include_top=False``
backbone of any zoo entry (binary ones included); ``zoo evaluate NAME --weights
DIR --knn --linear-probe`` measures it (weighted kNN and a linear probe on the
frozen features). ``zoo list --kind ssl`` lists the methods.
"""
from __future__ import annotations


from zoo.registry import FactoryEntry, Registry
from zoo.schema import check_call_arguments
from zoo.ssl.byol import BYOL
from zoo.ssl.moco import MoCo
from zoo.ssl.simclr import SimCLR


SSLEntry = FactoryEntry
SSL_METHODS: Registry[SSLEntry] = Registry("ssl")
SSL_METHODS.register("moco", SSLEntry(
    "moco", MoCo, "MoCo v2: momentum key encoder, queue of negatives, MLP head", "2003.04297"),
    aliases=("moco_v2", "mocov2"))
SSL_METHODS.register("simclr", SSLEntry(
    "simclr", SimCLR, "SimCLR: NT-Xent between the 2N views of a batch, BN MLP head", "2002.05709"))
SSL_METHODS.register("byol", SSLEntry(
    "byol", BYOL, "BYOL: online predictor regresses a moving-average target, no negatives", "2006.07733"))


def get_method(name: str, **args):
    """A configured SSL method; ``args`` are its hyper-parameters (``--set KEY=VALUE``)."""
    entry = SSL_METHODS.get(name)
    args = check_call_arguments(entry.name, entry.factory.__init__, args, " (--set KEY=VALUE)")
    return entry.factory(**args)


__all__ = ["SSL_METHODS", "get_method", "MoCo", "SimCLR", "BYOL"]
