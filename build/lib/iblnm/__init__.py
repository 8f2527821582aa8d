"""iblnm: fiber-photometry analysis for the IBL neuromodulators project."""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version('iblnm')
except _metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = '0+unknown'

__all__ = ['__version__']
