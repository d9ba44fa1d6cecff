"""Model entries: one module per paper; importing them registers them."""
from zoo.models import birealnet, larq_zoo_models, resnet  # noqa: F401
from zoo.models import binarynet  # noqa: F401,E402  (BinaryNet; latent-free switch of xnornet for Bop)
from zoo.models import reactnet  # noqa: F401,E402  (ReActNet-A/B/C, ReAct-ResNet-18)
from zoo.models import bmes  # noqa: F401,E402  (binary MobileNet with searched group convs)
from zoo.models import spos  # noqa: F401,E402  (Single Path One-Shot supernet and searched nets)
from zoo.models import metapruning  # noqa: F401,E402  (MetaPruning MobileNetV1/V2, PruningNets)
