"""Exposure Monitor: finds images of a person published without consent and alerts them.

Data flows one way through small modules, each with one typed interface:

subject -> queries (``monitor.queries``) -> search backends (``monitor.search``) -> hits
-> pages (``monitor.fetch``) -> image candidates (``monitor.extract``) -> hashes
(``monitor.hashing``) -> matches (``monitor.matching``) -> records (``monitor.store``)
-> alerts (``monitor.alerts``).
"""

__version__ = "0.1.0"
