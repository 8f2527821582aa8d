"""Run settings, resolved when a run starts (never at import): output root, data source, workers.

Precedence, highest first: explicit arguments (:func:`resolve` keywords, the command line),
environment variables, an optional settings file, the defaults::

    IBLNM_ROOT         output root (catalog, logs, HDF5 files, results, figures)
    IBLNM_ONE_MODE     'local' or 'remote' (default: remote when ONE is set up for an Alyx
                       and no IBLNM_ONE_CACHE is given, else local)
    IBLNM_ONE_CACHE    local ONE cache folder (default: the demo cache)
    IBLNM_DEMO_CACHE   where the simulated demo cache is built (default {root}/data/one_cache/demo)
    IBLNM_WORKERS      worker processes per stage (default 1)
    IBLNM_CONFIG       a settings file (TOML; default ``iblnm.toml`` in the current folder)

The settings file holds the same keys in lower case (``root``, ``one_mode``, ``one_cache``,
``demo_cache``, ``workers``), and, in the file only, the lab's QC verdict thresholds: a table
per rule of ``iblnm.config.QC_VERDICT_RULES`` with its ``threshold`` and/or ``severity``::

    [qc_rules.weak_signal]
    threshold = 1.3        # the rule's own comparison; extra 'and' conditions keep theirs
    severity = "FAIL"      # WARNING or FAIL

Verdicts are scored from the stored metrics wherever they are read, so other rules need no
reprocessing (see :mod:`iblnm.provenance`). The default output root is the source checkout when iblnm
runs from one (a folder with ``pyproject.toml`` above the package), else the current
working folder: an installed package never writes inside site-packages.

Every output path derives from the root through one table, :data:`LAYOUT`;
``iblnm.config.SESSIONS_FPATH`` and the other path names are computed from the current
settings each time they are read.
"""

import contextlib
import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
ENV = {
    'root': 'IBLNM_ROOT',
    'one_mode': 'IBLNM_ONE_MODE',
    'one_cache': 'IBLNM_ONE_CACHE',
    'demo_cache': 'IBLNM_DEMO_CACHE',
    'workers': 'IBLNM_WORKERS',
}
FILE_ONLY = ('qc_rules',)  # settings with no environment variable
RULE_KEYS = {'threshold', 'severity'}  # what a [qc_rules.<name>] table may set
CONFIG_ENV = 'IBLNM_CONFIG'
CONFIG_FILENAME = 'iblnm.toml'

# Output layout: path name -> location relative to the output root (the one definition).
LAYOUT = {
    'METADATA_DIR': 'metadata',
    'DATA_DIR': 'data',
    'RESULTS_DIR': 'results',
    'FIGURES_DIR': 'figures',
    'SESSIONS_FPATH': 'metadata/sessions.pqt',
    'SESSIONS_QC_FPATH': 'metadata/sessions_qc.pqt',
    'RECORDINGS_FPATH': 'metadata/recordings.pqt',
    'INSERTIONS_FPATH': 'metadata/insertions.csv',
    'QUERY_DATABASE_LOG_FPATH': 'metadata/query_database_log.pqt',
    'PHOTOMETRY_LOG_FPATH': 'metadata/photometry_log.pqt',
    'TASK_LOG_FPATH': 'metadata/task_log.pqt',
    'WHEEL_LOG_FPATH': 'metadata/wheel_log.pqt',
    'ERRORS_FPATH': 'metadata/errors.pqt',
    'QC_VERDICTS_FPATH': 'metadata/qc_verdicts.pqt',
    'VIDEO_FPATH': 'metadata/video.pqt',
    'VIDEO_LOG_FPATH': 'metadata/video_log.pqt',
    'QCPHOTOMETRY_FPATH': 'data/qc_photometry.pqt',
    'PERFORMANCE_FPATH': 'data/performance.pqt',
    'EVENTS_FPATH': 'data/events.pqt',
    'TRIAL_TIMING_FPATH': 'data/trial_timing.pqt',
    'PEAK_VELOCITY_FPATH': 'data/peak_velocity.pqt',
    'SESSIONS_H5_DIR': 'data/sessions',
    'NWB_DIR': 'data/nwb',
    'NWB_EXPORT_FPATH': 'data/nwb_export.pqt',
    'NWB_LOG_FPATH': 'metadata/export_nwb_log.pqt',
    'RESPONSES_DIR': 'results/responses',
    'RESPONSES_FPATH': 'results/responses/responses.pqt',
    'RESPONSE_MATRIX_FPATH': 'results/responses/response_matrix.pqt',
    'SIMILARITY_MATRIX_FPATH': 'results/responses/response_similarity_matrix.pqt',
    'RESPONSE_SIMILARITY_FPATH': 'results/responses/response_similarity_matrix.pqt',
    'TASK_ENCODING_DIR': 'results/task_encoding',
    'MOVEMENT_ENCODING_DIR': 'results/movement_encoding',
    'QC_OVERVIEW_FIGURES_DIR': 'figures/qc_overview',
    'QC_OVERVIEW_DIR': 'results/qc_overview',
    'TASK_PERFORMANCE_FIGURES_DIR': 'figures/task_performance',
    'TASK_PERFORMANCE_DIR': 'results/task_performance',
    'EXAMPLE_SESSION_FIGURES_DIR': 'figures/example_session',
    'SESSION_VIEWER_FIGURES_DIR': 'figures/session_viewer',
    'DEMO_CACHE_DIR': 'data/one_cache/demo',
}
# The fibers table template shipped with the package (a user's {root}/metadata/fibers.csv wins).
FIBERS_TEMPLATE = PACKAGE_DIR / 'resources' / 'fibers.csv'


