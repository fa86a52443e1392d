# The one place the version is written: pyproject.toml reads it at build time
# (a literal, so setuptools reads it without importing the package).
__version__ = "0.1.0"
