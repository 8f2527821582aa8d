"""One interface for per-session work: serial, local processes, or a Dask cluster.

Workers get plain data (a catalog row as a dict and a :class:`Connection` spec) and
return plain data (rows and log entries); they never write shared tables. The parent
gathers the results, so the three ways of running give identical outputs.
"""

import functools
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass

from tqdm import tqdm


@dataclass(frozen=True)
class Connection:
    """How a worker connects to ONE: ``mode`` ('local'/'remote') and the local cache dir."""

    mode: str
    cache_dir: str | None = None

    @classmethod
    def from_one(cls, one):
        """Describe an existing ONE instance."""
        from iblnm.io import is_local

        if is_local(one):
            return cls('local', str(one.cache_dir))
        return cls('remote', None)

    def connect(self):
        """A ONE instance for this process (cached per process)."""
        return _connect(self.mode, self.cache_dir)


@functools.lru_cache(maxsize=4)
def _connect(mode, cache_dir):
    from iblnm.io import get_connection

    return get_connection(mode=mode, cache_dir=cache_dir)


def limit_native_threads():
    """Limit the BLAS/OpenMP thread pools of this process to one thread.

    Initializer of the local worker processes: with N workers on N cores, BLAS pools as
    large as the machine in every worker would oversubscribe it (N x N threads). Dask's
    nanny does the same for its workers.
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)


def _dask_client(scheduler):
    from dask.distributed import Client

    return Client(scheduler)


def map_sessions(fn, items, workers=1, scheduler=None, desc=None, progress=True):
    """Apply ``fn`` to every item and yield the results as they complete.

    Parameters
    ----------
    fn : callable
        A module-level (picklable) function of one item.
    items : list
    workers : int
        1 runs in this process; > 1 uses a pool of local processes.
    scheduler : str, optional
        Address of a running Dask distributed scheduler (e.g. ``tcp://host:8786``); takes
        precedence over ``workers``.
    """
    bar = tqdm(total=len(items), desc=desc, disable=not progress, unit='session')
    try:
        if scheduler:
            client = _dask_client(scheduler)
            try:
                from dask.distributed import as_completed as dask_completed

                futures = client.map(fn, items, pure=False)
                for future in dask_completed(futures):
                    yield future.result()
                    bar.update()
            finally:
                client.close()
        elif workers > 1 and len(items) > 1:
            max_workers = min(workers, len(items))
            with ProcessPoolExecutor(max_workers, initializer=limit_native_threads) as pool:
                futures = [pool.submit(fn, item) for item in items]
                for future in as_completed(futures):
                    yield future.result()
                    bar.update()
        else:
            for item in items:
                yield fn(item)
                bar.update()
    finally:
        bar.close()
