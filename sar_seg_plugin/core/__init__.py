"""Pure numpy/scipy/GDAL logic of SAR Seg. Nothing here imports qgis, so plain pytest covers it."""
