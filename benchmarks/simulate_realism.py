"""Compare the messiness of simulated fibers with the real recordings in ``../shared``.

Robust statistics per band, the same on both: light above the 1/255 floor, noise SD (of
frame-to-frame differences / √2, median over 30 s chunks) relative to that light and to
the total F0, the fraction of samples near the floor (< floor + 4e-4), dropout frames
(< 50 % of the light of the 2 s running median, outside near-floor stretches) per 1000
frames, and the lowest robust z against the 2 s running median (MAD scale).

Usage::

    .venv/bin/python benchmarks/simulate_realism.py [--seeds 5]

Prints a markdown table (the one in ``docs/simulated_data.md`` §2.8).
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from iblnm import config  # noqa: E402
from iblnm.simulate import simulate_fiber  # noqa: E402
from iblnm.simulate.faults import FLOOR  # noqa: E402

NEAR_FLOOR = 4e-4  # normalised intensity above 1/255
FS = 29.99


def band_stats(x):
    """Robust messiness statistics of one band (values normalised 0-1), as a dict."""
    x = np.asarray(x, float)
    above = float(np.median(x) - FLOOR)
    chunks = []
    for k in range(0, len(x) - 900 + 1, 900):
        c = x[k : k + 900]
        if np.median(c) - FLOOR < NEAR_FLOOR and above > NEAR_FLOOR:
            continue  # a disconnected chunk of a fiber with light
        d = np.diff(c)
        sd = 1.4826 * np.median(np.abs(d - np.median(d))) / np.sqrt(2)
        chunks.append((sd, np.median(c)))
    sd, f0 = np.median(np.array(chunks), axis=0) if chunks else (np.nan, np.nan)
    near = x - FLOOR < NEAR_FLOOR
    run = pd.Series(x).rolling(61, center=True, min_periods=1).median().to_numpy()
    rel = (x - FLOOR) / np.maximum(run - FLOOR, 1e-12)
    drop = (rel < 0.5) & (run - FLOOR > NEAR_FLOOR)
    resid = x - run
    scale = 1.4826 * np.median(np.abs(resid))
    z_min = float(resid.min() / scale) if scale > 0 else np.nan
    return {
        'light above floor': above,
        'noise / light': sd / max(f0 - FLOOR, 1e-12),
        'noise / F0 (total)': sd / f0,
        'near-floor fraction': float(near.mean()),
        'dropouts / 1000 frames': 1000 * float(drop.mean()),
        'min robust z': z_min,
    }


def real_bands():
    """(name, band, values) of the real recordings with the messiness of interest."""
    root = config.REAL_DATA_DIR / 'ibl'
    out = []
    cq = root / 'cortexlab/Subjects/CQ002/2024-11-05/001/raw_photometry_data'
    v5 = root / 'neurophotometrics_versions/version_5'
    for name, folder, rois in (('CQ002', cq, ('G0', 'G4')), ('version_5', v5, ('G0',))):
        path = folder / '_neurophotometrics_fpData.raw.pqt'
        if not path.exists():
            continue
        raw = pd.read_parquet(path)
        led = raw['LedState'].to_numpy() & 7
        for roi in rois:
            for code, band in ((2, 'GCaMP'), (1, 'Isosbestic')):
                out.append((f'real {name} {roi}', band, raw.loc[led == code, roi].to_numpy()))
    return out


def simulated_bands(seeds):
    """(name, band, values) of simulated fibers: a messy good fiber and a low-light one."""
    cases = {
        'sim good, edges + dropouts (3000 s)': dict(
            duration_s=3000,
            quality='good',
            edge_start=True,
            edge_end=True,
            dropouts=True,
            dark_offset=True,
        ),
        'sim low_light (3000 s)': dict(duration_s=3000, quality='low_light'),
    }
    out = []
    for name, kwargs in cases.items():
        for seed in range(seeds):
            fiber = simulate_fiber(seed=seed, **kwargs)
            out.append((name, 'GCaMP', fiber['gcamp']))
            out.append((name, 'Isosbestic', fiber['iso']))
    return out


def table(rows):
    """Markdown table: one row per (recording, band), medians [min-max] over seeds."""
    frame = pd.DataFrame([{'recording': n, 'band': b, **band_stats(x)} for n, b, x in rows])
    cols = [c for c in frame.columns if c not in ('recording', 'band')]
    fmt = {
        'light above floor': '{:.2g}',
        'noise / light': '{:.2%}',
        'noise / F0 (total)': '{:.2%}',
        'near-floor fraction': '{:.3f}',
        'dropouts / 1000 frames': '{:.2f}',
        'min robust z': '{:.0f}',
    }
    lines = ['| recording | band | ' + ' | '.join(cols) + ' |', '|' + '---|' * (len(cols) + 2)]
    for (name, band), group in frame.groupby(['recording', 'band'], sort=False):
        cells = []
        for c in cols:
            v = group[c].to_numpy()
            cell = fmt[c].format(np.median(v))
            if len(v) > 1:
                cell += f' [{fmt[c].format(v.min())}–{fmt[c].format(v.max())}]'
            cells.append(cell)
        lines.append(f'| {name} | {band} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seeds', type=int, default=5)
    args = parser.parse_args(argv)
    print(table(real_bands() + simulated_bands(args.seeds)))
    return 0


if __name__ == '__main__':
    sys.exit(main())
