"""Raw dataset -> class-split TFRecord shards + manifest.json."""
__version__ = "0.1.0"
