"""Developer tools around the runtime: export, ONNX checks, bench (model timing, node replay), profiling.

The runtime core (everything in ``av_snn_ros`` outside ``tools/`` and ``ros/``) never imports this
package; tools may import the core and, for data sets, the training package.
"""
