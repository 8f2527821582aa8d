"""The recordings table: one row per session x fiber, and the one rule naming a recording.

A recording is one fiber of one session. It is identified by ``(eid, recording)``, where
``recording`` is the per-session key given by :func:`recording_keys`; ``recording_id`` is
the two joined (``'{eid}/{recording}'``), a single-column key for joins. The same key
names the recording's HDF5 group (``photometry/{recording}``), its photometry columns, its
rows of the QC table (column ``brain_region`` of ``qc_photometry.pqt``) and its responses
in :class:`iblnm.group.PhotometrySessionGroup`, so that a recording is found again by exact
key, never by matching names.

The key is the name the H5 groups have always had (files written before this table load
unchanged): the bare region (``'VTA'``) when the session records it once, the region with
its hemisphere (``'VTA-l'``, ``'VTA-r'``) when it records it more than once, and
``'{region}_{ROI}'`` (``'VTA_G0'``) when even that is ambiguous (a region recorded twice
with no or the same hemisphere).

The table (``metadata/recordings.pqt``, :data:`RECORDING_COLUMNS`) is written by the
catalog stage (:func:`iblnm.pipeline.catalog.query_database`); ``fiber_idx`` is the
position of the fiber in its session (the order of ``photometryROI.locations.pqt``, and of
the catalog's list columns). Coordinates come from the fibers table
(``metadata/fibers.csv``, ``X-ml_um`` > 0 = left: see :func:`iblnm.validation.fiber_side`)
when one insertion of the subject matches the region and hemisphere; NaN otherwise.

``hemisphere`` is the fiber's physical side where known ('l', 'r'; '' unknown), also for a
midline nucleus (``midline`` True: a region of ``config.MIDLINE_REGIONS``, e.g. the DR).
Contra / ipsi labels are relative to :func:`laterality`, the one definition: the hemisphere
of a fiber in a bilateral region, None for a midline region or an unknown side.
"""

import numpy as np
import pandas as pd

from iblnm import config
from iblnm import validation as v

COORDINATE_COLUMNS = ['X-ml_um', 'Y-ap_um', 'Z-dv_um']
RECORDING_COLUMNS = [
    'recording_id',
    'eid',
    'recording',
    'fiber_idx',
    'roi',
    'subject',
    'brain_region',
    'hemisphere',
    'midline',
    'NM',
    'target_NM',
    *COORDINATE_COLUMNS,
]


def recording_keys(regions, hemispheres=None, rois=None):
    """Per-session keys of a session's fibers (the names of their HDF5 groups).

    Parameters
    ----------
    regions : sequence of str
        The fibers' locations in session order, bare (``'VTA'``) or with a hemisphere
        suffix (``'VTA-l'``); ``config.REGION_NAME_FIXES`` are applied.
    hemispheres : sequence of str, optional
        'l', 'r' or ''/None per fiber (the catalog's ``hemisphere`` list); default: the
        suffixes of ``regions``.
    rois : sequence of str, optional
        ROI column names (``'G0'``, ``'Region1G'``) used when region and hemisphere do not
        tell two fibers apart (default: the fiber positions 0, 1, ...).

    Returns
    -------
    list of str
        One unique key per fiber: the bare region when it occurs once in the session, else
        ``'{region}-{hemisphere}'``, else ``'{region}-{hemisphere}_{roi}'`` for all fibers
        when a collision remains.

    Examples
    --------
    >>> recording_keys(['VTA', 'DR'])
    ['VTA', 'DR']
    >>> recording_keys(['VTA', 'VTA'], ['l', 'r'])
    ['VTA-l', 'VTA-r']
    >>> recording_keys(['VTA-l', 'VTA-l'], rois=['G0', 'G1'])
    ['VTA-l_G0', 'VTA-l_G1']
    >>> recording_keys(['DRN-l'])
    ['DR']
    """
    located = [v.fix_region_name(r) for r in regions]
    bare = [v.strip_hemisphere_suffix(r) for r in located]
    if hemispheres is not None:
        hemis = list(hemispheres) + [None] * (len(located) - len(hemispheres))
        located = [
            f'{b}-{h}' if h in config.HEMISPHERES else b for b, h in zip(bare, hemis, strict=False)
        ]
    names = [b if bare.count(b) == 1 else loc for b, loc in zip(bare, located)]
    if len(set(names)) != len(names):
        labels = [str(r) for r in rois] if rois is not None else [str(i) for i in range(len(names))]
        names = [f'{n}_{roi}' for n, roi in zip(names, labels)]
    return names


def key_region(key, regions=()):
    """The region a recording key (:func:`recording_keys`) names, as the catalog lists it.

    ``'VTA-l_G0'`` is ``'VTA-l'`` when ``regions`` lists it so, else ``'VTA'``; a key
    without a ROI suffix loses only its hemisphere unless ``regions`` lists it as it is.

    Examples
    --------
    >>> key_region('VTA-l'), key_region('VTA_G0'), key_region('VTA-l_G4', ['VTA-l'])
    ('VTA', 'VTA', 'VTA-l')
    """
    key = str(key)
    candidates = [key]
    if '_' in key:
        candidates.append(key.rsplit('_', 1)[0])
    for candidate in candidates:
        if candidate in regions:
            return candidate
    return v.strip_hemisphere_suffix(candidates[-1])


