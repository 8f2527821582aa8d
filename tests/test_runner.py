"""The pipeline runner: stage selection, in-process stages, failures and exit codes."""

import os

import pytest

from iblnm.pipeline import runner

SCRIPTS = {
    'ok': 'def main(argv=None):\n    print("ok ran", argv)\n    return 0\n',
    'fails': 'def main(argv=None):\n    return 1\n',
    'crashes': 'def main(argv=None):\n    raise RuntimeError("boom")\n',
    'exits': 'import sys\n\ndef main(argv=None):\n    sys.exit(3)\n',
}


@pytest.fixture
def scripts(tmp_path, monkeypatch):
    """A package of stage command modules standing in for :mod:`iblnm.cli`."""
    package = tmp_path / 'fake_stages'
    package.mkdir()
    (package / '__init__.py').write_text('')
    for name, code in SCRIPTS.items():
        (package / f'{name}.py').write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(runner, 'COMMAND_PACKAGE', 'fake_stages')
    return package


def test_every_stage_is_a_command_of_the_package():
    from iblnm import cli

    for stage in runner.STAGES:
        assert callable(runner._stage_main(stage)), stage
        assert cli.command_module(stage).main is runner._stage_main(stage)


@pytest.mark.parametrize(
    'stage, status',
    [
        ('ok', 'ok'),
        ('fails', 'failed'),
        ('crashes', 'failed'),
        ('exits', 'failed'),
        ('absent', 'missing'),
    ],
)
def test_run_stage_reports_instead_of_raising(scripts, stage, status):
    assert runner.run_stage(stage, ['--workers', '2'])[0] == status


def test_stage_arguments_are_forwarded(scripts, capsys):
    runner.run_stage('ok', ['--workers', '2'])
    assert "ok ran ['--workers', '2']" in capsys.readouterr().out


def test_pipeline_stops_at_the_first_failure_unless_skip_errors(scripts, capsys):
    stages = ['ok', 'fails', 'ok']
    assert runner.run_pipeline(stages=stages) == 1
    assert capsys.readouterr().out.count('ok ran') == 1
    assert runner.run_pipeline(stages=stages, skip_errors=True) == 1
    assert capsys.readouterr().out.count('ok ran') == 2
    assert runner.run_pipeline(stages=['ok', 'crashes', 'absent'], skip_errors=True) == 1
    assert runner.run_pipeline(stages=['ok']) == 0


def test_stage_selection():
    assert runner.select_stages() == runner.STAGES
    assert runner.select_stages(start='task') == runner.STAGES[runner.STAGES.index('task') :]
    assert runner.select_stages(only='wheel') == ['wheel']
    with pytest.raises(ValueError):
        runner.select_stages(start='task', only='wheel')
    with pytest.raises(ValueError):
        runner.select_stages(only='nope')


def test_executor_arguments_reach_only_parallel_stages():
    args = runner.executor_args(workers=3)
    assert set(args) == set(runner.PARALLEL_STAGES)
    assert args['photometry'] == ['--workers', '3']
    assert runner.executor_args(scheduler='tcp://h:1')['task'] == ['--scheduler', 'tcp://h:1']


def test_summary_never_reads_a_log_older_than_the_stage(scripts, tmp_path, monkeypatch, capsys):
    from iblnm import config, util

    stale = tmp_path / 'crashes_log.pqt'
    util.write_log(
        [{'eid': 'old', 'error_type': 'OldError', 'error_message': 'm', 'traceback': None}], stale
    )
    past = stale.stat().st_mtime - 3600
    os.utime(stale, (past, past))
    monkeypatch.setitem(config.STAGE_LOG_FPATHS, 'crashes', stale)
    assert runner.run_pipeline(stages=['crashes']) == 1
    summary = capsys.readouterr().out.split('Pipeline summary')[-1]
    assert 'OldError' not in summary and 'no log written by this run' in summary
    assert 'OldError' in runner.failure_summary('crashes')  # without `since`, read as before
