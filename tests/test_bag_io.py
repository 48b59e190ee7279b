"""Bag writing and reading (rosbags, no ROS): real AV-digits samples survive a round trip in both storages."""
from __future__ import annotations

import numpy as np
import pytest

from av_snn_ros.preprocessing import PreprocessConfig, pcm_to_float
from av_snn_ros.replay import bag_io
from av_snn_ros.replay.make_bag import RecordingConfig, camera_frame, write_samples_bag

NUM_SAMPLES = 3


@pytest.fixture(scope='module')
def samples(data_root):
    from av_snn_training.data.av_digits import AVDigits
    dataset = AVDigits(data_root, split='test', cfg=PreprocessConfig(), num=NUM_SAMPLES)
    return [dataset.raw(i) for i in range(len(dataset))]


def _read_all(path):
    with bag_io.BagReader(path) as reader:
        topics = reader.topics
        decoded = [(m, reader.decode(m)) for m in reader.messages()]
        return topics, decoded, reader.ground_truth(), reader.custom_data


def _segment_audio(decoded, start_ns, n, sample_rate):
    """Concatenate decoded audio chunks from ``start_ns`` on, ``n`` samples."""
    chunks = [(bag_io.stamp_ns(msg.header.stamp), bag_io.audio_to_float(msg))
              for m, msg in decoded if m.topic == bag_io.AUDIO_TOPIC]
    stream_start = chunks[0][0]
    stream = np.concatenate([c for _, c in chunks])
    offset = (start_ns - stream_start) * sample_rate // bag_io.NS_PER_S
    return stream[offset:offset + n]


@pytest.mark.parametrize('storage', bag_io.STORAGES)
def test_round_trip_real_samples(tmp_path, samples, storage):
    rec = RecordingConfig()
    out = tmp_path / f'bag_{storage}'
    records = write_samples_bag(out, samples, [str(d) for d in range(10)], rec, storage=storage)
    topics, decoded, spans, custom = _read_all(out)

    assert topics == {bag_io.IMAGE_TOPIC: bag_io.IMAGE_TYPE, bag_io.AUDIO_TOPIC: bag_io.AUDIO_TYPE,
                      bag_io.GROUND_TRUTH_TOPIC: bag_io.LABEL_TYPE}
    # receive time == header stamp for frames, == span end for labels, == the end of an audio chunk
    # (its last sample: bag time never precedes the data); stored in time order
    times = [m.time_ns for m, _ in decoded]
    assert times == sorted(times)
    for m, msg in decoded:
        assert bag_io.stamp_ns(msg.header.stamp) == bag_io.header_stamp_ns(m.raw)
        duration = (len(msg.data) // 2 * bag_io.NS_PER_S // msg.sample_rate if m.topic == bag_io.AUDIO_TOPIC
                    else 0)
        assert m.time_ns == bag_io.stamp_ns(msg.header.stamp) + duration

    # audio: contiguous 20 ms chunks from t0, 16 kHz S16LE
    audio = [(bag_io.stamp_ns(msg.header.stamp), msg) for m, msg in decoded if m.topic == bag_io.AUDIO_TOPIC]
    chunk_ns = int(rec.chunk_ms * 1e6)
    assert [t for t, _ in audio] == [rec.t0_ns + k * chunk_ns for k in range(len(audio))]
    assert {(msg.sample_rate, msg.channels, msg.encoding) for _, msg in audio} == {(16000, 1, 'S16LE')}
    assert len(audio) * chunk_ns == NUM_SAMPLES * rec.segment_ns

    # ground truth: one span per sample, on the classifier grid, labels equal the data set's
    assert [(s.start_ns, s.end_ns, s.class_id) for s in spans] == [
        (rec.t0_ns + i * rec.segment_ns, rec.t0_ns + i * rec.segment_ns + rec.segment_ns, s.label)
        for i, s in enumerate(samples)]
    assert all(s.start_ns % rec.hop_ns == 0 for s in spans)

    # decoded audio of each segment equals the source window up to 16-bit quantisation
    for span, sample in zip(spans, samples):
        got = _segment_audio(decoded, span.start_ns, len(sample.audio), rec.sample_rate)
        np.testing.assert_allclose(got, sample.audio, rtol=0, atol=0.5 / 32768 + 1e-7)
        assert np.abs(sample.audio).max() > 0.01       # a real utterance, not silence

    # frames: 15 fps from t0; every frame inside a span shows that sample's image
    frames = [(bag_io.stamp_ns(msg.header.stamp), bag_io.image_to_array(msg))
              for m, msg in decoded if m.topic == bag_io.IMAGE_TOPIC]
    assert frames[0][0] == rec.t0_ns
    assert np.allclose(np.diff([t for t, _ in frames]), 1e9 / rec.fps, atol=1)
    for span, sample in zip(spans, samples):
        inside = [f for t, f in frames if span.start_ns <= t < span.end_ns]
        assert len(inside) == rec.fps * rec.window_s
        for f in inside:
            np.testing.assert_array_equal(f, sample.image)

    # the sample list lets parity be checked per sample
    listed = custom[bag_io.SAMPLES_KEY]
    assert [(d['audio_file'], d['image_index'], d['label']) for d in listed] == [
        (s.audio_file, s.image_index, s.label) for s in samples]
    assert [d['span_start_ns'] for d in listed] == [r.span_start_ns for r in records]


