"""What every benchmark case shares: records, child processes, cases, the runner, the report and
the plot. What one implementation knows (its adapters, channels, notes, colour) lives in `peers/`.
"""
