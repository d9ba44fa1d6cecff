import re

from setuptools import find_packages, setup

# the version is written once, in zoo/_version.py
VERSION = re.search(r'__version__ = "([^"]+)"', open("zoo/_version.py", encoding="utf-8").read()).group(1)

setup(
    name="bnn-zoo",
    version=VERSION,
    description="A model zoo of binary neural networks for Keras, built on Larq",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    packages=find_packages(include=["zoo", "zoo.*"]),
    include_package_data=True,
    package_data={"zoo": ["imagenet_classes.txt", "models/index.json"]},  # index: `zoo list` without TensorFlow
    python_requires=">=3.10,<3.12",
    install_requires=[
        # The verified stack: larq-zoo pins protobuf<3.21, which caps TensorFlow at 2.19.
        "tensorflow==2.19.*",
        "tf-keras==2.19.*",
        "larq==0.14.0",
        "larq-zoo==2.4.0",
        "tensorflow-datasets==4.8.*",
        "protobuf<3.21",
        "click>=8",
        "numpy<2",
        "filelock>=3",
        "matplotlib>=3.5",
        "pillow",
    ],
    extras_require={
        "test": ["pytest>=7", "pytest-xdist>=3"],
        "deploy": ["larq-compute-engine==0.16.*"],
    },
    entry_points={"console_scripts": ["zoo=zoo.cli:main"]},
)
