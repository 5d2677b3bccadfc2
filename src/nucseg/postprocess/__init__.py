"""Network output to nuclei: marker-controlled watershed, and per-nucleus measurements."""