def test_rgb_upscaled_frames_and_renamed_topics(tmp_path, samples):
    rec = RecordingConfig(image_size=56, encoding='rgb8', fps=30.0, chunk_ms=10.0)
    out = tmp_path / 'robot_bag'
    topics_in = {'image': '/camera/image_raw', 'audio': '/mic/audio'}
    write_samples_bag(out, samples[:1], [str(d) for d in range(10)], rec, topics=topics_in)
    topics, decoded, spans, _ = _read_all(out)
    assert set(topics) == {'/camera/image_raw', '/mic/audio', bag_io.GROUND_TRUTH_TOPIC}
    frame_msgs = [msg for m, msg in decoded if m.topic == '/camera/image_raw']
    assert (frame_msgs[0].encoding, frame_msgs[0].height, frame_msgs[0].width, frame_msgs[0].step) == \
        ('rgb8', 56, 56, 56 * 3)
    frame = bag_io.image_to_array(frame_msgs[0])
    np.testing.assert_array_equal(frame, camera_frame(samples[0].image, 56, 'rgb8'))
    assert frame.shape == (56, 56, 3) and (frame[..., 0] == frame[..., 2]).all()
    chunk = next(msg for m, msg in decoded if m.topic == '/mic/audio')
    assert len(chunk.data) == 160 * 2                                     # 10 ms at 16 kHz, 16 bit


def test_f32le_audio_is_lossless(tmp_path, samples):
    rec = RecordingConfig(audio_encoding='F32LE')
    out = tmp_path / 'f32_bag'
    write_samples_bag(out, samples[:2], [str(d) for d in range(10)], rec, storage='sqlite3')
    _, decoded, spans, _ = _read_all(out)
    assert {msg.encoding for m, msg in decoded if m.topic == bag_io.AUDIO_TOPIC} == {'F32LE'}
    for span, sample in zip(spans, samples):
        got = _segment_audio(decoded, span.start_ns, len(sample.audio), rec.sample_rate)
        np.testing.assert_array_equal(got, sample.audio)


def test_header_stamp_from_raw_cdr():
    import struct
    be = bytes([0, 0, 0, 0]) + struct.pack('>iI', 12, 345)
    le = bytes([0, 1, 0, 0]) + struct.pack('<iI', 12, 345)
    assert bag_io.header_stamp_ns(be) == bag_io.header_stamp_ns(le) == 12 * bag_io.NS_PER_S + 345
    for bad in (le[:8], bytes([0, 7, 0, 0]) + le[4:]):
        with pytest.raises(ValueError, match='CDR'):
            bag_io.header_stamp_ns(bad)


def test_float_to_s16_inverts_pcm_to_float():
    x = np.array([-1.0, -0.5, 0.0, 1e-5, 0.25, 0.999, 1.0, 1.5], dtype=np.float32)
    back = pcm_to_float(bag_io.float_to_s16(x).tobytes(), 'S16LE', 1)
    np.testing.assert_allclose(back[:6], x[:6], atol=0.5 / 32768)
    assert back[-1] == back[-2] == pytest.approx(32767 / 32768)          # clipped, not wrapped


def test_writer_rejects_bad_input(tmp_path):
    with bag_io.BagWriter(tmp_path / 'bag') as writer:
        with pytest.raises(ValueError, match='encoding'):
            writer.write_image(0, np.zeros((4, 4), np.uint8), encoding='yuv422')
        with pytest.raises(ValueError, match='does not match'):
            writer.write_image(0, np.zeros((4, 4, 3), np.uint8), encoding='mono8')
        with pytest.raises(TypeError, match='int16'):
            writer.write_audio(0, np.zeros(8, np.float64), 16000)
        with pytest.raises(ValueError, match='empty label span'):
            writer.write_label(10, 10, 1, '1')
        writer.write_label(0, 10, 1, '1')
        with pytest.raises(ValueError, match='already holds'):
            writer.write_audio(0, np.zeros(8, np.int16), 16000, topic=bag_io.GROUND_TRUTH_TOPIC)
    with pytest.raises(FileExistsError):
        bag_io.BagWriter(tmp_path / 'bag')
    with pytest.raises(FileNotFoundError, match='not a rosbag2 bag'):
        bag_io.BagReader(tmp_path)


