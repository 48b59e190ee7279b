"""Which CPU a measurement ran on, and the reference timings measured on that same CPU (if any).

A speed ratio against a figure from another CPU says nothing (the S-CMRL reference runs 159-166 ms on
one 2-core machine kind and 79-80 ms on another), so the bench records :class:`CpuIdentity` in every
report and divides by a reference only through :func:`reference_for`, which returns the row of
``reference_timings.yaml`` whose CPU matches this one, or None.
"""
from __future__ import annotations

import dataclasses
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

CPUINFO = Path('/proc/cpuinfo')
REFERENCE_TIMINGS = Path(__file__).with_name('reference_timings.yaml')
#: the flags worth recording: the vector and matrix extensions that decide what a kernel can use
RECORDED_FLAGS = ('sse4_2', 'avx', 'avx2', 'fma', 'f16c', 'avx512f', 'avx512bw', 'avx512vl', 'avx512_vnni',
                  'avx_vnni', 'avx512_bf16', 'avx512_fp16', 'amx_tile', 'amx_bf16', 'amx_int8',
                  'asimd', 'asimdhp', 'asimddp', 'sve', 'sve2', 'i8mm', 'bf16')
NO_REFERENCE = 'no reference measured on this CPU'
_MATCH_KEYS = ('vendor', 'model_name', 'model_name_prefix', 'family', 'model', 'flags_present', 'flags_absent',
               'logical_cpus')


@dataclass(frozen=True)
class CpuIdentity:
    """What /proc/cpuinfo and the scheduler say about the CPU this process runs on."""

    vendor: str
    model_name: str
    family: int | None            # x86 "cpu family" (None elsewhere)
    model: int | None             # x86 "model"
    flags: tuple[str, ...]        # the RECORDED_FLAGS this CPU has
    logical_cpus: int             # CPUs this process may run on (affinity), what a thread budget divides

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), 'flags': list(self.flags)}


def _first(fields: Mapping[str, str], *keys: str) -> str | None:
    return next((fields[k] for k in keys if k in fields), None)


def _int(value: str | None) -> int | None:
    try:
        return int(value, 0) if value is not None else None
    except ValueError:
        return None


def parse_cpuinfo(text: str, logical_cpus: int) -> CpuIdentity:
    """The identity of the first processor block of a /proc/cpuinfo text (x86 or ARM layout)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, _, value = line.partition(':')
        fields.setdefault(key.strip(), value.strip())
    flags = set((_first(fields, 'flags', 'Features') or '').split())
    return CpuIdentity(
        vendor=_first(fields, 'vendor_id', 'CPU implementer') or 'unknown',
        model_name=_first(fields, 'model name', 'Model name', 'Processor') or platform.processor() or 'unknown',
        family=_int(fields.get('cpu family')), model=_int(_first(fields, 'model', 'CPU part')),
        flags=tuple(f for f in RECORDED_FLAGS if f in flags), logical_cpus=int(logical_cpus))


def usable_cpus() -> int:
    """CPUs this process may run on (the affinity mask; os.cpu_count() where there is none)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def cpu_identity(cpuinfo: str | Path = CPUINFO, logical_cpus: int | None = None) -> CpuIdentity:
    """This machine's :class:`CpuIdentity` (``cpuinfo``: a file to read instead, for tests)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        text = ''
    return parse_cpuinfo(text, usable_cpus() if logical_cpus is None else logical_cpus)


def matches(identity: CpuIdentity, cpu: Mapping[str, Any]) -> bool:
    """Whether ``identity`` meets every condition of a reference row's ``cpu`` mapping."""
    unknown = sorted(set(cpu) - set(_MATCH_KEYS))
    if unknown:
        raise ValueError(f'reference row: unknown cpu key(s) {", ".join(unknown)}; valid: {", ".join(_MATCH_KEYS)}')
    have = set(identity.flags)
    checks = {
        'vendor': lambda v: identity.vendor == v,
        'model_name': lambda v: identity.model_name == v,
        'model_name_prefix': lambda v: identity.model_name.startswith(v),
        'family': lambda v: identity.family == v,
        'model': lambda v: identity.model == v,
        'flags_present': lambda v: set(v) <= have,
        'flags_absent': lambda v: not set(v) & have,
        'logical_cpus': lambda v: identity.logical_cpus == v,
    }
    return all(checks[key](value) for key, value in cpu.items())


def load_reference_timings(path: str | Path = REFERENCE_TIMINGS) -> dict[str, Any]:
    """The reference table: ``reference`` (what was measured, how) and ``rows`` (one per CPU)."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data.get('rows'), list) or not isinstance(data.get('reference'), dict):
        raise ValueError(f'{path}: expected "reference" (a mapping) and "rows" (a list)')
    return data


def reference_for(identity: CpuIdentity, rows: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The one row measured on this CPU, or None; two matching rows are an error in the table."""
    found = [row for row in rows if matches(identity, row['cpu'])]
    if len(found) > 1:
        raise ValueError(f'{len(found)} reference rows match this CPU ({identity.model_name}); make them exclusive')
    return found[0] if found else None
