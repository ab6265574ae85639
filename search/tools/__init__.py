"""What a person reads afterwards: ``status``, ``export`` (YAML, JSON, the reference tool's INI), the HTML
report, optuna-dashboard, TensorBoard's hparams view and ``predict`` on new images.

Nothing here changes a study's results; everything reads them through :mod:`search.results`.
"""