def test_recording_config_validation():
    with pytest.raises(ValueError, match='whole number of samples'):
        RecordingConfig(chunk_ms=0.01)
    with pytest.raises(ValueError, match='less than one frame per timestep'):
        RecordingConfig(fps=2.0)
    # a hop that does not divide W: segments grow to whole hops and stay on the grid
    rec = RecordingConfig(hop_s=0.3)
    assert rec.segment_ns == 1_200_000_000 and rec.t0_ns % rec.hop_ns == 0


def test_image_decoding_handles_padded_rows_and_bgr():
    class Msg:
        height, width, encoding, step = 2, 3, 'bgr8', 12            # 3 px * 3 B + 3 B row padding
        data = np.arange(24, dtype=np.uint8)
    img = bag_io.image_to_array(Msg)
    assert img.shape == (2, 3, 3)
    np.testing.assert_array_equal(img[0, 0], [2, 1, 0])             # BGR -> RGB
    np.testing.assert_array_equal(img[1, 0], [14, 13, 12])          # second row starts at step
    Msg.data = np.arange(10, dtype=np.uint8)
    with pytest.raises(ValueError, match='too small'):
        bag_io.image_to_array(Msg)


# ------------------------------------------------------------------------------------ damaged bags

S = bag_io.NS_PER_S


@pytest.fixture
def demo_copy(tmp_path):
    """A private copy of the bundled real-data demo bag (tests damage it)."""
    import shutil

    from av_snn_ros.replay.demo import demo_bag_path
    dst = tmp_path / 'bag'
    shutil.copytree(demo_bag_path(), dst)
    with bag_io.BagReader(dst) as reader:
        return dst, reader.start_ns


