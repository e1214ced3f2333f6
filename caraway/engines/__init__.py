"""Engines: the servers caraway talks to, one package per engine.

An engine fills in the contracts of :mod:`caraway.engines.base` (a broker where task messages
wait, a result backend, a broadcast exchange for remote control and events, a beat store, a
chord join) for one kind of server: ``memory`` (in-process, for tests), ``sqlite`` (one file),
``redis``, ``amqp`` (RabbitMQ, with the ``rpc://`` backend) and ``sql`` (SQLAlchemy result
backend). :mod:`caraway.engines.registry` picks the engine for a URL: built-in scheme, then
plug-in (entry point), then class path. Engines sit below the app: nothing here imports the
app, tasks, canvas, the worker or the CLI.
"""
