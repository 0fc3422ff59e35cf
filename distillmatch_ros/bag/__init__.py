"""Recording tools: make a two-camera bag, replay one through the node's pipeline (bag-eval),
and the out-of-the-box demo. Bags are read and written with ``rosbags`` only (no rclpy)."""
