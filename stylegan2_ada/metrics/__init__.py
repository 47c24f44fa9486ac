"""Evaluation metrics (FID, KID, precision/recall, IS, PPL) and their feature detectors.

`metric_main` is the entry point (`calc_metric`, `report_metric`,
`check_detectors`); `detectors` resolves and loads the detector files.
"""
