"""preftrack's development harness: launchers for Triton (pip wheel) and the gateway, the local stack
(``preftrack-dev up``), the prequential replay, simulated shoppers and the insights measures. Tests and
benchmarks use it; no production image installs it."""
