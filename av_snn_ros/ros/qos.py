"""QoS profiles of the node graph, built from parameters (no magic numbers at the call sites)."""
from __future__ import annotations

from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                       qos_profile_sensor_data)

#: depth of the classification output: a subscriber that stalls briefly still gets every result
OUTPUT_DEPTH = 10
#: depth of /diagnostics (the usual diagnostic_updater value)
DIAGNOSTICS_DEPTH = 10
#: depth of driver publishers (microphone, camera)
DRIVER_DEPTH = 10

_RELIABILITY = {'best_effort': ReliabilityPolicy.BEST_EFFORT, 'reliable': ReliabilityPolicy.RELIABLE}


def sensor_qos(reliability: str = 'best_effort', depth: int = qos_profile_sensor_data.depth) -> QoSProfile:
    """Subscription QoS for camera/microphone input: the sensor-data profile with the given reliability.

    Best effort (the default) drops rather than queues under load; reliable suits bag replay, where every
    message must arrive. Either matches a reliable publisher; best effort also matches best-effort ones.
    """
    if reliability not in _RELIABILITY:   # 'auto' is resolved by the node before it gets here
        raise ValueError(f'reliability must be one of {", ".join(_RELIABILITY)}, got {reliability!r}')
    if depth < 1:
        raise ValueError(f'depth must be >= 1, got {depth}')
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=_RELIABILITY[reliability],
                      durability=DurabilityPolicy.VOLATILE)


def output_qos() -> QoSProfile:
    """Reliable, volatile output (classifications)."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=OUTPUT_DEPTH,
                      reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)


def diagnostics_qos() -> QoSProfile:
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=DIAGNOSTICS_DEPTH,
                      reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)


def driver_qos(depth: int = DRIVER_DEPTH) -> QoSProfile:
    """Publisher QoS of the drivers: reliable, so both best-effort and reliable subscribers match."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)


#: reliability of an ``auto`` subscription while its topic has no publisher yet (matches any publisher)
NO_PUBLISHER_RELIABILITY = 'best_effort'


def publishers_reliability(profiles) -> str | None:
    """What ``qos.sensor.reliability: auto`` subscribes with, given the publishers' offered QoS profiles.

    Reliable when every publisher is reliable (a reliable subscription gets every message, e.g. large
    images that best effort loses in fragments), best effort when any publisher is best effort (a
    reliable subscription would not match it), None when there is no publisher to follow.
    """
    profiles = list(profiles)
    if not profiles:
        return None
    if all(p.reliability == ReliabilityPolicy.RELIABLE for p in profiles):
        return 'reliable'
    return 'best_effort'
