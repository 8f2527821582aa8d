"""Stage 4, wheel: per-trial wheel velocity appended to each session's HDF5 file.

Per session with an HDF5 file (else MissingH5): read its trials, load the wheel,
cut the velocity from stimOn to feedback at 100 Hz (float32, NaN-padded to the longest
trial) and append the ``wheel/`` group. Writes ``metadata/wheel_log.pqt``.
"""

from pathlib import Path

from iblnm import config, util
from iblnm import validation as v
from iblnm.data import PhotometrySession
from iblnm.pipeline.photometry import check_free_space
from iblnm.pipeline.stage import (
    SessionOutcome,
    failed,
    run_stage,
)

STAGE = 'wheel'


def process_session(job):
    """Append the wheel group to one session's HDF5 file; never raises."""
    row, connection, options = job
    eid = str(row['eid'])
    try:
        ps = PhotometrySession(row, one=connection.connect(), h5_dir=options['h5_dir'])
        if not Path(ps.h5_path).exists():
            raise v.MissingH5(f'{eid}.h5 not found: run scripts/photometry.py first')
        ps.load_h5(groups=['trials', 'errors'])
        if ps.trials is None:
            raise v.MissingExtractedData(f'no trials in the HDF5 file{_photometry_cause(ps)}')
        ps.load_wheel()  # validated: InvalidWheelData for non-monotonic timestamps
        velocity = ps.extract_wheel_velocity()
    except Exception as error:  # noqa: BLE001 - every failure becomes a typed log row
        return failed(eid, error)
    try:
        check_free_space(ps.h5_dir)
        ps.save_h5(groups=['wheel'])
    except Exception as error:  # noqa: BLE001 - disk full, permissions, h5py errors
        if not isinstance(error, v.OutputWriteError | v.CorruptH5):
            error = v.wrap(v.OutputWriteError, error, ps.h5_path.name)
        return failed(eid, error)
    n_samples = velocity['velocity'].shape[1]
    return SessionOutcome(
        eid, rows=[{'eid': eid, 'n_trials': len(ps.trials), 'n_samples': n_samples}]
    )


def _photometry_cause(ps, max_chars=300):
    """'; the photometry stage logged T: message' for a file without trials: what the
    photometry stage logged (its errors group), so the wheel row names the cause ('' if none)."""
    logged = [f'{e["error_type"]}: {e["error_message"]}' for e in ps.errors if e.get('error_type')]
    if not logged:
        return ''
    text = ' | '.join(logged)
    return '; the photometry stage logged ' + (
        text if len(text) <= max_chars else text[: max_chars - 1] + '…'
    )


def run_wheel_stage(
    one=None,
    catalog=None,
    workers=1,
    scheduler=None,
    h5_dir=config.SESSIONS_H5_DIR,
    log_fpath=config.WHEEL_LOG_FPATH,
    sessions_fpath=config.SESSIONS_FPATH,
    progress=True,
):
    """Run the wheel stage over the analysable sessions; always writes the log."""
    return run_stage(
        STAGE,
        process_session,
        one,
        catalog,
        sessions_fpath,
        outputs=[(util.write_log, 'log', log_fpath)],
        workers=workers,
        scheduler=scheduler,
        progress=progress,
        options={'h5_dir': str(h5_dir)},
        temporaries=h5_dir,
    )
