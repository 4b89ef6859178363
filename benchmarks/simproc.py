"""The simulator in a child process, so that it spends its own CPU and GIL, not the exporter's.

The child runs a :class:`~smsp_exporter.simulator.Simulator` and answers method calls sent
over a pipe (``add_tag``, ``stats``, ``request_times``, ``reset_stats``, attribute sets).
"""

from __future__ import annotations

import multiprocessing
from multiprocessing.connection import Connection
from typing import Any

from smsp_exporter.simulator import Simulator, TagSpec

API_KEY = "bench-key"
START_TIMEOUT = 30.0
CALL_TIMEOUT = 120.0
# Simulated time the clock stands at: campaigns sent at t=0 then show every status.
FROZEN_AT = 45.0


def _serve(conn: Connection, options: dict[str, Any]) -> None:
    sim = Simulator(api_key=API_KEY, seed=1, **options).start()
    sim.freeze(at=FROZEN_AT)
    conn.send(sim.url)
    try:
        while True:
            request = conn.recv()
            if request is None:
                return
            name, args = request
            try:
                if name == "set":
                    setattr(sim, args[0], args[1])
                    result = None
                else:
                    result = getattr(sim, name)(*args)
                conn.send((True, result))
            except Exception as err:  # report it to the benchmark, keep serving
                conn.send((False, f"{type(err).__name__}: {err}"))
    finally:
        sim.stop()


class SimulatorProcess:
    """``with SimulatorProcess(latency=0.05, page_size=100) as sim: sim.url ...``"""

    def __init__(self, **options: Any) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._process = ctx.Process(target=_serve, args=(child, options), daemon=True)
        self._process.start()
        child.close()
        if not self._conn.poll(START_TIMEOUT):
            self.close()
            raise RuntimeError("the simulator process did not start")
        self.url: str = self._conn.recv()

    def call(self, name: str, *args: Any) -> Any:
        self._conn.send((name, args))
        if not self._conn.poll(CALL_TIMEOUT):
            raise RuntimeError(f"the simulator process did not answer {name!r}")
        ok, result = self._conn.recv()
        if not ok:
            raise RuntimeError(result)
        return result

    def add_tags(self, specs: list[TagSpec]) -> None:
        for spec in specs:
            self.call("add_tag", spec)

    def set(self, attribute: str, value: Any) -> None:
        self.call("set", attribute, value)

    def stats(self) -> dict[str, Any]:
        return self.call("stats")

    def close(self) -> None:
        try:
            if self._process.is_alive():
                self._conn.send(None)
                self._process.join(5)
        except (OSError, EOFError):
            pass
        finally:
            if self._process.is_alive():
                self._process.kill()
                self._process.join(5)
            self._conn.close()

    def __enter__(self) -> SimulatorProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
