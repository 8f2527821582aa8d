"""Group statistics: response magnitudes and features, similarity, decoding, mixed models,
waveform statistics and encoding models (the workflows that run them, write their tables
and draw their figures are in :mod:`iblnm.workflows`).

Pure functions on arrays and tables; they know nothing about sessions, files or the group
class. Submodules are imported explicitly (``from iblnm.analysis import lmm``); this
package imports nothing heavy on its own.
"""
