"""Shared by the benchmark scripts: the machine description and their README sections."""

import os
import platform
import re
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parent / 'README.md'
HEADER = '# Benchmarks\n\nRun all with `make bench`. Each script owns one section below.\n'


def machine():
    """CPU model, cores, memory, Python and numpy versions of this machine (one line)."""
    cpu = platform.processor() or 'unknown CPU'
    try:
        models = re.findall(r'model name\s*:\s*(.*)', Path('/proc/cpuinfo').read_text())
        cpu = models[0].strip() if models else cpu
        mem_kb = int(Path('/proc/meminfo').read_text().split()[1])
        memory = f', {mem_kb / 2**20:.0f} GiB'
    except (OSError, ValueError, IndexError):
        memory = ''
    return (
        f'{os.cpu_count()} cores ({len(os.sched_getaffinity(0))} usable){memory}, {cpu}, '
        f'Python {platform.python_version()}, numpy {np.__version__}'
    )


def write_section(name, title, text, readme=README):
    """Replace (or append) the section ``name`` of ``benchmarks/README.md``; others untouched.

    The section is delimited by ``<!-- {name}:start -->`` / ``<!-- {name}:end -->``.
    """
    start, end = f'<!-- {name}:start -->', f'<!-- {name}:end -->'
    current = readme.read_text() if readme.exists() else HEADER
    block = f'{start}\n## {title}\n\n{text}\n{end}'
    if start in current:
        pattern = re.escape(start) + '.*?' + re.escape(end)
        current = re.sub(pattern, lambda _: block, current, flags=re.S)
    else:
        current = current.rstrip('\n') + '\n\n' + block + '\n'
    readme.write_text(current)
