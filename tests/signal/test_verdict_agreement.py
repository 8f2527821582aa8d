"""QC verdicts against the simulator's manifest (issue 12 acceptance: >= 95 % over >= 40 fibers).

The evaluation is ``benchmarks/bench_qc_verdict.py`` (the same metrics the photometry stage
gives the verdict: sliding and signal QC, artefact fractions, the default isosbestic fit).
Measured (60 fibers of 900 s, seed 0): 58/60; this test runs 40 of them.
"""

import numpy as np
import pytest
from conftest import load_benchmark


@pytest.fixture(scope='module')
def bench():
    return load_benchmark('bench_qc_verdict')


def test_verdicts_agree_with_the_manifest(bench):
    table = bench.score(bench.simulated_fibers(40, 900.0, seed=0))
    agree = np.array([bench.agrees(e, v) for e, v in zip(table['expected'], table['verdict'])])
    assert len(table) == 40
    misses = table.loc[~agree, ['fiber', 'label', 'verdict', 'reasons']]
    assert agree.mean() >= 0.95, misses
    # no clean fiber FAILs, and no bad fiber escapes FAIL
    assert not ((table['expected'] == 'PASS') & (table['verdict'] == 'FAIL')).any()
    assert (table.loc[table['expected'] == 'FAIL', 'verdict'] == 'FAIL').all()
