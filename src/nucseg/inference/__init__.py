"""Segmenting one image: the Model interface, tiled inference, backends, automatic sizing, the classical baseline."""
