"""Ray-free and torch-free: the sweep folder (store), leaderboard, progress, confirmation,
report and export. Read-only commands import only this package."""
