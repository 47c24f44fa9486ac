"""The side-by-side comparison runner behind `bench/compare.py`, one concern per module:

    grid        what to run: methods, seeds, per-selector flags, budget presets
    runner      train.py in a child process, watched, stopped at the budget, resumed
    snapshots   reading train.py's run folders: sessions, ticks, kept snapshots
    evaluation  the metric on every kept snapshot, in-process
    results     best/final values, mean and std over seeds, results.json and results.md
    report      curves and the samples grid
    session     one comparison from start to end (resumable)
    common      paths, limits, errors and atomic writes they all share
"""
