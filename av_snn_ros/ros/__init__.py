"""The only ROS-aware part of av_snn_ros: thin rclpy nodes over the pure modules."""
import os

# OpenMP worker threads spin after each parallel region by default. On a robot's few shared cores that
# made torch inference 10-50x slower (docs/performance.md); passive waiting costs nothing measurable when
# the cores are idle. It must be set before torch (and its OpenMP runtime) is imported, hence here.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