def _checkout_root():
    """The source checkout holding this package, or None for an installed package."""
    parent = PACKAGE_DIR.parent
    return parent if (parent / 'pyproject.toml').exists() and (parent / 'iblnm').is_dir() else None


def default_root():
    """Default output root: the source checkout when run from one, else the current folder."""
    return _checkout_root() or Path.cwd()


def _read_file(path=None):
    """Settings from a TOML file ({} when there is none)."""
    path = Path(path) if path else Path(os.environ.get(CONFIG_ENV) or Path.cwd() / CONFIG_FILENAME)
    if not path.exists():
        if os.environ.get(CONFIG_ENV) and path == Path(os.environ[CONFIG_ENV]):
            raise FileNotFoundError(f'{CONFIG_ENV}={path} does not exist')
        return {}
    with open(path, 'rb') as file:
        values = tomllib.load(file)
    unknown = sorted(set(values) - set(ENV) - set(FILE_ONLY))
    if unknown:
        raise ValueError(
            f'{path}: unknown settings {unknown}; known: {sorted(ENV) + list(FILE_ONLY)}'
        )
    return values


def _rule_overrides(value):
    """``{name: {'threshold': x, 'severity': s}}`` as sorted, hashable pairs (validated)."""
    if not isinstance(value, dict):
        raise ValueError(f'qc_rules must be a table of rule tables, not {value!r}')
    out = []
    for name, fields in sorted(value.items()):
        if not isinstance(fields, dict) or not fields or set(fields) - RULE_KEYS:
            raise ValueError(
                f'qc_rules.{name} must set {sorted(RULE_KEYS)} (one or both), not {fields!r}'
            )
        threshold = fields.get('threshold')
        if 'threshold' in fields and (
            isinstance(threshold, bool) or not isinstance(threshold, int | float)
        ):
            raise ValueError(f'qc_rules.{name}.threshold must be a number, not {threshold!r}')
        if 'severity' in fields and fields['severity'] not in ('WARNING', 'FAIL'):
            raise ValueError(
                f'qc_rules.{name}.severity must be "WARNING" or "FAIL", not {fields["severity"]!r}'
            )
        out.append((str(name), tuple(sorted(fields.items()))))
    return tuple(out)


@dataclass(frozen=True)
class Settings:
    """The settings of one run (immutable; make a changed copy with :meth:`replace`).

    Attributes
    ----------
    root : Path
        Output root.
    one_mode : {'local', 'remote'} or None
        None: decided by :func:`iblnm.io.get_one_mode` rules (ONE set up for Alyx or not).
    one_cache : Path or None
        Local ONE cache; None: the demo cache.
    demo_cache : Path
        Where the simulated demo cache lives (generated on first use).
    workers : int
        Worker processes per parallel stage.
    qc_rules : tuple
        The QC verdict rule overrides, ``((name, ((field, value), ...)), ...)`` (the
        ``[qc_rules.<name>]`` tables of the settings file; applied by
        :func:`iblnm.signal.verdict.active_rules`).
    """

    root: Path
    one_mode: str | None = None
    one_cache: Path | None = None
    demo_cache: Path | None = None
    workers: int = 1
    qc_rules: tuple = ()
    sources: dict = field(default_factory=dict, compare=False)  # setting -> where it came from

    def path(self, name):
        """Absolute path of a :data:`LAYOUT` name (e.g. ``'SESSIONS_FPATH'``)."""
        if name == 'DEMO_CACHE_DIR' and self.demo_cache is not None:
            return self.demo_cache
        return self.root / LAYOUT[name]

    @property
    def fibers_fpath(self):
        """``{root}/metadata/fibers.csv`` when the user keeps one, else the packaged template."""
        user = self.root / 'metadata' / 'fibers.csv'
        return user if user.exists() else FIBERS_TEMPLATE

    def replace(self, **changes):
        return replace(self, **changes)


