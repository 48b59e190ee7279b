#!/usr/bin/env python3
"""Mutation check: plant small, realistic bugs in a scratch copy of the checkout and see the tests catch them.

Each mutation replaces one exact snippet of product source (found exactly once) and runs the test files
that should notice. A mutation is *caught* when pytest reports failures, *survived* when the tests still
pass, and an *error* when pytest could not run (collection error, interrupted): the planted bug is then
too crude to tell anything. The checkout itself is never modified; the scratch copy is deleted afterwards.

The list starts with the blind spots issue 20 found (every one must now be caught) and adds neighbours
of them. It is slow (several minutes: some test files replay real data through the ROS node and train
a small model), so CI does not run it; ``tests/test_mutation_list.py`` only checks that every planted
bug still applies to the current source, so refactors cannot silently rot the list.

Usage (from a checkout, after scripts/install.sh):
    .venv/bin/python scripts/mutation_check.py [--only NAME ...] [--list] [--no-baseline] [--keep]
Exit status: 0 when every mutation is caught, 1 otherwise, 2 for bad usage.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutation:
    """One planted bug: ``before`` (exactly once in ``path``) becomes ``after``; ``tests`` should fail."""

    name: str
    path: str
    before: str
    after: str
    tests: tuple[str, ...]
    why: str


# the one test meant to notice training that does not learn (the rest of its file checks plumbing)
LEARNS = 'tests/test_training.py::test_a_short_seeded_run_learns'

MUTATIONS: tuple[Mutation, ...] = (
    # ---- the survivors of the first mutation run (issue 20)
    Mutation('frame_age_doubled', 'av_snn_ros/windowing.py',
             'self.max_frame_age_ns = _s_to_ns(max_frame_age_s)',
             'self.max_frame_age_ns = _s_to_ns(2 * max_frame_age_s)',
             ('tests/test_windowing.py',), 'window.max_frame_age_s doubled inside the windower'),
    Mutation('centre_frame_excluded', 'av_snn_ros/windowing.py',
             'j = bisect.bisect_right(self._frame_stamps, centre) - 1',
             'j = bisect.bisect_left(self._frame_stamps, centre) - 1',
             ('tests/test_windowing.py',), 'a camera frame exactly at a step centre is not used for it'),
    Mutation('head_confidence_unscaled', 'av_snn_ros/prediction.py',
             'return None if logits is None or not used else softmax(logits[0] * scale)',
             'return None if logits is None or not used else softmax(logits[0])',
             ('tests/test_prediction.py', 'tests/test_fault_injection.py'),
             'per-modality head confidences published without logit_scale'),
    Mutation('energy_sop_0_8', 'av_snn_ros/models/energy.py', 'E_AC_PJ = 0.9 ', 'E_AC_PJ = 0.8 ',
             ('tests/test_energy.py',), 'energy per synaptic operation 0.9 -> 0.8 pJ'),
    Mutation('energy_mac_3_7', 'av_snn_ros/models/energy.py', 'E_MAC_PJ = 4.6 ', 'E_MAC_PJ = 3.7 ',
             ('tests/test_energy.py',), 'energy per MAC 4.6 -> 3.7 pJ'),
    Mutation('alignment_diagonal_positives', 'av_snn_ros/models/losses.py',
             'positives = (targets[:, None] == targets[None, :]).to(sim.dtype)',
             'positives = torch.eye(len(targets), dtype=sim.dtype)',
             ('tests/test_models.py',), 'S-CMRL semantic-alignment loss with only diagonal positives'),
    # ---- the loose checks the issue lists
    Mutation('ave_frame_off_by_one', 'training/av_snn_training/data/ave.py',
             'frames = read_video_frames(item.video, [candidates[k] for k in picks])',
             'frames = read_video_frames(item.video, [candidates[k] + 1 for k in picks])',
             ('tests/test_paper_datasets.py',), 'AVE picks the frame after the intended one'),
    Mutation('training_never_steps', 'training/av_snn_training/trainer.py',
             '        optimizer.step()\n        bar.update(1)', '        bar.update(1)',
             (LEARNS,), 'the optimiser never updates the weights'),
    Mutation('training_shuffled_labels', 'training/av_snn_training/trainer.py',
             'label = label.to(ctx.device)',
             'label = label.to(ctx.device)[torch.randperm(len(label), device=ctx.device)]',
             (LEARNS,), 'training pairs each sample with another sample\'s label'),
    Mutation('late_frames_never_superseded', 'av_snn_ros/windowing.py',
             'if pos < len(stamps) and not self._needed(stamp_ns, stamps[pos]):',
             'if False and pos < len(stamps) and not self._needed(stamp_ns, stamps[pos]):',
             ('tests/test_fault_injection.py',), 'late frames that a newer frame beats are kept, uncounted'),
    Mutation('frame_duplicates_double_counted', 'av_snn_ros/windowing.py',
             "self.counters['frame_duplicate'] += 1", "self.counters['frame_duplicate'] += 2",
             ('tests/test_windowing.py', 'tests/test_fault_injection.py'), 'duplicate frames counted twice'),
    # ---- neighbours: the same kinds of slips next to the ones above
    Mutation('fused_confidence_unscaled', 'av_snn_ros/prediction.py',
             'scores = softmax(result.logits[0] * self.logit_scale)', 'scores = softmax(result.logits[0])',
             ('tests/test_prediction.py',), 'the fused scores published without logit_scale'),
    Mutation('frame_age_limit_exclusive', 'av_snn_ros/windowing.py',
             'centre - self._frame_stamps[j] > self.max_frame_age_ns',
             'centre - self._frame_stamps[j] >= self.max_frame_age_ns',
             ('tests/test_windowing.py',), 'a frame exactly max_frame_age_s old is refused'),
    Mutation('alignment_one_direction', 'av_snn_ros/models/losses.py',
             'return 0.5 * (one_way(sim) + one_way(sim.t()))', 'return one_way(sim)',
             ('tests/test_models.py',), 'the alignment loss only from audio anchors'),
    Mutation('alignment_dot_not_cosine', 'av_snn_ros/models/losses.py',
             'a = F.normalize(audio_feat, dim=1)', 'a = audio_feat',
             ('tests/test_models.py',), 'audio features not normalised (dot product, not cosine similarity)'),
)


def _source_files(repo: Path) -> list[str]:
    """Tracked and untracked-but-not-ignored files: the working tree as the tests see it."""
    out = subprocess.run(['git', '-C', str(repo), 'ls-files', '-co', '--exclude-standard', '-z'],
                         check=True, capture_output=True).stdout
    return [p for p in out.decode().split('\0') if p]


def scratch_copy(repo: Path, dest: Path) -> None:
    """Copy the checkout's working tree (no .git, no ignored build outputs) to ``dest``."""
    for rel in _source_files(repo):
        src = repo / rel
        if src.is_file():
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)


