"""The simulated cohort: mice, their genetics, fibers and training histories.

Everything here is planned up front from the dataset seed (cheap, sequential);
each session is then generated independently from its own random stream, so the
data do not depend on the number of worker processes.
"""

import zlib

import numpy as np
import pandas as pd

from iblnm import config
from iblnm.simulate import faults as flt

# lab -> (nickname prefix, number format, iblrig version)
LABS = {
    'cortexlab': ('CQ', '{:03d}', '8.27.3'),
    'wittenlab': ('fip_', '{:d}', '8.24.1'),
    'mainenlab': ('ZFM-0', '{:04d}', '8.27.3'),
    'hoferlab': ('SWC_NM_', '{:03d}', '8.25.2'),
}
LAB_ORDER = ('cortexlab', 'wittenlab', 'mainenlab', 'hoferlab')

# NM -> [(line, strain, genotype)]; lines map to the NM through config.LINE2NM
NM_GENETICS = {
    'DA': [('Ai148xDat', 'B6.SJL-Slc6a3t', ['Slc6a3-IRES-Cre +/-', 'Ai148 +/-'])],
    '5HT': [('Ai148xSert', 'B6.129(Cg)-Slc6a4', ['Slc6a4-Cre +/-', 'Ai148 +/-'])],
    'NE': [
        ('Ai148xDbh', 'B6.Cg-Dbh', ['Dbh-Cre +/-', 'Ai148 +/-']),
        ('Ai148xTh', 'B6.Cg', ['Th-Cre +/-', 'Ai148 +/-']),
    ],
    'ACh': [
        ('Ai148xChat', 'B6;129S6-Chat', ['Chat-IRES-Cre +/-', 'Ai148 +/-']),
        ('Ai148cdhxChat', 'B6;129S6-Chat', ['Chat-IRES-Cre +/-', 'Ai148-G6f-cdh +/-']),
    ],
}
NM_TARGETS = {nm: [t for t, n in config.TARGET2NM.items() if n == nm] for nm in NM_GENETICS}

# bare region -> (|ML|, AP, DV) of the fiber tip relative to bregma (µm)
REGION_COORDS = {
    'VTA': (500, -3200, -4300),
    'SNc': (1300, -3100, -4200),
    'NAc': (1000, 1200, -4300),
    'DR': (150, -4500, -3000),
    'MR': (150, -4300, -4500),
    'LC': (900, -5400, -3000),
    'NBM': (1700, -700, -4200),
    'SI': (1500, -300, -5000),
    'PPT': (1200, -4600, -3300),
}

TRAINING_CONTRASTS = {
    'A': (1.0, 0.5),
    'B': (1.0, 0.5, 0.25, 0.125, 0.0625, 0.0),
    'C': (1.0, 0.25, 0.125, 0.0625, 0.0),
}
BIASED_CONTRASTS = (1.0, 0.25, 0.125, 0.0625, 0.0)
PROTOCOL_PREFIX = '_iblrig_tasks_'
USERS = ('nm_user_a', 'nm_user_b', 'nm_user_c', 'nm_user_d')


def stable_int(text):
    """A process-independent integer hash of ``text`` (CRC-32)."""
    return zlib.crc32(str(text).encode())


def session_rng(seed, subject, index):
    """Random generator of one session, from (dataset seed, subject, session index)."""
    return np.random.default_rng([int(seed), stable_int(subject), int(index)])


# ---------------------------------------------------------------------------
# Mice
# ---------------------------------------------------------------------------
def _fibers(nm, rng, min_fibers=1):
    """1-3 fibers in distinct regions of the NM, each with a hemisphere and coordinates."""
    targets = NM_TARGETS[nm]
    most = min(3, len(targets))
    n = int(rng.integers(min(min_fibers, most), most + 1))
    regions = rng.choice(targets, size=n, replace=False)
    fibers = []
    for i, region in enumerate(regions):
        hemi = 'l' if rng.random() < 0.5 else 'r'
        ml, ap, dv = (c + rng.normal(0, 80) for c in REGION_COORDS[region])
        fibers.append(
            {
                'roi': f'G{i}',
                'fiber': f'fiber{i:02d}',
                'region': str(region),
                'hemisphere': hemi,
                'location': f'{region}-{hemi}',
                'X-ml_um': round(float(abs(ml) if hemi == 'l' else -abs(ml)), 1),
                'Y-ap_um': round(float(ap), 1),
                'Z-dv_um': round(float(dv), 1),
                'gain': round(float(np.clip(rng.lognormal(0.0, 0.3), 0.7, 2.0)), 3),
            }
        )
    return fibers


