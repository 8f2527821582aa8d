"""Load photometry and trials from ONE into per-band frames.

ibllib 4.1 (the PyPI release) has no ``PhotometrySessionLoader``; this module provides
the equivalent on top of ``brainbox.io.one.SessionLoader`` and ``iblphotometry.fpio``,
and uses the upstream class as base when an installed ibllib ships one.

Extracted photometry (``alf/photometry/photometry.signal.pqt``) comes in two IBL
layouts: the current one (``valid`` column, names 'GCaMP'/'Isosbestic'/'') and an
older one (``include`` column, 'None' names for dark frames, e.g. the Witten lab
fip_40 session). :func:`normalise_photometry_table` maps both to the current one.
"""

from dataclasses import dataclass, field
from pathlib import Path

import brainbox.io.one as bbone
import iblphotometry.fpio as fpio  # noqa: I001 - fpio must be imported before other iblphotometry modules
import numpy as np
import pandas as pd

from iblnm import config
from iblnm.validation import fix_region_name, strip_hemisphere_suffix

SIGNAL_DATASET = 'photometry.signal.pqt'
LOCATIONS_DATASET = 'photometryROI.locations.pqt'
RAW_PHOTOMETRY_DATASET = '_neurophotometrics_fpData.raw.pqt'
PHOTOMETRY_COLLECTION = 'alf/photometry'
RAW_PHOTOMETRY_COLLECTION = 'raw_photometry_data'
# LED code (LedState & 7) -> band name; 0 = dark frame, 7 = all LEDs (first frame)
LED_BANDS = {1: 'Isosbestic', 2: 'GCaMP', 4: 'RCaMP'}
LED_MASK = 0b111

_SessionLoaderBase = getattr(bbone, 'PhotometrySessionLoader', bbone.SessionLoader)


# ---------------------------------------------------------------------------
# Extracted photometry table
# ---------------------------------------------------------------------------
def normalise_photometry_table(table):
    """Map an extracted photometry table to the current IBL layout.

    ``include`` is renamed ``valid``; 'None'/None channel names and colours become '';
    dark frames (wavelength 0) get wavelength NaN; data columns are float64.
    """
    table = table.copy()
    if 'valid' not in table and 'include' in table:
        table = table.rename(columns={'include': 'valid'})
    if 'valid' not in table:
        table['valid'] = True
    for col in ('name', 'color'):
        table[col] = table[col].where(table[col].notna(), '').astype(str).replace('None', '')
    table['wavelength'] = table['wavelength'].astype(float).replace(0.0, np.nan)
    table['valid'] = table['valid'].astype(bool)
    table['times'] = table['times'].astype(float)
    for col in data_columns(table):
        table[col] = table[col].astype(float)
    return table


def data_columns(table):
    """ROI columns of a photometry table (``Region*``, else ``G*``/``R*`` names)."""
    meta = {'times', 'valid', 'include', 'wavelength', 'name', 'color'}
    candidates = [c for c in table.columns if c not in meta]
    regions = [c for c in candidates if str(c).startswith('Region')]
    return regions or [c for c in candidates if str(c)[:1] in ('G', 'R')]


def roi_to_region(locations):
    """Map ROI column -> column name in the per-band frames.

    The bare region ('VTA') is used when it is unique within the session; a region
    recorded twice (e.g. bilateral VTA) keeps its hemisphere suffix ('VTA-l', 'VTA-r').
    """
    regions = [fix_region_name(r) for r in locations['brain_region']]
    bare = [strip_hemisphere_suffix(r) for r in regions]
    names = [b if bare.count(b) == 1 else r for b, r in zip(bare, regions)]
    if len(set(names)) != len(names):
        names = [f'{n}_{roi}' for n, roi in zip(names, locations.index)]
    return dict(zip(locations.index.astype(str), names))


def split_bands(table, locations=None):
    """Split a normalised photometry table into ``{band: DataFrame(times x regions)}``.

    Uses ``iblphotometry.fpio.from_photometry_df`` (which validates the schema and
    drops the first frame). Only bands present in the data are returned.
    """
    rename = roi_to_region(locations) if locations is not None else None
    if rename is not None:
        rename = {k: v for k, v in rename.items() if k in table.columns}
    return fpio.from_photometry_df(table, data_columns=data_columns(table), rename=rename)


