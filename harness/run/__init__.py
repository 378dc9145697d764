"""A run, from its config to its finished directory.

Read ``runner.py`` first: it goes plan -> train -> execute -> judge -> aggregate -> write ->
report, each step a call into one module here:

    plan.py       preflight checks, the tasks' samples, pair keys, what is still to score
    state.py      the run's typed state: pair keys, model records, the earlier run, timings
    logs.py       a sample log while it is scored: appended durably, resumed, written whole
    executors.py  the executor protocol and its events; the local executor (a launcher's
                  data-parallel shards, adapters swapped on one shared base)
    cluster.py    the Ray executor: units on a cluster, rows back into the partial logs
    results.py    the jury's verdicts, each task's and suite's result
    staging.py    the hidden folder a run is written in, renamed into place when whole
    manifest.py   manifest.json: config, models, data, versions, hardware, timings
    train.py      ``medharness train``: a config's trainings and nothing else
"""
