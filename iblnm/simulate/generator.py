"""Generate a whole simulated ONE cache: plan, simulate sessions (in parallel), write, index."""

import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

from iblnm import onecache
from iblnm.simulate import cohort, writer
from iblnm.simulate import faults as flt
from iblnm.simulate import kernels as kn
from iblnm.simulate.presets import get_preset
from iblnm.simulate.session import simulate_session

SCHEMA_VERSION = 2
CONVENTIONS = {
    'time': 's, task (Bpod) clock; photometry times = clock_a * SystemTimestamp + clock_b',
    'dff': 'ΔF/F as a fraction (0.01 = 1 %) of the light above the 1/255 camera floor',
    'contrast': 'psychometrics use signed contrast in % (positive = right stimulus)',
    'choice': '+1 CW = leftward (correct for left stimuli), -1 CCW = rightward, 0 no-go',
    'psychometrics': 'psychofit erf_psycho_2gammas [bias, threshold, lapse_left=gamma1, '
    'lapse_right=gamma2] of P(choice == -1); blocks keyed by 100 * probabilityLeft',
    'wheel': 'cumulative rad, counter-clockwise positive, 2*pi/4096 steps',
    'coordinates': 'µm relative to bregma; X-ml_um > 0 = left hemisphere',
    'true_effects': 'OLS of [mean ΔF/F in (0.1, 0.35) s - mean in (-0.1, 0) s] on '
    '[1, ln(1 + c%)/ln(101), correct], non-no-go trials, evoked (noise-free) ΔF/F',
}


def _simulate_and_write(cache_dir, plan, mouse):
    """Worker: simulate one session, write it, return (manifest entry, Alyx record)."""
    session = simulate_session(plan, mouse)
    writer.write_session(cache_dir, session)
    return session['manifest'], session['alyx']


def _run_sessions(cache_dir, plans, mice, n_jobs, progress):
    """Simulate and write every session; results in plan order."""
    by_subject = {m['subject']: m for m in mice}
    args = [(str(cache_dir), p, by_subject[p['subject']]) for p in plans]
    if n_jobs <= 1:
        results = []
        for i, a in enumerate(args):
            results.append(_simulate_and_write(*a))
            if progress:
                print(f'\r  session {i + 1}/{len(args)}', end='', flush=True)
    else:
        with ProcessPoolExecutor(max_workers=n_jobs) as pool:
            results = list(pool.map(_simulate_and_write, *zip(*args), chunksize=1))
    if progress:
        print()
    return results


def _mouse_summary(mouse):
    keys = ('subject', 'lab', 'NM', 'line', 'strain', 'genotype', 'sex', 'strainless')
    out = {k: mouse[k] for k in keys}
    out['fibers'] = [
        {k: f[k] for k in ('roi', 'fiber', 'region', 'hemisphere', 'location', 'gain', 'X-ml_um')}
        for f in mouse['fibers']
    ]
    return out


def build_manifest(preset, seed, mice, entries):
    """Top-level manifest (see ``docs/simulated_data.md``)."""
    return {
        'generator': 'iblnm.simulate',
        'schema_version': SCHEMA_VERSION,
        'preset': preset.name,
        'seed': int(seed),
        'parameters': asdict(preset),
        'n_sessions': len(entries),
        'n_subjects': len(mice),
        'subjects': [_mouse_summary(m) for m in mice],
        'fault_catalogue': {
            name: {'expected_errors': flt.expected_errors(name), **spec}
            for name, spec in flt.FAULTS.items()
        },
        'camera_fault_catalogue': flt.CAMERA_FAULTS,
        'kernels': kn.NM_KERNELS,
        'effect_signs': {nm: kn.effect_signs(nm) for nm in kn.NM_KERNELS},
        'conventions': CONVENTIONS,
        'sessions': entries,
    }


def generate(out_dir, preset='demo', seed=0, n_jobs=1, progress=False, **overrides):
    """Write a simulated IBL photometry dataset as a local ONE cache.

    Parameters
    ----------
    out_dir : path
        Cache root. Created if needed; a previous simulation there is replaced, any
        other non-empty directory raises ``FileExistsError``.
    preset : {'demo', 'small', 'large', 'qc'}
    seed : int
        Same seed (and preset/overrides) -> identical session files and manifest.
    n_jobs : int
        Worker processes (sessions are independent of it).
    progress : bool
        Print a session counter.
    **overrides
        Fields of :class:`iblnm.simulate.presets.Preset`.

    Returns
    -------
    dict
        The manifest (as in ``out_dir/ground_truth/manifest.json``, plus the
        non-reproducible ``generation_time_s``).
    """
    t0 = time.perf_counter()
    cfg = get_preset(preset, **overrides)
    out_dir = Path(out_dir)
    writer.clear_cache(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    mice, plans = cohort.plan_cohort(cfg, seed)
    results = _run_sessions(out_dir, plans, mice, int(n_jobs), progress)
    entries = [r[0] for r in results]
    onecache.write_alyx_records(
        out_dir,
        subjects=cohort.subject_records(mice, cfg.first_date),
        sessions=writer.alyx_sessions_frame([r[1] for r in results]),
        merge=False,
    )
    writer.write_fibers(out_dir, cohort.fiber_records(mice))
    manifest = build_manifest(cfg, seed, mice, entries)
    writer.write_manifest(out_dir, manifest)
    onecache.build_one_tables(out_dir)
    manifest['generation_time_s'] = round(time.perf_counter() - t0, 2)  # not written to disk
    return manifest
