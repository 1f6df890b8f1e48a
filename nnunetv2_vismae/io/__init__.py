"""Ground floor shared by every stage: atomic file writes, image readers, intensity normalization."""
