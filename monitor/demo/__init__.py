"""Demo content: generated photos, uploader edits and a loopback web to scan."""