def restrict_to_task(bands, trials, pre=config.PHOTOMETRY_RESTRICT_PRE,
                     post=config.PHOTOMETRY_RESTRICT_POST):  # fmt: skip
    """Keep samples within [first trial start + pre, last trial end + post] (s).

    Like ``fpio.restrict_to_session_time`` but NaN-safe (first/last finite interval) and
    without mutating the input; every band is cut to the shortest length.
    """
    t_start = np.nanmin(trials['intervals_0'].to_numpy(float))
    t_stop = np.nanmax(trials['intervals_1'].to_numpy(float))
    restricted = {}
    for band, frame in bands.items():
        t = frame.index.to_numpy()
        restricted[band] = frame.loc[(t > t_start + pre) & (t < t_stop + post)]
    n = min((len(f) for f in restricted.values()), default=0)
    return {band: frame.iloc[:n] for band, frame in restricted.items()}


# ---------------------------------------------------------------------------
# Raw Neurophotometrics file
# ---------------------------------------------------------------------------
def read_raw_photometry(path):
    """Read a raw Neurophotometrics table in any IBL layout version.

    Returns
    -------
    pandas.DataFrame
        Columns ``times`` (s, the rig clock: ``SystemTimestamp`` or ``Timestamp``),
        ``led_state`` (int, as recorded), ``led`` (``led_state & 7``: 1 = 415 nm,
        2 = 470 nm, 4 = 560 nm, 0 = dark) and ``band`` (name or ''), plus the ROI columns.
    """
    raw = pd.read_parquet(path) if str(path).endswith('.pqt') else pd.read_csv(path)
    time_col = 'SystemTimestamp' if 'SystemTimestamp' in raw else 'Timestamp'
    state_col = 'LedState' if 'LedState' in raw else 'Flags'
    rois = [c for c in raw.columns if str(c).startswith('Region') or str(c)[:1] in ('G', 'R')]
    out = pd.DataFrame({
        'times': raw[time_col].to_numpy(float),
        'led_state': raw[state_col].to_numpy(np.int64),
    })  # fmt: skip
    out['led'] = out['led_state'] & LED_MASK
    out['band'] = out['led'].map(LED_BANDS).fillna('')
    for roi in rois:
        out[roi] = raw[roi].to_numpy(float)
    return out


# ---------------------------------------------------------------------------
# Session loader
# ---------------------------------------------------------------------------
@dataclass(kw_only=True)
class PhotometrySessionLoader(_SessionLoaderBase):
    """``SessionLoader`` with photometry: ``self.photometry = {band: times x regions}``."""

    photometry: dict = field(default_factory=dict, repr=False)

    def _dataset_path(self, name, collection):
        """Local path of a dataset, through ONE (downloads it in remote mode)."""
        return self.one.load_dataset(self.eid, name, collection=collection, download_only=True)

    def load_photometry_table(self):
        """Return (normalised extracted table, locations table)."""
        table = pd.read_parquet(self._dataset_path(SIGNAL_DATASET, PHOTOMETRY_COLLECTION))
        locations = pd.read_parquet(self._dataset_path(LOCATIONS_DATASET, PHOTOMETRY_COLLECTION))
        return normalise_photometry_table(table), locations

    def load_photometry(self, restrict_to_session=True, pre=config.PHOTOMETRY_RESTRICT_PRE,
                        post=config.PHOTOMETRY_RESTRICT_POST):  # fmt: skip
        """Load the extracted photometry into ``self.photometry`` (bands 'GCaMP', 'Isosbestic').

        With ``restrict_to_session``, samples are kept within the task ± (pre, post) s.
        """
        table, locations = self.load_photometry_table()
        bands = split_bands(table, locations)
        if restrict_to_session:
            if self.trials is None or len(self.trials) == 0:
                self.load_trials()
            bands = restrict_to_task(bands, self.trials, pre=pre, post=post)
        self.photometry = bands
        return bands

    def raw_photometry_path(self):
        """Local path of the raw Neurophotometrics file (ALFObjectNotFound if absent)."""
        return Path(self._dataset_path(RAW_PHOTOMETRY_DATASET, RAW_PHOTOMETRY_COLLECTION))
