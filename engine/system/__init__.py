"""Process and system plumbing: signals, standard streams, open files, /proc, temporary folders, whole-file writes."""
