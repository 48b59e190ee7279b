"""Optional outputs in the message types other ROS packages expect, beside ``av_snn_msgs/Classification``.

* ``vision_classification`` (``vision_msgs/Classification``) with ``label_info`` (``vision_msgs/LabelInfo``,
  transient local, published once at configure): the generic classifier output of vision_msgs 4.x.
* ``expression`` (``hri_msgs/Expression``, REP-155): for emotion models, the recognised expression.

Each is switched on by a parameter (``output.vision_msgs``, ``output.hri_expression``) and needs its
message package (``ros-<distro>-vision-msgs``; hri_msgs from ros4hri). The conversions are plain
functions of a :class:`~av_snn_ros.prediction.Prediction`; field mapping in docs/runtime.md.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .conversions import ns_to_stamp

VISION_TOPIC = 'vision_classification'
LABEL_INFO_TOPIC = 'label_info'
EXPRESSION_TOPIC = 'expression'

#: model label (lower case) -> REP-155 expression (hri_msgs/Expression constants). RAVDESS names its
#: classes neutral, calm, happy, sad, angry, fearful, disgust(ed), surprised; CREMA-D uses NEU, HAP, SAD,
#: FEA, DIS, ANG. REP-155 calls fear "scared" and has no "calm": calm (RAVDESS' low-arousal neutral) is
#: reported as neutral, its probability added to neutral's.
EXPRESSIONS = {
    'neutral': 'neutral', 'neu': 'neutral', 'calm': 'neutral',
    'happy': 'happy', 'happiness': 'happy', 'hap': 'happy',
    'sad': 'sad', 'sadness': 'sad',
    'angry': 'angry', 'anger': 'angry', 'ang': 'angry',
    'fearful': 'scared', 'fear': 'scared', 'fea': 'scared', 'scared': 'scared',
    'disgusted': 'disgusted', 'disgust': 'disgusted', 'dis': 'disgusted',
    'surprised': 'surprised', 'surprise': 'surprised',
}


def _import(package: str, parameter: str):
    try:
        return __import__(f'{package}.msg', fromlist=['msg'])
    except ImportError as exc:
        raise ValueError(f'{parameter} is true but the {package} message package is not installed '
                         f'({exc}); install ros-$ROS_DISTRO-{package.replace("_", "-")} or set {parameter} '
                         'false') from None


def vision_classification(prediction, frame_id: str = ''):
    """``vision_msgs/Classification``: one ``ObjectHypothesis`` per label, best first.

    ``class_id`` is the label's index as a string (looked up in ``label_info``), ``score`` its
    probability; ``header`` is the window end (sensor time) and the camera's frame, as in our message.
    """
    from vision_msgs.msg import Classification, ObjectHypothesis
    msg = Classification()
    msg.header.stamp = ns_to_stamp(prediction.end_ns)
    msg.header.frame_id = frame_id
    scores = np.asarray(prediction.scores, dtype=np.float64)
    order = np.argsort(-scores, kind='stable')
    msg.results = [ObjectHypothesis(class_id=str(int(i)), score=float(scores[i])) for i in order]
    return msg


def label_info(labels: Sequence[str], threshold: float = 0.0):
    """``vision_msgs/LabelInfo``: ``class_map`` index -> label name, as ``vision_classification`` uses."""
    from vision_msgs.msg import LabelInfo, VisionClass
    return LabelInfo(class_map=[VisionClass(class_id=i, class_name=str(name)) for i, name in enumerate(labels)],
                     threshold=float(threshold))


def expression_of_labels(labels: Sequence[str]) -> list[str]:
    """REP-155 expression of every label; ``ValueError`` naming those that are not emotions."""
    unknown = [name for name in labels if name.lower() not in EXPRESSIONS]
    if unknown:
        raise ValueError(f'output.hri_expression needs emotion labels; the model has {unknown} '
                         f'(known: {", ".join(sorted(EXPRESSIONS))})')
    return [EXPRESSIONS[name.lower()] for name in labels]


def expression(prediction, expressions: Sequence[str], frame_id: str = ''):
    """``hri_msgs/Expression``: the expression with the highest summed probability of its labels.

    ``expressions`` is :func:`expression_of_labels` of the prediction's labels. ``valence`` and
    ``arousal`` are left 0: the model does not estimate them.
    """
    from hri_msgs.msg import Expression
    totals: dict[str, float] = {}
    for name, p in zip(expressions, np.asarray(prediction.scores, dtype=np.float64)):
        totals[name] = totals.get(name, 0.0) + float(p)
    best = max(totals, key=totals.get)
    msg = Expression(expression=best, confidence=float(min(1.0, totals[best])))
    msg.header.stamp = ns_to_stamp(prediction.end_ns)
    msg.header.frame_id = frame_id
    return msg


@dataclass
class StandardOutputs:
    """The enabled standard outputs of one configured node (publishers made by :meth:`create`)."""

    labels: list[str]
    vision: bool = False
    expressions: list[str] | None = None            # set when the Expression output is on
    _pubs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def plan(cls, labels: Sequence[str], vision: bool, hri_expression: bool) -> 'StandardOutputs':
        """Check the switches against the installed packages and the model's labels (``ValueError``)."""
        if vision:
            _import('vision_msgs', 'output.vision_msgs')
        expressions = None
        if hri_expression:
            _import('hri_msgs', 'output.hri_expression')
            expressions = expression_of_labels(labels)
        return cls(list(labels), vision, expressions)

    def create(self, node, output_qos) -> None:
        """Lifecycle publishers for the results (active with the node); ``label_info`` is a plain
        transient-local publisher, sent once now, so late subscribers get it too."""
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        if self.vision:
            from vision_msgs.msg import Classification, LabelInfo
            self._pubs['vision'] = node.create_lifecycle_publisher(Classification, VISION_TOPIC, output_qos)
            latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                 durability=DurabilityPolicy.TRANSIENT_LOCAL)
            self._pubs['label_info'] = node.create_publisher(LabelInfo, LABEL_INFO_TOPIC, latched)
            info = label_info(self.labels)
            info.header.stamp = node.get_clock().now().to_msg()
            self._pubs['label_info'].publish(info)
        if self.expressions is not None:
            from hri_msgs.msg import Expression
            self._pubs['expression'] = node.create_lifecycle_publisher(Expression, EXPRESSION_TOPIC, output_qos)

    def publish(self, prediction, frame_id: str) -> None:
        pub = self._pubs.get('vision')
        if pub is not None:
            pub.publish(vision_classification(prediction, frame_id))
        pub = self._pubs.get('expression')
        if pub is not None:
            pub.publish(expression(prediction, self.expressions, frame_id))

    def destroy(self, node) -> None:
        for name, pub in self._pubs.items():
            if name == 'label_info':
                node.destroy_publisher(pub)
            else:
                node.destroy_lifecycle_publisher(pub)
        self._pubs = {}