def check_applies(mutation: Mutation, root: Path = REPO) -> str | None:
    """None if ``mutation.before`` occurs exactly once in its file under ``root``, else why not."""
    path = root / mutation.path
    if not path.is_file():
        return f'{mutation.path} does not exist'
    count = path.read_text().count(mutation.before)
    if count != 1:
        return f'{mutation.path}: the text to replace occurs {count} times (must be exactly once)'
    missing = [t for t in mutation.tests if not (root / t.split('::')[0]).is_file()]
    if missing:
        return f'test file(s) not found: {", ".join(missing)}'
    return None


def run_tests(root: Path, tests: tuple[str, ...], env: dict[str, str]) -> tuple[int, float, str, bool]:
    """pytest on ``tests`` in ``root``: (exit code, seconds, last lines of output, whether a test timed out)."""
    cmd = [sys.executable, '-m', 'pytest', '-x', '-q', '-p', 'no:cacheprovider', *tests]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    failed = [line for line in out.splitlines() if line.startswith(('FAILED ', 'ERROR '))]
    # the test that caught it (pytest -ra's summary line), else the end of the output
    tail = failed[0] if failed and proc.returncode == 1 else '\n'.join(out.strip().splitlines()[-3:])
    # pytest-timeout's failure: a test too slow on a loaded machine has not caught anything
    return proc.returncode, time.monotonic() - t0, tail, 'Failed: Timeout >' in out


