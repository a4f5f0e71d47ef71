"""Medical imaging vertical: calibrated, explained diagnosis from PNG, DICOM and NIfTI."""
