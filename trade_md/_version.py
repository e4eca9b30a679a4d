"""The version of trade_md, in a module of its own so that any module can import it while the package loads."""
__version__ = "0.1.0"
