"""What one driver does with a study, from the lock to the final stage: the run's plan and budget
(:mod:`~search.study.runner`, :mod:`~search.study.budget`, :mod:`~search.study.throughput`), the study folder
and its data (:mod:`~search.study.folder`, :mod:`~search.study.dataset`), each trial's record and pruning
(:mod:`~search.study.executor`), progress, parallel drivers, and the final stage
(:mod:`~search.study.reevaluation`, :mod:`~search.study.final`).
"""
