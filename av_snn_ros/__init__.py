"""av_snn_ros: audio-visual spiking neural network perception for ROS 2.

Everything below ``av_snn_ros`` except ``av_snn_ros.ros`` is ROS-free (numpy/torch only) and unit-testable.
"""
__version__ = '0.1.0'