def _damage(bag, how: str) -> None:
    import bag_faults
    storage = bag_faults.mcap_file(bag)
    if how == 'truncated':
        data = storage.read_bytes()
        storage.write_bytes(data[:len(data) // 2])
    elif how == 'metadata_only':
        storage.unlink()
    elif how == 'empty_storage':
        storage.write_bytes(b'')
    elif how == 'bad_metadata':
        (bag / 'metadata.yaml').write_text('rosbag2_bagfile_information: [1, 2\n')
    else:                                   # the stored definition of a custom message type is garbage
        data = bytearray(storage.read_bytes())
        for op, body, _ in bag_faults._all_records(data):
            if op == bag_faults.OP_SCHEMA:
                data[body + 60:body + 63] = b'%!%'
        storage.write_bytes(bytes(data))


@pytest.mark.parametrize('how', ['truncated', 'metadata_only', 'empty_storage', 'bad_metadata', 'corrupt_schema'])
def test_unreadable_bag_is_one_clear_error(demo_copy, tmp_path, capsys, how):
    """Damaged bags used to end in the storage parser's 19-23-line tracebacks."""
    from av_snn_ros import cli
    bag, _ = demo_copy
    _damage(bag, how)
    if how == 'corrupt_schema':                 # the bag opens; the topics of that type do not decode
        with bag_io.BagReader(bag) as reader:
            assert set(reader.type_errors) == {bag_io.AUDIO_TOPIC, bag_io.GROUND_TRUTH_TOPIC}
    else:
        with pytest.raises(bag_io.BagError) as info:
            with bag_io.BagReader(bag):
                pass
        assert str(info.value).startswith(f'cannot read bag {bag}: ') and '\n' not in str(info.value)
    assert cli.main(['replay', str(bag), '--json', str(tmp_path / 'r.json')]) == 1
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and err.startswith(f'av-snn replay: cannot read bag {bag}: '), err
    assert not (tmp_path / 'r.json').exists()


def test_a_topic_whose_stored_definition_does_not_parse_does_not_make_the_bag_unreadable(tmp_path):
    """An extra topic with an unparseable definition (an exotic IDL, a damaged schema) only makes that
    topic undecodable; the rest of the bag reads as before."""
    from rosbags.typesys import get_types_from_msg

    import bag_faults
    bag, state = tmp_path / 'bag', 'acme_msgs/msg/State'
    store = bag_io.make_typestore()
    store.register(get_types_from_msg('int32 level', state))
    with bag_io.BagWriter(bag, typestore=store) as writer:
        writer.write_label(0, S, 3, '3')
        writer.write_raw('/robot/state', state, 0, store.serialize_cdr(store.types[state](level=1), state))
    storage = bag_faults.mcap_file(bag)
    data = storage.read_bytes()
    assert data.count(b'int32 level') == 2                  # the schema, in the chunk and in the summary
    storage.write_bytes(data.replace(b'int32 level', b'int32 le%el'))
    with bag_io.BagReader(bag) as reader:
        assert list(reader.type_errors) == ['/robot/state'] and state in reader.type_errors['/robot/state']
        assert [s.class_id for s in reader.ground_truth()] == [3]
        stats = reader.read_stats(['/robot/state'])
        assert [reader.try_decode(m, stats) for m in reader.messages(['/robot/state'], stats)] == [None]
        assert stats.undecodable == {'/robot/state': 1}


def test_lost_and_undecodable_messages_are_counted_not_raised(demo_copy):
    """Messages the storage does not deliver (the metadata still lists them) and messages whose CDR
    does not decode are counted per topic against the bag's metadata."""
    import bag_faults
    bag, t0 = demo_copy
    hidden = bag_faults.hide_messages(bag, lambda topic, t: (topic == bag_io.GROUND_TRUTH_TOPIC and t > t0 + 4 * S)
                                      or (topic == bag_io.IMAGE_TOPIC and t >= t0 + 10 * S))
    # CDR bytes 12-15 are the header's frame_id length: a huge one does not decode
    corrupted = bag_faults.corrupt_messages(bag, lambda topic, t: topic == bag_io.AUDIO_TOPIC
                                            and t0 + S <= t < t0 + S + S // 10, 12, b'\xff\xff\xff\x7f')
    assert (hidden, corrupted) == (21 + 225, 5)
    with bag_io.BagReader(bag) as reader:
        stats = reader.read_stats(list(reader.topics))
        decoded = [reader.try_decode(m, stats) for m in reader.messages(stats=stats)]
        labels = reader.read_stats([bag_io.GROUND_TRUTH_TOPIC])
        spans = reader.ground_truth(stats=labels)
    assert stats.unread() == {bag_io.GROUND_TRUTH_TOPIC: 21, bag_io.IMAGE_TOPIC: 225}
    assert stats.undecodable == {bag_io.AUDIO_TOPIC: 5} and stats.errors == []
    assert sum(d is None for d in decoded) == 5 and len(decoded) == 1650 - 246
    assert [s.end_ns - t0 for s in spans] == [1 * S, 2 * S, 3 * S, 4 * S]
    assert labels.lost(bag_io.GROUND_TRUTH_TOPIC) == 21
    per = stats.as_dict()['per_topic']
    assert per[bag_io.AUDIO_TOPIC] == {'expected': 1250, 'read': 1250, 'unread': 0, 'undecodable': 5}


def test_storage_damage_mid_bag_ends_the_pass_with_the_reason(demo_copy):
    import struct

    import bag_faults
    bag, t0 = demo_copy

    def impossible_length(data, body, _length):
        data[body - 8:body] = struct.pack('<Q', 1 << 40)
    assert bag_faults._edit_messages(bag, lambda topic, t: topic == bag_io.IMAGE_TOPIC
                                     and t0 + 12 * S <= t < t0 + 12 * S + S // 10, impossible_length) == 2
    with bag_io.BagReader(bag) as reader:
        stats = reader.read_stats(list(reader.topics))
        read = sum(1 for _ in reader.messages(stats=stats))
        with pytest.raises(bag_io.BagError, match='cannot read bag'):
            list(reader.messages())                      # without stats: one clear error, not rosbags'
    assert len(stats.errors) == 1 and read == sum(stats.read.values()) < 1650
    assert sum(stats.unread().values()) == 1650 - read


# ------------------------------------------------------------------------- rosbag2 conventions

def _installed_type_hash(msgtype: str) -> str | None:
    """RIHS01 hash of ``pkg/msg/Name`` from the type description rosidl installed with the message
    package (``share/<pkg>/msg/<Name>.json``: the ros-kilted wheels, and av_snn_msgs built here)."""
    import json
    import os
    import sys
    from pathlib import Path
    pkg, _, name = msgtype.split('/')
    for prefix in [sys.prefix, *os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep)]:
        path = Path(prefix) / 'share' / pkg / 'msg' / f'{name}.json'
        if prefix and path.is_file():
            hashes = json.loads(path.read_text())['type_hashes']
            return next(h['hash_string'] for h in hashes if h['type_name'] == msgtype)
    return None


@pytest.mark.parametrize('storage', bag_io.STORAGES)
def test_bags_carry_rosbag2_type_hashes_and_the_real_distro(tmp_path, samples, storage):
    """As `ros2 bag record` writes them: ros_distro is the distribution (rosbags wrote 'rosbags'), and
    MCAP channels carry rosbag2's `topic_type_hash` beside `offered_qos_profiles` (they lacked it)."""
    import yaml

    import bag_faults
    bag = tmp_path / 'bag'
    write_samples_bag(bag, samples[:1], [str(d) for d in range(10)], RecordingConfig(), storage=storage)
    info = yaml.safe_load((bag / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
    assert info['ros_distro'] == 'kilted' == bag_io.ROS_DISTRO
    hashes = {t['topic_metadata']['name']: t['topic_metadata']['type_description_hash']
              for t in info['topics_with_message_count']}
    types = {t['topic_metadata']['name']: t['topic_metadata']['type'] for t in info['topics_with_message_count']}
    for topic, msgtype in types.items():
        installed = _installed_type_hash(msgtype)
        if installed is None:
            pytest.skip(f'no installed type description for {msgtype} (run scripts/install.sh)')
        assert hashes[topic] == installed, topic
    if storage == 'mcap':
        stored = {topic: meta for topic, meta in bag_faults.channels(bag).values()}
        assert stored.keys() == types.keys()
        for topic, meta in stored.items():
            assert set(meta) == {'offered_qos_profiles', 'topic_type_hash'}
            assert meta['topic_type_hash'] == hashes[topic] and meta['topic_type_hash'].startswith('RIHS01_')
        embedded = yaml.safe_load(bag_faults.metadata_records(bag)['rosbag2']['serialized_metadata'])
        assert embedded['ros_distro'] == 'kilted'
    else:
        import sqlite3
        db = sqlite3.connect(next(bag.glob('*.db3')))
        try:
            assert db.execute('SELECT ros_distro FROM schema').fetchall() == [('kilted',)]
            embedded = yaml.safe_load(db.execute('SELECT metadata FROM metadata').fetchone()[0])
        finally:
            db.close()
        assert embedded['ros_distro'] == 'kilted'
    with bag_io.BagReader(bag) as reader:                   # and it still reads back
        assert reader.message_counts == {t['topic_metadata']['name']: t['message_count']
                                         for t in info['topics_with_message_count']}


def test_make_bag_names_the_card_relative_never_absolute(tmp_path, data_root):
    """The recording metadata held the absolute card path of the machine that wrote the bag."""
    import shutil

    from av_snn_ros import cli
    from av_snn_ros.model_card import ModelCard
    from av_snn_ros.paths import default_model_card
    shipped = default_model_card()
    if not shipped.is_file():
        pytest.skip('no shipped default model card')
    elsewhere = tmp_path / 'my_card'
    shutil.copytree(shipped.parent, elsewhere)
    for card, expected in ((shipped, 'models/default/card.yaml'), (elsewhere / 'card.yaml', 'my_card/card.yaml')):
        bag = tmp_path / f'bag_{card.parent.name}'
        assert cli.main(['make-bag', '--data-root', str(data_root), '--out', str(bag), '--num', '1',
                         '--card', str(card.resolve())]) == 0
        with bag_io.BagReader(bag) as reader:
            recording = reader.custom_data[bag_io.RECORDING_KEY]
        assert recording['card'] == expected
        assert recording['card_weights_sha256'] == ModelCard.load(card).weights_sha256
        assert str(tmp_path) not in (bag / 'metadata.yaml').read_text()


def test_shipped_demo_bag_follows_the_conventions():
    """data/demo_bag was written by the project's writer: regenerated when the format changed."""
    import yaml

    import bag_faults
    from av_snn_ros.replay.demo import demo_bag_path
    bag = demo_bag_path()
    info = yaml.safe_load((bag / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
    assert info['ros_distro'] == 'kilted'
    hashes = {t['topic_metadata']['name']: t['topic_metadata']['type_description_hash']
              for t in info['topics_with_message_count']}
    assert {topic: meta.get('topic_type_hash') for topic, meta in bag_faults.channels(bag).values()} == hashes
    with bag_io.BagReader(bag) as reader:
        recording = reader.custom_data[bag_io.RECORDING_KEY]
    assert recording['card'] == 'models/default/card.yaml'