def _learning_profile(rng):
    """Per-mouse psychometric learning curve and reaction-time parameters."""
    return {
        'threshold_init': rng.uniform(32, 45),  # % contrast
        'threshold_final': rng.uniform(12, 20),
        'lapse_init': rng.uniform(0.12, 0.2, size=2),  # (gamma1, gamma2)
        'lapse_final': rng.uniform(0.02, 0.07, size=2),
        'tau_days': rng.uniform(2.0, 4.0),
        'bias_sd': 4.0,  # % contrast, session-to-session bias
        'bias_shift': rng.uniform(8, 22),  # % contrast, bias_80 - bias_20
        'rt_fast': rng.uniform(0.25, 0.4),  # s, median RT at 100 % contrast when trained
        'day_offset': int(rng.integers(0, 3)),
    }


def plan_mice(preset, rng):
    """Plan the valid mice and the strain-less extra mouse.

    Returns
    -------
    list of dict
        One dict per mouse: lab, subject, NM, line, strain, genotype, sex,
        birth_date, fibers (list of dict), profile (learning parameters),
        strainless (bool).
    """
    counts = {lab: 100 + 7 * i for i, lab in enumerate(LAB_ORDER)}
    mice = []
    nms = [nm for nm, n in preset.mice_per_nm.items() for _ in range(n)]
    if preset.strainless_sessions:
        nms.append('DA')
    for i, nm in enumerate(nms):
        lab = LAB_ORDER[i % len(LAB_ORDER)]
        prefix, fmt, _ = LABS[lab]
        counts[lab] += 1
        genetics = NM_GENETICS[nm]
        line, strain, genotype = genetics[int(rng.integers(len(genetics)))]
        strainless = bool(preset.strainless_sessions) and i == len(nms) - 1
        mice.append(
            {
                'lab': lab,
                'subject': prefix + fmt.format(counts[lab]),
                'NM': nm,
                'line': None if strainless else line,
                'strain': None if strainless else strain,
                'genotype': [] if strainless else list(genotype),
                'sex': 'F' if rng.random() < 0.5 else 'M',
                'fibers': _fibers(nm, rng, preset.min_fibers),
                'profile': _learning_profile(rng),
                'strainless': strainless,
            }
        )
    return mice


def subject_records(mice, first_date):
    """Alyx subject records (columns of ``onecache.SUBJECT_RECORD_COLUMNS``)."""
    from iblnm.onecache import subject_id

    rows = []
    for i, m in enumerate(mice):
        birth = pd.Timestamp(first_date) - pd.Timedelta(days=90 + 5 * i)
        rows.append(
            {
                'id': subject_id(m['lab'], m['subject']),
                'nickname': m['subject'],
                'lab': m['lab'],
                'strain': m['strain'],
                'line': m['line'],
                'genotype': list(m['genotype']),
                'sex': m['sex'],
                'birth_date': birth.date().isoformat(),
                'projects': [config.PROJECT_NAME],
                'responsible_user': USERS[i % len(USERS)],
                'description': '',
            }
        )
    return pd.DataFrame(rows)


def fiber_records(mice):
    """Alyx chronic-insertion table: one row per implanted fiber (``alyx/fibers.pqt``)."""
    rows = [
        {
            'subject': m['subject'],
            'fiber': f['fiber'],
            'targeted_region': f['region'],
            'X-ml_um': f['X-ml_um'],
            'Y-ap_um': f['Y-ap_um'],
            'Z-dv_um': f['Z-dv_um'],
        }
        for m in mice
        for f in m['fibers']
    ]
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------
# Training histories
# ---------------------------------------------------------------------------
def stage_counts(n_sessions, rng):
    """Split a mouse's sessions into (n_training, n_biased, n_ephys), in that order."""
    if n_sessions <= 1:
        return n_sessions, 0, 0
    n_train = max(1, int(round(n_sessions * rng.uniform(0.3, 0.5))))
    n_ephys = max(1 if n_sessions >= 3 else 0, int(round(n_sessions * rng.uniform(0.15, 0.3))))
    n_ephys = min(n_ephys, n_sessions - n_train - (1 if n_sessions >= 3 else 0))
    return n_train, n_sessions - n_train - n_ephys, n_ephys


