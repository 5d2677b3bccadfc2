"""The napari plugin: a dock widget that segments an image layer, sample data, and a reader of nucseg outputs.

Declared in ``nucseg/napari.yaml`` (an npe2 manifest) and installed with
``pip install "nucseg[napari]"``. :mod:`nucseg.napari.segmentation` holds what
the widget does, without Qt; :mod:`nucseg.napari.widget` is the Qt front end.
"""
