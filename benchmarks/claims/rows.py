"""The claims, as data: one :class:`Claim` per seed-paper comparison, its arms as ``zoo``
commands, its dataset, budget and seeds.

An arm is a list of :class:`Step` s, each the arguments of one ``zoo`` command (without
the leading ``zoo``). Placeholders filled in by the runner:

- ``{seed}``: the seed of the run (0, 1, 2, ...);
- ``{out}``: the step's own output directory;
- ``{step[NAME][KEY]}``: KEY of the JSON that an earlier step NAME printed (e.g.
  ``{step[search][arch]}``, the architecture a ``zoo search`` found), or ``out``
  for its output directory (e.g. ``{step[teacher][out]}``).

A step marked ``shared`` runs once for all seeds (e.g. a teacher). The last step of an
arm prints the metrics (``--format json``). Budgets are set so that one arm takes
about 10 CPU-minutes on 2 cores; :data:`STEP_TIMES` holds the step times measured to
set them.
"""
from __future__ import annotations

import dataclasses
from typing import List, Sequence, Tuple

DATASET = "fashion_mnist"

# Seconds per training step at batch 128, 28x28x3 Fashion-MNIST inputs, measured with
# Keras fit (tf.keras, 2 CPU cores shared with other jobs, so an upper bound), used to
# set the budgets below: budget.train_steps * step time + one test pass per epoch.
# Two passes gave 0.28 and 1.28 s for reactnet18: the numbers vary 2-4x with the load.
STEP_TIMES = {
    "birealnet18": 0.32,
    "birealnet18 shortcut=per_two_convs": 0.37,
    "birealnet18 activation=ste_sign binary_weights=sign": 0.39,
    "birealnet18 binary_weights=latent_free (Bop)": 0.46,
    "resnet18": 0.39,
    "reactnet18": 0.28,
    "reactnet18 activations=sign_prelu": 0.64,
    "spos": 0.35,
    "metapruning_mobilenet_v1": 0.32,
    "bmes width=1.0": 1.17,
    "bmes width=0.5": 0.64,
    "bmes width=0.25": 0.135,
    "resnet18 pretrain --ssl moco --unmix": 2.0,
}


