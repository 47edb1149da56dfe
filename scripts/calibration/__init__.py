"""The calibration studies of the suite's statistics: one module per study (``python -m scripts.calibration``
runs the simulated ones, see :mod:`scripts.calibration.__main__`), and the real-run calibrations
:mod:`scripts.calibration.livec` and :mod:`scripts.calibration.harness` with their own commands."""
