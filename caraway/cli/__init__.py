"""The ``caraway`` command line: ``caraway.cli.main:main`` is the console script."""
