"""Reading and writing: volumes (SimpleITK/nibabel), blosc2 arrays, atomic file writes."""
