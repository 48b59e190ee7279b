"""Compatibility alias: the window shapes now live in :mod:`av_snn_ros.contract` (one owner).

Kept because ``ros/classifier_node.py`` (outside the backends) imports ``expected_shapes`` from here;
new code imports :func:`av_snn_ros.contract.input_shapes` and :func:`~av_snn_ros.contract.check_inputs`.
"""
from ..contract import check_inputs, input_shapes as expected_shapes

__all__ = ['check_inputs', 'expected_shapes']
