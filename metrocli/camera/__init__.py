"""Camera model, EXIF reading and image loading (numpy + Pillow only, never torch)."""
