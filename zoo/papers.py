"""The papers the zoo implements: one record each, used by models, recipes and searches."""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Paper:
    """Where an entry comes from."""

    arxiv: str
    title: str
    venue: str = ""

    @property
    def url(self) -> str:
        return f"https://arxiv.org/abs/{self.arxiv}"


BIREAL = Paper("1808.00278", "Bi-Real Net: Enhancing the Performance of 1-bit CNNs with Improved "
               "Representational Capability and Advanced Training Algorithm", "ECCV 2018")
BIREAL_IJCV = Paper("1811.01335", "Bi-Real Net: Binarizing Deep Network Towards Real-Network "
                    "Performance", "IJCV 2020")
REACTNET = Paper("2003.03488", "ReActNet: Towards Precise Binary Neural Network with Generalized "
                 "Activation Functions", "ECCV 2020")
BOP = Paper("1906.02107", "Latent Weights Do Not Exist: Rethinking Binarized Neural Network "
            "Optimization", "NeurIPS 2019")
SPOS = Paper("1904.00420", "Single Path One-Shot Neural Architecture Search with Uniform "
             "Sampling", "ECCV 2020")
METAPRUNING = Paper("1903.10258", "MetaPruning: Meta Learning for Automatic Neural Network "
                    "Channel Pruning", "ICCV 2019")
BMES = Paper("2005.06305", "Binarizing MobileNet via Evolution-based Searching", "CVPR 2020")
RESNET = Paper("1512.03385", "Deep Residual Learning for Image Recognition", "CVPR 2016")
BNN = Paper("1602.02830", "Binarized Neural Networks", "NeurIPS 2016")
XNOR = Paper("1603.05279", "XNOR-Net: ImageNet Classification Using Binary Convolutional Neural "
             "Networks", "ECCV 2016")
DOREFA = Paper("1606.06160", "DoReFa-Net: Training Low Bitwidth Convolutional Neural Networks with "
               "Low Bitwidth Gradients")
BDENSE = Paper("1906.08637", "Back to Simplicity: How to Train Accurate BNNs from Scratch?")
MELIUS = Paper("2001.05936", "MeliusNet: Can Binary Neural Networks Achieve MobileNet-level "
               "Accuracy?")
R2B = Paper("2003.11535", "Training Binary Neural Networks with Real-to-Binary Convolutions",
            "ICLR 2020")
LCE = Paper("2011.09398", "Larq Compute Engine: Design, Benchmark, and Deploy State-of-the-Art "
            "Binarized Neural Networks", "MLSys 2021")
LARQ_ZOO_BIREAL = Paper("1808.00278", "Bi-Real Net (larq-zoo's Keras implementation)", "ECCV 2018")
