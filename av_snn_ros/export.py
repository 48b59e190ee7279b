"""Compatibility alias of :mod:`av_snn_ros.tools.export` (the exporter moved into the tools layer).

Kept because the training package (``av_snn_training.trainer``) imports ``write_model_card`` from
here; new code imports :mod:`av_snn_ros.tools.export`. Nothing in the runtime core imports this module.
"""
from .tools.export import (CARD_FILE, ONNX_FILE, WEIGHTS_FILE, check_compatible, export_onnx,  # noqa: F401
                           preprocess_config_for, real_window, write_model_card)
