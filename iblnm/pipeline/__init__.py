"""The pipeline: one module per stage, the skeleton they share, the executor and the runner.

Stages, in run order: :mod:`~iblnm.pipeline.catalog` (``query_database``),
:mod:`~iblnm.pipeline.photometry`, :mod:`~iblnm.pipeline.task`, :mod:`~iblnm.pipeline.wheel`,
:mod:`~iblnm.pipeline.video`, :mod:`~iblnm.pipeline.overview` (``dataset_overview``), and
:mod:`~iblnm.pipeline.export_nwb` (on demand). Every per-session stage is a function
``process_session(job) -> SessionOutcome`` run by :func:`iblnm.pipeline.stage.run_jobs`
(selection, retries, costliest first, outcome tables: :mod:`~iblnm.pipeline.stage`) on the
executor of :mod:`~iblnm.pipeline.executor`; :mod:`~iblnm.pipeline.runner` chains the stages
(``iblnm run``). The analyses that read the stages' outputs are in :mod:`iblnm.workflows`.
"""
