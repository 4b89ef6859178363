"""``python -m smsp_exporter.simulator``: the simulator on its own (``--help``)."""

from .core import main

if __name__ == "__main__":
    raise SystemExit(main())
