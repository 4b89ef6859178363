"""``python -m smsp_exporter.simulator``: the simulator on its own (``--help``)."""

from .command import main

if __name__ == "__main__":
    raise SystemExit(main())
