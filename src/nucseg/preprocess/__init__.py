"""Raw images to network input: channel conversion, percentile normalization, the one resizer."""
