"""SAR Seg QGIS plugin entry point."""


def classFactory(iface):  # noqa: ANN001, ANN201, N802 - name and signature fixed by QGIS
    """Called by QGIS to load the plugin."""
    from .plugin import SarSegPlugin

    return SarSegPlugin(iface)
