"""Every code block of README.md runs as written (issue 15).

Python blocks run in one subprocess per block, on the outputs of the whole pipeline run on
the demo preset (``demo_pipeline``), with the settings a user would have after ``make run``
(``IBLNM_ROOT`` = that output root, ``IBLNM_ONE_CACHE`` = the demo cache). Two calls that
need what no test machine has are replaced by recording stubs, and the test checks how they
were called: ``ONE.setup`` (a real Alyx and its credentials) and dask-jobqueue's
``SLURMCluster`` (a SLURM cluster; not a dependency). TOML blocks are read as settings
files. Shell blocks are checked command by command: every ``iblnm`` command and ``make``
target they name exists (running them would mean running the pipeline inside its tests).
"""

import os
import re
import subprocess
import sys
import textwrap

import pytest

from iblnm import cli, config, settings

README = config.PACKAGE_DIR.parent / 'README.md'
BLOCK = re.compile(r'^( *)```(\w+)\n(.*?)^ *```', re.S | re.M)

STUBS = textwrap.dedent(
    """
    import sys, types, json, os
    calls = []
    import one.api
    one.api.ONE.setup = staticmethod(lambda **kw: calls.append(('ONE.setup', kw)))
    jobqueue = types.ModuleType('dask_jobqueue')

    class SLURMCluster:
        scheduler_address = 'tcp://127.0.0.1:8786'

        def __init__(self, **kw):
            calls.append(('SLURMCluster', kw))

        def scale(self, **kw):
            calls.append(('scale', kw))

    jobqueue.SLURMCluster = SLURMCluster
    sys.modules['dask_jobqueue'] = jobqueue
    import atexit
    atexit.register(lambda: open(os.environ['README_CALLS'], 'w').write(json.dumps(calls)))
    """
)


def blocks(language):
    found = BLOCK.findall(README.read_text())
    return [textwrap.dedent(code) for _, lang, code in found if lang == language]


def test_readme_has_the_blocks_this_test_knows():
    assert len(blocks('python')) >= 4
    assert blocks('toml') and blocks('bash')


@pytest.mark.parametrize('index', range(len(blocks('python'))))
def test_python_block_runs_on_the_demo(index, demo_pipeline, tmp_path):
    root, cache = demo_pipeline
    code = blocks('python')[index]
    env = {
        **os.environ,
        'IBLNM_ROOT': str(root),
        'IBLNM_ONE_CACHE': str(cache),
        'README_CALLS': str(tmp_path / 'calls.json'),
        'MPLBACKEND': 'Agg',
    }
    env.pop('IBLNM_ONE_MODE', None)
    result = subprocess.run(
        [sys.executable, '-c', STUBS + code],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, f'README block {index}:\n{code}\n{result.stderr[-3000:]}'
    calls = (tmp_path / 'calls.json').read_text()
    if 'ONE.setup' in code:
        assert 'alyx.internationalbrainlab.org' in calls
    if 'SLURMCluster' in code:
        assert '"SLURMCluster"' in calls and '"scale"' in calls


def test_toml_blocks_are_valid_settings_files(tmp_path):
    for i, text in enumerate(blocks('toml')):
        fpath = tmp_path / f'settings_{i}.toml'
        fpath.write_text(text)
        resolved = settings.resolve(config_file=fpath)
        assert resolved.sources and set(resolved.sources.values()) <= {
            'file',
            *[f'${env}' for env in settings.ENV.values()],
        }


def test_shell_blocks_name_existing_commands_and_targets():
    makefile = (config.PACKAGE_DIR.parent / 'Makefile').read_text()
    targets = set(re.findall(r'^([\w-]+):', makefile, re.M))
    for block in blocks('bash'):
        for line in block.splitlines():
            words = line.split('#')[0].split()
            if not words:
                continue
            if words[0] == 'make':
                assert words[1] in targets, line
            if words[0] == 'iblnm':
                valued = {'--root', '--one-cache', '--one-mode', '--config'}
                rest = iter(words[1:])
                command = next(w for w in rest if not (w in valued and next(rest)) and w[0] != '-')
                assert cli.command_module(command).main, line


def test_the_layout_names_every_module_of_the_package_and_nothing_else():
    """The README's layout tree lists every module and sub-package of ``iblnm/`` (a newcomer
    finds any behaviour from it), and each module the command table points to exists."""
    text = README.read_text()
    tree = text[text.index('## Layout') :]
    tree = tree[tree.index('```') + 3 :]
    tree = tree[: tree.index('```')]
    listed = set(re.findall(r'^  (\w+)(?:\.py|/)', tree, re.M))
    package = config.PACKAGE_DIR
    present = {
        p.stem if p.suffix == '.py' else p.name
        for p in package.iterdir()
        if (p.suffix == '.py' or (p.is_dir() and not p.name.startswith('__')))
        and p.name not in ('__init__.py', '__main__.py')
    }
    assert listed == present, {'not listed': present - listed, 'not in iblnm/': listed - present}
    table = text[text.index('| command | module: entry point |') :].split('\n\n', 1)[0]
    for module, entry in re.findall(r'\| `([\w/]+\.py)`: `(\w+)`', table):
        source = (package / module).read_text()
        assert re.search(rf'^def {entry}\(', source, re.M), (module, entry)
