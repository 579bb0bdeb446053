"""The ``metro`` command line: a thin Click layer over the library. Subcommands are imported lazily."""