def is_midline(region):
    """Is ``region`` (bare or with a ``-l``/``-r`` suffix) a midline nucleus
    (``config.MIDLINE_REGIONS``)?

    Examples
    --------
    >>> is_midline('DR'), is_midline('DRN-l'), is_midline('VTA-l')
    (True, True, False)
    """
    if not isinstance(region, str):
        return False
    return v.strip_hemisphere_suffix(v.fix_region_name(region)) in config.MIDLINE_REGIONS


def laterality(brain_region, hemisphere):
    """The side a recording is lateral to, for contra / ipsi labels: 'l', 'r' or None.

    None for a midline region (:func:`is_midline`: a DR fiber is contralateral to no
    stimulus, whatever its physical side) and for an unknown hemisphere ('' or None).

    Examples
    --------
    >>> laterality('VTA', 'l'), laterality('DR', 'l'), laterality('VTA', '')
    ('l', None, None)
    """
    if is_midline(brain_region) or hemisphere not in config.HEMISPHERES:
        return None
    return hemisphere


def lateralities(brain_regions, hemispheres):
    """:func:`laterality` of each row (object array of 'l', 'r', None).

    Parameters
    ----------
    brain_regions, hemispheres : array-like, same length
        Per-row region (bare or suffixed) and hemisphere ('l', 'r', '' or None).
    """
    regions = pd.Series(np.asarray(brain_regions, dtype=object))
    hemis = pd.Series(np.asarray(hemispheres, dtype=object))
    codes, uniques = pd.factorize(regions)  # one lookup per distinct region (-1: missing)
    midline = np.array([is_midline(u) for u in uniques] + [False], dtype=bool)[codes]
    lateral = ~midline & hemis.isin(config.HEMISPHERES).to_numpy()
    return np.where(lateral, hemis.to_numpy(), None).astype(object)


def _coordinates(fibers, subject, region, hemisphere):
    """(X, Y, Z) µm of the one insertion of ``subject`` in ``region`` on ``hemisphere``."""
    nan = (np.nan, np.nan, np.nan)
    if fibers is None or len(fibers) == 0 or not set(COORDINATE_COLUMNS) <= set(fibers):
        return nan
    rows = fibers[
        (fibers['subject'] == subject)
        & (fibers['targeted_region'].map(v.strip_hemisphere_suffix) == region)
    ]
    if hemisphere in config.HEMISPHERES:
        sides = rows['X-ml_um'].map(v.fiber_side)
        rows = rows[sides == hemisphere]
    if len(rows) != 1:
        return nan
    return tuple(float(rows[c].iloc[0]) for c in COORDINATE_COLUMNS)


def session_recordings(session, rois=None, fibers=None):
    """Recording rows of one catalog session (a row with the parallel list columns).

    Parameters
    ----------
    session : mapping
        ``eid``, ``subject``, ``NM`` and the lists ``brain_region``, ``hemisphere``,
        ``target_NM`` (one entry per fiber, in fiber order).
    rois : sequence of str, optional
        The fibers' ROI column names (None: unknown).
    fibers : pandas.DataFrame, optional
        The fibers table (coordinates); None: coordinates NaN.

    Returns
    -------
    list of dict
        One row per fiber with the columns of :data:`RECORDING_COLUMNS`.
    """
    regions = list(_as_list(session.get('brain_region')))
    hemis = list(_as_list(session.get('hemisphere')))
    targets = list(_as_list(session.get('target_NM')))
    rois = list(rois) if rois is not None and len(rois) == len(regions) else None
    keys = recording_keys(regions, hemis, rois)
    rows = []
    for i, (region, key) in enumerate(zip(regions, keys)):
        hemi = hemis[i] if i < len(hemis) else None
        xyz = _coordinates(fibers, session.get('subject'), region, hemi)
        rows.append(
            {
                'recording_id': f'{session["eid"]}/{key}',
                'eid': session['eid'],
                'recording': key,
                'fiber_idx': i,
                'roi': rois[i] if rois is not None else None,
                'subject': session.get('subject'),
                'brain_region': region,
                'hemisphere': hemi or '',
                'midline': is_midline(region),
                'NM': session.get('NM'),
                'target_NM': targets[i] if i < len(targets) else None,
                **dict(zip(COORDINATE_COLUMNS, xyz)),
            }
        )
    return rows


def recordings_table(sessions, rois=None, fibers=None):
    """The recordings table of a session catalog (:data:`RECORDING_COLUMNS`).

    Parameters
    ----------
    sessions : pandas.DataFrame
        Catalog rows (``metadata/sessions.pqt``).
    rois : dict, optional
        ``{eid: [ROI column names]}`` (from the catalog stage); missing eids: ``roi`` None.
    fibers : pandas.DataFrame, optional
        The fibers table for the coordinates.

    Returns
    -------
    pandas.DataFrame
        One row per session x fiber, sessions in catalog order, fibers in session order.
    """
    rois = rois or {}
    rows = [
        row
        for _, session in sessions.iterrows()
        for row in session_recordings(session, rois.get(session['eid']), fibers)
    ]
    table = pd.DataFrame(rows, columns=RECORDING_COLUMNS)
    table['fiber_idx'] = table['fiber_idx'].astype(np.int64)
    table['midline'] = table['midline'].astype(bool)
    for col in COORDINATE_COLUMNS:
        table[col] = table[col].astype(float)
    return table


def _as_list(value):
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    return list(value)