def resolve(config_file=None, **overrides):
    """Build :class:`Settings` from ``overrides`` > environment > settings file > defaults.

    ``overrides`` with the value None are ignored (so that argparse defaults pass through).
    """
    values, sources = {}, {}
    for name, value in _read_file(config_file).items():
        values[name], sources[name] = value, 'file'
    for name, env in ENV.items():
        if os.environ.get(env):
            values[name], sources[name] = os.environ[env], f'${env}'
    for name, value in overrides.items():
        if name not in ENV and name not in FILE_ONLY:
            raise TypeError(f'unknown setting {name!r}; known: {sorted(ENV) + list(FILE_ONLY)}')
        if value is not None:
            values[name], sources[name] = value, 'argument'
    root = Path(values.get('root') or default_root()).expanduser().resolve()
    mode = (values.get('one_mode') or '').strip().lower() or None
    if mode not in (None, 'local', 'remote'):
        raise ValueError(f'one_mode must be "local" or "remote", not {mode!r}')
    cache = values.get('one_cache')
    demo = values.get('demo_cache')
    return Settings(
        root=root,
        one_mode=mode,
        one_cache=Path(cache).expanduser().resolve() if cache else None,
        demo_cache=Path(demo).expanduser().resolve() if demo else None,
        workers=int(values.get('workers') or 1),
        qc_rules=_rule_overrides(values.get('qc_rules') or {}),
        sources=sources,
    )


def describe(resolved):
    """Lines saying each setting's value and where it came from (argument, $VARIABLE, file,
    default), for ``iblnm settings``."""
    values = {
        'root': resolved.root,
        'one_mode': resolved.one_mode or 'auto (remote when ONE is set up for Alyx)',
        'one_cache': resolved.one_cache or f'the demo ({resolved.path("DEMO_CACHE_DIR")})',
        'demo_cache': resolved.path('DEMO_CACHE_DIR'),
        'workers': resolved.workers,
        'qc_rules': ', '.join(name for name, _ in resolved.qc_rules) or 'none',
    }
    return [
        f'{name:<11} {value}  [{resolved.sources.get(name, "default")}]'
        for name, value in values.items()
    ]


_ACTIVE = []  # settings installed by use(); empty: resolved from the environment on each read


def use(settings):
    """Make ``settings`` the current ones for this process (a run calls it when it starts)."""
    _ACTIVE[:] = [settings]
    return settings


@contextlib.contextmanager
def using(settings):
    """``settings`` are the current ones inside the block; the previous state after it."""
    before = list(_ACTIVE)
    _ACTIVE[:] = [settings]
    try:
        yield settings
    finally:
        _ACTIVE[:] = before


def reset():
    """Forget settings installed by :func:`use` (back to the environment and file)."""
    _ACTIVE.clear()


def current():
    """The settings in force: those installed by :func:`use`, else resolved now."""
    return _ACTIVE[0] if _ACTIVE else resolve()


class LazyPath(os.PathLike):
    """A named output location resolved from the current settings each time it is used.

    ``iblnm.config.SESSIONS_FPATH`` and the other layout names are LazyPaths, so a default
    argument such as ``sessions_fpath=config.SESSIONS_FPATH`` means "the catalog of the run
    in progress", not the path of the environment at import time. Anything that takes a
    path (``open``, ``pandas``, ``h5py``, ``Path(...)``) resolves it with ``os.fspath``;
    ``Path`` attributes and ``/`` are forwarded to the resolved ``Path``; pickling gives the
    resolved ``Path``.
    """

    __slots__ = ('_name', '_resolver')

    def __init__(self, name, resolver):
        self._name = name
        self._resolver = resolver

    def path(self):
        """The ``Path`` this name stands for under the current settings."""
        return Path(self._resolver())

    def __fspath__(self):
        return str(self.path())

    def __str__(self):
        return str(self.path())

    def __repr__(self):
        return f'LazyPath({self._name}: {self.path()})'

    def __truediv__(self, other):
        return self.path() / other

    def __eq__(self, other):
        if isinstance(other, LazyPath):
            other = other.path()
        return self.path() == (Path(other) if isinstance(other, str | os.PathLike) else other)

    def __hash__(self):
        return hash(self.path())

    def __reduce__(self):
        return (Path, (str(self.path()),))

    def __getattr__(self, attr):
        return getattr(self.path(), attr)


def layout_path(name):
    """:class:`LazyPath` of a :data:`LAYOUT` name under the current settings."""
    return LazyPath(name, lambda: current().path(name))