@dataclasses.dataclass(frozen=True)
class Budget:
    """What every arm of a claim trains with: ``--epochs`` (per recipe stage), the first
    ``--limit`` training images, ``--batch-size``; the test split is the full one."""

    epochs: int
    limit: int
    batch_size: int = 128
    stages: int = 1  # recipe stages, each ``epochs`` long
    image_size: int = 28  # Fashion-MNIST's own size (the pipeline makes it 28x28x3)

    def args(self) -> List[str]:
        return ["--epochs", str(self.epochs), "--limit", str(self.limit),
                "--batch-size", str(self.batch_size), "--image-size", str(self.image_size)]

    @property
    def train_steps(self) -> int:
        return self.stages * self.epochs * -(-self.limit // self.batch_size)

    def describe(self) -> str:
        stages = f" x {self.stages} stages" if self.stages > 1 else ""
        return (f"{self.epochs} epochs{stages} on {self.limit} training images, batch "
                f"{self.batch_size}, {self.image_size}x{self.image_size} ({self.train_steps} steps)")


@dataclasses.dataclass(frozen=True)
class Step:
    name: str
    argv: Tuple[str, ...]
    shared: bool = False  # once for all seeds (its seed is 0)


@dataclasses.dataclass(frozen=True)
class Arm:
    name: str
    steps: Tuple[Step, ...]
    label: str = ""


@dataclasses.dataclass(frozen=True)
class Comparison:
    """The claim "``better`` beats ``baseline`` on ``metric`` by more than ``margin``"
    (``margin < 0``: parity, no worse by more than ``-margin`` points)."""

    better: str
    baseline: str
    metric: str = "top1"
    margin: float = 0.0


@dataclasses.dataclass(frozen=True)
class Claim:
    key: str
    paper: str
    claim: str
    arms: Tuple[Arm, ...]
    comparisons: Tuple[Comparison, ...]
    budget: Budget
    note: str = ""
    dataset: str = DATASET
    seeds: int = 3  # at least; 5 where the margin lies within 2 std

    def arm(self, name: str) -> Arm:
        for arm in self.arms:
            if arm.name == name:
                return arm
        raise KeyError(f"claim {self.key} has no arm {name!r}")


def _train(model: str, budget: Budget, *extra: str) -> Step:
    return Step("train", ("train", model, "--dataset", DATASET, *budget.args(), *extra,
                          "--seed", "{seed}", "--output", "{out}", "--format", "json"))


def _model_set(**overrides) -> Tuple[str, str]:
    """``--set model_overrides={...}``: builder switches for every recipe stage."""
    import json

    return ("--set", "model_overrides=" + json.dumps(overrides, separators=(",", ":")))


def _arm(name: str, label: str, *steps: Step) -> Arm:
    return Arm(name, tuple(steps), label)


# --------------------------------------------------------------------------- Bi-Real Net
BIREAL = "Bi-Real Net (1808.00278)"
BIREAL_BUDGET = Budget(epochs=8, limit=20000)  # 1256 steps x 0.32 s + 8 test passes ~ 8 min
BIREAL_TWO_STEP = Budget(epochs=4, limit=20000, stages=4)  # ReLU, leaky-clip, clip real stages, then binary
_BIREAL_ADAM = ("--recipe", "birealnet_adam")


def _bireal(*extra: str, budget: Budget = BIREAL_BUDGET) -> Step:
    return _train("birealnet18", budget, *extra)


# --------------------------------------------------------------------------- searches
SEARCH_BUDGET = Budget(epochs=5, limit=16000)  # the retraining of each architecture
# a short search: supernet 2 epochs, 3 generations of 8 scored on 1,000 held-out images.
# Measured (SPOS, loaded machine): ~2 min to trace the supernet's train step, ~7 s to
# recalibrate and score a candidate; about 6 min in all, then ~4 min of retraining
_SEARCH = ("--image-size", "28", "--limit", "12000", "--eval-limit", "1000", "--population", "8",
           "--generations", "3", "--mutations", "4", "--crossovers", "4", "--random-baseline", "3",
           "--recalibration-batches", "5", "--supernet-epochs", "2")
# one architecture drawn uniformly under the same limit: a search of one random candidate
# on an untrained supernet (its score is ignored), the CLI's way to draw it
_RANDOM = ("--image-size", "28", "--limit", "12000", "--eval-limit", "128", "--population", "1",
           "--generations", "1", "--random-baseline", "1", "--recalibration-batches", "1",
           "--supernet-epochs", "0")


def _search(method: str, options: Sequence[str], *extra: str) -> Step:
    return Step("search", ("search", method, "--dataset", DATASET, *options, *extra,
                           "--seed", "{seed}", "--output", "{out}", "--format", "json"))


def _searched_vs_random(method: str, model: str, budget: Budget, *extra_search: str,
                        train_extra: Sequence[str] = ()) -> Tuple[Arm, Arm]:
    retrain = _train(model, budget, "--arch", "{step[search][arch]}", *train_extra)
    return (_arm("searched", "searched architecture, retrained",
                 _search(method, _SEARCH, *extra_search), retrain),
            _arm("random", "random architecture under the same limit, retrained",
                 _search(method, _RANDOM, *extra_search), retrain))


# MetaPruning's baseline: the uniformly pruned MobileNetV1, every width at 76% (~0.76x, the
# paper's 0.75x; 61% of the unpruned FLOPs), whose FLOPs at 28x28 are the search's limit
# (tests/test_claims.py checks the number)
METAPRUNING_UNIFORM = "-".join(["76"] * 13)
METAPRUNING_UNIFORM_FLOPS = 6_618_779
METAPRUNING_TRAIN = ("--recipe", "metapruning_mobilenet", "--lr", "0.0625")  # 0.5 x 128 / 1024
BMES_WIDTH = "0.25"  # 0.135 s/step (0.64 at width 0.5, 1.17 at 1.0)
BMES_BUDGET = Budget(epochs=5, limit=20000, stages=2)

# --------------------------------------------------------------------------- ReActNet
# 474 steps x 0.28-1.28 s (two measurements) + the teacher's forward passes
REACT_BUDGET = Budget(epochs=3, limit=10000, stages=2)
REACT_ABLATION = Budget(epochs=6, limit=10000)  # sign_prelu measured at 0.64 s/step
TEACHER_BUDGET = Budget(epochs=8, limit=20000)

# --------------------------------------------------------------------------- mixing
CUTMIX_BUDGET = Budget(epochs=15, limit=8000)  # few images, many epochs: room to overfit
# MoCo + Un-Mix on ResNet-18: ~2 s/step, ~70 s to trace, and 3 min for the kNN + linear
# probe on the full splits (measured on a loaded machine): 200 steps keep an arm near 10 min
UNMIX_BUDGET = Budget(epochs=5, limit=5000)


def _pretrain(ssl: str, unmix: bool) -> Tuple[Step, Step]:
    pretrain = Step("pretrain", ("pretrain", "resnet18", "--ssl", ssl, *(("--unmix",) if unmix else ()),
                                 "--dataset", DATASET, *UNMIX_BUDGET.args(), "--knn-every", "0",
                                 "--seed", "{seed}", "--output", "{out}", "--format", "json"))
    evaluate = Step("evaluate", ("evaluate", "resnet18", "--weights", "{step[pretrain][out]}",
                                 "--knn", "--linear-probe", "--format", "json"))
    return pretrain, evaluate


def _unmix_claim(key: str, ssl: str, name: str) -> "Claim":
    return Claim(
        key=key, paper="Un-Mix (2003.05438)",
        claim=f"{name} with Un-Mix beats {name} without it (kNN and linear probe)",
        arms=(_arm("unmix", f"{name} + Un-Mix", *_pretrain(ssl, True)),
              _arm("plain", name, *_pretrain(ssl, False))),
        comparisons=(Comparison("unmix", "plain", "knn_top1"),
                     Comparison("unmix", "plain", "linear_top1")),
        budget=UNMIX_BUDGET,
        note="real ResNet-18 backbone (the paper's); kNN k=200, t=0.1 on the full test split")


_SPOS = _searched_vs_random("spos", "spos", SEARCH_BUDGET)
_METAPRUNING_SEARCH = _train("metapruning_mobilenet_v1", SEARCH_BUDGET, "--arch",
                             "{step[search][arch]}", *METAPRUNING_TRAIN)
_BMES = _searched_vs_random("bmes", "bmes", BMES_BUDGET, "--set", f"width={BMES_WIDTH}")

CLAIMS: Tuple[Claim, ...] = (
    Claim(
        key="bireal_shortcut", paper=BIREAL,
        claim="a real shortcut around every binary conv beats one per two convs (plain binary ResNet-18)",
        arms=(_arm("per_conv", "Bi-Real-18", _bireal(*_BIREAL_ADAM)),
              _arm("per_two_convs", "binary ResNet-18",
                   _bireal(*_BIREAL_ADAM, *_model_set(shortcut="per_two_convs")))),
        comparisons=(Comparison("per_conv", "per_two_convs"),),
        budget=BIREAL_BUDGET, note="recipe birealnet_adam (Adam 1e-3 linear to 0)"),
    Claim(
        key="bireal_approxsign", paper=BIREAL,
        claim="ApproxSign's gradient beats the straight-through sign",
        arms=(_arm("approx_sign", "ApproxSign", _bireal(*_BIREAL_ADAM)),
              _arm("ste_sign", "straight-through sign",
                   _bireal(*_BIREAL_ADAM, *_model_set(activation="ste_sign")))),
        comparisons=(Comparison("approx_sign", "ste_sign"),),
        budget=BIREAL_BUDGET, note="recipe birealnet_adam"),
    Claim(
        key="bireal_magnitude", paper=BIREAL,
        claim="magnitude-aware sign weights beat plain sign weights",
        arms=(_arm("magnitude_aware", "magnitude-aware sign", _bireal(*_BIREAL_ADAM)),
              _arm("sign", "plain sign", _bireal(*_BIREAL_ADAM, *_model_set(binary_weights="sign")))),
        comparisons=(Comparison("magnitude_aware", "sign"),),
        budget=BIREAL_BUDGET, note="recipe birealnet_adam"),
    Claim(
        key="bireal_pretrain", paper=BIREAL,
        claim="initialising from the clip-pretrained real network beats training from scratch",
        arms=(_arm("pretrained", "clip pre-training, then binary",
                   _bireal("--recipe", "birealnet_two_step", budget=BIREAL_TWO_STEP)),
              _arm("scratch", "binary from scratch (same stages, no transfer)",
                   _bireal("--recipe", "birealnet_two_step", "--set", "init_from_previous=false",
                           budget=BIREAL_TWO_STEP))),
        comparisons=(Comparison("pretrained", "scratch"),),
        budget=BIREAL_TWO_STEP,
        note="recipe birealnet_two_step; both arms run all four stages (real ReLU, leaky-clip "
             "and clip pre-training, then binary); the scratch arm transfers no weights between "
             "stages, so its binary stage starts from a fresh init and is the same length"),
    Claim(
        key="reactnet_rsign_rprelu", paper="ReActNet (2003.03488)",
        claim="RSign + RPReLU beat Sign + PReLU on the same backbone",
        arms=(_arm("rsign_rprelu", "RSign + RPReLU",
                   _train("reactnet18", REACT_ABLATION, *_BIREAL_ADAM)),
              _arm("sign_prelu", "Sign + PReLU",
                   _train("reactnet18", REACT_ABLATION, *_BIREAL_ADAM,
                          *_model_set(activations="sign_prelu")))),
        comparisons=(Comparison("rsign_rprelu", "sign_prelu"),),
        budget=REACT_ABLATION,
        note="ReAct-ResNet-18, one stage of Adam with cross-entropy (birealnet_adam): `--set "
             "model_overrides` replaces every stage's, which would drop step 1's real weights "
             "of reactnet_two_step"),
    Claim(
        key="reactnet_distill", paper="ReActNet (2003.03488)",
        claim="the distributional loss from a real teacher beats cross-entropy, same epochs",
        arms=(_arm("distill", "distributional loss",
                   Step("teacher", _train("resnet18", TEACHER_BUDGET).argv, shared=True),
                   _train("reactnet18", REACT_BUDGET, "--recipe", "reactnet_two_step",
                          "--teacher", "{step[teacher][out]}")),
              _arm("cross_entropy", "cross-entropy",
                   _train("reactnet18", REACT_BUDGET, "--recipe", "reactnet_two_step",
                          "--set", "distill=false"))),
        comparisons=(Comparison("distill", "cross_entropy"),),
        budget=REACT_BUDGET,
        note="teacher: a real ResNet-18 trained once (seed 0, 8 epochs on 20000 images)"),
    Claim(
        key="bop", paper="Bop (1906.02107)",
        claim="Bop on latent-free +-1 kernels is at least on par with Adam on latent weights",
        arms=(_arm("bop", "Bop", _bireal("--recipe", "birealnet_bop")),
              _arm("adam", "Adam", _bireal(*_BIREAL_ADAM))),
        comparisons=(Comparison("bop", "adam", margin=-0.5),),
        budget=BIREAL_BUDGET,
        note="Bi-Real-18; birealnet_bop (the paper's ImageNet settings) vs birealnet_adam, both "
             "at batch 128; parity: Bop no worse than Adam by more than 0.5 points"),
    Claim(
        key="spos", paper="SPOS (1904.00420)",
        claim="the searched architecture beats random architectures under the same FLOPs limit, "
              "each retrained from scratch",
        arms=_SPOS, comparisons=(Comparison("searched", "random"),), budget=SEARCH_BUDGET,
        note="search: supernet 2 epochs, 3 generations of 8 (one search per seed); random: one "
             "architecture per seed, drawn by a one-candidate search of an untrained supernet "
             "(~3.5 min, its score unused); both retrained with resnet_adam"),
    Claim(
        key="metapruning", paper="MetaPruning (1903.10258)",
        claim="the searched widths beat uniform pruning at the same FLOPs, retrained from scratch",
        arms=(_arm("searched", "searched widths",
                   _search("metapruning_mobilenet_v1", _SEARCH, "--max-ops",
                           str(METAPRUNING_UNIFORM_FLOPS)), _METAPRUNING_SEARCH),
              _arm("uniform", "uniform 76% widths",
                   _train("metapruning_mobilenet_v1", SEARCH_BUDGET, "--arch", METAPRUNING_UNIFORM,
                          *METAPRUNING_TRAIN))),
        comparisons=(Comparison("searched", "uniform"),), budget=SEARCH_BUDGET,
        note="MobileNetV1 1.0x; limit = FLOPs of the uniform 76% network; SGD 0.0625 "
             "(the paper's 0.5 at batch 1024, scaled to 128)"),
    Claim(
        key="bmes", paper="Binary MobileNet group search (2005.06305)",
        claim="the searched group counts beat random ones under the same OPs limit, each "
              "retrained from scratch",
        arms=_BMES, comparisons=(Comparison("searched", "random"),), budget=BMES_BUDGET,
        note=f"width {BMES_WIDTH}; recipe bmes_two_step; search as for SPOS"),
    Claim(
        key="attentive_cutmix", paper="Attentive CutMix (2003.13048)",
        claim="attentive CutMix beats CutMix and no mixing",
        arms=(_arm("attentive_cutmix", "attentive CutMix",
                   _bireal(*_BIREAL_ADAM, "--augment", "attentive_cutmix", "--augment-arg",
                           "extractor=resnet18.fashion_mnist", budget=CUTMIX_BUDGET)),
              _arm("cutmix", "CutMix", _bireal(*_BIREAL_ADAM, "--augment", "cutmix",
                                               budget=CUTMIX_BUDGET)),
              _arm("none", "no mixing", _bireal(*_BIREAL_ADAM, budget=CUTMIX_BUDGET))),
        comparisons=(Comparison("attentive_cutmix", "cutmix"),
                     Comparison("attentive_cutmix", "none")),
        budget=CUTMIX_BUDGET,
        note="Bi-Real-18; extractor: the published real-valued resnet18.fashion_mnist "
             "(the paper's is a real ImageNet classifier)"),
    _unmix_claim("unmix_moco", "moco", "MoCo v2"),
    _unmix_claim("unmix_simclr", "simclr", "SimCLR"),
)


def get_claim(key: str) -> Claim:
    for claim in CLAIMS:
        if claim.key == key:
            return claim
    raise KeyError(f"unknown claim {key!r}; claims are: {', '.join(c.key for c in CLAIMS)}")
