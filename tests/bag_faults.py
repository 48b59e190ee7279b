"""Damage MCAP bags the way storage faults do, for the bag reading and replay tests.

An MCAP file is a sequence of records (opcode u8, length u64, body); messages live in Chunk records.
These helpers walk that structure directly (not through rosbags, which the code under test uses), so a
test can hide messages from a reader while the bag's metadata still lists them, or corrupt a message's
CDR payload while every record length stays intact.
"""
from __future__ import annotations

import struct
from pathlib import Path
from typing import Callable, Iterator

OP_SCHEMA, OP_CHANNEL, OP_MESSAGE, OP_CHUNK, OP_METADATA, OP_DATA_END = 0x03, 0x04, 0x05, 0x06, 0x0C, 0x0F
OP_PRIVATE = 0x80             # opcodes >= 0x80 are user-defined: readers skip them
_MAGIC_LEN = 8
_MSG_HEADER = 2 + 4 + 8 + 8   # channel id u16, sequence u32, log time u64, publish time u64


def mcap_file(bag: Path) -> Path:
    files = sorted(Path(bag).glob('*.mcap'))
    assert len(files) == 1, files
    return files[0]


def _records(data: bytes | bytearray, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(opcode, body offset, body length) of the records in ``data[start:end]``."""
    pos = start
    while pos + 9 <= end:
        op = data[pos]
        length = struct.unpack_from('<Q', data, pos + 1)[0]
        yield op, pos + 9, length
        pos += 9 + length


def _chunk_records(data: bytes | bytearray, body: int) -> tuple[int, int]:
    """Start and end of the (uncompressed) records inside the Chunk record at ``body``."""
    pos = body + 8 + 8 + 8 + 4                      # start time, end time, uncompressed size, crc
    compression_len = struct.unpack_from('<I', data, pos)[0]
    compression = bytes(data[pos + 4:pos + 4 + compression_len])
    assert compression == b'', f'compressed chunk ({compression!r}): not supported here'
    pos += 4 + compression_len
    records_len = struct.unpack_from('<Q', data, pos)[0]
    return pos + 8, pos + 8 + records_len


def _all_records(data: bytes | bytearray) -> Iterator[tuple[int, int, int]]:
    """Every record at top level and inside chunks, up to the DataEnd record and in the summary."""
    for op, body, length in _records(data, _MAGIC_LEN, len(data) - _MAGIC_LEN):
        yield op, body, length
        if op == OP_CHUNK:
            yield from _records(data, *_chunk_records(data, body))


def _string(data: bytes | bytearray, pos: int) -> tuple[str, int]:
    n = struct.unpack_from('<I', data, pos)[0]
    return bytes(data[pos + 4:pos + 4 + n]).decode(), pos + 4 + n


def channels(bag: Path) -> dict[int, tuple[str, dict[str, str]]]:
    """channel id -> (topic, channel metadata map), as stored in the MCAP Channel records."""
    data = mcap_file(bag).read_bytes()
    out = {}
    for op, body, _ in _all_records(data):
        if op != OP_CHANNEL:
            continue
        channel_id = struct.unpack_from('<H', data, body)[0]
        topic, pos = _string(data, body + 4)           # after channel id u16 and schema id u16
        _encoding, pos = _string(data, pos)
        map_len = struct.unpack_from('<I', data, pos)[0]
        pos, end, meta = pos + 4, pos + 4 + map_len, {}
        while pos < end:
            key, pos = _string(data, pos)
            meta[key], pos = _string(data, pos)
        out[channel_id] = (topic, meta)
    return out


def _edit_messages(bag: Path, pick: Callable[[str, int], bool], edit: Callable[[bytearray, int, int], None]
                   ) -> int:
    topics = {cid: topic for cid, (topic, _) in channels(bag).items()}
    path = mcap_file(bag)
    data = bytearray(path.read_bytes())
    edited = 0
    for op, body, length in list(_all_records(data)):
        if op != OP_MESSAGE:
            continue
        channel_id, = struct.unpack_from('<H', data, body)
        log_time, = struct.unpack_from('<Q', data, body + 6)
        if pick(topics[channel_id], log_time):
            edit(data, body, length)
            edited += 1
    path.write_bytes(bytes(data))
    return edited


def hide_messages(bag: Path, pick: Callable[[str, int], bool]) -> int:
    """Make the picked messages (by topic, receive time) invisible to readers: their record becomes a
    private one, which MCAP readers skip. The bag's metadata still counts them. Returns how many."""
    def hide(data: bytearray, body: int, _length: int) -> None:
        data[body - 9] = OP_PRIVATE
    return _edit_messages(bag, pick, hide)


def corrupt_messages(bag: Path, pick: Callable[[str, int], bool], offset: int, value: bytes) -> int:
    """Overwrite ``value`` at ``offset`` of each picked message's serialized (CDR) bytes."""
    def corrupt(data: bytearray, body: int, _length: int) -> None:
        start = body + _MSG_HEADER + offset
        data[start:start + len(value)] = value
    return _edit_messages(bag, pick, corrupt)



def metadata_records(bag: Path) -> dict[str, dict[str, str]]:
    """name -> key/value map of the MCAP Metadata records (rosbag2 stores its metadata as ``rosbag2``)."""
    data = mcap_file(bag).read_bytes()
    out = {}
    for op, body, _ in _records(data, _MAGIC_LEN, len(data) - _MAGIC_LEN):
        if op != OP_METADATA:
            continue
        name, pos = _string(data, body)
        map_len = struct.unpack_from('<I', data, pos)[0]
        pos, end, values = pos + 4, pos + 4 + map_len, {}
        while pos < end:
            key, pos = _string(data, pos)
            values[key], pos = _string(data, pos)
        out[name] = values
    return out
