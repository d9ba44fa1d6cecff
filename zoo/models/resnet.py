"""Real-valued ResNet-18/34 (He et al., arXiv 1512.03385): the teachers of the
zoo's distillation recipes (ReActNet uses a ResNet-34 teacher) and the
full-precision reference the binary networks are compared with."""
from __future__ import annotations

import tensorflow as tf

from zoo import layers as zl
from zoo.registry import register_model
from zoo.papers import RESNET

REPEATS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}  # He et al. Tab. 1


def _block(x, filters, strides):
    shortcut = x
    if strides > 1 or x.shape[-1] != filters:
        shortcut = zl.batch_norm(zl.real_conv(x, filters, 1, strides=strides, kernel_initializer="he_normal"))
    y = zl.real_conv(x, filters, 3, strides=strides, kernel_initializer="he_normal")
    y = tf.keras.layers.ReLU()(zl.batch_norm(y))
    y = zl.batch_norm(zl.real_conv(y, filters, 3, kernel_initializer="he_normal"))
    return tf.keras.layers.ReLU()(tf.keras.layers.add([y, shortcut]))


def resnet(depth=18, *, include_top=True, weights=None, input_shape=None, input_tensor=None,
           num_classes=1000):
    """A real-valued ResNet with basic blocks."""
    inputs = zl.image_input(input_shape, input_tensor)
    x = zl.real_conv(inputs, 64, 7, strides=2, kernel_initializer="he_normal")
    x = tf.keras.layers.ReLU()(zl.batch_norm(x))
    x = tf.keras.layers.MaxPool2D(3, strides=2, padding="same")(x)
    for stage, blocks in enumerate(REPEATS[depth]):
        for block in range(blocks):
            x = _block(x, 64 * 2**stage, 2 if stage > 0 and block == 0 else 1)
    if include_top:
        x = zl.classifier_head(x, num_classes)
    return zl.finish_model(inputs, x, f"resnet{depth}", weights, input_tensor)


@register_model(paper=RESNET, family="resnet", binary=False, default_recipe="resnet_adam",
                reported={"imagenet2012": {"top1": 69.8, "top5": 89.1, "source": "torchvision"}})
def resnet18(**kwargs):
    """Real-valued ResNet-18 (a teacher / full-precision reference)."""
    return resnet(18, **kwargs)


@register_model(paper=RESNET, family="resnet", binary=False, default_recipe="resnet_adam",
                reported={"imagenet2012": {"top1": 73.3, "top5": 91.4, "source": "torchvision"}})
def resnet34(**kwargs):
    """Real-valued ResNet-34, ReActNet's teacher."""
    return resnet(34, **kwargs)
