"""Task data: file readers, label parsers, the seeded validation split, the preset tasks."""
