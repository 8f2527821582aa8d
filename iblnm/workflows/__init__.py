"""Analysis workflows: each reads the pipeline's outputs, runs its statistics and writes
its tables (``results/``) and figures (``figures/``).

One module per analysis command (``iblnm <name>``, ``scripts/<name>.py``), each with one
entry point ``run_<name>``:

- :mod:`~iblnm.workflows.responses`: response magnitudes, event kernels, mixed models,
  response vectors, similarity, decoding, mean traces (``run_responses``);
- :mod:`~iblnm.workflows.encoding`: movement encoding (``run_movement_encoding``) and
  task encoding (``run_task_encoding``);
- :mod:`~iblnm.workflows.task_performance`: learning curves and psychometrics
  (``run_task_performance``);
- :mod:`~iblnm.workflows.qc_overview`: QC metric distributions, PCA, trends
  (``run_qc_overview``);
- :mod:`~iblnm.workflows.example_session`: the annotated single-session walk-through
  (``run_example_session``).

The statistics they call are the pure functions of :mod:`iblnm.analysis`; the plots are
those of :mod:`iblnm.vis` (and the workflow's own figure functions); the recordings come
from :class:`iblnm.group.PhotometrySessionGroup`. The pipeline stages that produce their
inputs are in :mod:`iblnm.pipeline`.
"""
