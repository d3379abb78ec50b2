"""The package version, in one place for the package, its saved files and the command line."""

__version__ = "0.1.0"
