"""monst3r-fw viewer plugin: ``monst3r-fw view RUN_DIR`` (a viser 4D viewer) and the ``report``
exporter (report.html with embedded figures). Importing it is free: viser, OpenCV and matplotlib
are imported inside the functions that use them."""