def psychometric_params(profile, day, session_type, rng):
    """Generating psychometric parameters of one session, per block.

    Parameters
    ----------
    profile : dict
        Mouse learning profile (:func:`_learning_profile`).
    day : int
        Training day of the mouse (0 = first simulated session).
    session_type : {'training', 'biased', 'ephys'}

    Returns
    -------
    dict
        ``{'50': {...}}`` for training, plus ``'20'`` and ``'80'`` for biased/ephys;
        each ``{'bias', 'threshold', 'lapse_left', 'lapse_right'}`` for psychofit
        ``erf_psycho_2gammas`` with contrasts in %, ``lapse_left`` = gamma1 (P(right
        choice) for strong left stimuli) and ``lapse_right`` = gamma2. The 80 block
        (more left stimuli) has the larger bias: fewer rightward choices.
    """
    decay = np.exp(-(day + profile['day_offset']) / profile['tau_days'])
    thr = (
        profile['threshold_final']
        + (profile['threshold_init'] - profile['threshold_final']) * decay
    )
    lapses = profile['lapse_final'] + (profile['lapse_init'] - profile['lapse_final']) * decay
    bias = float(np.clip(rng.normal(0, profile['bias_sd']), -10, 10))

    def block(b):
        return {
            'bias': round(b, 3),
            'threshold': round(float(thr), 3),
            'lapse_left': round(float(lapses[0]), 4),
            'lapse_right': round(float(lapses[1]), 4),
        }

    params = {'50': block(bias)}
    if session_type in config.BLOCK_SESSION_TYPES:
        shift = profile['bias_shift'] * rng.uniform(0.85, 1.15)
        params['20'] = block(bias - shift / 2)
        params['80'] = block(bias + shift / 2)
    return params


def _training_phase(j, n_train):
    if n_train == 1 or j == n_train - 1:
        return 'C'
    return 'A' if j == 0 else 'B'


def plan_sessions(mouse, n_sessions, first_day, preset, rng):
    """Plan a mouse's sessions on consecutive days: training, then biased, then ephys.

    Returns
    -------
    list of dict
        One plan per session (everything the generator needs but the random data).
    """
    n_train, n_biased, n_ephys = stage_counts(n_sessions, rng)
    types = ['training'] * n_train + ['biased'] * n_biased + ['ephys'] * n_ephys
    version = LABS[mouse['lab']][2]
    plans = []
    for day, stype in enumerate(types):
        date = first_day + pd.Timedelta(days=day)
        contrasts = (
            TRAINING_CONTRASTS[_training_phase(day, n_train)]
            if stype == 'training'
            else BIASED_CONTRASTS
        )
        start_s = rng.uniform(8.5, 15.5) * 3600  # s after midnight
        plans.append(
            {
                'lab': mouse['lab'],
                'subject': mouse['subject'],
                'date': date.date().isoformat(),
                'number': 1,
                'day': day,
                'session_type': stype,
                'task_protocol': f'{PROTOCOL_PREFIX}{stype}ChoiceWorld{version}',
                'contrast_set': [float(c) for c in contrasts],
                'psychometrics': psychometric_params(mouse['profile'], day, stype, rng),
                'rt_fast': float(mouse['profile']['rt_fast'] * (1 + np.exp(-day / 2.0))),
                'nogo_rate': float(0.005 + 0.02 * np.exp(-day / 2.0)),
                'task_minutes': float(rng.uniform(*preset.task_minutes)),
                'min_trials': int(preset.min_trials),
                'pre_task_s': float(rng.uniform(*preset.pre_task_s)),
                'noise_rel': float(rng.uniform(*preset.noise_rel)),
                'start_clock_s': float(start_s),
                'fault': 'missing_strain_line' if mouse['strainless'] else None,
                'camera_fault': None,
            }
        )
    return plans


def split_sessions(n_sessions, n_mice):
    """Sessions per mouse: ``n_sessions`` spread as evenly as possible."""
    base, extra = divmod(int(n_sessions), int(n_mice))
    return [base + (1 if i < extra else 0) for i in range(n_mice)]


# ---------------------------------------------------------------------------
# Faults
# ---------------------------------------------------------------------------
def _allowed(fault, plan):
    types = flt.FAULTS[fault]['session_types']
    return plan['fault'] is None and (types is None or plan['session_type'] in types)


