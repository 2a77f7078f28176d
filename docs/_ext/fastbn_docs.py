"""Sphinx extension: generate the tables and figures that come from committed data.

Before Sphinx reads any page, :func:`generate.write_all` turns the committed
results (``docs/experiments/*.csv``, ``docs/bench-cpu.json``) into Markdown
tables and PNG figures under ``docs/_generated/``, which the pages include.
Nothing on those pages is typed by hand.
"""

from pathlib import Path

import generate


def _write(app):
    generate.write_all(Path(app.srcdir))


def setup(app):
    app.connect("builder-inited", _write)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
