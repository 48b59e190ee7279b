"""``python -m av_snn_ros.tools.onnx_checks MODEL.onnx``: print the TensorRT-readiness report of an ONNX file.

The checks are :func:`av_snn_ros.backends.onnx_graph.check_onnx_for_tensorrt` (the TensorRT backend
quotes them when a build fails); runtime agreement is :func:`av_snn_ros.parity.compare_runtimes`.
Exit status 1 when the report has errors.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..backends.onnx_graph import check_onnx_for_tensorrt


def main(argv: list[str] | None = None) -> int:
    """Check one ONNX file and print the report (text or ``--json``); 0 when it has no errors."""
    parser = argparse.ArgumentParser(prog='python -m av_snn_ros.tools.onnx_checks',
                                     description='Check an ONNX file for a static TensorRT build.')
    parser.add_argument('onnx', type=Path, help='the .onnx file')
    parser.add_argument('--strict', action='store_true', help='leftover constant subgraphs are errors')
    parser.add_argument('--no-fold', action='store_true', help='skip the trial constant folding')
    parser.add_argument('--json', action='store_true', help='print the report as JSON')
    args = parser.parse_args(argv)
    report = check_onnx_for_tensorrt(args.onnx, fold=not args.no_fold, strict=args.strict)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.summary())
    return 0 if report.ok else 1


if __name__ == '__main__':
    sys.exit(main())
