"""The forgetting service (``unlearnrec serve``): deletion requests over HTTP, applied exactly once.

An optional extra (``pip install 'unlearnrec[serve]'``: FastAPI, uvicorn, SQLAlchemy 2, psycopg,
prometheus_client) that sits above the library; the library never imports this package.
Modules: ``app`` (routes), ``service`` (validation and views), ``store`` (tables and the request
state machine), ``worker`` (the single writer), ``versions`` (model versions on disk), ``auth``
(API keys), ``metrics`` (Prometheus), ``cli`` (the command). See docs/service.md.
"""
