"""Size presets of the simulated dataset (``demo``, ``small``, ``large``, ``qc``).

A preset fixes how many mice and sessions are simulated, how long the sessions
are, how many of them carry a fault and how messy the recordings are (``qc``: short
sessions, 2-3 fibers per mouse and a fixed mix of fiber qualities, for QC verdicts).
Every field can be overridden through
``generate(..., **overrides)``.
"""

from dataclasses import dataclass, field, fields, replace


@dataclass(frozen=True)
class Preset:
    """Parameters of one simulated dataset.

    Attributes
    ----------
    name : str
        Preset name recorded in the manifest.
    mice_per_nm : dict
        Number of (valid) mice per neuromodulator, e.g. ``{'DA': 3, '5HT': 2}``.
    n_sessions : int
        Sessions of the valid mice in total (spread evenly over the mice).
    strainless_sessions : int
        Sessions of the extra mouse without strain and line (0: no such mouse).
    task_minutes : tuple of float
        (min, max) task duration drawn per session (min).
    min_trials : int
        Lower bound on the number of trials of a session without the
        ``too_few_trials`` fault (the task runs longer if needed).
    pre_task_s : tuple of float
        (min, max) time the photometry recording starts before the task (s).
    fault_fraction : float
        Target fraction of sessions with exactly one pipeline fault.
    all_faults : bool
        Inject every pipeline fault at least once.
    camera_fault_fraction : float
        Fraction of fault-free sessions with a camera fault (at least one of each
        kind when ``all_faults``).
    noise_rel : tuple of float
        (min, max) Gaussian noise SD per channel and frame at 30 Hz, relative to the
        light level F0 above the dark level (dimensionless), drawn per session; each
        band of each fiber gets it times U(0.8, 1.25).
    first_date : str
        Date of the first session of the first mouse (``YYYY-MM-DD``).
    min_fibers : int
        Fewest fibers per mouse (at most 3 and the number of the NM's targets).
    quality_fractions : dict
        Fraction of the fibers (of fault-free sessions) of each non-good quality:
        ``no_signal``, ``low_light``, ``large_artefacts``, and ``moderate`` (good fibers
        with moderate shared artefacts, expected WARNING); the rest are good.
    edge_start_fraction, edge_end_fraction : float
        Fraction of the sessions whose recording starts / ends with the patch cord off.
    mid_disconnect_fraction : float
        Fraction of the sessions with a short (1-10 s) disconnection in the middle.
    dropout_fraction : float
        Fraction of the sessions with dropout frames.
    dark_offset_fraction : float
        Fraction of the sessions (rigs) with a dark offset above the 1/255 floor.
    """

    name: str
    mice_per_nm: dict
    n_sessions: int
    strainless_sessions: int = 2
    task_minutes: tuple = (45.0, 85.0)
    min_trials: int = 0
    pre_task_s: tuple = (60.0, 400.0)
    fault_fraction: float = 0.25
    all_faults: bool = True
    camera_fault_fraction: float = 0.06
    noise_rel: tuple = (0.002, 0.005)
    first_date: str = '2024-03-04'
    min_fibers: int = 1
    quality_fractions: dict = field(default_factory=dict)
    edge_start_fraction: float = 0.0
    edge_end_fraction: float = 0.0
    mid_disconnect_fraction: float = 0.0
    dropout_fraction: float = 0.0
    dark_offset_fraction: float = 0.0


PRESETS = {
    'demo': Preset(
        name='demo',
        mice_per_nm={'DA': 2, '5HT': 2, 'NE': 2, 'ACh': 2},
        n_sessions=40,
        strainless_sessions=2,
        pre_task_s=(60.0, 300.0),
        quality_fractions={
            'no_signal': 0.06,
            'low_light': 0.03,
            'large_artefacts': 0.06,
            'moderate': 0.03,
        },
        edge_start_fraction=0.6,
        edge_end_fraction=0.5,
        mid_disconnect_fraction=0.1,
        dropout_fraction=0.5,
        dark_offset_fraction=0.3,
    ),
    'small': Preset(
        name='small',
        mice_per_nm={'DA': 1, '5HT': 1, 'NE': 1, 'ACh': 1},
        n_sessions=17,
        strainless_sessions=1,
        task_minutes=(7.0, 9.0),
        min_trials=102,
        pre_task_s=(20.0, 40.0),
        camera_fault_fraction=0.5,
    ),
    'large': Preset(
        name='large',
        mice_per_nm={'DA': 30, '5HT': 25, 'NE': 20, 'ACh': 25},
        n_sessions=1000,
        strainless_sessions=2,
        task_minutes=(5.0, 10.0),
        min_trials=95,
        pre_task_s=(20.0, 60.0),
    ),
    'qc': Preset(
        name='qc',
        mice_per_nm={'DA': 4, '5HT': 4, 'ACh': 4},
        n_sessions=24,
        strainless_sessions=0,
        task_minutes=(5.0, 6.0),
        min_trials=95,
        pre_task_s=(40.0, 200.0),
        fault_fraction=0.0,
        all_faults=False,
        camera_fault_fraction=0.0,
        min_fibers=2,
        quality_fractions={
            'no_signal': 0.2,
            'low_light': 0.15,
            'large_artefacts': 0.2,
            'moderate': 0.1,
        },
        edge_start_fraction=0.5,
        edge_end_fraction=0.5,
        mid_disconnect_fraction=0.2,
        dropout_fraction=0.5,
        dark_offset_fraction=0.5,
    ),
}


def get_preset(name='demo', **overrides):
    """Return the preset ``name`` with ``overrides`` applied.

    Parameters
    ----------
    name : {'demo', 'small', 'large', 'qc'}
    **overrides
        Any :class:`Preset` field, e.g. ``n_sessions=6`` or ``task_minutes=(5, 6)``.

    Raises
    ------
    ValueError
        Unknown preset name or unknown override field.
    """
    if name not in PRESETS:
        raise ValueError(f'unknown preset {name!r}; choose from {sorted(PRESETS)}')
    known = {f.name for f in fields(Preset)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f'unknown preset field(s): {", ".join(unknown)}')
    for key in ('task_minutes', 'pre_task_s', 'noise_rel'):
        if key in overrides:
            overrides[key] = tuple(float(v) for v in overrides[key])
    return replace(PRESETS[name], **overrides)
