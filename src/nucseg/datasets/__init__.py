"""Annotated datasets: the one layout detector, decoding, the decode cache, image kinds, data locations."""
