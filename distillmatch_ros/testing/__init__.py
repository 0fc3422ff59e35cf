"""Helpers shared by the tests (test/) and the benchmarks (benchmarks/), run from the source tree.

Nothing is imported here, so importing a submodule loads only what it needs (none of them
imports rclpy at module import time). Paths to repository files (config/) are resolved from the
source checkout, so these helpers are not meant for an installed package.
"""
