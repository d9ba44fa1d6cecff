"""Model entries: one module per paper; importing them registers them."""
from zoo.models import birealnet, larq_zoo_models, resnet  # noqa: F401
