"""scripts/mutation_check.py stays runnable: every planted bug still applies to the current source.

The mutation run itself is slow and not part of CI; this only checks that each mutation's text to
replace occurs exactly once in its file and that the test files it runs exist, so a refactor that moves
the code makes this test fail instead of silently turning the mutation into a no-op.
"""
import importlib.util
import sys

import pytest

from conftest import REPO_ROOT

_spec = importlib.util.spec_from_file_location('mutation_check', REPO_ROOT / 'scripts' / 'mutation_check.py')
mutation_check = importlib.util.module_from_spec(_spec)
sys.modules['mutation_check'] = mutation_check          # dataclasses look their module up there
_spec.loader.exec_module(mutation_check)

# The blind spots of issue 20's mutation run: they must stay on the list.
ISSUE_20_ROWS = {'frame_age_doubled', 'centre_frame_excluded', 'head_confidence_unscaled', 'energy_sop_0_8',
                 'energy_mac_3_7', 'alignment_diagonal_positives'}


@pytest.mark.parametrize('mutation', mutation_check.MUTATIONS, ids=lambda m: m.name)
def test_planted_bug_applies_to_the_current_source(mutation):
    assert mutation_check.check_applies(mutation) is None, mutation_check.check_applies(mutation)
    assert mutation.before != mutation.after and mutation.tests


def test_mutation_names_are_unique_and_cover_the_issue_rows():
    names = [m.name for m in mutation_check.MUTATIONS]
    assert len(names) == len(set(names))
    assert ISSUE_20_ROWS <= set(names)


def test_check_applies_reports_a_stale_mutation(tmp_path):
    (tmp_path / 'a.py').write_text('x = 1\nx = 1\n')
    (tmp_path / 't.py').write_text('')
    twice = mutation_check.Mutation('m', 'a.py', 'x = 1', 'x = 2', ('t.py',), '')
    assert 'occurs 2 times' in mutation_check.check_applies(twice, tmp_path)
    gone = mutation_check.Mutation('m', 'a.py', 'y = 1', 'y = 2', ('t.py',), '')
    assert 'occurs 0 times' in mutation_check.check_applies(gone, tmp_path)
