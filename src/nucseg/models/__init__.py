"""Networks, the self-describing model folder, and the registry of shipped models.

``networks`` (torch) builds the architectures, ``folder`` reads and writes
model folders, ``onnx`` (torch) exports a network's ONNX graph and
``registry`` names the shipped models. This package's own namespace holds
only what every model shares and needs no torch.
"""

#: Height and width of network inputs must be multiples of this (five 2x downsamplings).
SIZE_DIVISOR = 32