def assign_faults(plans, preset, rng):
    """Give a ``fault_fraction`` of the sessions exactly one pipeline fault (in place).

    With ``preset.all_faults`` every session fault is used at least once (the
    constrained ones first). Camera faults go to fault-free sessions only.
    """
    order = rng.permutation(len(plans))
    n_target = int(round(preset.fault_fraction * len(plans)))
    n_target -= sum(p['fault'] is not None for p in plans)
    kinds = sorted(flt.SESSION_FAULTS, key=lambda f: flt.FAULTS[f]['session_types'] is None)
    wanted = list(kinds) if preset.all_faults else []
    while len(wanted) < n_target:
        wanted.append(kinds[int(rng.integers(len(kinds)))])
    for fault in wanted:
        for i in order:
            if _allowed(fault, plans[i]):
                plans[i]['fault'] = fault
                break
    clean = [i for i in order if plans[i]['fault'] is None]
    n_cam = int(round(preset.camera_fault_fraction * len(clean)))
    cams = list(flt.CAMERA_FAULTS) if preset.all_faults else []
    while len(cams) < n_cam:
        cams.append(sorted(flt.CAMERA_FAULTS)[len(cams) % 2])
    for fault, i in zip(cams, clean[::-1]):
        plans[i]['camera_fault'] = fault


# ---------------------------------------------------------------------------
# Messy recordings
# ---------------------------------------------------------------------------
MESS_FLAGS = {
    'edge_start': 'edge_start_fraction',
    'edge_end': 'edge_end_fraction',
    'mid_disconnect': 'mid_disconnect_fraction',
    'dropouts': 'dropout_fraction',
    'dark_offset': 'dark_offset_fraction',
}
BAD_QUALITIES = ('no_signal', 'low_light', 'large_artefacts', 'moderate')


def assign_mess(plans, mice, preset, seed):
    """Give sessions their artefact flags and fibers their quality (in place).

    Each flag goes to exactly round(fraction x sessions) sessions and each non-good
    quality to round(fraction x fibers) fibers of the fault-free sessions (so a fault's
    expected errors stay unambiguous), all drawn from a generator of their own: the
    cohort, the faults and the eids do not depend on them. ``plan['mess']`` holds the
    flags, ``plan['fiber_quality']`` [quality, moderate] per fiber of the mouse.
    """
    rng = np.random.default_rng([int(seed), stable_int(preset.name), stable_int('mess')])
    n_fibers = {m['subject']: len(m['fibers']) for m in mice}
    for plan in plans:
        plan['mess'] = {flag: False for flag in MESS_FLAGS}
        plan['fiber_quality'] = [['good', False] for _ in range(n_fibers[plan['subject']])]
    for flag, attr in MESS_FLAGS.items():
        n = int(round(getattr(preset, attr) * len(plans)))
        for i in rng.permutation(len(plans))[:n]:
            plans[i]['mess'][flag] = True
    slots = [
        (i, j)
        for i, p in enumerate(plans)
        if p['fault'] is None
        for j in range(n_fibers[p['subject']])
    ]
    order = rng.permutation(len(slots))
    k = 0
    for quality in BAD_QUALITIES:
        n = int(round(preset.quality_fractions.get(quality, 0.0) * len(slots)))
        for s in order[k : k + n]:
            i, j = slots[s]
            plans[i]['fiber_quality'][j] = (
                ['good', True] if quality == 'moderate' else [quality, False]
            )
        k += n


def plan_cohort(preset, seed):
    """Plan the whole dataset.

    Returns
    -------
    mice : list of dict
    plans : list of dict
        Session plans ordered by subject then date, faults assigned.
    """
    rng = np.random.default_rng([int(seed), stable_int(preset.name)])
    mice = plan_mice(preset, rng)
    valid = [m for m in mice if not m['strainless']]
    counts = split_sessions(preset.n_sessions, len(valid)) + [preset.strainless_sessions]
    plans = []
    first = pd.Timestamp(preset.first_date)
    for mouse, n in zip(mice, counts):
        start = first + pd.Timedelta(days=int(rng.integers(0, 4 * len(mice))))
        plans.extend(plan_sessions(mouse, n, start, preset, rng))
    assign_faults(plans, preset, rng)
    assign_mess(plans, mice, preset, seed)
    for i, plan in enumerate(plans):
        plan['seed_key'] = [int(seed), stable_int(plan['subject']), plan['day']]
        plan['index'] = i
    return mice, plans
