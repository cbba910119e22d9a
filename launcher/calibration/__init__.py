"""Checks of the launcher against calibration data: real vLLM start-ups and their figures.

The data itself is not part of the package: it lives in the source checkout's `calibration/`
directory (see its NOTICE.md); every function here takes the paths it reads.
"""
