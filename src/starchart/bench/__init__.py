"""`starchart bench`: load-test any OpenAI-compatible server with streaming chat.

``client`` sends one request and times its stream, ``stats`` turns samples
into a level's figures, ``runner`` drives the concurrency levels, ``report``
renders the table and the JSON document (``report.schema.json``),
``own_server`` starts ``starchart serve`` when no ``--url`` is given and
``command`` is the CLI.
"""
