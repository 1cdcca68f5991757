"""The thin Ray layer: sweep files, the Tune trainable, launching, and offline leaderboards."""
