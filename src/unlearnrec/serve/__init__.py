"""The forgetting service (``unlearnrec serve``): deletion requests over HTTP, applied exactly once.

An optional extra (``pip install 'unlearnrec[serve]'``: FastAPI, uvicorn, SQLAlchemy 2, psycopg,
prometheus_client, jinja2) that sits above the library; the library never imports this package.
Modules: ``app`` (routes), ``service`` (validation and views), ``store`` (tables and the request
state machine), ``worker`` (the single writer), ``versions`` (model versions on disk), ``auth``
(API keys), ``metrics`` (Prometheus), ``cli`` (the command); retention (issue #20):
``compaction`` (retrain + encoder in a child process, install), ``retention`` (salted
fingerprints, purge), ``audit`` (``unlearnrec serve audit``), ``admin`` (new interactions,
compactions, readmissions) and ``ui`` (the operator page, ``templates/``). See docs/service.md.
"""
