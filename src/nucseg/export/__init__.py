"""Exporting models to the formats other tools read (the BioImage Model Zoo)."""
