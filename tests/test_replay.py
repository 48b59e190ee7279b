"""Replay scoring (pure) and the replay through the real node graph (remapping, parity with av-snn eval)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from av_snn_ros.model_card import ModelCard
from av_snn_ros.replay import scoring
from av_snn_ros.replay.replay import ReplayError, _check_topics, parse_remaps

S = 1_000_000_000
LABELS = [str(d) for d in range(10)]


def span(i, cls):
    return scoring.Span(i * S, (i + 1) * S, cls, str(cls))


def pred(start_s, cls, latency=0.01, length_s=1.0):
    return scoring.Prediction(int(start_s * S), int((start_s + length_s) * S), cls, 0.9, str(cls), latency)


# ------------------------------------------------------------------------------------------ scoring

def test_each_span_takes_the_most_overlapping_window():
    spans = [span(0, 3), span(1, 4), span(2, 5)]
    # hop 0.5 s: aligned windows at 0, 1, 2 plus straddling ones at 0.5, 1.5 (wrong classes)
    preds = [pred(0, 3), pred(0.5, 9), pred(1, 4), pred(1.5, 9), pred(2, 1)]
    matches = scoring.match_predictions(spans, preds)
    assert [m.prediction.start_ns for m in matches] == [0, 1 * S, 2 * S]
    assert [m.correct for m in matches] == [True, True, False]
    assert [m.overlap_ns for m in matches] == [S, S, S]


def test_ties_go_to_the_earlier_window_and_unmatched_spans_are_missed():
    spans = [span(0, 1), span(5, 2)]
    preds = [pred(-0.5, 7), pred(0.5, 1)]               # both overlap span 0 by half
    matches = scoring.match_predictions(spans, preds)
    assert matches[0].prediction.class_id == 7 and not matches[0].correct
    assert matches[1].prediction is None and not matches[1].correct


def test_score_accuracy_recall_confusion_and_missed():
    spans = [span(0, 0), span(1, 0), span(2, 1), span(3, 2), span(10, 2)]
    preds = [pred(0, 0, 0.010), pred(1, 1, 0.020), pred(2, 1, 0.030), pred(3, 2, 0.040), pred(20, 5, 0.050)]
    report = scoring.score(spans, preds, LABELS)
    assert report['accuracy'] == pytest.approx(3 / 5)               # the missed span counts as wrong
    assert (report['correct'], report['missed'], report['num_spans']) == (3, 1, 5)
    assert report['per_class_recall']['0'] == pytest.approx(0.5)
    assert report['per_class_recall']['1'] == 1.0
    assert report['per_class_recall']['2'] == pytest.approx(0.5)
    assert report['per_class_recall']['7'] is None                  # no span of that class
    cm = np.array(report['confusion_matrix'])
    assert cm.shape == (10, 11) and cm.sum() == 5
    assert cm[0, 0] == 1 and cm[0, 1] == 1 and cm[2, 10] == 1
    assert report['unmatched_predictions'] == 1                     # the window at 20 s
    lat = report['latency_s']
    assert lat['count'] == 5 and lat['p50'] == pytest.approx(0.030) and lat['max'] == pytest.approx(0.050)
    json.dumps(report)                                              # JSON-ready


def test_unreadable_labels_count_as_not_scored():
    """Four readable labels of a bag that holds 25: 4/25, never 4/4."""
    spans = [span(i, i) for i in range(4)]
    result = scoring.score(spans, [pred(i, i) for i in range(4)], LABELS, unreadable_spans=21)
    assert (result['correct'], result['num_spans'], result['missed'], result['unreadable_spans']) == (4, 4, 0, 21)
    assert result['accuracy'] == pytest.approx(4 / 25)
    assert scoring.score([], [], LABELS, unreadable_spans=3)['accuracy'] == 0.0
    assert scoring.score([], [], LABELS)['accuracy'] is None
    with pytest.raises(ValueError, match='unreadable_spans'):
        scoring.score(spans, [], LABELS, unreadable_spans=-1)


def test_percentiles_ignore_missing_values():
    assert scoring.percentiles([]) == {'p50': None, 'p95': None, 'p99': None}
    p = scoring.percentiles([float('nan'), 1.0, 2.0, 3.0, None])
    assert p['p50'] == 2.0 and p['p95'] == pytest.approx(2.9)            # linear interpolation


def test_score_rejects_bad_input():
    with pytest.raises(ValueError, match='empty ground-truth span'):
        scoring.score([scoring.Span(S, S, 1)], [], LABELS)
    with pytest.raises(ValueError, match='outside'):
        scoring.score([span(0, 12)], [pred(0, 1)], LABELS)
    with pytest.raises(ValueError, match='outside'):
        scoring.score([span(0, 1)], [pred(0, 11)], LABELS)
    with pytest.raises(ValueError, match='labels'):
        scoring.score([], [], [])
    assert scoring.score([], [], LABELS)['accuracy'] is None


# ------------------------------------------------------------------------------------------ topics

def test_parse_remaps():
    assert parse_remaps(['/camera/image_raw:=/image', 'mic:=audio']) == {'/camera/image_raw': '/image',
                                                                          '/mic': '/audio'}
    for bad in ('/a', ':=/b', '/a:='):
        with pytest.raises(ValueError, match='bad remap'):
            parse_remaps([bad])


def test_topic_check_explains_missing_inputs():
    topics = {'/camera/image_raw': 'sensor_msgs/msg/Image', '/mic/audio': 'av_snn_msgs/msg/AudioChunk'}
    with pytest.raises(ReplayError, match='--remap /camera/image_raw:=/image'):
        _check_topics(topics, {})
    mapping, skipped = _check_topics(topics, {'/camera/image_raw': '/image', '/mic/audio': '/audio'})
    assert mapping == {'/camera/image_raw': '/image', '/mic/audio': '/audio'} and skipped == {}
    with pytest.raises(ReplayError, match='does not have'):
        _check_topics(topics, {'/nope': '/image'})


def test_topics_the_classifier_does_not_read_are_skipped_and_reported_not_refused():
    """A bag with one extra topic of a type not installed here used to be refused outright."""
    topics = {'/image': 'sensor_msgs/msg/Image', '/audio': 'av_snn_msgs/msg/AudioChunk',
              '/ground_truth': 'av_snn_msgs/msg/LabelStamped', '/robot/state': 'acme_msgs/msg/State',
              '/tf': 'tf2_msgs/msg/TFMessage', '/classification': 'av_snn_msgs/msg/Classification',
              '/image/compressed': 'sensor_msgs/msg/CompressedImage'}
    mapping, skipped = _check_topics(topics, {})
    assert mapping == {'/image': '/image', '/audio': '/audio', '/ground_truth': '/ground_truth'}
    assert set(skipped) == {'/robot/state', '/tf', '/classification', '/image/compressed'}
    assert 'acme_msgs/msg/State: not an input of the classifier' in skipped['/robot/state']
    assert 'also has raw images' in skipped['/image/compressed']
    # a topic remapped onto an input name but of another type is skipped too, with the type expected
    topics = {'/image': 'sensor_msgs/msg/Image', '/audio': 'av_snn_msgs/msg/AudioChunk',
              '/labels': 'std_msgs/msg/String'}
    mapping, skipped = _check_topics(topics, {'/labels': '/ground_truth'})
    assert mapping == {'/image': '/image', '/audio': '/audio'}
    assert 'on /ground_truth, where the classifier expects av_snn_msgs/msg/LabelStamped' in skipped['/labels']


def test_params_file_follows_the_replay_namespace(tmp_path):
    import yaml

    from av_snn_ros.replay.replay import namespaced_params_file
    src = tmp_path / 'src' / 'replay.yaml'
    src.parent.mkdir()
    src.write_text(yaml.safe_dump({'av_classifier': {'ros__parameters': {'window': {'hop_s': 0.25}}},
                                   '/**': {'ros__parameters': {'use_sim_time': False}},
                                   'camera': {'ros__parameters': {'fps': 30.0}}}))
    out = yaml.safe_load(namespaced_params_file(src, '/av_snn_replay_1/av_classifier', tmp_path).read_text())
    assert out == {'/av_snn_replay_1/av_classifier': {'ros__parameters': {'window': {'hop_s': 0.25}}},
                   '/**': {'ros__parameters': {'use_sim_time': False}},
                   'camera': {'ros__parameters': {'fps': 30.0}}}
    src.write_text('- not a mapping\n')
    with pytest.raises(ReplayError, match='not a ROS parameter file'):
        namespaced_params_file(src, '/x/av_classifier', tmp_path)


def test_bag_clock_never_runs_backwards_and_holds(ros_context):
    """The /clock the replayed node runs on (use_sim_time): bag time set per message, running on at the
    rate between messages, standing still while held, and never moving backwards."""
    import time

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rosgraph_msgs.msg import Clock

    from av_snn_ros.replay.replay import _BagClock
    node = rclpy.create_node('bag_clock_test', context=ros_context)
    seen: list[int] = []
    node.create_subscription(Clock, '/test_bag_clock', lambda m: seen.append(m.clock.sec * S + m.clock.nanosec),
                             100)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    clock = _BagClock(node, '/test_bag_clock')
    try:
        assert clock.now_ns() is None
        deadline = time.monotonic() + 10
        while clock._pub.get_subscription_count() == 0 and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.01)    # matched first: the first publish is not lost
        clock.set(5 * S, None)
        clock.set(4 * S, None)                       # an earlier message: the clock stays where it was
        assert clock.now_ns() == 5 * S
        clock.set(6 * S, 1000.0)                     # runs on at the rate between messages
        while clock.now_ns() < 6 * S + S // 10 and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.01)
        clock.hold()
        held = clock.now_ns()
        assert held >= 6 * S + S // 10 and clock.now_ns() == held
        while (not seen or seen[-1] != held) and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.01)
            clock.set(held, None)                    # re-publish until the subscription has it
    finally:
        clock.stop()
        executor.shutdown()
        node.destroy_node()
    assert seen[0] == 5 * S and seen[-1] == held and seen == sorted(seen)
    assert 4 * S not in seen and any(6 * S <= v < held for v in seen)      # ran on between set and hold


# ------------------------------------------------------------------- through the real node graph

PARITY_SAMPLES = 20
PARITY_SEED = 0
SCORE_ATOL = 1e-4          # lossless (F32LE) bag: the node's softmax equals eval's to float precision


@pytest.fixture(scope='module')
def card(tmp_path_factory, data_root):
    """The shipped default model if present, else an untrained (BN-calibrated) card."""
    from av_snn_ros.paths import default_model_card
    default = default_model_card()
    if default.is_file():
        return default
    from runtime_helpers import make_card
    return make_card(tmp_path_factory)


@pytest.fixture(scope='module')
def replay_params():
    from av_snn_ros.paths import config_dir
    path = config_dir() / 'replay.yaml'
    if not path.is_file():
        pytest.skip(f'{path} not found')
    return path


def _held_out_samples(data_root, cfg, num):
    from av_snn_training.data.av_digits import LABELS, AVDigits
    ds = AVDigits(data_root, split='test', cfg=cfg, seed=PARITY_SEED, num=num)
    return [ds.raw(i) for i in range(len(ds))], list(LABELS)


def _node_log_tail(report) -> str:
    from pathlib import Path
    return f"classifier log {report['node_log']}:\n" + Path(report['node_log']).read_text()[-3000:]


def _expected_windows(report, n_segments):
    hop = report['node_parameters']['window.hop_s']
    return int(round((n_segments - 1) / hop)) + 1          # 1 s segments back to back, W = 1 s


def test_replay_with_remapped_topics(tmp_path, data_root, card, replay_params):
    from av_snn_ros.model_card import ModelCard
    from av_snn_ros.replay.make_bag import RecordingConfig, write_samples_bag
    from av_snn_ros.replay.replay import ReplayOptions, run_replay
    cfg = ModelCard.load(card).preprocessing
    samples, labels = _held_out_samples(data_root, cfg, 3)
    bag = tmp_path / 'robot_bag'
    write_samples_bag(bag, samples, labels, RecordingConfig(sample_rate=cfg.sample_rate, window_s=cfg.window_s,
                                                            timesteps=cfg.timesteps, encoding='rgb8',
                                                            image_size=56),
                      topics={'image': '/camera/image_raw', 'audio': '/mic/audio'})
    with pytest.raises(ReplayError, match='--remap'):
        run_replay(ReplayOptions(bag=bag, card=card, params_file=replay_params, rate=None))
    # real time (rate 1): the node's own stamp-to-publish latency is then a real latency in bag time
    report = run_replay(ReplayOptions(bag=bag, card=card, params_file=replay_params, rate=1.0,
                                      remaps=parse_remaps(['/camera/image_raw:=/image', '/mic/audio:=/audio'])))
    assert report['topics'] == {'/camera/image_raw': '/image', '/mic/audio': '/audio',
                                '/ground_truth': '/ground_truth'}
    assert report['num_spans'] == 3 and report['missed'] == 0
    for m, sample in zip(report['matches'], samples):
        assert (m['window_start_ns'], m['window_end_ns']) == (m['span_start_ns'], m['span_end_ns'])
        assert m['true'] == sample.label and m['audio_file'] == sample.audio_file
    assert report['classifications_received'] == _expected_windows(report, 3)
    assert report['windows_dropped'] == 0 and report['windows_formed'] == report['classifications_received']
    assert all(c['latency_s'] > 0 for c in report['classifications'])
    # the node runs on bag time (/clock): its now() minus the window end is a latency, not the bag's
    # age (it read ~1e8 s for a bag stamped in 2023)
    stamp_latency = report['node_stamp_to_publish_s']
    assert 0 <= stamp_latency['p50_s'] <= stamp_latency['p99_s'] < 1.0, stamp_latency
    assert report['node_exit_code'] == 0, _node_log_tail(report)
    # the replay parameters reached the namespaced node (reliable, queued: nothing dropped)
    assert report['node_parameters']['qos.sensor.reliability'] == 'reliable'
    assert report['node_parameters']['inference.queue_size'] > 1
    assert report['namespace'].startswith('/av_snn_replay_')


def test_replay_matches_eval_on_held_out_speakers(tmp_path, data_root, card, replay_params):
    """PARITY: `av-snn replay` of a bag of held-out speakers classifies exactly like `av-snn eval` on the
    same samples (lossless F32LE audio: the node's scores equal eval's softmax to float precision)."""
    from av_snn_ros import cli
    bag, replay_json, eval_json = tmp_path / 'held_out_bag', tmp_path / 'replay.json', tmp_path / 'eval.json'
    common = ['--data-root', str(data_root), '--card', str(card), '--num', str(PARITY_SAMPLES),
              '--seed', str(PARITY_SEED)]
    assert cli.main(['make-bag', '--out', str(bag), '--audio-encoding', 'F32LE', *common]) == 0
    # Same backend as eval (torch): a trained SNN can flip a spike sitting exactly on threshold when another
    # runtime sums in a different order, which moves a score by ~1e-3 (backend parity is tested elsewhere).
    assert cli.main(['replay', str(bag), '--json', str(replay_json), '--as-fast-as-possible', '--card', str(card),
                     '--backend', 'torch', '--params-file', str(replay_params),
                     '--plots', str(tmp_path / 'plots')]) == 0
    assert cli.main(['eval', '--json', str(eval_json), *common]) == 0
    report, evaluated = json.loads(replay_json.read_text()), json.loads(eval_json.read_text())

    assert (tmp_path / 'plots' / 'confusion_matrix.png').stat().st_size > 0
    assert (tmp_path / 'plots' / 'latency_histogram.png').stat().st_size > 0
    assert report['windows_dropped'] == 0 and report['missed'] == 0
    assert report['classifications_received'] == _expected_windows(report, PARITY_SAMPLES)
    scores = {c['window_start_ns']: np.array(c['scores']) for c in report['classifications']}
    logit_scale = ModelCard.load(card).logit_scale
    for m, e in zip(report['matches'], evaluated['samples'], strict=True):
        assert (m['audio_file'], m['image_index'], m['true']) == (e['audio_file'], e['image_index'], e['label'])
        logits = np.array(e['logits'], dtype=np.float64) * logit_scale
        softmax = np.exp(logits - logits.max())
        np.testing.assert_allclose(scores[m['window_start_ns']], softmax / softmax.sum(), atol=SCORE_ATOL)
        assert m['predicted'] == e['prediction']
    assert abs(report['accuracy'] - evaluated['metrics']['accuracy']) <= 0.01


def test_damaged_bag_is_reported_incomplete_never_perfect(tmp_path, card, replay_params, capsys):
    """Red-team row: a damaged bag replayed with exit 0 and "100 % (4/4), 0 missed" after a handful of
    its 49 windows. Here the storage hides 21 of the demo bag's 25 labels and all sensor data after 4 s
    (its metadata still lists them), and the bag has an extra topic of a type not installed here."""
    import bag_faults
    from rosbags.typesys import get_types_from_msg

    from av_snn_ros import cli
    from av_snn_ros.replay import bag_io
    from av_snn_ros.replay.demo import demo_bag_path
    from av_snn_ros.replay.replay import EXIT_INCOMPLETE
    bag, state = tmp_path / 'bag', 'acme_msgs/msg/State'
    store = bag_io.make_typestore()
    store.register(get_types_from_msg('int32 level', state))
    with bag_io.BagReader(demo_bag_path()) as src, bag_io.BagWriter(bag, typestore=store) as dst:
        t0 = src.start_ns
        for key, value in src.custom_data.items():
            dst.set_metadata(key, value)
        for m in src.messages():
            dst.write_raw(m.topic, m.msgtype, m.time_ns, m.raw)
        for i in range(3):
            dst.write_raw('/robot/state', state, t0 + i * S,
                          store.serialize_cdr(store.types[state](level=i), state))
    hidden = bag_faults.hide_messages(bag, lambda topic, t: topic != '/robot/state' and t > t0 + 4 * S)
    assert hidden == 21 + (1250 - 200) + (375 - 61)
    out_json = tmp_path / 'r.json'
    rc = cli.main(['replay', str(bag), '--json', str(out_json), '--as-fast-as-possible', '--card', str(card),
                   '--params-file', str(replay_params)])
    captured = capsys.readouterr()
    report = json.loads(out_json.read_text())
    assert rc == EXIT_INCOMPLETE, captured.out + captured.err
    assert (report['num_spans'], report['unreadable_spans']) == (4, 21)
    assert report['accuracy'] <= 4 / 25
    assert report['windows_in_bag_estimate'] == 49 and report['classifications_received'] <= 8
    per_topic = report['bag_read']['per_topic']
    assert (per_topic['/audio']['unread'], per_topic['/image']['unread']) == (1050, 314)
    assert 0 <= report['node_stamp_to_publish_s']['p50_s'] < 5       # bag time, not the bag's age
    first = captured.out.splitlines()[0]
    assert '100.0%' not in first and ', 0 missed' not in first and '/25 labelled windows' in first, first
    assert 'INCOMPLETE' in captured.out and '21 of 25 ground-truth labels' in captured.out
    assert '/audio: 1050 of 1250 messages could not be read' in captured.out
    # the unknown topic is skipped and said so, not a reason to refuse the bag
    assert report['skipped_topics'] == {'/robot/state': f'{state}: not an input of the classifier'}
    assert '/robot/state' in captured.err and report['node_exit_code'] == 0, _node_log_tail(report)
    # --allow-incomplete: same report, exit 0
    assert cli.main(['replay', str(bag), '--json', str(out_json), '--as-fast-as-possible', '--card', str(card),
                     '--params-file', str(replay_params), '--allow-incomplete']) == 0


# ------------------------------------------------------------------------------------------ demo

def test_demo_bag_is_small_real_and_held_out():
    from av_snn_ros.replay import bag_io
    from av_snn_ros.replay.demo import demo_bag_path
    from av_snn_training.data.av_digits import DEFAULT_TEST_SPEAKERS
    path = demo_bag_path()
    assert (path / 'ATTRIBUTION.md').is_file()
    assert sum(f.stat().st_size for f in path.iterdir()) < 5_000_000
    with bag_io.BagReader(path) as reader:
        spans = reader.ground_truth()
        samples = reader.custom_data[bag_io.SAMPLES_KEY]
        recording = reader.custom_data[bag_io.RECORDING_KEY]
    assert 20 <= len(spans) <= 30 and {s.class_id for s in spans} == set(range(10))
    assert {s['speaker'] for s in samples} <= set(DEFAULT_TEST_SPEAKERS)        # never seen in training
    assert recording['split'] == 'test'
    assert [s['label'] for s in samples] == [s.class_id for s in spans]


def test_demo_prints_each_classification_with_truth(card, replay_params, capsys):
    from av_snn_ros import cli
    from av_snn_ros.replay import bag_io
    from av_snn_ros.replay.demo import demo_bag_path
    assert cli.main(['demo', '--fast', '--card', str(card)]) == 0
    out = capsys.readouterr().out
    with bag_io.BagReader(demo_bag_path()) as reader:
        spans = reader.ground_truth()
    lines = [line for line in out.splitlines() if 'predicted' in line]
    scored = [line for line in lines if 'truth   -' not in line]       # flags may follow the truth
    assert len(scored) == len(spans)                       # one aligned window per utterance
    assert [line.split('truth')[1].split()[0] for line in scored] == [s.label for s in spans]
    assert all('%' in line for line in lines)              # confidence printed
    assert 'accuracy' in out and 'latency p50' in out and 'dropped 0' in out