def verdict(rc: int, timed_out: bool) -> str:
    """``caught`` only for real test failures (pytest exit 1 without a timeout)."""
    if timed_out:
        return 'TIMEOUT'
    return 'caught' if rc == 1 else 'SURVIVED' if rc == 0 else f'ERROR (pytest rc={rc})'


def _env() -> dict[str, str]:
    """The scratch copy has no ../shared beside it: point it at this checkout's data explicitly."""
    sys.path.insert(0, str(REPO))
    from av_snn_ros.paths import default_data_root
    env = dict(os.environ)
    root = default_data_root()
    if root is not None:
        env['AV_SNN_DATA_ROOT'] = str(root.resolve())
    env.pop('AV_SNN_ALLOW_MISSING_DATA', None)      # a missing prerequisite must fail, not pass as "caught"
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--only', nargs='+', metavar='NAME', help='run only these mutations')
    parser.add_argument('--list', action='store_true', help='list the mutations and exit')
    parser.add_argument('--no-baseline', action='store_true',
                        help='skip the unmutated run of the selected test files (it must pass first)')
    parser.add_argument('--keep', action='store_true', help='keep the scratch copy (path printed)')
    args = parser.parse_args(argv)
    names = [m.name for m in MUTATIONS]
    if args.list:
        for m in MUTATIONS:
            print(f'{m.name:32s} {m.path}: {m.why}')
        return 0
    unknown = sorted(set(args.only or ()) - set(names))
    if unknown:
        print(f'unknown mutation(s): {", ".join(unknown)}; see --list', file=sys.stderr)
        return 2
    selected = [m for m in MUTATIONS if not args.only or m.name in args.only]
    stale = {m.name: why for m in selected if (why := check_applies(m)) is not None}
    if stale:
        for name, why in stale.items():
            print(f'{name}: does not apply: {why}', file=sys.stderr)
        return 1

    env = _env()
    scratch = Path(tempfile.mkdtemp(prefix='mutation-check-'))
    root = scratch / REPO.name
    try:
        scratch_copy(REPO, root)
        print(f'scratch copy: {root}; python: {sys.executable}', flush=True)
        if not args.no_baseline:
            files = tuple(dict.fromkeys(t for m in selected for t in m.tests))
            rc, secs, tail, _ = run_tests(root, files, env)
            print(f'baseline (no mutation) on {len(files)} file(s): rc={rc} in {secs:.0f} s', flush=True)
            if rc != 0:
                print(f'the unmutated tests fail, so nothing can be judged:\n{tail}', file=sys.stderr)
                return 1
        results = []
        for m in selected:
            path = root / m.path
            original = path.read_text()
            path.write_text(original.replace(m.before, m.after, 1))
            try:
                rc, secs, tail, timed_out = run_tests(root, m.tests, env)
            finally:
                path.write_text(original)
            result = verdict(rc, timed_out)
            results.append((m, result))
            print(f'{result:10s} {m.name:32s} {secs:6.0f} s  {m.why}', flush=True)
            print('    ' + tail.replace('\n', '\n    ')[:300], flush=True)
        caught = sum(v == 'caught' for _, v in results)
        print(f'\n{caught} of {len(results)} planted bugs caught')
        return 0 if caught == len(results) else 1
    finally:
        if args.keep:
            print(f'kept scratch copy: {root}')
        else:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == '__main__':
    raise SystemExit(main())
