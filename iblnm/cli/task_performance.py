"""Task performance: learning curves and psychometric trajectories per target-NM.

Usage: python scripts/task_performance.py

Reads data/performance.pqt and metadata/sessions.pqt; writes figures to
figures/task_performance/ and tables to results/task_performance/
(see iblnm.workflows.task_performance).
"""

import argparse
import sys

from iblnm import config
from iblnm.workflows.task_performance import run_task_performance


def main(argv=None):
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    for path in (config.PERFORMANCE_FPATH, config.SESSIONS_FPATH):
        if not path.exists():
            print(f'{path} not found: run scripts/run_pipeline.py first', file=sys.stderr)
            return 1
    print(run_task_performance().summary())
    return 0


if __name__ == '__main__':
    sys.exit(main())
