"""One interface for per-session work: serial, local processes, or a Dask cluster.

Workers get plain data (a catalog row as a dict and a :class:`Connection` spec) and
return plain data (rows and log entries); they never write shared tables. The parent
gathers the results, so the three ways of running give identical outputs.
"""

import contextlib
import ctypes
import functools
import os
import signal
import threading
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


PR_SET_PDEATHSIG = 1  # linux/prctl.h
PARENT_CHECK_S = 1.0  # how often a worker checks that its parent is alive (s)


def _die_with_parent(parent_pid):
    """Make this worker process end when ``parent_pid`` (the runner) ends.

    Linux: ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` (the kernel kills the worker when the
    parent dies, even by ``kill -9``); everywhere: a daemon thread that checks
    ``os.getppid()`` every :data:`PARENT_CHECK_S` s and exits the process once the worker
    has been re-parented.
    """
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)

    def watch():
        while True:
            threading.Event().wait(PARENT_CHECK_S)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name='iblnm-parent-watch', daemon=True).start()


def init_worker(parent_pid):
    """Initializer of the local worker processes.

    One BLAS thread (:func:`limit_native_threads`) and one thread per session
    (:func:`iblnm.util.session_threads`: the workers already use the cores); the default
    SIGTERM action and SIGINT ignored (the runner handles both and terminates its workers, so
    a Ctrl-C never leaves a half-stopped pool); the worker ends with its parent
    (:func:`_die_with_parent`).
    """
    from iblnm.util import SESSION_THREADS_ENV

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(parent_pid)
    limit_native_threads()
    os.environ[SESSION_THREADS_ENV] = '1'


class Terminated(KeyboardInterrupt):
    """SIGTERM received by the runner (raised like Ctrl-C, so that cleanup runs)."""


def _raise_terminated(signum, _frame):
    raise Terminated(f'signal {signal.Signals(signum).name}')


@contextlib.contextmanager
def terminate_on_signals():
    """Turn SIGTERM into :class:`Terminated` in the main thread while the block runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stop_pool(pool, interrupted):
    """Cancel the pending jobs; on an interruption also terminate the running workers."""
    processes = list((getattr(pool, '_processes', None) or {}).values())
    if interrupted:
        for process in processes:  # a worker mid-session would otherwise write on
            with contextlib.suppress(Exception):
                process.terminate()
    pool.shutdown(wait=True, cancel_futures=True)


def _local_pool(fn, items, max_workers):
    pool = ProcessPoolExecutor(max_workers, initializer=init_worker, initargs=(os.getpid(),))
    interrupted = True
    try:
        with terminate_on_signals():
            futures = [pool.submit(fn, item) for item in items]
            for future in as_completed(futures):
                yield future.result()
        interrupted = False
    except GeneratorExit:  # the consumer stopped early (e.g. an output cannot be written)
        interrupted = False
        raise
    finally:
        _stop_pool(pool, interrupted)


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
        1 runs in this process (with one BLAS/OpenMP thread while it runs, as each local
        worker has); > 1 uses a pool of local processes.
    scheduler : str, optional
        Address of a running Dask distributed scheduler (e.g. ``tcp://host:8786``); takes
        precedence over ``workers``.

    Local workers never outlive the caller: SIGTERM/SIGINT in the caller terminate them
    (the signal is re-raised as :class:`Terminated`/``KeyboardInterrupt``), and each worker
    ends when its parent dies (:func:`init_worker`).
    """
    # no bar without work (a resumed stage with every session done): the summary says so
    bar = tqdm(total=len(items), desc=desc, disable=not progress or not items, unit='session')
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
            with contextlib.closing(_local_pool(fn, items, min(workers, len(items)))) as pool:
                for result in pool:
                    yield result
                    bar.update()
        else:
            # one BLAS thread, as in the local workers: the per-session problems are small
            # (event-kernel fits: 212 ms with 2 OpenBLAS threads, 148 ms with 1 on CQ002), and
            # the serial and parallel runs then compute alike
            from iblnm.util import native_threads

            with native_threads(1):
                for item in items:
                    yield fn(item)
                    bar.update()
    finally:
        bar.close()
