"""The thin Ray layer: sweep files, the Tune trainable, planning and launching."""
